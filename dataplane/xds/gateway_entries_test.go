package xds

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/proto"
)

// TestGatewayEntriesConfigureNothing: ingress-gateway and
// terminating-gateway entries, even ones named like a mesh service and
// linking every service, leave every node's xDS resources exactly as they
// were: vmesh runs no gateways.
func TestGatewayEntriesConfigureNothing(t *testing.T) {
	s := discovery.NewStore()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.EnsureNode(1, &discovery.Node{ID: "a", Name: "node-a", Address: "10.0.0.1", Datacenter: "dc1"}))
	must(s.EnsureNode(2, &discovery.Node{ID: "b", Name: "node-b", Address: "10.0.0.2", Datacenter: "dc1"}))
	must(s.EnsureService(3, &discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 8080, Meta: map[string]string{"protocol": "http"}}, nil))
	must(s.EnsureService(4, &discovery.Instance{Node: "node-b", ID: "orders-1", Service: "orders", Port: 9000}, nil))

	snapshot := func() *cache.Snapshot {
		t.Helper()
		st, err := s.MeshState(nil)
		must(err)
		st.Index = 1 // the version, which a write of any table moves
		v := NewView(st, Options{})
		snap, err := Build(v, v.NodeInfo(meshNode))
		must(err)
		return snap
	}
	before := snapshot()

	for i, body := range []string{
		`{"Kind":"ingress-gateway","Name":"web","Listeners":[{"Port":8443,"Protocol":"http","Services":[{"Name":"*"}]},{"Port":9000,"Services":[{"Name":"orders"}]}]}`,
		`{"Kind":"terminating-gateway","Name":"egress","Services":[{"Name":"*","CAFile":"ca.pem"},{"Name":"payments","SNI":"pay.example"}]}`,
	} {
		e, err := discovery.DecodeConfigEntry([]byte(body))
		must(err)
		must(s.ConfigEntryApply(uint64(10+i), discovery.ConfigEntryUpsert, e))
	}
	after := snapshot()

	for _, typ := range []resource.Type{resource.ListenerType, resource.ClusterType, resource.RouteType, resource.EndpointType, resource.SecretType} {
		b, a := before.GetResources(typ), after.GetResources(typ)
		if len(a) != len(b) {
			t.Errorf("%s: %d resources before the gateway entries, %d after", typ, len(b), len(a))
		}
		for name, r := range b {
			if !proto.Equal(r, a[name]) {
				t.Errorf("%s %q changed with the gateway entries", typ, name)
			}
		}
	}
}
