package xds

import (
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the resources that are not named after a service. Service names
// cannot contain '/', so these never collide with one.
const (
	PassthroughCluster = "vmesh/passthrough"
	localClusterPrefix = "vmesh/local/"
	OutboundListener   = "vmesh/outbound"
	InboundListener    = "vmesh/inbound"
	upstreamPrefix     = "vmesh/upstream/"
)

// SDS secret names. The agent's leaf issuer serves them; until it does,
// mesh clusters and the inbound listener wait for them (Envoy keeps a resource
// whose secret has not arrived warming), so no mesh traffic flows in
// plaintext by accident.
const (
	// SecretNodeCert is the host's certificate, presented on outbound mesh
	// connections: one proxy serves every local service, and a captured
	// connection does not say which one opened it.
	SecretNodeCert = "vmesh/node"
	// SecretRoots holds the cluster CA roots that peers are checked against.
	SecretRoots = "vmesh/roots"
	// secretServicePrefix + service is a local service's certificate,
	// presented on inbound.
	secretServicePrefix = "vmesh/svc/"
)

// SNI is the server name an outbound mesh connection to service carries,
// and the peer's inbound listener matches its filter chain on.
func SNI(service string) string { return serviceKey(service) + ".mesh" }

// ServiceSecret names the SDS secret of a local service's certificate.
func ServiceSecret(service string) string { return secretServicePrefix + serviceKey(service) }

// Translation defaults.
const (
	defaultConnectTimeout = 5 * time.Second
	// Circuit-breaker thresholds: Envoy's defaults, written out so that
	// config_dump shows them and a later config entry can change them.
	defaultMaxConnections     = 1024
	defaultMaxPendingRequests = 1024
	defaultMaxRequests        = 1024
	defaultMaxRetries         = 3
	// totalWeight is what route weights add up to: percentages with two
	// decimals, as Consul's splitter weights have.
	totalWeight = 10000
	// maxEndpointWeight caps an endpoint's weight (Consul's weights are
	// small; a locality's weights must add up to less than 2^32, for Envoy
	// and gRPC alike).
	maxEndpointWeight = 1 << 16
	// transportSocketMatchKey marks, in an endpoint's metadata, a peer's
	// mesh port: the cluster then speaks mTLS to it (and plaintext to an
	// external instance in the same cluster).
	transportSocketMatchKey = "vmesh_mesh"
)

// builder carries one Build call. It records the first error instead of
// returning one from every helper, so that translation code reads as a
// description of the config.
type builder struct {
	v    *View
	node NodeInfo
	err  error

	clusters  []types.Resource
	endpoints []types.Resource
	listeners []types.Resource
	routes    []types.Resource
	// routeNames are the RouteConfigurations some listener refers to; only
	// those are served (a snapshot must not hold unreferenced routes).
	routeNames map[string]bool
	// from is the local service an explicit upstream being built belongs
	// to ("" otherwise); the sourced clusters and routes it names are
	// built at the end (sourced.go).
	from                           string
	sourcedClusters, sourcedRoutes map[sourcedRef]bool
	// localKeys caches localServiceKeys (nil: not computed yet).
	localKeys *[]string
}

func (b *builder) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// any packs m; a failure (a string that is not UTF-8) fails the build.
func (b *builder) any(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		b.fail(fmt.Errorf("%w: packing %T: %v", ErrTranslate, m, err))
	}
	return a
}

// Build translates the view into the snapshot node is served: a pure
// function of its arguments, version = the view's raft index.
func Build(v *View, node NodeInfo) (*cache.Snapshot, error) {
	b := &builder{v: v, node: node, routeNames: map[string]bool{}}
	for _, k := range v.keys {
		s := v.services[k]
		b.clusters = append(b.clusters, b.serviceCluster(s))
		b.endpoints = append(b.endpoints, b.loadAssignment(s))
	}
	if node.Mesh() {
		b.clusters = append(b.clusters, passthroughCluster())
		b.outboundListener()
		b.upstreamListeners()
		b.inboundListener()
		b.inboundCaptureListener()
	} else {
		b.apiListeners()
	}
	for _, k := range v.keys {
		if b.routeNames[k] {
			b.routes = append(b.routes, b.routeConfig(v.services[k]))
		}
	}
	b.sourcedResources()
	b.addAccessLogs()
	if b.err != nil {
		return nil, b.err
	}
	return cache.NewSnapshot(strconv.FormatUint(v.Index, 10), map[resource.Type][]types.Resource{
		resource.ClusterType:  b.clusters,
		resource.EndpointType: b.endpoints,
		resource.ListenerType: b.listeners,
		resource.RouteType:    b.routes,
	})
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func socketAddr(ip string, port int, proto core.SocketAddress_Protocol) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Protocol: proto, Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// target is where traffic for a service goes: its own cluster, or, when its
// resolver redirects, the redirect's (followed to the end, cycles cut).
func (v *View) target(key string) string {
	seen := map[string]bool{}
	for {
		s := v.services[key]
		if s == nil || s.resolver == nil || s.resolver.Redirect == nil || seen[key] {
			return key
		}
		seen[key] = true
		key = serviceKey(s.resolver.Redirect.Service)
	}
}

// weighted is one cluster of a split, with the split's header changes.
type weighted struct {
	cluster string
	weight  uint32
	split   *discovery.ServiceSplit
}

// splits resolves a destination service through its splitter (and the
// splitters of the services it splits to) into clusters whose weights add
// up to totalWeight. A split that names its own service goes to that
// service's resolver, not back to the splitter, as in Consul's discovery
// chain; a cycle of splitters is cut the same way.
func (v *View) splits(key string) []weighted {
	acc := map[string]float64{}
	first := map[string]*discovery.ServiceSplit{}
	var order []string
	var walk func(key string, share float64, via *discovery.ServiceSplit, seen map[string]bool)
	walk = func(key string, share float64, via *discovery.ServiceSplit, seen map[string]bool) {
		s := v.services[key]
		if s == nil || s.splitter == nil || seen[key] {
			c := v.target(key)
			if _, ok := acc[c]; !ok {
				order = append(order, c)
				first[c] = via
			}
			acc[c] += share
			return
		}
		next := map[string]bool{key: true}
		for k := range seen {
			next[k] = true
		}
		for i := range s.splitter.Splits {
			sp := &s.splitter.Splits[i]
			w := float64(sp.Weight) / 100
			if w <= 0 || math.IsNaN(w) {
				continue
			}
			to := serviceKey(sp.Service)
			if to == "" || to == key {
				c := v.target(key)
				if _, ok := acc[c]; !ok {
					order = append(order, c)
					first[c] = sp
				}
				acc[c] += share * w
				continue
			}
			walk(to, share*w, sp, next)
		}
	}
	walk(key, 1, nil, nil)
	if len(order) == 0 {
		// Every split weighs 0: nothing valid to send to but the service.
		return []weighted{{cluster: v.target(key), weight: totalWeight}}
	}
	// Largest remainder, so the integer weights add up to exactly
	// totalWeight whatever the nesting did to them.
	type part struct {
		c    string
		w    uint32
		frac float64
	}
	var total float64
	for _, c := range order {
		total += acc[c]
	}
	parts := make([]part, 0, len(order))
	sum := uint32(0)
	for _, c := range order {
		x := acc[c] / total * totalWeight
		w := uint32(math.Floor(x))
		parts = append(parts, part{c, w, x - float64(w)})
		sum += w
	}
	byFrac := make([]int, len(parts))
	for i := range byFrac {
		byFrac[i] = i
	}
	sort.SliceStable(byFrac, func(i, j int) bool { return parts[byFrac[i]].frac > parts[byFrac[j]].frac })
	for i := 0; sum < totalWeight; i = (i + 1) % len(parts) {
		parts[byFrac[i]].w++
		sum++
	}
	var out []weighted
	for _, p := range parts {
		if p.w > 0 {
			out = append(out, weighted{cluster: p.c, weight: p.w, split: first[p.c]})
		}
	}
	return out
}

// lbPolicy maps a resolver's policy for this client. Proxyless gRPC has no
// random or maglev: it gets round robin and ring hash, which keep the
// intent (spread, and consistent hashing).
func (b *builder) lbPolicy(lb *discovery.LoadBalancer) cluster.Cluster_LbPolicy {
	if lb == nil {
		return cluster.Cluster_ROUND_ROBIN
	}
	switch lb.Policy {
	case discovery.LBLeastRequest:
		return cluster.Cluster_LEAST_REQUEST
	case discovery.LBRandom:
		if b.node.Proxyless {
			return cluster.Cluster_ROUND_ROBIN
		}
		return cluster.Cluster_RANDOM
	case discovery.LBRingHash:
		return cluster.Cluster_RING_HASH
	case discovery.LBMaglev:
		if b.node.Proxyless {
			return cluster.Cluster_RING_HASH
		}
		return cluster.Cluster_MAGLEV
	}
	return cluster.Cluster_ROUND_ROBIN
}

func (b *builder) serviceCluster(s *service) *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 s.key,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		CircuitBreakers: &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
			Priority:           core.RoutingPriority_DEFAULT,
			MaxConnections:     wrapperspb.UInt32(defaultMaxConnections),
			MaxPendingRequests: wrapperspb.UInt32(defaultMaxPendingRequests),
			MaxRequests:        wrapperspb.UInt32(defaultMaxRequests),
			MaxRetries:         wrapperspb.UInt32(defaultMaxRetries),
		}}},
		OutlierDetection: outlierDetection(),
	}
	if r := s.resolver; r != nil {
		if r.ConnectTimeout > 0 {
			c.ConnectTimeout = durationpb.New(time.Duration(r.ConnectTimeout))
		}
		c.LbPolicy = b.lbPolicy(r.LoadBalancer)
		if lb := r.LoadBalancer; lb != nil {
			switch c.LbPolicy {
			case cluster.Cluster_RING_HASH:
				rh := &cluster.Cluster_RingHashLbConfig{}
				if cfg := lb.RingHashConfig; cfg != nil {
					if cfg.MinimumRingSize > 0 {
						rh.MinimumRingSize = wrapperspb.UInt64(cfg.MinimumRingSize)
					}
					if cfg.MaximumRingSize > 0 {
						rh.MaximumRingSize = wrapperspb.UInt64(cfg.MaximumRingSize)
					}
				}
				c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: rh}
			case cluster.Cluster_LEAST_REQUEST:
				if cfg := lb.LeastRequestConfig; cfg != nil && cfg.ChoiceCount >= 2 {
					c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{
						ChoiceCount: wrapperspb.UInt32(cfg.ChoiceCount),
					}}
				}
			}
		}
	}
	if !b.node.meshEndpoints() {
		return c
	}
	// Between proxies, HTTP/2 and gRPC stay HTTP/2.
	if s.protocol == discovery.ProtocolHTTP2 || s.protocol == discovery.ProtocolGRPC {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": b.any(http2Options()),
		}
	}
	if s.protocol != discovery.ProtocolUDP {
		c.TransportSocketMatches = []*cluster.Cluster_TransportSocketMatch{{
			Name:            "mesh",
			Match:           &structpb.Struct{Fields: map[string]*structpb.Value{transportSocketMatchKey: structpb.NewBoolValue(true)}},
			TransportSocket: b.upstreamTLS(s, SecretNodeCert),
		}}
	}
	return c
}

// outlierDetection is every mesh cluster's (service and local): eject an
// instance after 5 consecutive 5xx (or connect failures) for 30 s, at
// most 10% of the instances at once but always at least one (without
// always_eject_one_host Envoy would eject none from a service of fewer
// than 10 — and a host runs few instances of a service), so a dead
// instance stops getting traffic before its health check notices.
func outlierDetection() *cluster.OutlierDetection {
	return &cluster.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(5),
		Interval:           durationpb.New(10 * time.Second),
		BaseEjectionTime:   durationpb.New(30 * time.Second),
		MaxEjectionPercent: wrapperspb.UInt32(10),
		AlwaysEjectOneHost: wrapperspb.Bool(true),
	}
}

func http2Options() *httpopts.HttpProtocolOptions {
	return &httpopts.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
		}},
	}
}

func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

func alpn(protocol string) []string {
	switch protocol {
	case discovery.ProtocolHTTP2, discovery.ProtocolGRPC:
		return []string{"h2"}
	case discovery.ProtocolHTTP:
		return []string{"http/1.1"}
	}
	return nil
}

// upstreamTLS is mTLS to a peer's mesh port: SNI names the service; the
// client certificate (cert: the host's, or a local service's for an
// explicit upstream) and the CA roots come over SDS. The peer must present
// the service's own identity (spiffe://<td>/svc/<service>): a certificate
// of the mesh that names another service is refused, so an endpoint that
// is not what the catalog says it is gets no traffic.
func (b *builder) upstreamTLS(s *service, cert string) *core.TransportSocket {
	ctc := &tlsv3.CommonTlsContext{
		AlpnProtocols:                  alpn(s.protocol),
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(cert)},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: sdsSecret(SecretRoots),
		},
	}
	if b.v.trustDomain != "" {
		ctc.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
						SanType: tlsv3.SubjectAltNameMatcher_URI,
						// Service names are case-insensitive; a leaf names
						// the service as it was registered.
						Matcher: &matcher.StringMatcher{
							MatchPattern: &matcher.StringMatcher_Exact{Exact: serviceSPIFFE(b.v.trustDomain, s.key)},
							IgnoreCase:   true,
						},
					}},
				},
				ValidationContextSdsSecretConfig: sdsSecret(SecretRoots),
			},
		}
	}
	return &core.TransportSocket{
		Name: wellknown.TransportSocketTLS,
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: b.any(&tlsv3.UpstreamTlsContext{
			Sni:              SNI(s.key),
			CommonTlsContext: ctc,
		})},
	}
}

func passthroughCluster() *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
		LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
	}
}

// loadAssignment lists a service's usable instances. A mesh proxy reaches
// an instance on a vmesh host at that host's mesh port (one endpoint per
// host, weighted by its instances); everything else, and every instance for
// a client that is not a mesh proxy, at the instance's own address.
// Critical instances are left out; warning ones are DEGRADED, which Envoy
// uses only when too few are healthy.
func (b *builder) loadAssignment(s *service) *endpoint.ClusterLoadAssignment {
	type hostEP struct {
		weight  uint32
		healthy bool
	}
	hosts := map[string]*hostEP{}
	var hostOrder []string
	var lbs []*endpoint.LbEndpoint
	for _, in := range s.instances {
		var w int
		var status core.HealthStatus
		switch in.health {
		case discovery.HealthPassing:
			w, status = in.Weights.Passing, core.HealthStatus_HEALTHY
		case discovery.HealthWarning:
			w, status = in.Weights.Warning, core.HealthStatus_DEGRADED
		default:
			continue
		}
		if w <= 0 {
			continue
		}
		w = min(w, maxEndpointWeight)
		if b.node.meshEndpoints() && !in.external && s.protocol != discovery.ProtocolUDP {
			ip, ok := ipAddr(in.node.Address)
			if !ok {
				continue
			}
			h := hosts[ip]
			if h == nil {
				h = &hostEP{}
				hosts[ip] = h
				hostOrder = append(hostOrder, ip)
			}
			h.weight += uint32(w)
			h.healthy = h.healthy || status == core.HealthStatus_HEALTHY
			continue
		}
		addr := in.Address
		if addr == "" && in.node != nil {
			addr = in.node.Address
		}
		ip, ok := ipAddr(addr)
		if !ok || in.Port <= 0 || in.Port > 65535 {
			continue
		}
		lbs = append(lbs, b.lbEndpoint(ip, in.Port, uint32(w), status, false, s.protocol))
	}
	for _, ip := range hostOrder {
		h := hosts[ip]
		status := core.HealthStatus_DEGRADED
		if h.healthy {
			status = core.HealthStatus_HEALTHY
		}
		lbs = append(lbs, b.lbEndpoint(ip, b.v.opts.MeshPort, min(h.weight, maxEndpointWeight), status, true, s.protocol))
	}
	sort.SliceStable(lbs, func(i, j int) bool {
		ai, aj := lbs[i].GetEndpoint().GetAddress().GetSocketAddress(), lbs[j].GetEndpoint().GetAddress().GetSocketAddress()
		return ai.GetAddress() < aj.GetAddress() || (ai.GetAddress() == aj.GetAddress() && ai.GetPortValue() < aj.GetPortValue())
	})
	cla := &endpoint.ClusterLoadAssignment{ClusterName: s.key}
	if len(lbs) > 0 {
		// gRPC refuses a locality without an ID and ignores one without a
		// weight; there is one locality until zones are modelled.
		cla.Endpoints = []*endpoint.LocalityLbEndpoints{{Locality: &core.Locality{}, LbEndpoints: lbs, LoadBalancingWeight: wrapperspb.UInt32(1)}}
	}
	return cla
}

func (b *builder) lbEndpoint(ip string, port int, weight uint32, status core.HealthStatus, mesh bool, protocol string) *endpoint.LbEndpoint {
	sp := core.SocketAddress_TCP
	if protocol == discovery.ProtocolUDP {
		sp = core.SocketAddress_UDP
	}
	ep := &endpoint.LbEndpoint{
		HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: socketAddr(ip, port, sp),
		}},
		HealthStatus:        status,
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
	if mesh {
		ep.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{transportSocketMatchKey: structpb.NewBoolValue(true)}},
		}}
	}
	return ep
}

// hostPort renders an address for names and errors.
func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
