package xds

import (
	"testing"

	"github.com/vmesh/vmesh/discovery"
)

// TestCatalogExternalNodeEndpoints: a node /v1/catalog/register made
// (Node.External, without Consul ESM's external-node meta) runs no vmesh
// proxy: its instances are plain endpoints at their own port, next to
// the mesh endpoints of the agents' instances.
func TestCatalogExternalNodeEndpoints(t *testing.T) {
	st := newCatalog(node("node-a", "10.0.0.1"), node("node-b", "10.0.0.2"),
		&discovery.Node{Name: "ext", Address: "192.0.2.10", External: true}).
		add(discovery.Instance{Node: "node-b", ID: "pg-b", Service: "postgres", Port: 5432}, "").
		add(discovery.Instance{Node: "ext", ID: "pg-ext", Service: "postgres", Port: 5432}, "").
		at(20)
	v := NewView(st, Options{})
	snap, err := Build(v, v.NodeInfo(meshNode))
	if err != nil {
		t.Fatal(err)
	}
	wantEndpoints(t, snap, "postgres", "10.0.0.2:15443", "192.0.2.10:5432")
	eps := loadAssignmentOf(t, snap, "postgres").GetEndpoints()[0].GetLbEndpoints()
	for _, ep := range eps {
		mtls := ep.GetMetadata() != nil
		addr := ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
		if mtls != (addr == "10.0.0.2") {
			t.Errorf("endpoint %s: mTLS match %v; only the agent's endpoint may carry it", addr, mtls)
		}
	}
}
