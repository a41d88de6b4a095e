package xds

import (
	"slices"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

// TestOutboundChainsFromCatalogVIPs: the catalog's VIP allocations reach
// the outbound listener as a filter chain per VIP and port (the instances'
// ports, plus 80 for http), with static Options.VIPs winning.
func TestOutboundChainsFromCatalogVIPs(t *testing.T) {
	st := threeNodes().
		add(discovery.Instance{Node: "node-b", ID: "orders-1", Service: "orders", Port: 8080, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-c", ID: "orders-2", Service: "Orders", Port: 9090, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-c", ID: "orders-3", Service: "orders", Port: 8080, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-b", ID: "db-1", Service: "db", Port: 5432}, "").
		add(discovery.Instance{Node: "node-b", ID: "cache-1", Service: "cache", Port: 6379}, "").
		add(discovery.Instance{Node: "node-b", ID: "dns-1", Service: "dnsd", Port: 53, Meta: map[string]string{"protocol": "udp"}}, "").
		at(20)
	st.VIPs = []*discovery.VIP{
		{Service: "cache", IP: "240.0.0.4"},
		{Service: "db", IP: "240.0.0.2"},
		{Service: "dnsd", IP: "240.0.0.5"},
		{Service: "gone", IP: "240.0.0.3"}, // no instances: no chain
		{Service: "orders", IP: "240.0.0.1"},
	}
	static := map[string]VIP{"CACHE": {IP: "240.9.9.9", Ports: []uint32{7000}}}
	v := NewView(st, Options{VIPs: static})
	snap, err := Build(v, v.NodeInfo(meshNode))
	if err != nil {
		t.Fatal(err)
	}
	l, ok := snap.GetResources(resource.ListenerType)[OutboundListener].(*listener.Listener)
	if !ok {
		t.Fatal("no outbound listener")
	}
	type chain struct {
		name, ip string
		port     uint32
	}
	var got []chain
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		got = append(got, chain{fc.GetName(), m.GetPrefixRanges()[0].GetAddressPrefix(), m.GetDestinationPort().GetValue()})
	}
	want := []chain{
		{"outbound/cache:7000", "240.9.9.9", 7000},
		{"outbound/db:5432", "240.0.0.2", 5432},
		{"outbound/orders:80", "240.0.0.1", 80},
		{"outbound/orders:8080", "240.0.0.1", 8080},
		{"outbound/orders:9090", "240.0.0.1", 9090},
	}
	if !slices.Equal(got, want) {
		t.Errorf("outbound chains:\n got %v\nwant %v", got, want)
	}
	if len(static) != 1 || static["CACHE"].IP != "240.9.9.9" {
		t.Errorf("NewView modified Options.VIPs: %v", static)
	}
	if l.GetDefaultFilterChain().GetName() != "passthrough" {
		t.Errorf("default chain = %q, want passthrough", l.GetDefaultFilterChain().GetName())
	}
}
