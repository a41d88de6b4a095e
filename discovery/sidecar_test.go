package discovery

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/acl"
)

func sidecarReg(sc *ServiceRegistration) *ServiceRegistration {
	return &ServiceRegistration{
		ID: "foo-1", Name: "foo", Port: 8000, Address: "127.0.0.5", Tags: []string{"v1"},
		Meta:    map[string]string{"team": "a", MetaUser: "foo"},
		Connect: &ServiceConnect{SidecarService: sc},
	}
}

func mustBuild(t *testing.T, reg *ServiceRegistration) *RegisterServiceRequest {
	t.Helper()
	req, err := reg.Build("n1", "api")
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestBuildSidecarRecord: a SidecarService registration builds a
// connect-proxy record with Consul's ID and name defaults, the tags and
// meta of its service (less the per-user identity) unless it sets its
// own, the node proxy's mesh port and no address (the node's), and a
// Proxy that names the service, where the proxy forwards it and the
// upstreams as registered. It is inert: not a mesh service, no identity.
func TestBuildSidecarRecord(t *testing.T) {
	ups := []ConnectUpstream{{DestinationName: "db", LocalBindPort: 19001}}
	req := mustBuild(t, sidecarReg(&ServiceRegistration{Proxy: &ConnectProxyConfig{Upstreams: ups}}))
	want := &Instance{
		Node: "n1", ID: "foo-1-sidecar-proxy", Service: "foo-sidecar-proxy", Tags: []string{"v1"},
		Port: MeshPort, Meta: map[string]string{"team": "a"}, Weights: Weights{Passing: 1, Warning: 1},
		Source: "api", Kind: KindConnectProxy, SidecarFor: "foo-1",
		Proxy: &ConnectProxyConfig{
			DestinationServiceName: "foo", DestinationServiceID: "foo-1",
			LocalServiceAddress: "127.0.0.5", LocalServicePort: 8000, Upstreams: ups,
		},
	}
	if !reflect.DeepEqual(req.Sidecar, want) {
		t.Errorf("sidecar = %+v\nproxy %+v\nwant %+v\nproxy %+v", req.Sidecar, req.Sidecar.Proxy, want, want.Proxy)
	}
	if req.Sidecar.InMesh() || !req.Sidecar.Inert() {
		t.Errorf("the sidecar record is a mesh service; want it inert")
	}
	if want := []Upstream{{DestinationName: "db", LocalBindPort: 19001}}; !reflect.DeepEqual(req.Instance.Upstreams, want) {
		t.Errorf("the service's upstreams = %+v, want %+v (the node proxy reads them there)", req.Instance.Upstreams, want)
	}

	// What the SidecarService sets wins; the mesh port may be named.
	req = mustBuild(t, sidecarReg(&ServiceRegistration{ID: "foo-1-sidecar-proxy", Name: "foo-envoy", Port: MeshPort,
		Tags: []string{"sc"}, Meta: map[string]string{"k": "v"}, Weights: &Weights{Passing: 3}, EnableTagOverride: true}))
	if sc := req.Sidecar; sc.Service != "foo-envoy" || !reflect.DeepEqual(sc.Tags, []string{"sc"}) ||
		!reflect.DeepEqual(sc.Meta, map[string]string{"k": "v"}) || sc.Weights != (Weights{Passing: 3}) || !sc.EnableTagOverride || sc.Port != MeshPort {
		t.Errorf("sidecar with its own fields = %+v", sc)
	}

	// No port, or udp: the node proxy accepts nothing for the service.
	noPort := sidecarReg(&ServiceRegistration{})
	noPort.Port = 0
	if req := mustBuild(t, noPort); req.Sidecar != nil {
		t.Errorf("a service without a port got sidecar %+v", req.Sidecar)
	}
	udp := sidecarReg(&ServiceRegistration{})
	udp.Meta = map[string]string{MetaProtocol: ProtocolUDP}
	if req := mustBuild(t, udp); req.Sidecar != nil {
		t.Errorf("a udp service got sidecar %+v", req.Sidecar)
	}
	if req := mustBuild(t, &ServiceRegistration{Name: "bar", Port: 80}); req.Sidecar != nil {
		t.Errorf("a service without SidecarService got sidecar %+v", req.Sidecar)
	}

	for _, c := range []struct {
		sc   ServiceRegistration
		want string
	}{
		{ServiceRegistration{Port: 21000}, "Connect.SidecarService.Port: 21000"},
		{ServiceRegistration{Address: "10.0.0.1"}, "Connect.SidecarService.Address"},
		{ServiceRegistration{ID: "other"}, "Connect.SidecarService.ID"},
		{ServiceRegistration{Kind: KindMeshGateway}, "Connect.SidecarService.Kind"},
		{ServiceRegistration{Name: "a b"}, "Connect.SidecarService.Name"},
		{ServiceRegistration{Meta: map[string]string{MetaUser: "x"}}, "Connect.SidecarService.Meta." + MetaUser},
		{ServiceRegistration{Checks: []*CheckType{{TTL: Duration(1)}}}, "Connect.SidecarService.Checks: not supported"},
		{ServiceRegistration{SocketPath: "/x"}, "Connect.SidecarService.SocketPath: not supported"},
	} {
		sc := c.sc
		if _, err := sidecarReg(&sc).Build("n1", "api"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("sidecar %+v: %v; want ErrInvalid naming %q", c.sc, err, c.want)
		}
	}
}

func sidecarOf(t *testing.T, s *Store, node, id string) []*Instance {
	t.Helper()
	_, insts, err := s.NodeInstances(nil, node)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Instance
	for _, in := range insts {
		if in.SidecarFor == id {
			out = append(out, in)
		}
	}
	return out
}

// TestSidecarRecordLifecycle: the record is written with its service,
// re-registered with it (keeping its CreateIndex), removed by a
// registration without SidecarService and by the service's
// deregistration, and pinned to its service's node and ID whatever the
// command says.
func TestSidecarRecordLifecycle(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	stNode(t, s, 2, "n2")
	req := mustBuild(t, sidecarReg(&ServiceRegistration{}))
	stMust(t, s.RegisterService(3, req))
	got := sidecarOf(t, s, "n1", "foo-1")
	if len(got) != 1 || got[0].ID != "foo-1-sidecar-proxy" || got[0].CreateIndex != 3 {
		t.Fatalf("after registering: sidecars %+v", got)
	}
	stMust(t, s.RegisterService(4, req))
	if got := sidecarOf(t, s, "n1", "foo-1"); len(got) != 1 || got[0].CreateIndex != 3 || got[0].ModifyIndex != 4 {
		t.Fatalf("after re-registering: sidecars %+v", got)
	}
	plain := mustBuild(t, &ServiceRegistration{ID: "foo-1", Name: "foo", Port: 8000})
	stMust(t, s.RegisterService(5, plain))
	if got := sidecarOf(t, s, "n1", "foo-1"); len(got) != 0 {
		t.Fatalf("after registering without SidecarService: sidecars %+v", got)
	}
	stMust(t, s.RegisterService(6, req))
	stMust(t, s.DeleteService(7, "n1", "foo-1"))
	if _, insts, _ := s.NodeInstances(nil, "n1"); len(insts) != 0 {
		t.Fatalf("after deregistering foo: %+v", insts)
	}

	// A command naming another node, service or kind for its sidecar
	// still writes it beside its own service.
	forged := mustBuild(t, sidecarReg(&ServiceRegistration{}))
	forged.Sidecar.Node, forged.Sidecar.SidecarFor, forged.Sidecar.Kind = "n2", "bar", KindTypical
	forged.Sidecar.Proxy.DestinationServiceName = "bar"
	stMust(t, s.RegisterService(8, forged))
	if _, insts, _ := s.NodeInstances(nil, "n2"); len(insts) != 0 {
		t.Errorf("the sidecar landed on n2: %+v", insts)
	}
	got = sidecarOf(t, s, "n1", "foo-1")
	if len(got) != 1 || got[0].Kind != KindConnectProxy || got[0].Proxy.DestinationServiceName != "foo" {
		t.Errorf("forged sidecar stored as %+v", got)
	}

	// Another service's instance under the sidecar's ID is not replaced.
	stMust(t, s.EnsureService(9, &Instance{Node: "n1", ID: "baz-sidecar-proxy", Service: "other", Port: 1}, nil))
	baz := mustBuild(t, &ServiceRegistration{ID: "baz", Name: "baz", Port: 1, Connect: &ServiceConnect{SidecarService: &ServiceRegistration{}}})
	if err := s.RegisterService(10, baz); !errors.Is(err, ErrInvalid) {
		t.Errorf("sidecar over another service's instance: %v, want ErrInvalid", err)
	}
	if _, in, _ := s.Instance(nil, "n1", "baz"); in != nil {
		t.Errorf("the refused registration wrote its service: %+v", in)
	}
}

// TestSidecarLeavesMeshStateAlone: the data plane's view (instances,
// checks, VIPs) of a node with a sidecar record is the view without it:
// the node proxy gets no second listener, VIP, capture rule or leaf.
func TestSidecarLeavesMeshStateAlone(t *testing.T) {
	build := func(withSidecar bool) (*MeshState, []string) {
		s := NewStore()
		stNode(t, s, 1, "n1")
		req := mustBuild(t, sidecarReg(&ServiceRegistration{Proxy: &ConnectProxyConfig{
			Upstreams: []ConnectUpstream{{DestinationName: "db", LocalBindPort: 19001}}}}))
		if !withSidecar {
			req.Sidecar = nil
		}
		stMust(t, s.RegisterService(2, req))
		ms, err := s.MeshState(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, names, err := s.ServiceNames(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, insts, _ := s.NodeInstances(nil, "n1"); len(insts) != map[bool]int{true: 2, false: 1}[withSidecar] {
			t.Fatalf("withSidecar=%v: node instances %+v", withSidecar, insts)
		}
		return ms, names
	}
	with, withNames := build(true)
	without, withoutNames := build(false)
	if !reflect.DeepEqual(with, without) {
		t.Errorf("MeshState with the sidecar record:\n%+v\nwithout:\n%+v", with, without)
	}
	if !reflect.DeepEqual(withNames, withoutNames) {
		t.Errorf("ServiceNames (VIPs) %v with the sidecar, %v without", withNames, withoutNames)
	}
}

// TestSidecarHealthIsItsService: the health views give a sidecar record
// its service's checks, so a failing service takes its sidecar out of a
// passing-only answer.
func TestSidecarHealthIsItsService(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	reg := sidecarReg(&ServiceRegistration{})
	reg.Check = &CheckType{TTL: Duration(1e9)}
	req := mustBuild(t, reg)
	stMust(t, s.RegisterService(2, req))
	stMust(t, s.UpdateCheck(3, "n1", "service:foo-1", HealthPassing, ""))
	_, entries, err := s.ConnectCheckServiceNodes(nil, "foo", nil, true)
	if err != nil || len(entries) != 1 || entries[0].Instance.ID != "foo-1-sidecar-proxy" ||
		len(entries[0].Checks) != 1 || entries[0].Checks[0].CheckID != "service:foo-1" {
		t.Fatalf("passing connect entries = %+v, %v; want the sidecar with foo's check", entries, err)
	}
	stMust(t, s.UpdateCheck(4, "n1", "service:foo-1", HealthCritical, ""))
	if _, entries, err := s.ConnectCheckServiceNodes(nil, "foo", nil, true); err != nil || len(entries) != 0 {
		t.Errorf("foo critical: passing connect entries = %+v, %v; want none", entries, err)
	}
}

// TestConnectEndpointsPreferProxies: per node, connect-proxy records for
// the service are its Connect endpoints there and hide the node's own
// instances; a node without one lists its instance as before.
func TestConnectEndpointsPreferProxies(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "a") // foo with the agent's sidecar record
	stNode(t, s, 2, "b") // foo alone: its node proxy fronts it
	stNode(t, s, 3, "c") // foo and a connect-proxy registered for it
	stMust(t, s.CatalogRegister(4, &CatalogRegisterRequest{Node: Node{Name: "ext", Address: "192.0.2.1"},
		Service: &Instance{ID: "foo-native", Service: "foo", Port: 9, ConnectNative: true}}))
	stMust(t, s.CatalogRegister(5, &CatalogRegisterRequest{Node: Node{Name: "ext2", Address: "192.0.2.2"},
		Service: &Instance{ID: "foo-native", Service: "foo", Port: 9, ConnectNative: true}}))
	stMust(t, s.CatalogRegister(6, &CatalogRegisterRequest{Node: Node{Name: "ext2", Address: "192.0.2.2"},
		Service: &Instance{ID: "foo-envoy", Service: "foo-envoy", Port: 21000, Tags: []string{"envoy"}, Kind: KindConnectProxy,
			Proxy: &ConnectProxyConfig{DestinationServiceName: "foo"}}}))
	a := mustBuild(t, sidecarReg(&ServiceRegistration{}))
	a.Instance.Node, a.Sidecar.Node = "a", "a"
	stMust(t, s.RegisterService(7, a))
	stMust(t, s.EnsureService(8, &Instance{Node: "b", ID: "foo-1", Service: "foo", Port: 8000}, nil))
	stMust(t, s.EnsureService(9, &Instance{Node: "c", ID: "foo-1", Service: "foo", Port: 8000}, nil))
	stMust(t, s.EnsureService(10, &Instance{Node: "c", ID: "foo-proxy", Service: "foo-proxy", Port: 8001,
		Kind: KindConnectProxy, Proxy: &ConnectProxyConfig{DestinationServiceName: "foo"}}, nil))

	ids := func(tags []string) []string {
		_, entries, err := s.ConnectServiceNodes(nil, "foo", tags)
		if err != nil {
			t.Fatal(err)
		}
		_, checked, err := s.ConnectCheckServiceNodes(nil, "foo", tags, false)
		if err != nil {
			t.Fatal(err)
		}
		var out, out2 []string
		for _, e := range entries {
			out = append(out, e.Node.Name+"/"+e.Instance.ID)
		}
		for _, e := range checked {
			out2 = append(out2, e.Node.Name+"/"+e.Instance.ID)
		}
		if !reflect.DeepEqual(out, out2) {
			t.Errorf("catalog connect %v, health connect %v: want the same endpoints", out, out2)
		}
		return out
	}
	want := []string{"b/foo-1", "ext/foo-native", "a/foo-1-sidecar-proxy", "c/foo-proxy", "ext2/foo-envoy"}
	if got := ids(nil); !reflect.DeepEqual(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Errorf("connect endpoints of foo = %v, want %v", got, want)
	}
	// A tag filter applies to what is listed; a node whose proxy does not
	// match lists nothing rather than its instance.
	if got := ids([]string{"envoy"}); !reflect.DeepEqual(got, []string{"ext2/foo-envoy"}) {
		t.Errorf("connect endpoints of foo tagged envoy = %v, want [ext2/foo-envoy]", got)
	}
}

// TestAuthorizeSidecarRegistration: as Consul's agent vets a sidecar, its
// registration needs service:write on the service and on the sidecar's
// name; a service identity grants both.
func TestAuthorizeSidecarRegistration(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	req := mustBuild(t, sidecarReg(&ServiceRegistration{}))
	authz := func(rules ...acl.Rule) *acl.Authorizer { return acl.NewAuthorizer("t", acl.DefaultDeny, rules) }
	write := func(name string) acl.Rule {
		return acl.Rule{Resource: acl.ResourceService, Name: name, Access: acl.AccessWrite}
	}
	for _, c := range []struct {
		name string
		a    *acl.Authorizer
		ok   bool
	}{
		{"service only", authz(write("foo")), false},
		{"sidecar only", authz(write("foo-sidecar-proxy")), false},
		{"both", authz(write("foo"), write("foo-sidecar-proxy")), true},
		{"service identity", authz(acl.ServiceIdentityRules("foo")...), true},
	} {
		err := AuthorizeCommand(c.a, s, req)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, acl.ErrPermissionDenied)) {
			t.Errorf("%s: %v; want allowed=%v", c.name, err, c.ok)
		}
		if err2 := AuthorizeCommand(c.a, s, *req); (err == nil) != (err2 == nil) {
			t.Errorf("%s: by value %v, by pointer %v", c.name, err2, err)
		}
	}
	// Without a sidecar, foo's rule is enough (the record it had goes
	// with the service, as a deregistration takes it).
	plain := mustBuild(t, &ServiceRegistration{ID: "foo-1", Name: "foo", Port: 8000})
	if err := AuthorizeCommand(authz(write("foo")), s, plain); err != nil {
		t.Errorf("registration without a sidecar: %v", err)
	}
	// A sidecar renamed over an existing record needs write on the old
	// name too.
	stMust(t, s.RegisterService(2, req))
	renamed := mustBuild(t, sidecarReg(&ServiceRegistration{Name: "foo-envoy"}))
	if err := AuthorizeCommand(authz(write("foo"), write("foo-envoy")), s, renamed); !errors.Is(err, acl.ErrPermissionDenied) {
		t.Errorf("renaming the sidecar without write on its old name: %v", err)
	}
	if err := AuthorizeCommand(authz(write("foo"), write("foo-envoy"), write("foo-sidecar-proxy")), s, renamed); err != nil {
		t.Errorf("renaming the sidecar: %v", err)
	}
}
