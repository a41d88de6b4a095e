package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/user"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// storeWriter applies registrations straight to a store, as raft would
// (one at a time, and applied when Apply returns).
type storeWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
	// latency stands for raft's round trip before the entry applies.
	latency time.Duration
}

func (w *storeWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	time.Sleep(w.latency)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	switch c := cmd.(type) {
	case *discovery.RegisterServiceRequest:
		return w.idx, w.s.EnsureService(w.idx, &c.Instance, c.Checks)
	case discovery.RegisterServiceRequest:
		return w.idx, w.s.EnsureService(w.idx, &c.Instance, c.Checks)
	case discovery.DeregisterServiceRequest:
		return w.idx, w.s.DeleteService(w.idx, c.Node, c.ServiceID)
	}
	return 0, fmt.Errorf("storeWriter: unexpected %T", cmd)
}

// TestAgentRegisterUser: the agent API refuses a user this host does not
// have, and a user another service of the node already runs as.
func TestAgentRegisterUser(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skipf("no current user: %v", err)
	}
	s := discovery.NewStore()
	if err := s.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	a := &API{Store: s, Writer: &storeWriter{s: s, idx: 1}, Cluster: fakeCluster{}, NodeName: "n1", Datacenter: "dc1"}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	put := func(body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/agent/service/register", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	reg := func(id, name, u string) string {
		return fmt.Sprintf(`{"ID":%q,"Name":%q,"Port":80,"Meta":{"vmesh-user":%q}}`, id, name, u)
	}

	if code, body := put(reg("web-1", "web", "no-such-user-vmesh")); code != http.StatusBadRequest || !strings.Contains(body, `Meta.vmesh-user: "no-such-user-vmesh" is not a user on this host`) {
		t.Errorf("unknown user: %d %q", code, body)
	}
	if code, body := put(reg("web-1", "web", me.Username)); code != http.StatusOK {
		t.Fatalf("known user: %d %q", code, body)
	}
	_, in, _ := s.Instance(nil, "n1", "web-1")
	if in == nil || in.User != me.Username {
		t.Fatalf("stored instance %+v, want User %q", in, me.Username)
	}
	// A second instance of the same service may share the user.
	if code, body := put(reg("web-2", "WEB", me.Username)); code != http.StatusOK {
		t.Errorf("second instance of web: %d %q", code, body)
	}
	// Another service may not, by name or by UID.
	if code, body := put(reg("db-1", "db", me.Username)); code != http.StatusBadRequest || !strings.Contains(body, `already runs service "web"`) {
		t.Errorf("user of another service: %d %q", code, body)
	}
	if code, body := put(reg("db-1", "db", me.Uid)); code != http.StatusBadRequest || !strings.Contains(body, "UID "+me.Uid) {
		t.Errorf("UID of another service's user: %d %q", code, body)
	}
	// Re-registering an instance with its own user is fine.
	if code, body := put(reg("web-1", "web", me.Username)); code != http.StatusOK {
		t.Errorf("re-register: %d %q", code, body)
	}
}

func TestBuildUser(t *testing.T) {
	for _, c := range []struct {
		body, user, err string
	}{
		{body: `{"Name":"web"}`},
		{body: `{"Name":"web","Meta":{"vmesh-user":"alice"}}`, user: "alice"},
		{body: `{"Name":"web","Meta":{"vmesh-user":"1001"}}`, user: "1001"},
		{body: `{"Name":"web","Meta":{"vmesh-user":"svc_web-2"}}`, user: "svc_web-2"},
		{body: `{"Name":"web","Meta":{"vmesh-user":""}}`, err: `Meta.vmesh-user: "" is not a user name or UID`},
		{body: `{"Name":"web","Meta":{"vmesh-user":"al ice"}}`, err: `Meta.vmesh-user: "al ice"`},
		{body: `{"Name":"web","Meta":{"vmesh-user":"-x"}}`, err: `Meta.vmesh-user: "-x"`},
		{body: `{"Name":"web","Meta":{"vmesh-user":"a/b"}}`, err: `Meta.vmesh-user: "a/b"`},
	} {
		req, err := buildBody(t, c.body)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one containing %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.body, err)
			continue
		}
		if req.Instance.User != c.user {
			t.Errorf("%s: User %q, want %q", c.body, req.Instance.User, c.user)
		}
	}
}
