package httpapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// fakeOperator records what the vmesh endpoints asked of the agent.
type fakeOperator struct {
	joined   string
	leaveErr error
	uses     int
	revoked  string
	removed  string
	rotated  *discovery.CARoot
}

func (f *fakeOperator) Join(_ context.Context, addr, token string) error {
	f.joined = addr + " " + token
	return nil
}
func (f *fakeOperator) Leave(context.Context, bool) error { return f.leaveErr }

var fakeTokenTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func (f *fakeOperator) CreateJoinToken(_ context.Context, ttl time.Duration, uses int) (string, discovery.JoinTokenInfo, error) {
	f.uses = uses
	return "tok-" + ttl.String(), discovery.JoinTokenInfo{ID: "id1", CreatedAt: fakeTokenTime, ExpiresAt: fakeTokenTime.Add(ttl), Uses: uses, UsesLeft: uses}, nil
}
func (f *fakeOperator) JoinTokens(context.Context) ([]discovery.JoinTokenInfo, error) {
	return []discovery.JoinTokenInfo{{ID: "id1", CreatedAt: fakeTokenTime, ExpiresAt: fakeTokenTime.Add(time.Hour), Uses: 1, UsesLeft: 0, Revoked: true}}, nil
}
func (f *fakeOperator) RevokeJoinToken(_ context.Context, id string) (discovery.JoinTokenInfo, error) {
	if id != "id1" {
		return discovery.JoinTokenInfo{}, fmt.Errorf("%w: join token %s", discovery.ErrNotFound, id)
	}
	f.revoked = id
	return discovery.JoinTokenInfo{ID: id, Revoked: true}, nil
}
func (f *fakeOperator) ClusterMembers(context.Context) ([]ClusterMember, error) {
	return []ClusterMember{{Name: "n1", Role: "leader"}}, nil
}
func (f *fakeOperator) Snapshot() (uint64, error) { return 42, nil }
func (f *fakeOperator) ForceLeave(_ context.Context, node string) error {
	if node == "n1" {
		return WithStatus(http.StatusConflict, errors.New(`node "n1" is the leader`))
	}
	f.removed = node
	return nil
}
func (f *fakeOperator) RotateCA(context.Context) (*discovery.CARoot, error) { return f.rotated, nil }
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
	op := &fakeOperator{leaveErr: WithStatus(http.StatusConflict, errors.New("leaving would break quorum")),
		rotated: &discovery.CARoot{Fingerprint: "fp2", CertPEM: testRootPEM(t, "root 2")}}
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
		{"PUT", "/v1/agent/force-leave/web-01?prune", "", 200, ""},
		{"PUT", "/v1/agent/force-leave/n1", "", 409, "is the leader"},
		{"PUT", "/v1/vmesh/ca/rotate", "", 200, `"ActiveRootID":"fp2"`},
	} {
		code, body := do(c.method, c.path, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s = %d %q, want %d with %q", c.method, c.path, code, body, c.code, c.want)
		}
	}
	if op.joined != "10.0.0.1:7400 t" {
		t.Errorf("join passed %q to the operator", op.joined)
	}
	if op.removed != "web-01" {
		t.Errorf("force-leave passed %q to the operator", op.removed)
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

// Join tokens: every token expires and is counted, bad limits are a 400
// naming the parameter, and neither the list nor a revoke shows a secret.
func TestVmeshTokenEndpoints(t *testing.T) {
	t.Parallel()
	s := discovery.NewStore()
	op := &fakeOperator{}
	a := &API{Store: s, Writer: &fakeWriter{s: s}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1", Operator: op}
	mux := http.NewServeMux()
	a.Register(mux)
	do := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, rec.Body.String()
	}
	for _, c := range []struct {
		method, path string
		code         int
		want         string
		uses         int
	}{
		{"PUT", "/v1/vmesh/token", 200, `"ExpiresAt":"2026-01-02T04:04:05Z"`, 1}, // default: 1 h, one use
		{"PUT", "/v1/vmesh/token?uses=3&ttl=10m", 200, `"UsesLeft":3`, 3},
		{"PUT", "/v1/vmesh/token?ttl=0", 400, "ttl: 0s is not between 1s and 168h0m0s", 0},
		{"PUT", "/v1/vmesh/token?ttl=-1h", 400, "ttl: -1h0m0s is not between", 0},
		{"PUT", "/v1/vmesh/token?ttl=169h", 400, "ttl: 169h0m0s is not between", 0},
		{"PUT", "/v1/vmesh/token?uses=0", 400, `uses: "0" is not a number between 1 and 1000`, 0},
		{"PUT", "/v1/vmesh/token?uses=many", 400, `uses: "many"`, 0},
		{"DELETE", "/v1/vmesh/token/nope", 404, "join token nope", 0},
		{"DELETE", "/v1/vmesh/token/id1", 200, `"Revoked":true`, 0},
	} {
		op.uses = 0
		code, body := do(c.method, c.path)
		if code != c.code || !strings.Contains(body, c.want) || op.uses != c.uses {
			t.Errorf("%s %s = %d %q (uses %d), want %d with %q (uses %d)", c.method, c.path, code, body, op.uses, c.code, c.want, c.uses)
		}
	}
	if op.revoked != "id1" {
		t.Errorf("revoke passed %q to the operator", op.revoked)
	}
	code, body := do("GET", "/v1/vmesh/tokens")
	var list []map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 {
		t.Fatalf("GET /v1/vmesh/tokens = %d %q; want a list of one", code, body)
	}
	keys := []string{}
	for k := range list[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "CreatedAt,ExpiresAt,ID,Revoked,Uses,UsesLeft" {
		t.Errorf("a listed token has fields %s; want exactly CreatedAt,ExpiresAt,ID,Revoked,Uses,UsesLeft (no secret, no hash)", got)
	}
	if list[0]["CreatedAt"] != "2026-01-02T03:04:05Z" || list[0]["Revoked"] != true {
		t.Errorf("listed token = %v", list[0])
	}
}

func testRootPEM(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: fakeTokenTime, NotAfter: fakeTokenTime.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// GET /v1/connect/ca/roots lists every trusted root, the active one
// marked and with its chain, in Consul's shape; before there is a CA it
// lists none.
func TestCARootsEndpoint(t *testing.T) {
	t.Parallel()
	s := discovery.NewStore()
	a := &API{Store: s, Writer: &fakeWriter{s: s}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1"}
	mux := http.NewServeMux()
	a.Register(mux)
	get := func() (CARootList, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/connect/ca/roots", nil))
		var out CARootList
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &out) != nil {
			t.Fatalf("roots: %d %s", rec.Code, rec.Body)
		}
		return out, rec.Header().Get("X-Consul-Index")
	}
	if l, _ := get(); l.ActiveRootID != "" || l.Roots == nil || len(l.Roots) != 0 {
		t.Fatalf("roots before any CA = %+v; want none (an empty list)", l)
	}
	old, cur, cross := testRootPEM(t, "root 1"), testRootPEM(t, "root 2"), testRootPEM(t, "root 2 by 1")
	if err := s.SetCA(7, &discovery.CARoot{CertPEM: cur, Fingerprint: "fp2", TrustDomain: "vmesh.test", CrossSignedPEM: cross,
		PreviousRoots: []discovery.TrustedRoot{{CertPEM: old, Fingerprint: "fp1", RetiredAt: fakeTokenTime.Unix(), DropAfter: fakeTokenTime.Add(time.Hour).Unix()}}}); err != nil {
		t.Fatal(err)
	}
	l, idx := get()
	if l.ActiveRootID != "fp2" || l.TrustDomain != "vmesh.test" || len(l.Roots) != 2 || idx != "7" {
		t.Fatalf("roots = %+v at index %s; want fp2 active of 2, at 7", l, idx)
	}
	act, prev := l.Roots[0], l.Roots[1]
	if !act.Active || act.Name != "root 2" || act.RootCert != string(cur) || len(act.IntermediateCerts) != 1 || act.IntermediateCerts[0] != string(cross) || act.DropAfter != nil {
		t.Errorf("active root = %+v", act)
	}
	if prev.Active || prev.ID != "fp1" || prev.Name != "root 1" || prev.DropAfter == nil || !prev.DropAfter.Equal(fakeTokenTime.Add(time.Hour)) {
		t.Errorf("previous root = %+v", prev)
	}
}
