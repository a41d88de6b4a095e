package httpapi

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

// addAgentNode puts another agent's node (not External) in the catalog,
// with one service.
func addAgentNode(t *testing.T, f *aclFixture, name string) {
	t.Helper()
	if err := f.s.EnsureNode(f.next(), &discovery.Node{ID: "00000002-0000-0000-0000-000000000000", Name: name, Address: "10.0.0.2", Datacenter: "dc1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.s.EnsureService(f.next(), &discovery.Instance{Node: name, ID: "web-" + name, Service: "web", Port: 80, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestCatalogRegisterOwnNode: a connect-proxy record registered through
// the catalog on the receiving agent's own node (n1) is written as that
// agent's own registration (a RegisterService command, not a catalog
// command), served by the catalog with its Proxy block as sent, and
// listed in /v1/agent/services; its node fields stay the agent's.
func TestCatalogRegisterOwnNode(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	reg := &api.CatalogRegistration{Node: "n1", Address: "192.168.10.10", SkipNodeUpdate: true, Service: proxyRecord()}
	if _, err := c.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("register on the own node: %v", err)
	}
	if got := f.w.types[len(f.w.types)-1]; got != discovery.RegisterServiceType {
		t.Errorf("applied command %d, want the agent's RegisterService (%d)", got, discovery.RegisterServiceType)
	}
	node, _, err := c.Catalog().Node("n1", nil)
	if err != nil || node == nil || len(node.Services) != 2 {
		t.Fatalf("node n1 = %+v, %v; want web-n1 and web-proxy1", node, err)
	}
	if p := node.Services["web-proxy1"]; p == nil || p.Kind != api.ServiceKindConnectProxy || !reflect.DeepEqual(p.Proxy, proxyRecord().Proxy) {
		t.Errorf("web-proxy1 = %+v, want Proxy %+v", p, proxyRecord().Proxy)
	}
	if node.Node.Address != "10.0.0.1" {
		t.Errorf("n1 address = %q: SkipNodeUpdate leaves the agent's node as it is", node.Node.Address)
	}
	list, _, err := c.Catalog().NodeServiceList("n1", nil)
	if err != nil || len(list.Services) != 2 {
		t.Fatalf("node-services n1 = %+v, %v", list, err)
	}
	svcs, err := c.Agent().Services()
	if err != nil || svcs["web-proxy1"] == nil || !reflect.DeepEqual(svcs["web-proxy1"].Proxy, proxyRecord().Proxy) {
		t.Errorf("agent services = %+v, %v; want web-proxy1 with its Proxy", svcs, err)
	}
	if _, n, _, _ := f.s.Node(nil, "n1"); n == nil || n.External {
		t.Errorf("n1 = %+v: still the agent's node, not an external one", n)
	}
}

// TestCatalogRegisterOwnNodeFields: with SkipNodeUpdate unset, node
// fields equal to the agent's own are accepted, a differing one is a 400
// naming it, and the node is unchanged.
func TestCatalogRegisterOwnNodeFields(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	svc := &api.AgentService{ID: "db1", Service: "db", Port: 5432}
	for _, tc := range []struct {
		name string
		reg  api.CatalogRegistration
		want string
	}{
		{"the agent's own fields", api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", ID: "00000001-0000-0000-0000-000000000000",
			TaggedAddresses: map[string]string{"lan": "10.0.0.1"}, Service: svc}, ""},
		{"another address", api.CatalogRegistration{Node: "n1", Address: "192.0.2.1", Service: svc}, "field Address"},
		{"another tagged address", api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", TaggedAddresses: map[string]string{"wan": "198.51.100.1"}, Service: svc}, "field TaggedAddresses.wan"},
		{"new node meta", api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", NodeMeta: map[string]string{"rack": "r1"}, Service: svc}, "field NodeMeta.rack"},
		{"another node ID", api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", ID: "00000009-0000-0000-0000-000000000000", Service: svc}, "field ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Catalog().Register(&tc.reg, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want a 400 naming %q", err, tc.want)
			}
		})
	}
	if _, n, _, _ := f.s.Node(nil, "n1"); n == nil || n.Address != "10.0.0.1" || len(n.TaggedAddresses) != 0 || n.Meta["rack"] != "" {
		t.Errorf("n1 = %+v, want it as the agent registered it", n)
	}
}

// TestCatalogRegisterOtherAgentNode: a catalog write naming another
// agent's node (n2, while the request reaches n1) is refused with a 403
// whatever the token, and changes nothing there.
func TestCatalogRegisterOtherAgentNode(t *testing.T) {
	f, _ := newOperatorFixture(t)
	addAgentNode(t, f, "n2")
	c := f.client(t, f.mgmt)
	reg := &api.CatalogRegistration{Node: "n2", Address: "10.0.0.2", SkipNodeUpdate: true, Service: proxyRecord()}
	if _, err := c.Catalog().Register(reg, nil); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "run by a vmesh agent") {
		t.Errorf("register on n2 through n1: %v, want a 403", err)
	}
	for _, d := range []api.CatalogDeregistration{{Node: "n2", ServiceID: "web-n2"}, {Node: "n2"}} {
		if _, err := c.Catalog().Deregister(&d, nil); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("deregister %+v through n1: %v, want a 403", d, err)
		}
	}
	if _, n, ins, _ := f.s.Node(nil, "n2"); n == nil || n.External || len(ins) != 1 || ins[0].ID != "web-n2" {
		t.Errorf("n2 = %+v %v, want it as its agent registered it", n, ins)
	}
}

// TestCatalogRegisterOwnNodeACL: Consul's catalog rule on the own node:
// service:write on the service and on a proxy's destination, node:write
// unless SkipNodeUpdate, node:write for a node check.
func TestCatalogRegisterOwnNodeACL(t *testing.T) {
	f, _ := newOperatorFixture(t)
	proxy := func(skip bool) *api.CatalogRegistration {
		return &api.CatalogRegistration{Node: "n1", Address: "10.0.0.1", SkipNodeUpdate: skip, Service: proxyRecord()}
	}
	nodeCheck := &api.CatalogRegistration{Node: "n1", SkipNodeUpdate: true,
		Checks: api.HealthChecks{{CheckID: "disk", Name: "disk", Status: api.HealthPassing}}}
	proxyOnly := f.token(t, `service "web-proxy" { policy = "write" }`)
	services := f.token(t, `service "web-proxy" { policy = "write" } service "web" { policy = "write" }`)
	nodeOnly := f.token(t, `node "n1" { policy = "write" }`)
	for _, tc := range []struct {
		name, token string
		reg         *api.CatalogRegistration
		wantErr     string
	}{
		{"anonymous", "", proxy(true), "403"},
		{"node:write alone", nodeOnly, proxy(true), "403"},
		{"no service:write on the destination", proxyOnly, proxy(true), "403"},
		{"node fields without node:write", services, proxy(false), "403"},
		{"a node check without node:write", services, nodeCheck, "403"},
		{"a node check with node:write", nodeOnly, nodeCheck, ""},
		{"service:write on both, SkipNodeUpdate", services, proxy(true), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client(t, tc.token).Catalog().Register(tc.reg, nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
	// Deregistration: service:write on the service (node:write is not it).
	if _, err := f.client(t, nodeOnly).Catalog().Deregister(&api.CatalogDeregistration{Node: "n1", ServiceID: "web-proxy1"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("deregister web-proxy1 with node:write only: %v, want a 403", err)
	}
	if _, err := f.client(t, services).Catalog().Deregister(&api.CatalogDeregistration{Node: "n1", ServiceID: "web-proxy1"}, nil); err != nil {
		t.Errorf("deregister web-proxy1 with service:write: %v", err)
	}
}

// TestCatalogOwnNodeChecks: a status-only check registered through the
// catalog on the own node keeps its status (no definition, so no check
// runner changes it) until another catalog write does; re-registering
// the service without naming it keeps it and its status; the catalog
// deregistrations of the check and of the service go through the agent's
// own deregistrations; the node itself cannot be deregistered this way.
func TestCatalogOwnNodeChecks(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	redis := &api.AgentService{ID: "redisV2", Service: "redis", Port: 1235, Address: "198.18.1.2"}
	reg := &api.CatalogRegistration{Node: "n1", SkipNodeUpdate: true, Service: redis,
		Checks: api.HealthChecks{{Node: "n1", CheckID: "redis:alive", Status: api.HealthPassing, ServiceID: "redisV2"}}}
	if _, err := c.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("register: %v", err)
	}
	status := func() string {
		t.Helper()
		_, chk, err := f.s.Check(nil, "n1", "redis:alive")
		if err != nil || chk == nil {
			t.Fatalf("check redis:alive: %v %v", chk, err)
		}
		if chk.Definition.Kind() != "" || chk.ServiceName != "redis" {
			t.Errorf("check = %+v: want a status-only check of redis", chk)
		}
		return chk.Status
	}
	if st := status(); st != api.HealthPassing {
		t.Errorf("status = %q, want passing as registered", st)
	}
	checks, err := c.Agent().Checks()
	if err != nil || checks["redis:alive"] == nil || checks["redis:alive"].Status != api.HealthPassing {
		t.Errorf("agent checks = %+v, %v", checks, err)
	}

	// The service again, without its check: the check stays as it is.
	reg.Checks = nil
	redis.Tags = []string{"v2"}
	if _, err := c.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("re-register: %v", err)
	}
	if st := status(); st != api.HealthPassing {
		t.Errorf("status after re-registering the service = %q, want passing", st)
	}
	// Another catalog write changes the status.
	reg.Service = nil
	reg.Checks = api.HealthChecks{{CheckID: "redis:alive", Status: api.HealthWarning, ServiceID: "redisV2"}}
	if _, err := c.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("update the check: %v", err)
	}
	if st := status(); st != api.HealthWarning {
		t.Errorf("status = %q, want warning as written", st)
	}
	if got := f.w.types[len(f.w.types)-1]; got != discovery.RegisterCheckType {
		t.Errorf("applied command %d, want the agent's RegisterCheck (%d)", got, discovery.RegisterCheckType)
	}

	// The leader's liveness check is not the catalog's to write, nor the node.
	bad := &api.CatalogRegistration{Node: "n1", SkipNodeUpdate: true, Checks: api.HealthChecks{{CheckID: discovery.NodeLivenessCheckID, Status: api.HealthPassing}}}
	if _, err := c.Catalog().Register(bad, nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("register serfHealth: %v, want a 400", err)
	}
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "n1"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("deregister the agent's node: %v, want a 403", err)
	}

	n := len(f.w.types)
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "n1", CheckID: "redis:alive"}, nil); err != nil {
		t.Fatalf("deregister the check: %v", err)
	}
	if _, chk, _ := f.s.Check(nil, "n1", "redis:alive"); chk != nil {
		t.Errorf("check still there: %+v", chk)
	}
	if _, err := c.Catalog().Deregister(&api.CatalogDeregistration{Node: "n1", ServiceID: "redisV2"}, nil); err != nil {
		t.Fatalf("deregister the service: %v", err)
	}
	if _, in, _ := f.s.Instance(nil, "n1", "redisV2"); in != nil {
		t.Errorf("service still there: %+v", in)
	}
	if got, want := f.w.types[n:], []discovery.MessageType{discovery.DeregisterCheckType, discovery.DeregisterServiceType}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want the agent's deregistrations %v", got, want)
	}
	if svcs, err := c.Agent().Services(); err != nil || svcs["redisV2"] != nil || svcs["web-n1"] == nil {
		t.Errorf("agent services = %v, %v", svcs, err)
	}
}
