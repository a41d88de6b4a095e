package httpapi

import (
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/discovery"
)

func proxyRecord() *api.AgentService {
	return &api.AgentService{
		Kind: api.ServiceKindConnectProxy, ID: "web-proxy1", Service: "web-proxy", Port: 8001,
		Proxy: &api.AgentServiceConnectProxyConfig{
			DestinationServiceName: "web", DestinationServiceID: "web1", LocalServiceAddress: "127.0.0.2", LocalServicePort: 8080,
			Mode: api.ProxyModeTransparent, TransparentProxy: &api.TransparentProxyConfig{OutboundListenerPort: 808},
			Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: 9191, Config: map[string]any{"connect_timeout_ms": float64(1000)}}},
		},
	}
}

// TestCatalogRegisterInertKinds: a connect-proxy, a gateway and a
// Connect-native service registered through the catalog on an external
// node are served back as registered; the Connect views list the proxy
// and the native instance but not the external typical one; the mesh's
// state and VIP allocation leave the inert records out.
func TestCatalogRegisterInertKinds(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	reg := func(s *api.AgentService) {
		t.Helper()
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext1", Address: "192.0.2.10", Service: s}, nil); err != nil {
			t.Fatalf("register %s: %v", s.ID, err)
		}
	}
	reg(&api.AgentService{ID: "web1", Service: "web", Port: 8000})
	reg(proxyRecord())
	reg(&api.AgentService{ID: "api1", Service: "api", Port: 443, Connect: &api.AgentServiceConnect{Native: true}})
	reg(&api.AgentService{ID: "tgw", Service: "tgw", Port: 8443, Kind: api.ServiceKindTerminatingGateway})

	got, _, err := c.Catalog().Service("web-proxy", "", nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("web-proxy: %v %v", got, err)
	}
	if !reflect.DeepEqual(got[0].ServiceProxy, proxyRecord().Proxy) {
		t.Errorf("ServiceProxy = %+v, want %+v", got[0].ServiceProxy, proxyRecord().Proxy)
	}
	node, _, err := c.Catalog().Node("ext1", nil)
	if err != nil || node.Services["web-proxy1"] == nil || node.Services["web-proxy1"].Kind != api.ServiceKindConnectProxy ||
		node.Services["tgw"].Kind != api.ServiceKindTerminatingGateway || node.Services["api1"].Connect == nil || !node.Services["api1"].Connect.Native {
		t.Fatalf("node ext1 = %+v, %v", node, err)
	}

	// web's Connect endpoints: n1's own instance (its node's proxy fronts
	// it) and the proxy record; not web1, a plain external instance.
	ids := func(es []*api.CatalogService) string {
		var out []string
		for _, e := range es {
			out = append(out, e.Node+"/"+e.ServiceID)
		}
		return strings.Join(out, ",")
	}
	conn, _, err := c.Catalog().Connect("web", "", nil)
	if err != nil || ids(conn) != "n1/web-n1,ext1/web-proxy1" {
		t.Errorf("connect web = %s, %v", ids(conn), err)
	}
	if conn, _, err := c.Catalog().Connect("api", "", nil); err != nil || ids(conn) != "ext1/api1" {
		t.Errorf("connect api = %s, %v", ids(conn), err)
	}
	hc, _, err := c.Health().Connect("web", "", false, nil)
	if err != nil || len(hc) != 2 || hc[1].Service.ID != "web-proxy1" || hc[1].Service.Proxy == nil {
		t.Errorf("health connect web = %+v, %v", hc, err)
	}
	if tg, _, err := c.Catalog().Connect("tgw", "", nil); err != nil || len(tg) != 0 {
		t.Errorf("connect tgw = %s, %v", ids(tg), err)
	}

	st, err := f.s.MeshState(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.Instances {
		if in.Kind != "" {
			t.Errorf("MeshState holds the inert record %s/%s", in.Node, in.ID)
		}
	}
	_, names, err := f.s.ServiceNames(nil)
	if err != nil || strings.Join(names, ",") != "api,web" {
		t.Errorf("ServiceNames = %v, %v, want api and web only", names, err)
	}
}

// TestOperatorUsage: the catalog's counts as Consul's operator usage
// reports them, for operator:read only.
func TestOperatorUsage(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	for _, s := range []*api.AgentService{
		{ID: "redis1", Service: "redis", Port: 8000},
		{ID: "redis2", Service: "Redis", Port: 8001},
		proxyRecord(),
		{ID: "web-native", Service: "web", Port: 8002, Connect: &api.AgentServiceConnect{Native: true}},
	} {
		if _, err := c.Catalog().Register(&api.CatalogRegistration{Node: "ext1", Address: "192.0.2.10", Service: s}, nil); err != nil {
			t.Fatalf("register %s: %v", s.ID, err)
		}
	}
	u, _, err := f.client(t, f.token(t, `operator = "read"`)).Operator().Usage(nil)
	if err != nil {
		t.Fatal(err)
	}
	dc := u.Usage["dc1"]
	// web (n1's web-n1 and web-native), redis, web-proxy; 5 instances,
	// of which the proxy is not billable.
	if dc.Nodes != 2 || dc.Services != 3 || dc.ServiceInstances != 5 || dc.BillableServiceInstances != 4 {
		t.Errorf("usage = %+v", dc)
	}
	want := map[string]int{"api-gateway": 0, "connect-native": 1, "connect-proxy": 1, "ingress-gateway": 0, "mesh-gateway": 0, "terminating-gateway": 0}
	if !reflect.DeepEqual(dc.ConnectServiceInstances, want) {
		t.Errorf("ConnectServiceInstances = %v, want %v", dc.ConnectServiceInstances, want)
	}
	if _, _, err := f.client(t, f.token(t, `node_prefix "" { policy = "read" }`)).Operator().Usage(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("usage without operator:read: %v", err)
	}
}

// TestCachedRead: ?cached is answered from the agent's catalog, a HIT
// whose Age is how long ago the leader was heard (0 on the leader);
// without ?cached there is no cache header, as in Consul.
func TestCachedRead(t *testing.T) {
	f, _ := newOperatorFixture(t)
	code, h, body := f.get(t, f.mgmt, "/v1/catalog/service/web?cached")
	if code != 200 || h.Get("X-Cache") != "HIT" || h.Get("Age") != "0" || !strings.Contains(body, "web-n1") {
		t.Errorf("?cached: %d X-Cache=%q Age=%q %s", code, h.Get("X-Cache"), h.Get("Age"), body)
	}
	if _, h, _ := f.get(t, f.mgmt, "/v1/catalog/service/web"); h.Get("X-Cache") != "" || h.Get("Age") != "" {
		t.Errorf("without ?cached: X-Cache=%q Age=%q", h.Get("X-Cache"), h.Get("Age"))
	}
	rec := httptest.NewRecorder()
	setCacheHeaders(rec, 2500*time.Millisecond)
	if rec.Header().Get("Age") != "2" {
		t.Errorf("Age after 2.5s without the leader = %q, want 2", rec.Header().Get("Age"))
	}
}

// TestAgentNodeTaggedAddresses: an agent's node is tagged as a Consul
// agent tags its own (lan, wan and their address family's variants); a
// catalog registration's tags are served as given.
func TestAgentNodeTaggedAddresses(t *testing.T) {
	f, _ := newOperatorFixture(t)
	c := f.client(t, f.mgmt)
	n, _, err := c.Catalog().Node("n1", nil)
	want := map[string]string{"lan": "10.0.0.1", "lan_ipv4": "10.0.0.1", "wan": "10.0.0.1", "wan_ipv4": "10.0.0.1"}
	if err != nil || !reflect.DeepEqual(n.Node.TaggedAddresses, want) {
		t.Errorf("n1 tagged addresses = %v, %v; want %v", n.Node.TaggedAddresses, err, want)
	}
	if _, err := c.Catalog().Register(extRegistration(), nil); err != nil {
		t.Fatal(err)
	}
	n, _, err = c.Catalog().Node("ext1", nil)
	if err != nil || !reflect.DeepEqual(n.Node.TaggedAddresses, map[string]string{"wan": "198.51.100.10"}) {
		t.Errorf("ext1 tagged addresses = %v, %v", n.Node.TaggedAddresses, err)
	}
	if got := nodeTaggedAddresses(&discovery.Node{Address: "2001:db8::1"}); got["lan_ipv6"] != "2001:db8::1" || got["lan_ipv4"] != "" {
		t.Errorf("IPv6 node tagged addresses = %v", got)
	}
}

// TestCatalogRegisterProxyACL: a connect-proxy record needs service:write
// on its destination as well as on itself, as in Consul.
func TestCatalogRegisterProxyACL(t *testing.T) {
	f, _ := newOperatorFixture(t)
	reg := &api.CatalogRegistration{Node: "ext1", Address: "192.0.2.10", Service: proxyRecord()}
	proxyOnly := f.client(t, f.token(t, `node "ext1" { policy = "write" } service "web-proxy" { policy = "write" }`))
	if _, err := proxyOnly.Catalog().Register(reg, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("register a proxy without service:write on web: %v", err)
	}
	both := f.client(t, f.token(t, `node "ext1" { policy = "write" } service "web-proxy" { policy = "write" } service "web" { policy = "write" }`))
	if _, err := both.Catalog().Register(reg, nil); err != nil {
		t.Errorf("register a proxy with service:write on it and web: %v", err)
	}
}

// TestAgentRegisterProxyACL: a connect-proxy registered through an agent
// speaks for its destination as one registered through the catalog does
// (the Connect views list it among web's endpoints), so the same rule
// holds: service:write on the proxy and on web.
func TestAgentRegisterProxyACL(t *testing.T) {
	f, _ := newOperatorFixture(t)
	p := proxyRecord()
	reg := &api.AgentServiceRegistration{Kind: p.Kind, ID: p.ID, Name: p.Service, Port: p.Port,
		Proxy: &api.AgentServiceConnectProxyConfig{DestinationServiceName: "web", LocalServicePort: 8080}}
	proxyOnly := f.client(t, f.token(t, `service "web-proxy" { policy = "write" }`))
	if err := proxyOnly.Agent().ServiceRegister(reg); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("register a proxy for web without service:write on web: %v; want a 403", err)
	}
	both := f.client(t, f.token(t, `service "web-proxy" { policy = "write" } service "web" { policy = "write" }`))
	if err := both.Agent().ServiceRegister(reg); err != nil {
		t.Errorf("register a proxy with service:write on it and web: %v", err)
	}
}
