package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// catalog builds a MeshState the way the FSM would fill the store.
type catalog struct {
	st discovery.MeshState
}

func newCatalog(nodes ...*discovery.Node) *catalog {
	c := &catalog{}
	c.st.Nodes = append(c.st.Nodes, nodes...)
	return c
}

func node(name, addr string) *discovery.Node {
	return &discovery.Node{Name: name, Address: addr, Datacenter: "dc1"}
}

// add registers an instance; status "" is passing (no checks).
func (c *catalog) add(in discovery.Instance, status string) *catalog {
	if in.Weights == (discovery.Weights{}) {
		in.Weights = discovery.Weights{Passing: 1, Warning: 1}
	}
	if in.Protocol == "" {
		in.Protocol = in.Meta[discovery.MetaProtocol]
	}
	c.st.Instances = append(c.st.Instances, &in)
	if status != "" {
		c.st.Checks = append(c.st.Checks, &discovery.Check{Node: in.Node, CheckID: "service:" + in.ID, ServiceID: in.ID, ServiceName: in.Service, Status: status})
	}
	return c
}

func (c *catalog) entry(body string) *catalog {
	e, err := discovery.DecodeConfigEntry([]byte(body))
	if err != nil {
		panic(err)
	}
	c.st.ConfigEntries = append(c.st.ConfigEntries, e)
	return c
}

func (c *catalog) at(idx uint64) *discovery.MeshState {
	st := c.st
	st.Index = idx
	return &st
}

func grpcMeta() map[string]string { return map[string]string{"protocol": "grpc"} }
func httpMeta() map[string]string { return map[string]string{"protocol": "http"} }

// meshNode is node-a's in-process proxy; app is a proxyless gRPC client.
var (
	meshNode = &core.Node{Id: "node-a", UserAgentName: "vmesh"}
	appNode  = &core.Node{Id: "app-1", UserAgentName: "gRPC Go"}
)

type fixture struct {
	name  string
	state *discovery.MeshState
	opts  Options
	// check asserts what the fixture is about, so that a careless
	// -update cannot bless a wrong output.
	check func(t *testing.T, mesh, app *cache.Snapshot)
}

func threeNodes() *catalog {
	return newCatalog(node("node-a", "10.0.0.1"), node("node-b", "10.0.0.2"), node("node-c", "10.0.0.3"))
}

func fixtures() []fixture {
	return []fixture{
		{
			name: "http-three-instances-one-critical",
			state: threeNodes().
				add(discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, discovery.HealthPassing).
				add(discovery.Instance{Node: "node-b", ID: "web-2", Service: "web", Address: "10.0.0.2", Port: 8080, Meta: httpMeta(), Weights: discovery.Weights{Passing: 3, Warning: 1}}, discovery.HealthPassing).
				add(discovery.Instance{Node: "node-c", ID: "web-3", Service: "web", Port: 8080, Meta: httpMeta()}, discovery.HealthCritical).
				at(10),
			opts: Options{VIPs: map[string]VIP{"web": {IP: "240.0.0.10"}}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				wantEndpoints(t, mesh, "web", "10.0.0.1:15443", "10.0.0.2:15443")
				wantEndpoints(t, app, "web", "10.0.0.1:8080", "10.0.0.2:8080")
				wantListeners(t, mesh, OutboundListener, InboundListener)
				wantListeners(t, app) // web is HTTP, not gRPC: nothing for proxyless
				// node-a runs web alone: its captured calls speak for web
				// (host.go), through web's sourced route.
				wantRoutes(t, mesh, sourcedName("web", "web"))
			},
		},
		{
			name: "grpc-service",
			state: threeNodes().
				add(discovery.Instance{Node: "node-b", ID: "orders-1", Service: "orders", Port: 9000, Meta: grpcMeta()}, "").
				add(discovery.Instance{Node: "node-c", ID: "orders-2", Service: "orders", Port: 9000, Meta: grpcMeta()}, discovery.HealthWarning).
				entry(`{"Kind":"service-resolver","Name":"orders","ConnectTimeout":"2s","LoadBalancer":{"Policy":"least_request","LeastRequestConfig":{"ChoiceCount":3}}}`).
				at(11),
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				wantListeners(t, app, "orders")
				wantRoutes(t, app, "orders")
				wantEndpoints(t, app, "orders", "10.0.0.2:9000", "10.0.0.3:9000")
				if c := clusterOf(t, app, "orders"); c.GetLbPolicy() != cluster.Cluster_LEAST_REQUEST || c.GetConnectTimeout().AsDuration() != 2*time.Second {
					t.Errorf("orders cluster: lb %v timeout %v", c.GetLbPolicy(), c.GetConnectTimeout().AsDuration())
				}
				if len(clusterOf(t, app, "orders").GetTransportSocketMatches()) != 0 {
					t.Error("a proxyless client got mesh TLS")
				}
				// node-a runs nothing: no inbound; no VIP: only passthrough.
				wantListeners(t, mesh, OutboundListener)
				wantRoutes(t, mesh)
			},
		},
		{
			name: "tcp-service",
			state: threeNodes().
				add(discovery.Instance{Node: "node-a", ID: "db-1", Service: "db", Port: 5432}, "").
				add(discovery.Instance{Node: "node-b", ID: "db-2", Service: "db", Port: 5432, Meta: map[string]string{"protocol": "tcp"}}, "").
				at(12),
			opts: Options{VIPs: map[string]VIP{"db": {IP: "240.0.0.12", Ports: []uint32{5432}}}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				wantRoutes(t, mesh)
				wantListeners(t, mesh, OutboundListener, InboundListener)
				wantEndpoints(t, mesh, "db", "10.0.0.1:15443", "10.0.0.2:15443")
				wantListeners(t, app)
			},
		},
		{
			name: "weighted-split-90-10",
			state: threeNodes().
				add(discovery.Instance{Node: "node-b", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, "").
				add(discovery.Instance{Node: "node-c", ID: "web-v2-1", Service: "web-v2", Port: 8080, Meta: httpMeta()}, "").
				entry(`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"Service":"web"},{"Weight":10,"Service":"web-v2","RequestHeaders":{"Set":{"x-version":"v2"}}}]}`).
				entry(`{"Kind":"service-defaults","Name":"web","Protocol":"http"}`).
				add(discovery.Instance{Node: "node-a", ID: "frontend-1", Service: "frontend", Port: 3000,
					Upstreams: []discovery.Upstream{{DestinationName: "web", LocalBindAddress: "127.0.0.1", LocalBindPort: 19001}}}, "").
				at(13),
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				// frontend's upstream to web: routes and clusters carry
				// frontend's identity (sourced.go).
				rc := routeOf(t, mesh, sourcedName("frontend", "web"))
				ws := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()
				if len(ws) != 2 || ws[0].GetName() != sourcedName("frontend", "web") || ws[0].GetWeight().GetValue() != 9000 ||
					ws[1].GetName() != sourcedName("frontend", "web-v2") || ws[1].GetWeight().GetValue() != 1000 {
					t.Errorf("weighted clusters = %v", ws)
				}
			},
		},
		{
			name: "header-routing",
			state: threeNodes().
				add(discovery.Instance{Node: "node-b", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, "").
				add(discovery.Instance{Node: "node-b", ID: "web-canary-1", Service: "web-canary", Port: 8081, Meta: httpMeta()}, "").
				add(discovery.Instance{Node: "node-c", ID: "admin-1", Service: "admin", Port: 8082, Meta: httpMeta()}, "").
				entry(`{"Kind":"service-router","Name":"web","Routes":[
					{"Match":{"HTTP":{"Header":[{"Name":"x-canary","Exact":"true"}]}},"Destination":{"Service":"web-canary"}},
					{"Match":{"HTTP":{"PathPrefix":"/admin","Methods":["GET","POST"],"QueryParam":[{"Name":"debug","Present":true}]}},
					 "Destination":{"Service":"admin","PrefixRewrite":"/","RequestTimeout":"3s","NumRetries":2,"RetryOnConnectFailure":true,"RetryOnStatusCodes":[503]}},
					{"Match":{"HTTP":{"PathRegex":"/v[0-9]+/.*","Header":[{"Name":"x-user","Prefix":"test-","IgnoreCase":true,"Invert":true}]}},
					 "Destination":{"NumRetries":1,"ResponseHeaders":{"Add":{"x-served-by":"web"},"Remove":["server"]}}}]}`).
				entry(`{"Kind":"service-resolver","Name":"web-canary","RequestTimeout":"1s","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024},"HashPolicies":[{"Field":"header","FieldValue":"x-user"},{"SourceIP":true,"Terminal":true}]}}`).
				add(discovery.Instance{Node: "node-a", ID: "frontend-1", Service: "frontend", Port: 3000,
					Upstreams: []discovery.Upstream{{DestinationName: "web", LocalBindAddress: "127.0.0.1", LocalBindPort: 19001}}}, "").
				at(14),
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				fe := func(name string) string { return sourcedName("frontend", name) }
				routes := routeOf(t, mesh, fe("web")).GetVirtualHosts()[0].GetRoutes()
				if len(routes) != 4 {
					t.Fatalf("web has %d routes, want 3 from the router and the default", len(routes))
				}
				if h := routes[0].GetMatch().GetHeaders(); len(h) != 1 || h[0].GetName() != "x-canary" || h[0].GetStringMatch().GetExact() != "true" ||
					routes[0].GetRoute().GetCluster() != fe("web-canary") || len(routes[0].GetRoute().GetHashPolicy()) != 2 ||
					routes[0].GetRoute().GetTimeout().AsDuration() != time.Second {
					t.Errorf("canary route = %v", routes[0])
				}
				if r := routes[1].GetRoute(); r.GetCluster() != fe("admin") || r.GetPrefixRewrite() != "/" || r.GetTimeout().AsDuration() != 3*time.Second ||
					r.GetRetryPolicy().GetRetryOn() != "connect-failure,retriable-status-codes" || r.GetRetryPolicy().GetNumRetries().GetValue() != 2 {
					t.Errorf("admin route = %v", routes[1])
				}
				if routes[3].GetMatch().GetPrefix() != "/" || routes[3].GetRoute().GetCluster() != fe("web") {
					t.Errorf("default route = %v", routes[3])
				}
				if clusterOf(t, mesh, "web-canary").GetLbPolicy() != cluster.Cluster_RING_HASH || clusterOf(t, mesh, fe("web-canary")).GetLbPolicy() != cluster.Cluster_RING_HASH {
					t.Error("web-canary is not ring hash")
				}
			},
		},
		{
			name: "external-service",
			state: newCatalog(node("node-a", "10.0.0.1"), node("node-b", "10.0.0.2"),
				&discovery.Node{Name: "rds", Address: "10.9.0.1", Meta: map[string]string{"external-node": "true"}}).
				add(discovery.Instance{Node: "node-b", ID: "payments-1", Service: "payments", Port: 7000}, "").
				add(discovery.Instance{Node: "node-b", ID: "payments-aws", Service: "payments", Address: "52.1.2.3", Port: 443,
					Meta: map[string]string{"external-source": "aws"}}, "").
				add(discovery.Instance{Node: "rds", ID: "pg", Service: "postgres", Port: 5432}, "").
				add(discovery.Instance{Node: "node-b", ID: "named", Service: "postgres", Address: "db.example.com", Port: 5432,
					Meta: map[string]string{"external-source": "dns"}}, "").
				at(15),
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				wantEndpoints(t, mesh, "payments", "10.0.0.2:15443", "52.1.2.3:443")
				wantEndpoints(t, mesh, "postgres", "10.9.0.1:5432") // a host name cannot be an endpoint
				eps := loadAssignmentOf(t, mesh, "payments").GetEndpoints()[0].GetLbEndpoints()
				if eps[0].GetMetadata() == nil || eps[1].GetMetadata() != nil {
					t.Error("only the mesh endpoint may carry the mTLS transport socket match")
				}
			},
		},
		{
			name: "upstreams",
			state: threeNodes().
				add(discovery.Instance{Node: "node-a", ID: "frontend-1", Service: "frontend", Port: 3000, Meta: httpMeta(),
					Upstreams: []discovery.Upstream{
						{DestinationName: "web", LocalBindAddress: "127.0.0.1", LocalBindPort: 19001},
						{DestinationName: "db", LocalBindAddress: "127.0.0.1", LocalBindPort: 19002},
						{DestinationName: "dns", LocalBindAddress: "127.0.0.1", LocalBindPort: 19053},
						{DestinationName: "nowhere", LocalBindAddress: "127.0.0.2", LocalBindPort: 19004},
					}}, "").
				// Another local instance wanting a bound port loses it;
				// one wanting the outbound port never gets it.
				add(discovery.Instance{Node: "node-a", ID: "frontend-2", Service: "frontend", Port: 3001, Meta: httpMeta(),
					Upstreams: []discovery.Upstream{
						{DestinationName: "db", LocalBindAddress: "127.0.0.1", LocalBindPort: 19001},
						{DestinationName: "db", LocalBindAddress: "127.0.0.1", LocalBindPort: 15001},
					}}, "").
				add(discovery.Instance{Node: "node-b", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, "").
				add(discovery.Instance{Node: "node-c", ID: "db-1", Service: "db", Port: 5432}, "").
				add(discovery.Instance{Node: "node-c", ID: "dns-1", Service: "dns", Address: "10.0.0.3", Port: 53, Meta: map[string]string{"protocol": "udp"}}, "").
				entry(`{"Kind":"service-defaults","Name":"frontend","LocalConnectTimeoutMs":250,"LocalRequestTimeoutMs":30000,"MaxInboundConnections":100}`).
				at(16),
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				wantListeners(t, mesh, OutboundListener, InboundListener,
					upstreamPrefix+"127.0.0.1:19001", upstreamPrefix+"127.0.0.1:19002", upstreamPrefix+"127.0.0.1:19053", upstreamPrefix+"127.0.0.2:19004")
				wantRoutes(t, mesh, sourcedName("frontend", "web"))
				wantEndpoints(t, mesh, "dns", "10.0.0.3:53") // UDP does not go through the mesh port
				wantEndpoints(t, mesh, "nowhere")
				// Explicit upstreams present frontend's certificate; the
				// shared clusters (transparent outbound) the node's.
				wantClientCert(t, mesh, sourcedName("frontend", "db"), ServiceSecret("frontend"), "db")
				wantClientCert(t, mesh, sourcedName("frontend", "web"), ServiceSecret("frontend"), "web")
				wantClientCert(t, mesh, "db", SecretNodeCert, "")
				if _, ok := mesh.GetResources(resource.ClusterType)[sourcedName("frontend", "dns")]; ok {
					t.Error("a UDP upstream got a sourced (TLS) cluster")
				}
				if _, ok := mesh.GetResources(resource.ClusterType)[localClusterPrefix+"frontend"]; !ok {
					t.Error("no local cluster for frontend")
				}
			},
		},
		{
			name: "proxyless-lb-fallbacks",
			state: threeNodes().
				add(discovery.Instance{Node: "node-b", ID: "a-1", Service: "a", Port: 1, Meta: grpcMeta()}, "").
				add(discovery.Instance{Node: "node-b", ID: "b-1", Service: "b", Port: 2, Meta: grpcMeta()}, "").
				entry(`{"Kind":"service-resolver","Name":"a","LoadBalancer":{"Policy":"maglev"}}`).
				entry(`{"Kind":"service-resolver","Name":"b","LoadBalancer":{"Policy":"random"}}`).
				at(17),
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				for _, c := range []struct {
					snap *cache.Snapshot
					name string
					want cluster.Cluster_LbPolicy
				}{
					{mesh, "a", cluster.Cluster_MAGLEV}, {app, "a", cluster.Cluster_RING_HASH},
					{mesh, "b", cluster.Cluster_RANDOM}, {app, "b", cluster.Cluster_ROUND_ROBIN},
				} {
					if got := clusterOf(t, c.snap, c.name).GetLbPolicy(); got != c.want {
						t.Errorf("%s for %v: %v, want %v", c.name, c.snap == app, got, c.want)
					}
				}
			},
		},
	}
}

func TestBuildGolden(t *testing.T) {
	for _, fx := range slices.Concat(fixtures(), intentionFixtures(), userFixtures(), hostFixtures(), accessLogFixtures()) { // intentions_test.go, sourced_test.go, host_test.go
		t.Run(fx.name, func(t *testing.T) {
			v := NewView(fx.state, fx.opts)
			snaps := map[string]*cache.Snapshot{}
			var buf bytes.Buffer
			buf.WriteString("{")
			for i, n := range []*core.Node{meshNode, appNode} {
				info := v.NodeInfo(n)
				if info.Mesh() != (n == meshNode) {
					t.Fatalf("%s: Mesh() = %v", n.Id, info.Mesh())
				}
				snap, err := Build(v, info)
				if err != nil {
					t.Fatalf("Build for %s: %v", n.Id, err)
				}
				if err := Check(snap); err != nil {
					t.Fatalf("Check for %s: %v", n.Id, err)
				}
				if got := snap.GetVersion(resource.ClusterType); got != strconv.FormatUint(fx.state.Index, 10) {
					t.Errorf("version %q, want the raft index %d", got, fx.state.Index)
				}
				js, err := SnapshotJSON(snap)
				if err != nil {
					t.Fatal(err)
				}
				if i > 0 {
					buf.WriteString(",")
				}
				id, _ := json.Marshal(n.Id)
				buf.WriteString(string(id) + ":" + string(js))
				snaps[n.Id] = snap
			}
			buf.WriteString("}")
			var got bytes.Buffer
			if err := json.Indent(&got, buf.Bytes(), "", "  "); err != nil {
				t.Fatal(err)
			}
			got.WriteString("\n")
			fx.check(t, snaps[meshNode.Id], snaps[appNode.Id])
			golden(t, filepath.Join("testdata", fx.name+".golden"), got.Bytes())
		})
	}
}

// golden compares got with the file, or rewrites the file with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output; run go test -run '%s' -update and review the diff.\n%s", path, t.Name(), lineDiff(want, got))
	}
}

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got []byte) string {
	w, g := bytes.Split(want, []byte("\n")), bytes.Split(got, []byte("\n"))
	var out bytes.Buffer
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl []byte
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if !bytes.Equal(wl, gl) {
			fmt.Fprintf(&out, "line %d:\n  want %s\n  got  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return out.String()
}

func clusterOf(t *testing.T, s *cache.Snapshot, name string) *cluster.Cluster {
	t.Helper()
	c, ok := s.GetResources(resource.ClusterType)[name].(*cluster.Cluster)
	if !ok {
		t.Fatalf("no cluster %q", name)
	}
	return c
}

func routeOf(t *testing.T, s *cache.Snapshot, name string) *route.RouteConfiguration {
	t.Helper()
	r, ok := s.GetResources(resource.RouteType)[name].(*route.RouteConfiguration)
	if !ok {
		t.Fatalf("no route %q", name)
	}
	return r
}

func loadAssignmentOf(t *testing.T, s *cache.Snapshot, name string) *endpoint.ClusterLoadAssignment {
	t.Helper()
	c, ok := s.GetResources(resource.EndpointType)[name].(*endpoint.ClusterLoadAssignment)
	if !ok {
		t.Fatalf("no endpoints %q", name)
	}
	return c
}

func wantEndpoints(t *testing.T, s *cache.Snapshot, name string, want ...string) {
	t.Helper()
	var got []string
	for _, l := range loadAssignmentOf(t, s, name).GetEndpoints() {
		for _, ep := range l.GetLbEndpoints() {
			a := ep.GetEndpoint().GetAddress().GetSocketAddress()
			got = append(got, hostPort(a.GetAddress(), int(a.GetPortValue())))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("endpoints of %s = %v, want %v", name, got, want)
	}
}

func wantListeners(t *testing.T, s *cache.Snapshot, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := names(s, resource.ListenerType); !slices.Equal(got, want) {
		t.Errorf("listeners = %v, want %v", got, want)
	}
}

func wantRoutes(t *testing.T, s *cache.Snapshot, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := names(s, resource.RouteType); !slices.Equal(got, want) {
		t.Errorf("routes = %v, want %v", got, want)
	}
}

func names(s *cache.Snapshot, typ resource.Type) []string {
	var out []string
	for n := range s.GetResources(typ) {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
