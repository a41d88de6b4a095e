package xds

import (
	"slices"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

// hostCatalog: node-a runs monolith (tcp, 8080) and admin (http, 9090),
// and calls orders on node-b over its VIP.
func hostCatalog() *catalog {
	return threeNodes().
		add(discovery.Instance{Node: "node-a", ID: "monolith-1", Service: "monolith", Port: 8080}, "").
		add(discovery.Instance{Node: "node-a", ID: "admin-1", Service: "admin", Port: 9090, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-b", ID: "orders-1", Service: "orders", Port: 7000}, "")
}

var hostVIPs = map[string]VIP{"orders": {IP: "240.0.0.40"}}

// chainNames are a listener's filter chain names, in order.
func chainNames(l *listener.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		out = append(out, fc.GetName())
	}
	return out
}

// hostFixtures are the golden fixtures of what a host says about itself:
// its default service and its inbound capture listener, appended to
// fixtures() in build_test.go.
func hostFixtures() []fixture {
	return []fixture{
		{
			name:  "host-default-service-inbound-strict",
			state: hostCatalog().at(40),
			opts: Options{VIPs: hostVIPs, Host: HostOptions{
				Node: "node-a", DefaultService: "Monolith", InboundPorts: []int{9090, 8080, 9090},
			}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				wantListeners(t, mesh, OutboundListener, InboundListener, InboundCaptureListener)
				wantListeners(t, app)
				// Captured traffic speaks for monolith, not the host.
				out := listenerOf(t, mesh, OutboundListener)
				if got := chainCluster(t, out.GetFilterChains()[0]); got != sourcedName("monolith", "orders") {
					t.Errorf("outbound chain to orders goes to %q, want monolith's sourced cluster", got)
				}
				wantClientCert(t, mesh, sourcedName("monolith", "orders"), ServiceSecret("monolith"), "orders")

				l := listenerOf(t, mesh, InboundCaptureListener)
				if a := l.GetAddress().GetSocketAddress(); a.GetAddress() != "0.0.0.0" || a.GetPortValue() != DefaultInboundPort {
					t.Errorf("inbound capture listens on %s:%d, want 0.0.0.0:%d", a.GetAddress(), a.GetPortValue(), DefaultInboundPort)
				}
				var filters []string
				for _, f := range l.GetListenerFilters() {
					filters = append(filters, f.GetName())
				}
				if !slices.Equal(filters, []string{"envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"}) {
					t.Errorf("listener filters %v, want original_dst and tls_inspector", filters)
				}
				// Strict: mesh chains only, per port (once each) and service.
				want := []string{"capture/8080/admin", "capture/8080/monolith", "capture/9090/admin", "capture/9090/monolith"}
				if got := chainNames(l); !slices.Equal(got, want) {
					t.Errorf("chains %v, want %v", got, want)
				}
				for _, fc := range l.GetFilterChains() {
					m := fc.GetFilterChainMatch()
					if m.GetTransportProtocol() != "tls" || len(m.GetServerNames()) != 1 || m.GetDestinationPort().GetValue() == 0 || fc.GetTransportSocket() == nil {
						t.Errorf("chain %s: match %v; want TLS with SNI and a port, terminated", fc.GetName(), m)
					}
				}
				if def := l.GetDefaultFilterChain(); def.GetName() != "refuse" || chainCluster(t, def) != RefusedCluster {
					t.Errorf("default chain %q to %q, want refuse to %s", def.GetName(), chainCluster(t, def), RefusedCluster)
				}
				clusterOf(t, mesh, RefusedCluster)
				if _, ok := mesh.GetResources(resource.ClusterType)[inboundPassthroughPrefix+"8080"]; ok {
					t.Error("strict mode has a passthrough cluster")
				}
			},
		},
		{
			name:  "host-inbound-permissive-implicit-default",
			state: threeNodes().add(discovery.Instance{Node: "node-a", ID: "monolith-1", Service: "monolith", Port: 8080}, "").at(41),
			opts:  Options{Host: HostOptions{Node: "node-a", InboundPorts: []int{8080}, InboundPermissive: true}},
			check: func(t *testing.T, mesh, app *cache.Snapshot) {
				l := listenerOf(t, mesh, InboundCaptureListener)
				if got, want := chainNames(l), []string{"capture/8080/monolith", "passthrough/8080"}; !slices.Equal(got, want) {
					t.Errorf("chains %v, want %v", got, want)
				}
				pass := l.GetFilterChains()[1]
				if m := pass.GetFilterChainMatch(); m.GetDestinationPort().GetValue() != 8080 || m.GetTransportProtocol() != "" || len(m.GetServerNames()) != 0 {
					t.Errorf("passthrough match %v, want port 8080 only (less specific than the mesh chain's SNI)", m)
				}
				c := clusterOf(t, mesh, chainCluster(t, pass))
				ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				if ep.GetAddress() != "127.0.0.1" || ep.GetPortValue() != 8080 {
					t.Errorf("passthrough dials %s:%d, want the app on 127.0.0.1:8080", ep.GetAddress(), ep.GetPortValue())
				}
				if l.GetDefaultFilterChain().GetName() != "refuse" {
					t.Error("permissive mode must still refuse what is not for a captured port")
				}
			},
		},
	}
}

// hostService: an explicit default counts only while the host runs it;
// without one, the only local service of a host without service users.
func TestHostService(t *testing.T) {
	two := hostCatalog()
	one := threeNodes().add(discovery.Instance{Node: "node-a", ID: "m-1", Service: "Monolith", Port: 8080}, "").
		add(discovery.Instance{Node: "node-a", ID: "m-2", Service: "monolith", Port: 8081}, "")
	withUser := threeNodes().add(discovery.Instance{Node: "node-a", ID: "m-1", Service: "monolith", Port: 8080, User: "mono"}, "")
	cases := []struct {
		name string
		st   *catalog
		host HostOptions
		want string
	}{
		{"two services, none named", two, HostOptions{}, ""},
		{"two services, one named", two, HostOptions{Node: "node-a", DefaultService: "admin"}, "admin"},
		{"named for another node", two, HostOptions{Node: "node-b", DefaultService: "admin"}, ""},
		{"named but not run here", two, HostOptions{Node: "node-a", DefaultService: "orders"}, ""},
		{"one service, two instances", one, HostOptions{}, "monolith"},
		{"one service with a user", withUser, HostOptions{}, ""},
		{"a user, and named", withUser, HostOptions{Node: "node-a", DefaultService: "monolith"}, "monolith"},
		{"no service", threeNodes(), HostOptions{}, ""},
	}
	for _, c := range cases {
		v := NewView(c.st.at(1), Options{Host: c.host})
		if got := v.HostService("node-a"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// The inbound capture listener is the agent's own host's only: another
// node's proxy, and a host without inbound ports, get none.
func TestInboundCaptureListenerOnlyForTheHost(t *testing.T) {
	for _, h := range []HostOptions{{Node: "node-b", InboundPorts: []int{8080}}, {Node: "node-a"}} {
		snap, err := Build(NewView(hostCatalog().at(1), Options{Host: h}), NodeInfo{ID: "node-a", Node: "node-a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := snap.GetResources(resource.ListenerType)[InboundCaptureListener]; ok {
			t.Errorf("host %+v: node-a got the inbound capture listener", h)
		}
	}
}
