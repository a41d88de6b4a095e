package xds

import (
	"errors"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/types/known/durationpb"
)

// grpcSnapshots builds the gRPC fixture for both kinds of client.
func grpcSnapshots(t *testing.T) (mesh, app *cache.Snapshot) {
	t.Helper()
	st := threeNodes().
		add(discovery.Instance{Node: "node-a", ID: "orders-1", Service: "orders", Port: 9000, Meta: grpcMeta()}, "").
		add(discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 80, Meta: httpMeta(),
			Upstreams: []discovery.Upstream{{DestinationName: "orders", LocalBindAddress: "127.0.0.1", LocalBindPort: 19001}}}, "").
		at(5)
	v := NewView(st, Options{})
	var err error
	if mesh, err = Build(v, v.NodeInfo(meshNode)); err != nil {
		t.Fatal(err)
	}
	if app, err = Build(v, v.NodeInfo(appNode)); err != nil {
		t.Fatal(err)
	}
	return mesh, app
}

// edit returns a copy of snap with typ's resources changed by fn.
func edit(t *testing.T, snap *cache.Snapshot, typ resource.Type, fn func(map[string]types.Resource)) *cache.Snapshot {
	t.Helper()
	all := map[resource.Type][]types.Resource{}
	for _, tt := range []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		res := map[string]types.Resource{}
		for n, r := range snap.GetResources(tt) {
			res[n] = r
		}
		if tt == typ {
			fn(res)
		}
		for _, r := range res {
			all[tt] = append(all[tt], r)
		}
	}
	out, err := cache.NewSnapshot("1", all)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheck(t *testing.T) {
	mesh, app := grpcSnapshots(t)
	for _, s := range []*cache.Snapshot{mesh, app} {
		if err := Check(s); err != nil {
			t.Fatalf("Check of a good snapshot: %v", err)
		}
	}
	// Why Check exists: Consistent does not see api_listener routes, so it
	// calls a proxyless snapshot broken.
	if err := app.Consistent(); err == nil {
		t.Error("Snapshot.Consistent now understands api_listeners; Check may no longer be needed for that")
	}

	cases := []struct {
		name string
		snap *cache.Snapshot
		want string
	}{
		{"route nobody uses", edit(t, mesh, resource.RouteType, func(m map[string]types.Resource) {
			m["extra"] = &route.RouteConfiguration{Name: "extra"}
		}), `route "extra" is not referred to`},
		{"api listener's route missing", edit(t, app, resource.RouteType, func(m map[string]types.Resource) {
			delete(m, "orders")
		}), `route "orders" is referred to by [listener orders] but missing`},
		{"filter chain's route missing", edit(t, mesh, resource.RouteType, func(m map[string]types.Resource) {
			delete(m, sourcedName("web", "orders")) // web's upstream: sourced.go
		}), `route "vmesh/from/web/orders" is referred to by [listener vmesh/upstream/127.0.0.1:19001]`},
		{"cluster's endpoints missing", edit(t, mesh, resource.EndpointType, func(m map[string]types.Resource) {
			delete(m, "orders")
		}), `endpoints "orders" is referred to by [cluster orders cluster vmesh/from/web/orders]`},
		{"endpoints without a cluster", edit(t, mesh, resource.EndpointType, func(m map[string]types.Resource) {
			m["ghost"] = &endpoint.ClusterLoadAssignment{ClusterName: "ghost"}
		}), `endpoints "ghost" is not referred to`},
		{"route to a missing cluster", edit(t, app, resource.ClusterType, func(m map[string]types.Resource) {
			delete(m, "orders")
			delete(m, "web")
		}), `cluster "orders" is referred to by [route orders]`},
		{"tcp proxy to a missing cluster", edit(t, mesh, resource.ClusterType, func(m map[string]types.Resource) {
			delete(m, PassthroughCluster)
		}), `cluster "vmesh/passthrough" is referred to`},
		{"invalid resource", edit(t, mesh, resource.ClusterType, func(m map[string]types.Resource) {
			m["bad"] = &cluster.Cluster{Name: "bad", ConnectTimeout: durationpb.New(-time.Second)}
		}), "cluster \"bad\": invalid Cluster.ConnectTimeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := Check(tc.snap); err == nil || !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want ErrInconsistent mentioning %q", err, tc.want)
			}
		})
	}
}
