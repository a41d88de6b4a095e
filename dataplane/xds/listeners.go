package xds

import (
	"net/netip"
	"sort"
	"time"

	xdscore "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcher "github.com/cncf/xds/go/xds/type/matcher/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	origdst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	udp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const udpProxyFilter = "envoy.filters.udp_listener.udp_proxy"

func (b *builder) filter(name string, m proto.Message) *listener.Filter {
	return &listener.Filter{Name: name, ConfigType: &listener.Filter_TypedConfig{TypedConfig: b.any(m)}}
}

func (b *builder) listenerFilter(name string, m proto.Message) *listener.ListenerFilter {
	return &listener.ListenerFilter{Name: name, ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: b.any(m)}}
}

func (b *builder) routerFilter() *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: wellknown.Router, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: b.any(&routerfilter.Router{})}}
}

// hcmRDS is an HTTP connection manager that takes its routes from the
// service's RouteConfiguration over ADS.
func (b *builder) hcmRDS(statPrefix, routeName string) *hcm.HttpConnectionManager {
	b.routeNames[routeName] = true
	return &hcm.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			RouteConfigName: routeName, ConfigSource: adsSource(),
		}},
		HttpFilters: []*hcm.HttpFilter{b.routerFilter()},
	}
}

// tcpProxy sends a connection to a service's clusters: one, or weighted
// when the service has a splitter (Envoy splits connections too).
func (b *builder) tcpProxy(statPrefix, key string) *tcp.TcpProxy {
	ws := b.v.splits(key)
	p := &tcp.TcpProxy{StatPrefix: statPrefix}
	if len(ws) == 1 {
		p.ClusterSpecifier = &tcp.TcpProxy_Cluster{Cluster: b.clusterRef(ws[0].cluster)}
		return p
	}
	wc := &tcp.TcpProxy_WeightedCluster{}
	for _, w := range ws {
		wc.Clusters = append(wc.Clusters, &tcp.TcpProxy_WeightedCluster_ClusterWeight{Name: b.clusterRef(w.cluster), Weight: w.weight})
	}
	p.ClusterSpecifier = &tcp.TcpProxy_WeightedClusters{WeightedClusters: wc}
	return p
}

// serviceFilters proxy a connection to service s: HTTP routing for L7
// protocols, a TCP proxy otherwise.
func (b *builder) serviceFilters(statPrefix string, s *service) []*listener.Filter {
	if discovery.IsL7Protocol(s.protocol) {
		h := b.hcmRDS(statPrefix, b.routeRef(s.key))
		h.UpgradeConfigs = websocketUpgrade(s)
		normalizePaths(h)
		return []*listener.Filter{b.filter(wellknown.HTTPConnectionManager, h)}
	}
	return []*listener.Filter{b.filter(wellknown.TCPProxy, b.tcpProxy(statPrefix, s.key))}
}

// outboundListener is the transparent listener capture redirects to: a
// filter chain per service VIP (per port when the VIP lists ports), and
// everything else passed through to where it was going. Each Unix user of
// a local service gets a copy on its own port whose clusters present that
// service's certificate (sourced.go).
func (b *builder) outboundListener() {
	// Names differing in case are one service: the first in sort order
	// keeps the VIP, whatever the map's order.
	vipNames := make([]string, 0, len(b.v.opts.VIPs))
	for name := range b.v.opts.VIPs {
		vipNames = append(vipNames, name)
	}
	sort.Strings(vipNames)
	vips := map[string]VIP{}
	for _, name := range vipNames {
		if _, dup := vips[serviceKey(name)]; !dup {
			vips[serviceKey(name)] = b.v.opts.VIPs[name]
		}
	}
	// Connections no service user opened speak for the host's default
	// service, if it has one (host.go).
	b.from = b.hostService()
	b.transparentListener(OutboundListener, b.v.opts.OutboundPort, vips)
	b.from = ""
	var local []*discovery.Instance
	for _, in := range b.v.byNode[b.node.Node] {
		local = append(local, in.Instance)
	}
	for _, u := range b.v.opts.UserPorts(b.node.Node, local) {
		b.from = u.Service
		b.transparentListener(UserListenerPrefix+u.User, u.Port, vips)
		b.from = ""
	}
}

// transparentListener builds one transparent outbound listener on the
// outbound address and port, for b.from's identity ("" for the host's),
// with a filter chain per VIP of vips (by service key).
func (b *builder) transparentListener(name string, port int, vips map[string]VIP) {
	l := &listener.Listener{
		Name:             name,
		Address:          socketAddr(b.v.opts.OutboundAddr, port, core.SocketAddress_TCP),
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		ListenerFilters:  []*listener.ListenerFilter{b.listenerFilter(wellknown.OriginalDestination, &origdst.OriginalDst{})},
		DefaultFilterChain: &listener.FilterChain{
			Name:    "passthrough",
			Filters: []*listener.Filter{b.filter(wellknown.TCPProxy, &tcp.TcpProxy{StatPrefix: "passthrough", ClusterSpecifier: &tcp.TcpProxy_Cluster{Cluster: PassthroughCluster}})},
		},
	}
	for _, k := range b.v.keys {
		vip, ok := vips[k]
		s := b.v.services[k]
		if !ok || s.protocol == discovery.ProtocolUDP {
			continue
		}
		ip, err := netip.ParseAddr(vip.IP)
		if err != nil {
			continue
		}
		ports := vip.Ports
		if len(ports) == 0 {
			ports = []uint32{0}
		}
		for _, port := range ports {
			m := &listener.FilterChainMatch{PrefixRanges: []*core.CidrRange{{
				AddressPrefix: ip.Unmap().String(), PrefixLen: wrapperspb.UInt32(uint32(ip.Unmap().BitLen())),
			}}}
			name := "outbound/" + k
			if port != 0 {
				m.DestinationPort = wrapperspb.UInt32(port)
				name = "outbound/" + hostPort(k, int(port))
			}
			l.FilterChains = append(l.FilterChains, &listener.FilterChain{
				Name: name, FilterChainMatch: m, Filters: b.serviceFilters("outbound_"+k, s),
			})
		}
	}
	b.listeners = append(b.listeners, l)
}

// upstreamListeners are the explicit upstreams of the host's instances:
// LocalBindAddress:LocalBindPort -> the destination; an upstream that names
// no address listens on the agent's client address (OutboundAddr), as the
// proxy's other local listeners do. Two upstreams that bind one address:
// the first (instances by ID, then in registration order) gets it, and an
// upstream never takes a port of the proxy's own listeners.
func (b *builder) upstreamListeners() {
	taken := map[string]bool{hostPort(b.v.opts.OutboundAddr, b.v.opts.OutboundPort): true}
	if ip, ok := b.localAddr(); ok {
		taken[hostPort(ip, b.v.opts.MeshPort)] = true
	}
	for _, in := range b.v.byNode[b.node.Node] {
		for _, u := range in.Upstreams {
			bindAddr := u.LocalBindAddress
			if bindAddr == "" {
				bindAddr = b.v.opts.OutboundAddr
			}
			ip, ok := ipAddr(bindAddr)
			if !ok || u.LocalBindPort <= 0 || u.LocalBindPort > 65535 {
				continue
			}
			addr := hostPort(ip, u.LocalBindPort)
			s := b.v.services[serviceKey(u.DestinationName)]
			if taken[addr] || s == nil {
				continue
			}
			taken[addr] = true
			name := upstreamPrefix + addr
			stat := "upstream_" + s.key
			if s.protocol == discovery.ProtocolUDP {
				b.listeners = append(b.listeners, &listener.Listener{
					Name:              name,
					Address:           socketAddr(ip, u.LocalBindPort, core.SocketAddress_UDP),
					TrafficDirection:  core.TrafficDirection_OUTBOUND,
					UdpListenerConfig: &listener.UdpListenerConfig{},
					ListenerFilters:   []*listener.ListenerFilter{b.listenerFilter(udpProxyFilter, b.udpProxy(stat, b.v.target(s.key)))},
				})
				continue
			}
			// The listener is the declaring service's: its traffic presents
			// that service's certificate (sourced.go).
			b.from = serviceKey(in.Service)
			b.listeners = append(b.listeners, &listener.Listener{
				Name:             name,
				Address:          socketAddr(ip, u.LocalBindPort, core.SocketAddress_TCP),
				TrafficDirection: core.TrafficDirection_OUTBOUND,
				FilterChains:     []*listener.FilterChain{{Filters: b.serviceFilters(stat, s)}},
			})
			b.from = ""
		}
	}
}

// udpProxy forwards datagrams to one cluster (a splitter does not apply:
// UDP sessions are not split).
func (b *builder) udpProxy(stat, clusterName string) *udp.UdpProxyConfig {
	return &udp.UdpProxyConfig{
		StatPrefix: stat,
		RouteSpecifier: &udp.UdpProxyConfig_Matcher{Matcher: &xdsmatcher.Matcher{
			OnNoMatch: &xdsmatcher.Matcher_OnMatch{OnMatch: &xdsmatcher.Matcher_OnMatch_Action{Action: &xdscore.TypedExtensionConfig{
				Name: "route", TypedConfig: b.any(&udp.Route{Cluster: clusterName}),
			}}},
		}},
	}
}

// localAddr is the address peers reach this host's mesh port at.
func (b *builder) localAddr() (string, bool) {
	n := b.v.nodes[b.node.Node]
	if n == nil {
		return "", false
	}
	return ipAddr(n.Address)
}

// inboundListener accepts mTLS from peers on the mesh port: a filter chain
// per local service, chosen by SNI, forwarding to the local instances.
// The TLS context requires a client certificate from the cluster CA;
// intentions then decide by the peer's SPIFFE ID (intentions.go): per
// request in the HTTP connection manager for HTTP, HTTP/2 and gRPC (403,
// PERMISSION_DENIED), per connection before the TCP proxy otherwise.
func (b *builder) inboundListener() {
	ip, ok := b.localAddr()
	if !ok {
		return
	}
	l := &listener.Listener{
		Name:             InboundListener,
		Address:          socketAddr(ip, b.v.opts.MeshPort, core.SocketAddress_TCP),
		TrafficDirection: core.TrafficDirection_INBOUND,
		ListenerFilters:  []*listener.ListenerFilter{b.listenerFilter(wellknown.TlsInspector, &tlsinspector.TlsInspector{})},
	}
	for _, k := range b.localServiceKeys() {
		l.FilterChains = append(l.FilterChains, b.meshInboundChain("inbound/"+k, k, 0))
	}
	if len(l.FilterChains) > 0 {
		b.listeners = append(b.listeners, l)
	}
}

// localServiceKeys are the TCP-borne services with an instance on this
// node that has a port, sorted; the first call adds their local clusters
// (localCluster), which the mesh port and the inbound capture listener
// share.
func (b *builder) localServiceKeys() []string {
	if b.localKeys != nil {
		return *b.localKeys
	}
	local := map[string][]*instance{}
	keys := []string{}
	for _, in := range b.v.byNode[b.node.Node] {
		k := serviceKey(in.Service)
		if in.Port <= 0 || in.Port > 65535 || k == "" || b.v.services[k].protocol == discovery.ProtocolUDP {
			continue
		}
		if _, ok := local[k]; !ok {
			keys = append(keys, k)
		}
		local[k] = append(local[k], in)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.clusters = append(b.clusters, b.localCluster(localClusterPrefix+k, b.v.services[k], local[k]))
	}
	b.localKeys = &keys
	return keys
}

// meshInboundChain terminates mTLS for local service k (matched by SNI,
// and by destination port when port is not 0) and hands the connection,
// or each request, to k's local instances once intentions allow it.
func (b *builder) meshInboundChain(name, k string, port int) *listener.FilterChain {
	s := b.v.services[k]
	clusterName := localClusterPrefix + k
	stat := "inbound_" + k
	var filters []*listener.Filter
	if discovery.IsL7Protocol(s.protocol) {
		filters = append(filters, b.filter(wellknown.HTTPConnectionManager, b.inboundHCM(stat, clusterName, s)))
	} else {
		filters = append(filters,
			b.filter(wellknown.RoleBasedAccessControl, b.networkRBAC(stat, k)),
			b.filter(wellknown.TCPProxy, &tcp.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcp.TcpProxy_Cluster{Cluster: clusterName}}))
	}
	alpnIn := []string(nil)
	if discovery.IsL7Protocol(s.protocol) {
		alpnIn = []string{"h2", "http/1.1"}
	}
	m := &listener.FilterChainMatch{ServerNames: []string{SNI(k)}, TransportProtocol: "tls"}
	if port != 0 {
		m.DestinationPort = wrapperspb.UInt32(uint32(port))
	}
	return &listener.FilterChain{
		Name:             name,
		FilterChainMatch: m,
		Filters:          filters,
		TransportSocket: &core.TransportSocket{
			Name: wellknown.TransportSocketTLS,
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: b.any(&tlsv3.DownstreamTlsContext{
				RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext: &tlsv3.CommonTlsContext{
					AlpnProtocols:                  alpnIn,
					TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(ServiceSecret(k))},
					ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
						ValidationContextSdsSecretConfig: sdsSecret(SecretRoots),
					},
				},
			})},
		},
	}
}

// inboundHCM routes everything to the local instances, with the
// service-defaults' local request timeout. A request that could not
// connect to an instance (a crashed or restarting app) is retried on
// another, up to twice: nothing reached the app, so this is safe for any
// method. Envoy and Consul do not do this by default; without it a caller
// would see every connect failure until outlier detection ejects the
// instance (localCluster).
func (b *builder) inboundHCM(stat, clusterName string, s *service) *hcm.HttpConnectionManager {
	a := &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: clusterName},
		RetryPolicy:      &route.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(localConnectRetries)},
	}
	switch {
	case s.defaults != nil && s.defaults.LocalRequestTimeoutMs > 0:
		a.Timeout = durationpb.New(time.Duration(s.defaults.LocalRequestTimeoutMs) * time.Millisecond)
	case s.protocol == discovery.ProtocolGRPC:
		a.Timeout = durationpb.New(0)
	}
	h := &hcm.HttpConnectionManager{
		StatPrefix: stat,
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
			Name: "inbound/" + s.key,
			VirtualHosts: []*route.VirtualHost{{
				Name: s.key, Domains: []string{"*"},
				Routes: []*route.Route{{
					Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
					Action: &route.Route_Route{Route: a},
				}},
			}},
		}},
		HttpFilters:    []*hcm.HttpFilter{b.httpRBACFilter(s.key), b.routerFilter()},
		UpgradeConfigs: websocketUpgrade(s),
		// The local app learns who called it, as behind Consul's Envoy:
		// x-forwarded-client-cert with the peer's SPIFFE ID, any such
		// header from the client replaced.
		ForwardClientCertDetails:    hcm.HttpConnectionManager_SANITIZE_SET,
		SetCurrentClientCertDetails: &hcm.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true},
	}
	normalizePaths(h)
	return h
}

// normalizePaths makes a proxy's HTTP connection manager route on the
// path the application will read: dot segments resolved, percent-encoded
// unreserved characters decoded, runs of slashes merged, and a path with
// an encoded slash (%2F, %5C) refused with 400, since applications
// disagree on whether it separates segments. Otherwise "/%61dmin",
// "//admin" or "/x/../admin" would miss a route or an authorization rule
// written for "/admin" and still reach /admin. The proxy forwards the
// normalized path. (Not for proxyless gRPC's api_listeners: gRPC paths are
// method names, and gRPC does not implement these fields.)
func normalizePaths(h *hcm.HttpConnectionManager) {
	h.NormalizePath = wrapperspb.Bool(true)
	h.MergeSlashes = true
	h.PathWithEscapedSlashesAction = hcm.HttpConnectionManager_REJECT_REQUEST
}

// websocketUpgrade lets HTTP/1.1 services switch to WebSocket (HTTP/2 and
// gRPC ones have no such upgrade).
func websocketUpgrade(s *service) []*hcm.HttpConnectionManager_UpgradeConfig {
	if s.protocol != discovery.ProtocolHTTP {
		return nil
	}
	return []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
}

// localConnectRetries is how often the inbound route retries a connect
// failure; each retry prefers an instance not tried yet.
const localConnectRetries = 2

// localCluster reaches the host's own instances of a service in
// plaintext: on their address, or loopback when they registered none.
// Peers see the host as one endpoint, so it is here that a dead instance
// is ejected, with the outlier detection of the service clusters (5
// consecutive 5xx or connect failures, at most 10% of the instances out at
// once) and always_eject_one_host.
func (b *builder) localCluster(name string, s *service, insts []*instance) *cluster.Cluster {
	var lbs []*endpoint.LbEndpoint
	for _, in := range insts {
		if in.health == discovery.HealthCritical {
			continue
		}
		addr := in.Address
		if addr == "" {
			addr = "127.0.0.1"
		}
		ip, ok := ipAddr(addr)
		if !ok {
			continue
		}
		lbs = append(lbs, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: socketAddr(ip, in.Port, core.SocketAddress_TCP),
		}}})
	}
	cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LoadAssignment:       cla,
		OutlierDetection:     outlierDetection(),
	}
	if d := s.defaults; d != nil {
		if d.LocalConnectTimeoutMs > 0 {
			c.ConnectTimeout = durationpb.New(time.Duration(d.LocalConnectTimeoutMs) * time.Millisecond)
		}
		if d.MaxInboundConnections > 0 {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				MaxConnections: wrapperspb.UInt32(uint32(d.MaxInboundConnections)),
			}}}
		}
	}
	if s.protocol == discovery.ProtocolHTTP2 || s.protocol == discovery.ProtocolGRPC {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": b.any(http2Options()),
		}
	}
	return c
}

// apiListeners serve proxyless gRPC: a client dialing xds:///<service>
// asks for the Listener named <service> and follows its RDS route.
func (b *builder) apiListeners() {
	for _, k := range b.v.keys {
		if b.v.services[k].protocol != discovery.ProtocolGRPC {
			continue
		}
		b.listeners = append(b.listeners, &listener.Listener{
			Name:        k,
			ApiListener: &listener.ApiListener{ApiListener: b.any(b.hcmRDS(k, k))},
		})
	}
}
