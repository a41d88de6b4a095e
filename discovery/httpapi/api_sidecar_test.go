package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// serviceWriter applies an agent's service writes as the FSM does.
type serviceWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
}

func (w *serviceWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	switch c := cmd.(type) {
	case *discovery.RegisterServiceRequest:
		return w.idx, w.s.RegisterService(w.idx, c)
	case discovery.DeregisterServiceRequest:
		return w.idx, w.s.DeleteService(w.idx, c.Node, c.ServiceID)
	case discovery.RegisterCheckRequest:
		return w.idx, w.s.EnsureCheck(w.idx, &c.Check)
	}
	return 0, fmt.Errorf("serviceWriter: unexpected %T", cmd)
}

// newSidecarFixture is agent n1 with ACLs on (default deny) and a writer
// for its services; n2 is another agent's node.
func newSidecarFixture(t *testing.T) *aclFixture {
	t.Helper()
	f := &aclFixture{s: discovery.NewStore()}
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
	f.mgmt = "4d1b8a4e-0000-4000-8000-00000000000a"
	must(f.s.ACLBootstrap(f.next(), &acl.Token{AccessorID: "4d1b8a4e-0000-4000-8000-00000000000b", SecretID: f.mgmt,
		Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}}, 0))
	res, err := acl.NewResolver(acl.ResolverConfig{Store: f.s, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	must(err)
	a := &API{Store: f.s, Writer: &serviceWriter{s: f.s, idx: 1000}, Cluster: fakeCluster{},
		NodeName: "n1", NodeID: "00000001-0000-0000-0000-000000000000", Datacenter: "dc1", Version: "test",
		ACL: storeResolver{res}}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f
}

// TestAgentSidecarRecord: through consul/api, a SidecarService
// registration lists foo and foo-sidecar-proxy among the agent's
// services, the sidecar at the node proxy's mesh port; the Connect views
// give n1's sidecar in place of n1's foo and n2's foo as before; the
// deregistration of foo takes both; and the sidecar needs service:write
// on its own name as well as on foo.
func TestAgentSidecarRecord(t *testing.T) {
	f := newSidecarFixture(t)
	c := f.client(t, f.mgmt)
	reg := &api.AgentServiceRegistration{Name: "foo", Port: 8000, Tags: []string{"v1"},
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 19001}}}}}}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	sc := svcs["foo-sidecar-proxy"]
	if svcs["foo"] == nil || sc == nil {
		t.Fatalf("agent services = %v; want foo and foo-sidecar-proxy", svcs)
	}
	if sc.Kind != api.ServiceKindConnectProxy || sc.Service != "foo-sidecar-proxy" || sc.Port != discovery.MeshPort || sc.Address != "" ||
		strings.Join(sc.Tags, ",") != "v1" || sc.Proxy == nil || sc.Proxy.DestinationServiceName != "foo" || sc.Proxy.DestinationServiceID != "foo" ||
		sc.Proxy.LocalServiceAddress != "127.0.0.1" || sc.Proxy.LocalServicePort != 8000 ||
		len(sc.Proxy.Upstreams) != 1 || sc.Proxy.Upstreams[0].DestinationName != "db" || sc.Proxy.Upstreams[0].LocalBindPort != 19001 {
		t.Errorf("sidecar = %+v proxy %+v", sc, sc.Proxy)
	}

	if err := f.s.EnsureService(f.next(), &discovery.Instance{Node: "n2", ID: "foo", Service: "foo", Port: 8000}, nil); err != nil {
		t.Fatal(err)
	}
	hc, _, err := c.Health().Connect("foo", "", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range hc {
		got = append(got, fmt.Sprintf("%s/%s:%d", e.Node.Node, e.Service.ID, e.Service.Port))
	}
	sort.Strings(got)
	if want := fmt.Sprintf("n1/foo-sidecar-proxy:%d,n2/foo:8000", discovery.MeshPort); strings.Join(got, ",") != want {
		t.Errorf("health connect foo = %v, want %s", got, want)
	}
	cc, _, err := c.Catalog().Connect("foo", "", nil)
	if err != nil || len(cc) != 2 {
		t.Errorf("catalog connect foo = %+v, %v; want 2 entries", cc, err)
	}

	// Its health is foo's: foo in maintenance takes it down too.
	if err := c.Agent().EnableServiceMaintenance("foo", "test"); err != nil {
		t.Fatal(err)
	}
	if status, _, err := c.Agent().AgentHealthServiceByID("foo-sidecar-proxy"); err != nil || status != api.HealthCritical {
		t.Errorf("agent health of the sidecar, foo in maintenance: %q, %v; want critical", status, err)
	}
	if hc, _, err := c.Health().Connect("foo", "", true, nil); err != nil || len(hc) != 1 || hc[0].Node.Node != "n2" {
		t.Errorf("passing connect endpoints of foo, n1's in maintenance: %+v, %v; want n2's alone", hc, err)
	}

	if err := c.Agent().ServiceDeregister("foo"); err != nil {
		t.Fatal(err)
	}
	if svcs, err := c.Agent().Services(); err != nil || len(svcs) != 0 {
		t.Errorf("after deregistering foo: %v, %v", svcs, err)
	}

	only := f.client(t, f.token(t, `service "foo" { policy = "write" }`))
	err = only.Agent().ServiceRegister(reg)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("sidecar with service:write on foo only: %v, want 403", err)
	}
	if _, in, _ := f.s.Instance(nil, "n1", "foo"); in != nil {
		t.Errorf("the refused registration wrote foo")
	}
	both := f.client(t, f.token(t, `service "foo" { policy = "write" }
service "foo-sidecar-proxy" { policy = "write" }`))
	if err := both.Agent().ServiceRegister(reg); err != nil {
		t.Errorf("sidecar with service:write on foo and foo-sidecar-proxy: %v", err)
	}
	// Deregistering takes foo's rule alone, sidecar and all, as in Consul.
	if err := only.Agent().ServiceDeregister("foo"); err != nil {
		t.Errorf("deregistering with service:write on foo: %v", err)
	}
	if _, in, _ := f.s.Instance(nil, "n1", "foo-sidecar-proxy"); in != nil {
		t.Errorf("the sidecar outlived its service: %+v", in)
	}

	// The sidecar's ID taken by another service: refused, naming it.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "baz-sidecar-proxy", Name: "other", Port: 1}); err != nil {
		t.Fatal(err)
	}
	err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "baz", Port: 1, Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{}}})
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), `Connect.SidecarService: the sidecar's ID "baz-sidecar-proxy" is already registered for service "other"`) {
		t.Errorf("sidecar over another service's ID: %v", err)
	}

	// A port the node proxy does not serve is refused by name.
	bad := *reg
	bad.Connect = &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: 21000}}
	if err := c.Agent().ServiceRegister(&bad); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "Connect.SidecarService.Port") {
		t.Errorf("sidecar port 21000: %v, want a 400 naming Connect.SidecarService.Port", err)
	}
}
