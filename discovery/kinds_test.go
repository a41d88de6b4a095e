package discovery

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestBuildRecordKinds: Consul's proxy and gateway kinds are accepted
// with their Proxy block kept as registered, under Consul's own rules;
// a typical service still may not carry a top-level Proxy.
func TestBuildRecordKinds(t *testing.T) {
	expose := json.RawMessage(`{"Checks":true,"Paths":[{"ListenerPort":21500,"Path":"/metrics","LocalPathPort":8080,"Protocol":"http2"}]}`)
	reg := &ServiceRegistration{Kind: KindConnectProxy, Name: "web-proxy", Port: 21000,
		Proxy: &ConnectProxyConfig{DestinationServiceName: "web", Mode: "transparent", Expose: expose}}
	req, err := reg.Build("n1", "api")
	if err != nil {
		t.Fatalf("connect-proxy: %v", err)
	}
	if in := req.Instance; in.Kind != KindConnectProxy || in.Proxy == nil || in.Proxy.DestinationServiceName != "web" ||
		in.Proxy.Mode != "transparent" || string(in.Proxy.Expose) != string(expose) || in.InMesh() {
		t.Errorf("connect-proxy instance = %+v (proxy %+v); want the kind and Proxy kept, not in the mesh", in, in.Proxy)
	}
	gw := &ServiceRegistration{Kind: KindMeshGateway, Name: "gw", Port: 8443, Proxy: &ConnectProxyConfig{Config: json.RawMessage(`{"foo":"bar"}`)}}
	if req, err := gw.Build("n1", "api"); err != nil || req.Instance.Kind != KindMeshGateway || string(req.Instance.Proxy.Config) != `{"foo":"bar"}` {
		t.Errorf("mesh-gateway: %+v, %v", req, err)
	}
	// An ingress gateway listens on its config entry's ports: no port
	// needed, as in Consul.
	if req, err := (&ServiceRegistration{Kind: KindIngressGateway, Name: "in-gw"}).Build("n1", "api"); err != nil ||
		req.Instance.Kind != KindIngressGateway || req.Instance.InMesh() {
		t.Errorf("ingress-gateway: %+v, %v; want a record outside the mesh", req, err)
	}
	typ, err := (&ServiceRegistration{Name: "web", Port: 80}).Build("n1", "api")
	if err != nil || !typ.Instance.InMesh() || typ.Instance.Proxy != nil {
		t.Errorf("typical: %+v, %v; want in the mesh, no Proxy", typ, err)
	}

	for _, c := range []struct {
		name string
		reg  ServiceRegistration
		want string
	}{
		{"unknown kind", ServiceRegistration{Kind: "api-gateway", Name: "x", Port: 1}, `Kind: "api-gateway" is not supported`},
		{"proxy without destination", ServiceRegistration{Kind: KindConnectProxy, Name: "x", Port: 1}, "Proxy.DestinationServiceName: a connect-proxy must name"},
		{"gateway without port", ServiceRegistration{Kind: KindTerminatingGateway, Name: "x"}, "Port: a terminating-gateway must have a port"},
		{"typical with Proxy", ServiceRegistration{Name: "x", Port: 1, Proxy: &ConnectProxyConfig{DestinationServiceName: "y"}}, "Proxy.DestinationServiceName: is only for Kind"},
		{"record with a sidecar", ServiceRegistration{Kind: KindMeshGateway, Name: "x", Port: 1, Connect: &ServiceConnect{SidecarService: &ServiceRegistration{}}}, "Connect: a mesh-gateway has no Connect block"},
		{"record with a user", ServiceRegistration{Kind: KindMeshGateway, Name: "x", Port: 1, Meta: map[string]string{MetaUser: "web"}}, "no per-user identity"},
		{"proxy of the servers' service", ServiceRegistration{Kind: KindConnectProxy, Name: "x", Port: 1, Proxy: &ConnectProxyConfig{DestinationServiceName: ServerServiceName}}, "servers' own service"},
	} {
		_, err := c.reg.Build("n1", "api")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want ErrInvalid with %q", c.name, err, c.want)
		}
	}
}

// TestRecordKindsLeftOutOfTheMesh: a proxy or gateway record is in the
// catalog but not in the data plane's view, and gets no VIP.
func TestRecordKindsLeftOutOfTheMesh(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	stMust(t, s.EnsureService(2, &Instance{Node: "n1", ID: "web", Service: "web", Port: 80}, nil))
	stMust(t, s.EnsureService(3, &Instance{Node: "n1", ID: "web-proxy", Service: "web-proxy", Port: 21000,
		Kind: KindConnectProxy, Proxy: &ConnectProxyConfig{DestinationServiceName: "web"}}, nil))
	stMust(t, s.EnsureService(4, &Instance{Node: "n1", ID: "gw", Service: "gw", Port: 8443, Kind: KindMeshGateway}, nil))

	_, names, err := s.ServiceNames(nil)
	if err != nil || !reflect.DeepEqual(names, []string{"web"}) {
		t.Errorf("ServiceNames = %v, %v; want [web] (records get no VIP)", names, err)
	}
	ms, err := s.MeshState(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms.Instances) != 1 || ms.Instances[0].ID != "web" {
		t.Errorf("MeshState instances = %v; want web only", ms.Instances)
	}
	if _, in, err := s.Instance(nil, "n1", "web-proxy"); err != nil || in == nil || in.Proxy == nil || in.Proxy.DestinationServiceName != "web" {
		t.Errorf("the record in the catalog: %+v, %v", in, err)
	}
}
