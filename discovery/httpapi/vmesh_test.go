package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// fakeOperator records what the vmesh endpoints asked of the agent.
type fakeOperator struct {
	joined   string
	leaveErr error
}

func (f *fakeOperator) Join(_ context.Context, addr, token string) error {
	f.joined = addr + " " + token
	return nil
}
func (f *fakeOperator) Leave(context.Context, bool) error { return f.leaveErr }
func (f *fakeOperator) CreateJoinToken(_ context.Context, ttl time.Duration) (string, time.Time, error) {
	return "tok-" + ttl.String(), time.Time{}, nil
}
func (f *fakeOperator) ClusterMembers(context.Context) ([]ClusterMember, error) {
	return []ClusterMember{{Name: "n1", Role: "leader"}}, nil
}
func (f *fakeOperator) Snapshot() (uint64, error) { return 42, nil }
func (f *fakeOperator) EnvoyBootstrap(node, _ string, _ bool) ([]byte, error) {
	if node == "bad" {
		return nil, errors.New("node: bad")
	}
	return []byte(`{"node":"` + node + `"}`), nil
}

// The vmesh endpoints answer through the API's one error convention: an
// Operator error marked WithStatus keeps its code, a malformed body is a
// 400 naming the problem, and without an Operator the routes do not exist.
func TestVmeshEndpoints(t *testing.T) {
	t.Parallel()
	s := discovery.NewStore()
	op := &fakeOperator{leaveErr: WithStatus(http.StatusConflict, errors.New("leaving would break quorum"))}
	a := &API{Store: s, Writer: &fakeWriter{s: s}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1", Operator: op}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/v1/vmesh/join", `{"Addr":"10.0.0.1:7400","Token":"t"}`, 200, ""},
		{"PUT", "/v1/vmesh/join", `{"Addr":"nowhere","Token":"t"}`, 400, `field Addr: "nowhere" is not host:port`},
		{"PUT", "/v1/vmesh/join", `{"Addr":`, 400, "Request decode failed"},
		{"PUT", "/v1/vmesh/leave", "", 409, "leaving would break quorum"},
		{"PUT", "/v1/vmesh/token?ttl=1h", "", 200, `"Token":"tok-1h0m0s"`},
		{"PUT", "/v1/vmesh/token?ttl=soon", "", 400, `ttl: "soon" is not a duration`},
		{"GET", "/v1/vmesh/members", "", 200, `"Role":"leader"`},
		{"PUT", "/v1/vmesh/raft/snapshot", "", 200, `"Index":42`},
		{"GET", "/v1/vmesh/envoy/bootstrap?node=web", "", 200, `"node":"web"`},
		{"GET", "/v1/vmesh/envoy/bootstrap?node=bad", "", 400, "node: bad"},
	} {
		code, body := do(c.method, c.path, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s = %d %q, want %d with %q", c.method, c.path, code, body, c.code, c.want)
		}
	}
	if op.joined != "10.0.0.1:7400 t" {
		t.Errorf("join passed %q to the operator", op.joined)
	}

	bare := &API{Store: s, Writer: &fakeWriter{s: s}, Cluster: fakeCluster{}}
	mux = http.NewServeMux()
	bare.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/vmesh/leave", nil))
	if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("without an Operator, leave answered %d", rec.Code)
	}
}
