package xds

import (
	"fmt"
	"slices"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	origdst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// What a host says about itself: which service its unattributed traffic
// belongs to, and which of its ports capture sends inbound to the proxy.
// Both are the agent's configuration (`capture { ... }`), so they come in
// as Options.Host for the agent's own node; the rest of the view is the
// catalog.

// HostOptions are the settings of the host whose agent runs this server
// (Node). Other nodes' proxies that use this server get none of them.
type HostOptions struct {
	// Node is the agent's own node.
	Node string
	// DefaultService is the local service that the host's captured
	// outbound connections speak for when no service user opened them
	// (capture.default_service). Empty: the only local service when the
	// host has exactly one and declares no service users, else none (the
	// host's own identity). See hostService.
	DefaultService string
	// InboundPorts are the local ports capture redirects to InboundPort
	// (capture.inbound_ports). The inbound capture listener exists only
	// when there are some.
	InboundPorts []int
	// InboundPort is the inbound capture listener's port (default 15006).
	InboundPort int
	// InboundPermissive passes connections that are not mesh mTLS on to
	// the app (capture.inbound_mode = "permissive"); otherwise they are
	// refused (strict).
	InboundPermissive bool
}

// DefaultInboundPort is the inbound capture listener's port.
const DefaultInboundPort = 15006

// Names of the inbound capture listener and its resources.
const (
	// InboundCaptureListener is where capture sends the connections to
	// the host's inbound_ports.
	InboundCaptureListener = "vmesh/inbound/capture"
	// inboundPassthroughPrefix + port is the cluster that takes a
	// permissive connection to the app on that port, on loopback.
	inboundPassthroughPrefix = "vmesh/inbound/passthrough/"
	// RefusedCluster has no endpoints: the strict filter chain names it
	// because a chain must end in a proxy, but its RBAC filter refuses
	// every connection before one is dialed.
	RefusedCluster = "vmesh/refused"
	// RefusePolicy is the RBAC policy that refuses connections on the
	// inbound capture listener that are not mesh mTLS to a port it
	// passes on.
	RefusePolicy = "refuse-non-mesh"
)

// hostService is the local service whose identity the host's
// unattributed outbound traffic takes (sourced.go), or "" for the host's
// own (vmesh/node). An explicit DefaultService counts only while the
// node runs an instance of it: the proxy has that service's certificate
// only then, and a host cannot speak for a service it does not run.
// Without one, a host with exactly one local service and no service
// users is that service: everything it sends is that service's.
func (b *builder) hostService() string {
	node := b.node.Node
	local := b.v.byNode[node]
	if h := b.v.opts.Host; h.Node == node && h.DefaultService != "" {
		k := serviceKey(h.DefaultService)
		for _, in := range local {
			if serviceKey(in.Service) == k {
				return k
			}
		}
		return ""
	}
	var keys []string
	for _, in := range local {
		if in.User != "" {
			return ""
		}
		if k := serviceKey(in.Service); k != "" && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	if len(keys) != 1 {
		return ""
	}
	return keys[0]
}

// HostService is the service node's unattributed outbound traffic speaks
// for in v ("" for the node's own identity), as Build decides it.
func (v *View) HostService(node string) string {
	b := &builder{v: v, node: NodeInfo{Node: node}}
	return b.hostService()
}

// inboundCaptureListener is where capture sends connections to the
// host's inbound_ports (SO_ORIGINAL_DST names the port each was for). A
// mesh mTLS connection is served as on the mesh port: a filter chain per
// inbound port and local service, by destination port and SNI, with the
// same TLS and intentions. Everything else is not mesh traffic: in
// permissive mode a chain per port (any transport, less specific than
// SNI) passes it to the app on loopback; what no chain takes (every such
// connection in strict mode) falls to the default chain, whose RBAC
// refuses it, and the proxy resets it and counts it.
//
// The listener binds every address: capture's REDIRECT sends a
// connection to the address it arrived on.
func (b *builder) inboundCaptureListener() {
	h := b.v.opts.Host
	if h.Node != b.node.Node || len(h.InboundPorts) == 0 {
		return
	}
	ports := slices.Clone(h.InboundPorts)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	l := &listener.Listener{
		Name:             InboundCaptureListener,
		Address:          socketAddr("0.0.0.0", h.InboundPort, core.SocketAddress_TCP),
		TrafficDirection: core.TrafficDirection_INBOUND,
		ListenerFilters: []*listener.ListenerFilter{
			b.listenerFilter(wellknown.OriginalDestination, &origdst.OriginalDst{}),
			b.listenerFilter(wellknown.TlsInspector, &tlsinspector.TlsInspector{}),
		},
		DefaultFilterChain: &listener.FilterChain{
			Name: "refuse",
			Filters: []*listener.Filter{
				b.filter(wellknown.RoleBasedAccessControl, &rbac.RBAC{
					StatPrefix: "inbound_capture_refused",
					Rules: &rbacconfig.RBAC{Action: rbacconfig.RBAC_DENY, Policies: map[string]*rbacconfig.Policy{
						RefusePolicy: {
							Permissions: []*rbacconfig.Permission{{Rule: &rbacconfig.Permission_Any{Any: true}}},
							Principals:  []*rbacconfig.Principal{{Identifier: &rbacconfig.Principal_Any{Any: true}}},
						},
					}},
				}),
				b.filter(wellknown.TCPProxy, &tcp.TcpProxy{StatPrefix: "inbound_capture_refused", ClusterSpecifier: &tcp.TcpProxy_Cluster{Cluster: RefusedCluster}}),
			},
		},
	}
	keys := b.localServiceKeys()
	for _, port := range ports {
		for _, k := range keys {
			l.FilterChains = append(l.FilterChains, b.meshInboundChain(fmt.Sprintf("capture/%d/%s", port, k), k, port))
		}
		if !h.InboundPermissive {
			continue
		}
		name := fmt.Sprintf("%s%d", inboundPassthroughPrefix, port)
		b.clusters = append(b.clusters, &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(defaultConnectTimeout),
			LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
					Address: socketAddr("127.0.0.1", port, core.SocketAddress_TCP),
				}}}},
			}}},
		})
		stat := fmt.Sprintf("inbound_passthrough_%d", port)
		l.FilterChains = append(l.FilterChains, &listener.FilterChain{
			Name:             fmt.Sprintf("passthrough/%d", port),
			FilterChainMatch: &listener.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(port))},
			Filters:          []*listener.Filter{b.filter(wellknown.TCPProxy, &tcp.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcp.TcpProxy_Cluster{Cluster: name}})},
		})
	}
	b.clusters = append(b.clusters, &cluster.Cluster{
		Name:                 RefusedCluster,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LoadAssignment:       &endpoint.ClusterLoadAssignment{ClusterName: RefusedCluster},
	})
	b.listeners = append(b.listeners, l)
}
