package xds

import (
	"testing"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/vmesh/vmesh/discovery"
)

// TestInboundSurvivesADeadInstance: peers reach a host's instances through
// its one mesh endpoint, so the host's inbound is where a dead instance
// must be stepped around: the local clusters eject an instance after 5
// consecutive failures (as the service clusters do), and the inbound HTTP
// route retries a connect failure (for any method: nothing reached the
// app) on another instance.
func TestInboundSurvivesADeadInstance(t *testing.T) {
	st := threeNodes().
		add(discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-a", ID: "web-2", Service: "web", Port: 8081, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-a", ID: "api-1", Service: "api", Port: 9090, Meta: grpcMeta()}, "").
		add(discovery.Instance{Node: "node-a", ID: "db-1", Service: "db", Port: 5432}, "").
		at(1)
	v := NewView(st, Options{})
	snap, err := Build(v, v.NodeInfo(meshNode))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"web", "api", "db"} {
		od := clusterOf(t, snap, localClusterPrefix+k).GetOutlierDetection()
		if od.GetConsecutive_5Xx().GetValue() != 5 || od.GetBaseEjectionTime().AsDuration() <= 0 || !od.GetAlwaysEjectOneHost().GetValue() {
			t.Errorf("local cluster of %s: outlier detection %v, want 5 consecutive failures to eject", k, od)
		}
		if k == "db" {
			continue // TCP: no route to retry on
		}
		var h hcm.HttpConnectionManager
		f := inboundChain(t, snap, k).GetFilters()
		if len(f) != 1 || f[0].GetName() != wellknown.HTTPConnectionManager {
			t.Fatalf("inbound chain of %s: filters %v, want one HTTP connection manager", k, f)
		}
		if err := f[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		routes := h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()
		rp := routes[len(routes)-1].GetRoute().GetRetryPolicy()
		if rp.GetRetryOn() != "connect-failure" || rp.GetNumRetries().GetValue() != localConnectRetries {
			t.Errorf("inbound route of %s: retry policy %v, want connect-failure, %d retries", k, rp, localConnectRetries)
		}
	}
}
