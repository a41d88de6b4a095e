package xds

import (
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

// TestUpstreamBindsClientAddress: an upstream registered without an
// address listens on the agent's client address (Options.OutboundAddr),
// not on 127.0.0.1; an explicit address is kept; an empty address and an
// explicit one that come to the same IP and port go to the first.
func TestUpstreamBindsClientAddress(t *testing.T) {
	st := threeNodes().
		add(discovery.Instance{Node: "node-a", ID: "frontend-1", Service: "frontend", Port: 3000,
			Upstreams: []discovery.Upstream{
				{DestinationName: "web", LocalBindPort: 19001},
				{DestinationName: "db", LocalBindAddress: "127.0.0.1", LocalBindPort: 19002},
			}}, "").
		add(discovery.Instance{Node: "node-a", ID: "frontend-2", Service: "frontend", Port: 3001,
			Upstreams: []discovery.Upstream{
				{DestinationName: "db", LocalBindAddress: "127.0.0.9", LocalBindPort: 19001},
			}}, "").
		add(discovery.Instance{Node: "node-b", ID: "web-1", Service: "web", Port: 8080}, "").
		add(discovery.Instance{Node: "node-c", ID: "db-1", Service: "db", Port: 5432}, "").
		at(1)
	for _, tc := range []struct {
		client string
		want   []string
	}{
		{"127.0.0.9", []string{upstreamPrefix + "127.0.0.9:19001", upstreamPrefix + "127.0.0.1:19002"}},
		// No client address configured: the default, loopback.
		{"", []string{upstreamPrefix + "127.0.0.1:19001", upstreamPrefix + "127.0.0.1:19002", upstreamPrefix + "127.0.0.9:19001"}},
	} {
		v := NewView(st, Options{OutboundAddr: tc.client})
		snap, err := Build(v, v.NodeInfo(meshNode))
		if err != nil {
			t.Fatal(err)
		}
		outbound := DefaultOutboundAddr
		if tc.client != "" {
			outbound = tc.client
		}
		wantListeners(t, snap, append([]string{OutboundListener, InboundListener}, tc.want...)...)
		l := snap.GetResources(resource.ListenerType)[tc.want[0]].(*listener.Listener)
		if got := l.GetAddress().GetSocketAddress().GetAddress(); got != outbound {
			t.Errorf("client %q: the upstream without an address listens on %s, want %s", tc.client, got, outbound)
		}
		var tp tcp.TcpProxy
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatal(err)
		}
		if got, want := tp.GetCluster(), sourcedName("frontend", "web"); got != want {
			t.Errorf("client %q: %s goes to %s, want %s (the first upstream keeps the port)", tc.client, tc.want[0], got, want)
		}
	}
}
