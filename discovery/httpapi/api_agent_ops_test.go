package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// opsWriter applies the commands the agent's operational endpoints
// write, as the FSM would.
type opsWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
}

func (w *opsWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	switch c := cmd.(type) {
	case discovery.RegisterCheckRequest:
		return w.idx, w.s.EnsureCheck(w.idx, &c.Check)
	case discovery.DeregisterCheckRequest:
		return w.idx, w.s.DeleteCheck(w.idx, c.Node, c.CheckID)
	case discovery.IntentionRequest:
		return w.idx, w.s.IntentionApplyRequest(w.idx, &c)
	}
	return 0, fmt.Errorf("opsWriter: unexpected %T", cmd)
}

// fakeMonitor hands every subscriber the lines sent on its feed.
type fakeMonitor struct {
	mu   sync.Mutex
	subs []chan []byte
	lvls []slog.Level
	json []bool
}

func (m *fakeMonitor) Subscribe(level slog.Level, json bool) (<-chan []byte, func() int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan []byte, 16)
	m.subs, m.lvls, m.json = append(m.subs, ch), append(m.lvls, level), append(m.json, json)
	return ch, func() int { return 0 }
}

// closeAll ends every subscription, which ends the streams: consul/api's
// monitor reads until the body ends, whatever its stop channel says.
func (m *fakeMonitor) closeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range m.subs {
		close(ch)
	}
	m.subs = nil
}

func (m *fakeMonitor) send(line string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range m.subs {
		ch <- []byte(line)
	}
	return len(m.subs)
}

// opsFixture is agent n1 (service web-1, and n2's db-1 elsewhere) with
// ACLs on, default deny, over a real catalog.
type opsFixture struct {
	*aclFixture
	monitor *fakeMonitor
	tokens  *fakeTokens // api_agent_token_test.go
	reloads int
	reload  error
	mu      sync.Mutex
}

func newOpsFixture(t *testing.T) *opsFixture {
	t.Helper()
	f := &opsFixture{aclFixture: &aclFixture{s: discovery.NewStore()}, monitor: &fakeMonitor{}, tokens: &fakeTokens{set: map[string]string{}}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"n1", "n2"} {
		must(f.s.EnsureNode(f.next(), &discovery.Node{ID: fmt.Sprintf("0000000%d-0000-0000-0000-000000000000", i+1), Name: n,
			Address: fmt.Sprintf("10.0.0.%d", i+1), Datacenter: "dc1"}))
	}
	must(f.s.EnsureService(f.next(), &discovery.Instance{Node: "n1", ID: "web-1", Service: "web", Port: 80, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil))
	must(f.s.EnsureService(f.next(), &discovery.Instance{Node: "n2", ID: "web-2", Service: "web", Port: 80, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil))
	f.mgmt = "4d1b8a4e-0000-4000-8000-00000000000a"
	must(f.s.ACLBootstrap(f.next(), &acl.Token{AccessorID: "4d1b8a4e-0000-4000-8000-00000000000b", SecretID: f.mgmt,
		Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}}, 0))
	res, err := acl.NewResolver(acl.ResolverConfig{Store: f.s, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	must(err)
	a := &API{Store: f.s, Writer: &opsWriter{s: f.s, idx: 1000}, Cluster: fakeCluster{},
		NodeName: "n1", NodeID: "00000001-0000-0000-0000-000000000000", Datacenter: "dc1", Version: "test",
		ACL: storeResolver{res}, Monitor: f.monitor, Tokens: f.tokens,
		Reload: func(context.Context) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.reloads++
			return f.reload
		}}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(f.monitor.closeAll) // first: srv.Close waits for the streams
	f.base = srv.URL
	return f
}

func (f *opsFixture) put(t *testing.T, token, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, f.base+path, nil)
	req.Header.Set("X-Consul-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAgentMaintenance: consul maint's requests, through consul/api:
// the node's and a service's maintenance check is critical, takes the
// instances out of healthy results, and goes away when disabled.
func TestAgentMaintenance(t *testing.T) {
	f := newOpsFixture(t)
	c := f.client(t, f.mgmt)
	healthyWeb := func() []string {
		t.Helper()
		es, _, err := c.Health().Service("web", "", true, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range es {
			ids = append(ids, e.Service.ID)
		}
		return ids
	}
	if got := healthyWeb(); len(got) != 2 {
		t.Fatalf("healthy web before maintenance = %v, want web-1 and web-2", got)
	}

	if err := c.Agent().EnableNodeMaintenance("kernel upgrade"); err != nil {
		t.Fatalf("EnableNodeMaintenance: %v", err)
	}
	checks, err := c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	nm := checks["_node_maintenance"]
	if nm == nil || nm.Status != api.HealthCritical || nm.Notes != "kernel upgrade" || nm.Name != "Node Maintenance Mode" || nm.Type != "maintenance" || nm.ServiceID != "" {
		t.Fatalf("_node_maintenance = %+v, want critical with the reason", nm)
	}
	if got := healthyWeb(); strings.Join(got, ",") != "web-2" {
		t.Errorf("healthy web with n1 in maintenance = %v, want web-2 only", got)
	}
	// Enabling again keeps the first reason, as Consul does.
	if err := c.Agent().EnableNodeMaintenance("other"); err != nil {
		t.Fatal(err)
	}
	if checks, _ := c.Agent().Checks(); checks["_node_maintenance"].Notes != "kernel upgrade" {
		t.Errorf("second enable changed the reason to %q", checks["_node_maintenance"].Notes)
	}
	if err := c.Agent().DisableNodeMaintenance(); err != nil {
		t.Fatal(err)
	}
	if checks, _ := c.Agent().Checks(); checks["_node_maintenance"] != nil {
		t.Error("_node_maintenance still there after disable")
	}
	if err := c.Agent().DisableNodeMaintenance(); err != nil {
		t.Errorf("disabling twice: %v", err)
	}

	if err := c.Agent().EnableServiceMaintenance("web-1", ""); err != nil {
		t.Fatalf("EnableServiceMaintenance: %v", err)
	}
	checks, _ = c.Agent().Checks()
	sm := checks["_service_maintenance:web-1"]
	if sm == nil || sm.Status != api.HealthCritical || sm.ServiceID != "web-1" || sm.ServiceName != "web" || !strings.Contains(sm.Notes, "no reason was provided") {
		t.Fatalf("_service_maintenance:web-1 = %+v", sm)
	}
	if got := healthyWeb(); strings.Join(got, ",") != "web-2" {
		t.Errorf("healthy web with web-1 in maintenance = %v, want web-2 only", got)
	}
	if err := c.Agent().DisableServiceMaintenance("web-1"); err != nil {
		t.Fatal(err)
	}
	if got := healthyWeb(); len(got) != 2 {
		t.Errorf("healthy web after maintenance = %v", got)
	}

	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/v1/agent/maintenance", 400, "Missing value for enable"},
		{"/v1/agent/maintenance?enable=maybe", 400, "Invalid value for enable"},
		{"/v1/agent/service/maintenance/nope?enable=true", 404, "Unknown service ID"},
		{"/v1/agent/service/maintenance/web-2?enable=true", 404, "Unknown service ID"}, // n2's, not this agent's
	} {
		if code, body := f.put(t, f.mgmt, tc.path); code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("PUT %s = %d %q, want %d mentioning %q", tc.path, code, body, tc.code, tc.want)
		}
	}

	// ACLs: node:write for the node, service:write for a service.
	svcWriter := f.token(t, `service "web" { policy = "write" }`)
	nodeWriter := f.token(t, `node "n1" { policy = "write" }`)
	reader := f.token(t, `service "web" { policy = "read" } node "n1" { policy = "read" }`)
	for _, tc := range []struct {
		name, token, path string
		code              int
	}{
		{"service writer, node", svcWriter, "/v1/agent/maintenance?enable=true", 403},
		{"service writer, service", svcWriter, "/v1/agent/service/maintenance/web-1?enable=true", 200},
		{"service writer, service again", svcWriter, "/v1/agent/service/maintenance/web-1?enable=true", 200},
		{"reader, service", reader, "/v1/agent/service/maintenance/web-1?enable=false", 403},
		{"reader, node no-op", reader, "/v1/agent/maintenance?enable=false", 403},
		{"node writer, node", nodeWriter, "/v1/agent/maintenance?enable=true", 200},
		{"node writer, service", nodeWriter, "/v1/agent/service/maintenance/web-1?enable=false", 403},
		{"anonymous, node", "", "/v1/agent/maintenance?enable=false", 403},
	} {
		if code, body := f.put(t, tc.token, tc.path); code != tc.code {
			t.Errorf("%s: PUT %s = %d %q, want %d", tc.name, tc.path, code, body, tc.code)
		}
	}
}

// TestAgentMonitor: consul monitor's request streams the agent's log
// lines at the asked level and format; it needs agent:read.
func TestAgentMonitor(t *testing.T) {
	f := newOpsFixture(t)
	c := f.client(t, f.mgmt)
	stop := make(chan struct{})
	defer close(stop)
	lines, err := c.Agent().MonitorJSON("debug", stop, nil)
	if err != nil {
		t.Fatalf("MonitorJSON: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the monitor subscribes", func() bool {
		f.monitor.mu.Lock()
		defer f.monitor.mu.Unlock()
		return len(f.monitor.subs) == 1
	})
	f.monitor.mu.Lock()
	lvl, js := f.monitor.lvls[0], f.monitor.json[0]
	f.monitor.mu.Unlock()
	if lvl != slog.LevelDebug || !js {
		t.Errorf("subscribed at %v json=%v, want debug json", lvl, js)
	}
	f.monitor.send(`{"msg":"one"}`)
	f.monitor.send(`{"msg":"two"}`)
	for _, want := range []string{`{"msg":"one"}`, `{"msg":"two"}`} {
		select {
		case got := <-lines:
			if got != want {
				t.Errorf("line %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line %q", want)
		}
	}

	reader := f.token(t, `agent "n1" { policy = "read" }`)
	nodeOnly := f.token(t, `node "n1" { policy = "write" }`)
	for _, tc := range []struct {
		name, token, query string
		code               int
	}{
		{"no agent:read", nodeOnly, "?loglevel=info", 403},
		{"bad level", reader, "?loglevel=chatty", 400},
		{"bad logjson", reader, "?logjson=perhaps", 400},
	} {
		code, _, body := f.get(t, tc.token, "/v1/agent/monitor"+tc.query)
		if code != tc.code {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.code)
		}
	}
	// An agent:read token streams.
	rc := f.client(t, reader)
	if _, err := rc.Agent().Monitor("warn", stop, nil); err != nil {
		t.Errorf("Monitor with agent:read: %v", err)
	}
}

// TestAgentReload: consul reload runs the agent's reload; it needs
// agent:write, and a failed reload is an error the CLI shows.
func TestAgentReload(t *testing.T) {
	f := newOpsFixture(t)
	if err := f.client(t, f.mgmt).Agent().Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	reader := f.token(t, `agent "n1" { policy = "read" }`)
	if err := f.client(t, reader).Agent().Reload(); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Reload with agent:read = %v, want a 403", err)
	}
	f.mu.Lock()
	f.reload = errors.New("services.d/web.hcl:3: unknown key")
	f.mu.Unlock()
	if err := f.client(t, f.mgmt).Agent().Reload(); err == nil || !strings.Contains(err.Error(), "web.hcl:3") {
		t.Errorf("failed Reload = %v, want the file named", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reloads != 2 {
		t.Errorf("reloads = %d, want 2 (the 403 runs none)", f.reloads)
	}
}
