package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// gatewayWriter adds config entries to catalogWriter's commands.
type gatewayWriter struct{ catalogWriter }

func (w *gatewayWriter) Apply(ctx context.Context, cmd discovery.Command) (uint64, error) {
	if c, ok := cmd.(discovery.ConfigEntryRequest); ok {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.idx++
		return w.idx, w.s.ConfigEntryApply(w.idx, c.Op, &c.Entry)
	}
	return w.catalogWriter.Apply(ctx, cmd)
}

// newGatewayFixture is an API with ACLs on (default deny) over a catalog
// with web on agent node n1 and redis on external node ext1.
func newGatewayFixture(t *testing.T) *aclFixture {
	t.Helper()
	f := &aclFixture{s: discovery.NewStore()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.s.EnsureNode(f.next(), &discovery.Node{ID: "00000001-0000-0000-0000-000000000000", Name: "n1", Address: "10.0.0.1", Datacenter: "dc1"}))
	must(f.s.EnsureService(f.next(), &discovery.Instance{Node: "n1", ID: "web-n1", Service: "web", Port: 80, Weights: discovery.Weights{Passing: 1, Warning: 1}}, nil))
	must(f.s.CatalogRegister(f.next(), &discovery.CatalogRegisterRequest{Node: discovery.Node{Name: "ext1", Address: "192.0.2.10"},
		Service: &discovery.Instance{ID: "redis", Service: "redis", Port: 6379, Weights: discovery.Weights{Passing: 1, Warning: 1}}}))
	f.mgmt = "4d1b8a4e-0000-4000-8000-00000000000a"
	must(f.s.ACLBootstrap(f.next(), &acl.Token{AccessorID: "4d1b8a4e-0000-4000-8000-00000000000b", SecretID: f.mgmt,
		Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}}, 0))
	res, err := acl.NewResolver(acl.ResolverConfig{Store: f.s, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	must(err)
	a := &API{Store: f.s, Writer: &gatewayWriter{catalogWriter{s: f.s, idx: 1000}}, Cluster: fakeCluster{},
		NodeName: "n1", NodeID: "00000001-0000-0000-0000-000000000000", Datacenter: "dc1", Version: "test",
		ACL: storeResolver{res}}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f
}

// TestGatewayEntriesThroughConsulAPI: consul/api writes both gateway
// kinds, reads them back, and reads the links Consul derives from them;
// writing needs mesh:write (service:write on the gateway is not enough),
// reading the links service:read on the gateway, and a linked service the
// token may not read is left out.
func TestGatewayEntriesThroughConsulAPI(t *testing.T) {
	f := newGatewayFixture(t)
	term := &api.TerminatingGatewayConfigEntry{Kind: api.TerminatingGateway, Name: "egress", Services: []api.LinkedService{
		{Name: "billing", CAFile: "b/ca.pem", CertFile: "b/c.pem", KeyFile: "b/k.pem", SNI: "billing.example"},
		{Name: "*", CAFile: "ca.pem"},
	}}
	ingress := &api.IngressGatewayConfigEntry{Kind: api.IngressGateway, Name: "ingress", Listeners: []api.IngressListener{
		{Port: 8080, Protocol: "http", Services: []api.IngressService{{Name: "web", Hosts: []string{"web.example.com"}}}},
	}}

	svcWriter := f.client(t, f.token(t, `service "egress" { policy = "write" } service "ingress" { policy = "write" }`))
	if _, _, err := svcWriter.ConfigEntries().Set(term, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("write a terminating-gateway with service:write only: %v; want 403 (mesh:write)", err)
	}
	meshWriter := f.client(t, f.token(t, `mesh = "write"`))
	for _, e := range []api.ConfigEntry{term, ingress} {
		if ok, _, err := meshWriter.ConfigEntries().Set(e, nil); err != nil || !ok {
			t.Fatalf("write %s with mesh:write: %v, %v", e.GetName(), ok, err)
		}
	}
	mgmt := f.client(t, f.mgmt)
	got, _, err := mgmt.ConfigEntries().Get(api.IngressGateway, "ingress", nil)
	if err != nil {
		t.Fatal(err)
	}
	if in := got.(*api.IngressGatewayConfigEntry); !reflect.DeepEqual(in.Listeners, ingress.Listeners) {
		t.Errorf("ingress read back with listeners %+v; want %+v", in.Listeners, ingress.Listeners)
	}

	links, meta, err := mgmt.Catalog().GatewayServices("egress", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []*api.GatewayService{
		{Gateway: api.CompoundServiceName{Name: "egress"}, Service: api.CompoundServiceName{Name: "billing"}, GatewayKind: api.ServiceKindTerminatingGateway,
			CAFile: "b/ca.pem", CertFile: "b/c.pem", KeyFile: "b/k.pem", SNI: "billing.example"},
		{Gateway: api.CompoundServiceName{Name: "egress"}, Service: api.CompoundServiceName{Name: "redis"}, GatewayKind: api.ServiceKindTerminatingGateway,
			CAFile: "ca.pem", FromWildcard: true},
		{Gateway: api.CompoundServiceName{Name: "egress"}, Service: api.CompoundServiceName{Name: "web"}, GatewayKind: api.ServiceKindTerminatingGateway,
			CAFile: "ca.pem", FromWildcard: true},
	}
	if !reflect.DeepEqual(links, want) {
		t.Errorf("egress links:\n got %s\nwant %s", jsonDump(links), jsonDump(want))
	}
	if meta.LastIndex == 0 {
		t.Error("no X-Consul-Index")
	}

	// service:read on the gateway, then per linked service.
	code, _, _ := f.get(t, f.token(t, `service "redis" { policy = "read" }`), "/v1/catalog/gateway-services/egress")
	if code != http.StatusForbidden {
		t.Errorf("links without service:read on the gateway: %d; want 403", code)
	}
	code, hdr, body := f.get(t, f.token(t, `service "egress" { policy = "read" } service "redis" { policy = "read" }`), "/v1/catalog/gateway-services/egress")
	if code != http.StatusOK || !filteredHeader(hdr) || !strings.Contains(body, `"redis"`) || strings.Contains(body, `"billing"`) || strings.Contains(body, `"web"`) {
		t.Errorf("links as a token that reads egress and redis: %d filtered=%v %s; want redis only", code, filteredHeader(hdr), body)
	}
	if code, _, body := f.get(t, f.mgmt, "/v1/catalog/gateway-services/nothing"); code != http.StatusOK || strings.TrimSpace(body) != "[]" {
		t.Errorf("links of a name without an entry: %d %s; want 200 []", code, body)
	}

	// An ingress gateway record on ext1 and its health.
	if _, err := mgmt.Catalog().Register(&api.CatalogRegistration{Node: "ext1", Address: "192.0.2.10",
		Service: &api.AgentService{ID: "ingress-1", Service: "ingress", Kind: api.ServiceKindIngressGateway, Port: 8080}}, nil); err != nil {
		t.Fatal(err)
	}
	entries, _, err := mgmt.Health().Ingress("web", false, nil)
	if err != nil || len(entries) != 1 || entries[0].Service.ID != "ingress-1" || entries[0].Node.Node != "ext1" {
		t.Errorf("ingress of web: %s, %v; want ingress-1 on ext1", jsonDump(entries), err)
	}
	if entries, _, err := mgmt.Health().Ingress("redis", false, nil); err != nil || len(entries) != 0 {
		t.Errorf("ingress of redis (not exposed): %s, %v; want none", jsonDump(entries), err)
	}
	// service:read on the service asked about, else nothing (not a 403),
	// as Consul; then node:read and service:read on each gateway.
	noWeb := f.client(t, f.token(t, `service "ingress" { policy = "read" } node "ext1" { policy = "read" }`))
	if entries, _, err := noWeb.Health().Ingress("web", false, nil); err != nil || len(entries) != 0 {
		t.Errorf("ingress of web without service:read on web: %s, %v; want an empty answer", jsonDump(entries), err)
	}
	readsAll := f.client(t, f.token(t, `service "web" { policy = "read" } service "ingress" { policy = "read" } node "ext1" { policy = "read" }`))
	if entries, _, err := readsAll.Health().Ingress("web", false, nil); err != nil || len(entries) != 1 {
		t.Errorf("ingress of web with read on web, the gateway and its node: %s, %v; want ingress-1", jsonDump(entries), err)
	}
	if entries, _, err := readsAll.Health().Ingress("web", false, &api.QueryOptions{Filter: `Service.ID == "other"`}); err != nil || len(entries) != 0 {
		t.Errorf("ingress of web with a filter that matches nothing: %s, %v", jsonDump(entries), err)
	}

	// Bad input is a 400 naming the field.
	bad := &api.IngressGatewayConfigEntry{Kind: api.IngressGateway, Name: "bad", Listeners: []api.IngressListener{
		{Port: 80, Protocol: "udp", Services: []api.IngressService{{Name: "web"}}}}}
	if _, _, err := mgmt.ConfigEntries().Set(bad, nil); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "Listeners[0].Protocol") {
		t.Errorf("a udp listener: %v; want a 400 naming Listeners[0].Protocol", err)
	}
}
