package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestMeshTLSClients: a client that is not a host's proxy gets the
// instances' own addresses and no TLS, unless its bootstrap asks for mesh
// mTLS in its node metadata; then it reaches them as a proxy does. A
// proxyless gRPC client cannot (gRPC has no SDS) and keeps plain ones.
func TestMeshTLSClients(t *testing.T) {
	st := threeNodes().
		add(discovery.Instance{Node: "node-b", ID: "web-1", Service: "web", Address: "10.0.0.2", Port: 8080, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-c", ID: "web-2", Service: "web", Address: "10.0.0.3", Port: 8081, Meta: httpMeta()}, "").
		at(7)
	v := NewView(st, Options{})
	meta := func(v *structpb.Value) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{MetaMeshMTLS: v}}
	}
	for _, tc := range []struct {
		name     string
		node     *core.Node
		wantMesh bool
	}{
		{"plain client", &core.Node{Id: "edge"}, false},
		{"asks for mesh mTLS", &core.Node{Id: "edge", Metadata: meta(structpb.NewBoolValue(true))}, true},
		{"asks as a string", &core.Node{Id: "edge", Metadata: meta(structpb.NewStringValue("true"))}, true},
		{"says false", &core.Node{Id: "edge", Metadata: meta(structpb.NewBoolValue(false))}, false},
		{"proxyless gRPC", &core.Node{Id: "app", UserAgentName: "gRPC Go", Metadata: meta(structpb.NewBoolValue(true))}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := v.NodeInfo(tc.node)
			if info.Mesh() {
				t.Fatalf("%s was taken for a host's proxy", tc.node.Id)
			}
			snap, err := Build(v, info)
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(snap); err != nil {
				t.Fatal(err)
			}
			c := clusterOf(t, snap, "web")
			if tc.wantMesh {
				wantEndpoints(t, snap, "web", "10.0.0.2:15443", "10.0.0.3:15443")
				if len(c.GetTransportSocketMatches()) != 1 {
					t.Fatalf("cluster web has no mTLS transport socket: %v", c.GetTransportSocketMatches())
				}
			} else {
				wantEndpoints(t, snap, "web", "10.0.0.2:8080", "10.0.0.3:8081")
				if len(c.GetTransportSocketMatches()) != 0 {
					t.Fatalf("a plain client got TLS: %v", c.GetTransportSocketMatches())
				}
			}
			// Never a host's listeners: it is not a proxy of this mesh.
			for _, name := range names(snap, "type.googleapis.com/envoy.config.listener.v3.Listener") {
				if name == "vmesh/inbound" || name == "vmesh/outbound" {
					t.Errorf("%s got listener %s", tc.name, name)
				}
			}
		})
	}
}
