package xds

import (
	"strconv"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/proto"
)

// TestSidecarRecordIsTheNodeProxy: a Connect.SidecarService registration
// leaves the node proxy's configuration as it is without the sidecar
// record (no second listener, cluster or route), and the record's
// address and port are where that proxy's inbound listener takes the
// service's mTLS: the node's address at the mesh port.
func TestSidecarRecordIsTheNodeProxy(t *testing.T) {
	build := func(withSidecar bool) (mesh, app *cache.Snapshot, sc *discovery.Instance) {
		s := discovery.NewStore()
		if err := s.EnsureNode(1, &discovery.Node{Name: "node-a", Address: "10.0.0.1", Datacenter: "dc1"}); err != nil {
			t.Fatal(err)
		}
		reg := &discovery.ServiceRegistration{Name: "web", Port: 8080, Meta: map[string]string{"protocol": "grpc"}, Connect: &discovery.ServiceConnect{
			SidecarService: &discovery.ServiceRegistration{Proxy: &discovery.ConnectProxyConfig{
				Upstreams: []discovery.ConnectUpstream{{DestinationName: "db", LocalBindPort: 19001}}}}}}
		req, err := reg.Build("node-a", "api")
		if err != nil {
			t.Fatal(err)
		}
		if req.Sidecar == nil {
			t.Fatal("no sidecar record built")
		}
		sc = req.Sidecar
		if !withSidecar {
			req.Sidecar = nil
		}
		if err := s.RegisterService(2, req); err != nil {
			t.Fatal(err)
		}
		st, err := s.MeshState(nil)
		if err != nil {
			t.Fatal(err)
		}
		v := NewView(st, Options{})
		if mesh, err = Build(v, v.NodeInfo(meshNode)); err != nil {
			t.Fatal(err)
		}
		// A proxyless gRPC client (grpc-go's xds:/// resolver) too.
		if app, err = Build(v, v.NodeInfo(appNode)); err != nil {
			t.Fatal(err)
		}
		return mesh, app, sc
	}
	with, withApp, sc := build(true)
	without, withoutApp, _ := build(false)
	if len(withApp.GetResources(resource.ListenerType)) == 0 {
		t.Fatal("the proxyless client got no listener for web")
	}
	for _, pair := range [][2]*cache.Snapshot{{with, without}, {withApp, withoutApp}} {
		for _, typ := range []resource.Type{resource.ListenerType, resource.ClusterType, resource.RouteType, resource.EndpointType, resource.SecretType} {
			a, b := pair[0].GetResources(typ), pair[1].GetResources(typ)
			if len(a) != len(b) {
				t.Errorf("%s: %d resources with the sidecar record, %d without", typ, len(a), len(b))
			}
			for name, r := range a {
				if !proto.Equal(r, b[name]) {
					t.Errorf("%s %q differs with the sidecar record", typ, name)
				}
			}
		}
	}
	in, ok := with.GetResources(resource.ListenerType)[InboundListener].(*listener.Listener)
	if !ok {
		t.Fatal("no inbound listener")
	}
	a := in.GetAddress().GetSocketAddress()
	if got, want := hostPort(a.GetAddress(), int(a.GetPortValue())), "10.0.0.1:"+strconv.Itoa(sc.Port); sc.Address != "" || got != want {
		t.Errorf("inbound listener at %s; the sidecar record says %q (the node's address) port %d", got, sc.Address, sc.Port)
	}
	if n := len(in.GetFilterChains()); n != 1 {
		t.Errorf("inbound listener has %d filter chains, want web's alone", n)
	}
}
