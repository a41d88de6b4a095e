package proxy

import (
	"fmt"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Clusters and endpoints, parsed: every field honoured or refused.

type clusterKind int

const (
	kindEDS clusterKind = iota
	kindStatic
	kindOriginalDst
)

type clusterSpec struct {
	name           string
	kind           clusterKind
	edsName        string
	static         *endpointsSpec
	connectTimeout time.Duration
	lb             cluster.Cluster_LbPolicy
	// Load balancer settings: least_request_lb_config.choice_count,
	// ring_hash_lb_config's sizes, maglev_lb_config.table_size and
	// common_lb_config.healthy_panic_threshold (a percentage).
	choiceCount      uint32
	ringMin, ringMax uint64
	maglevSize       uint64
	panicThreshold   float64
	breakers         breakerSpec
	outlier          *outlierSpec
	tls              *upstreamTLS
	tlsMatches       []tlsMatch
	// http2: HttpProtocolOptions' explicit HTTP/2 (else HTTP/1.1).
	http2 bool
}

type tlsMatch struct {
	match *structpb.Struct
	tls   *upstreamTLS // nil: plaintext
}

type upstreamTLS struct {
	sni                     string
	certSecret, rootsSecret string
	alpn                    []string
	// sans are the identities the endpoint's certificate must carry, one
	// of them at least (match_typed_subject_alt_names; none: any the
	// roots verify).
	sans []sanMatcher
}

// breakerSpec is the DEFAULT priority's circuit_breakers thresholds.
type breakerSpec struct {
	maxConns, maxPending, maxRequests, maxRetries uint32
	budget                                        *retryBudget // replaces maxRetries when set
}

type retryBudget struct {
	percent        float64 // of the active and pending requests
	minConcurrency uint32
}

// outlierSpec is outlier_detection with Envoy's defaults filled in.
type outlierSpec struct {
	consec5xx, consecGateway, consecLocal    uint32
	enforce5xx, enforceGateway, enforceLocal uint32 // percent
	split                                    bool   // split_external_local_origin_errors
	interval, baseEjection, maxEjection      time.Duration
	jitter                                   time.Duration
	maxEjectedPct                            uint32
	alwaysEjectOne                           bool
}

func parseCluster(c *cluster.Cluster) (*clusterSpec, error) {
	path := "cluster " + c.GetName()
	if err := onlyFields(c, path, "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
		"ring_hash_lb_config", "maglev_lb_config", "least_request_lb_config", "common_lb_config",
		"circuit_breakers", "outlier_detection", "transport_socket",
		"transport_socket_matches", "load_assignment", "typed_extension_protocol_options"); err != nil {
		return nil, err
	}
	s := &clusterSpec{name: c.GetName(), connectTimeout: defaultConnectTimeout, lb: c.GetLbPolicy()}
	if d := c.GetConnectTimeout(); d != nil {
		s.connectTimeout = d.AsDuration()
		if s.connectTimeout <= 0 {
			return nil, fmt.Errorf("%w: %s.connect_timeout must be positive", ErrInvalid, path)
		}
	}
	switch c.GetType() {
	case cluster.Cluster_EDS:
		s.kind = kindEDS
		ec := c.GetEdsClusterConfig()
		if err := onlyFields(ec, path+".eds_cluster_config", "eds_config", "service_name"); err != nil {
			return nil, err
		}
		if ec.GetEdsConfig().GetAds() == nil {
			return nil, fmt.Errorf("%w: %s.eds_cluster_config.eds_config: endpoints come over ADS only", ErrUnsupported, path)
		}
		s.edsName = ec.GetServiceName()
		if s.edsName == "" {
			s.edsName = s.name
		}
	case cluster.Cluster_STATIC:
		s.kind = kindStatic
		eps, err := parseCLA(c.GetLoadAssignment(), path+".load_assignment")
		if err != nil {
			return nil, err
		}
		s.static = eps
	case cluster.Cluster_ORIGINAL_DST:
		s.kind = kindOriginalDst
		if c.GetLbPolicy() != cluster.Cluster_CLUSTER_PROVIDED {
			return nil, fmt.Errorf("%w: %s: an ORIGINAL_DST cluster needs lb_policy CLUSTER_PROVIDED", ErrInvalid, path)
		}
	default:
		return nil, fmt.Errorf("%w: %s.type %s", ErrUnsupported, path, c.GetType())
	}
	if s.kind != kindStatic && c.GetLoadAssignment() != nil {
		return nil, fmt.Errorf("%w: %s.load_assignment on a %s cluster", ErrUnsupported, path, c.GetType())
	}
	if err := parseLB(c, s, path); err != nil {
		return nil, err
	}
	if err := parseBreakers(c.GetCircuitBreakers(), &s.breakers, path+".circuit_breakers"); err != nil {
		return nil, err
	}
	if od := c.GetOutlierDetection(); od != nil {
		o, err := parseOutlier(od, path+".outlier_detection")
		if err != nil {
			return nil, err
		}
		s.outlier = o
	}
	for k, v := range c.GetTypedExtensionProtocolOptions() {
		if k != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
			return nil, fmt.Errorf("%w: %s.typed_extension_protocol_options[%q]", ErrUnsupported, path, k)
		}
		// Which protocol HTTP requests take to the endpoints (http_parse.go).
		var o httpopts.HttpProtocolOptions
		op := fmt.Sprintf("%s.typed_extension_protocol_options[%q]", path, k)
		if err := unpack(v, &o, op); err != nil {
			return nil, err
		}
		h2, err := parseHTTPProtocolOptions(&o, op)
		if err != nil {
			return nil, err
		}
		s.http2 = h2
	}
	if ts := c.GetTransportSocket(); ts != nil {
		t, err := parseUpstreamTLS(ts, path+".transport_socket")
		if err != nil {
			return nil, err
		}
		s.tls = t
	}
	for i, m := range c.GetTransportSocketMatches() {
		mp := fmt.Sprintf("%s.transport_socket_matches[%d]", path, i)
		if err := onlyFields(m, mp, "name", "match", "transport_socket"); err != nil {
			return nil, err
		}
		tm := tlsMatch{match: m.GetMatch()}
		if ts := m.GetTransportSocket(); ts != nil {
			t, err := parseUpstreamTLS(ts, mp+".transport_socket")
			if err != nil {
				return nil, err
			}
			tm.tls = t
		}
		s.tlsMatches = append(s.tlsMatches, tm)
	}
	if s.kind == kindOriginalDst && (s.tls != nil || len(s.tlsMatches) > 0) {
		return nil, fmt.Errorf("%w: %s: TLS to an original destination", ErrUnsupported, path)
	}
	return s, nil
}

func parseUpstreamTLS(ts *core.TransportSocket, path string) (*upstreamTLS, error) {
	if err := onlyFields(ts, path, "name", "typed_config"); err != nil {
		return nil, err
	}
	var u tlsv3.UpstreamTlsContext
	if err := unpack(ts.GetTypedConfig(), &u, path); err != nil {
		return nil, err
	}
	if err := onlyFields(&u, path+" UpstreamTlsContext", "sni", "common_tls_context"); err != nil {
		return nil, err
	}
	ct, err := parseCommonTLS(u.GetCommonTlsContext(), path+" UpstreamTlsContext.common_tls_context")
	if err != nil {
		return nil, err
	}
	if ct.roots == "" {
		// Envoy would connect without verifying the peer; a mesh proxy
		// must not.
		return nil, fmt.Errorf("%w: %s: upstream TLS without a validation context", ErrUnsupported, path)
	}
	return &upstreamTLS{sni: u.GetSni(), certSecret: ct.cert, rootsSecret: ct.roots, alpn: ct.alpn, sans: ct.sans}, nil
}

func parseCLA(cla *endpoint.ClusterLoadAssignment, path string) (*endpointsSpec, error) {
	if cla == nil {
		return &endpointsSpec{}, nil
	}
	if err := onlyFields(cla, path, "cluster_name", "endpoints"); err != nil {
		return nil, err
	}
	out := &endpointsSpec{}
	for i, loc := range cla.GetEndpoints() {
		lp := fmt.Sprintf("%s.endpoints[%d]", path, i)
		if err := onlyFields(loc, lp, "locality", "lb_endpoints", "load_balancing_weight"); err != nil {
			return nil, err
		}
		// One locality is all the xDS server sends; with several, their
		// weights would matter.
		if len(cla.GetEndpoints()) > 1 {
			return nil, fmt.Errorf("%w: %s: more than one locality", ErrUnsupported, path)
		}
		for j, lb := range loc.GetLbEndpoints() {
			ep := fmt.Sprintf("%s.lb_endpoints[%d]", lp, j)
			if err := onlyFields(lb, ep, "endpoint", "health_status", "load_balancing_weight", "metadata"); err != nil {
				return nil, err
			}
			if err := onlyFields(lb.GetEndpoint(), ep+".endpoint", "address"); err != nil {
				return nil, err
			}
			if lb.GetEndpoint().GetAddress().GetSocketAddress().GetProtocol() == core.SocketAddress_UDP {
				// A UDP service's endpoints: only a UDP listener would
				// use them, and those are refused (by name) on their own.
				// Refusing the endpoints too would hold back every other
				// cluster's endpoints in the same response.
				continue
			}
			addr, err := parseAddr(lb.GetEndpoint().GetAddress(), ep+".endpoint.address")
			if err != nil {
				return nil, err
			}
			e := endpointSpec{addr: addr, weight: 1, health: lb.GetHealthStatus()}
			if w := lb.GetLoadBalancingWeight(); w != nil {
				e.weight = max(w.GetValue(), 1)
			}
			if md := lb.GetMetadata(); md != nil {
				if err := onlyFields(md, ep+".metadata", "filter_metadata"); err != nil {
					return nil, err
				}
				for k, v := range md.GetFilterMetadata() {
					if k != "envoy.transport_socket_match" {
						return nil, fmt.Errorf("%w: %s.metadata.filter_metadata[%q]", ErrUnsupported, ep, k)
					}
					e.match = v
				}
			}
			out.eps = append(out.eps, e)
		}
	}
	return out, nil
}

// parseLB reads lb_policy and the configs that go with it. A config for
// another policy than the cluster's is invalid, as in Envoy.
func parseLB(c *cluster.Cluster, s *clusterSpec, path string) error {
	s.choiceCount = defaultChoiceCount
	s.ringMin, s.ringMax = defaultRingMin, defaultRingMax
	s.maglevSize = defaultMaglevSize
	s.panicThreshold = defaultPanicThreshold
	policy := c.GetLbPolicy()
	switch policy {
	case cluster.Cluster_ROUND_ROBIN, cluster.Cluster_RANDOM, cluster.Cluster_LEAST_REQUEST,
		cluster.Cluster_RING_HASH, cluster.Cluster_MAGLEV:
	case cluster.Cluster_CLUSTER_PROVIDED:
		if s.kind != kindOriginalDst {
			return fmt.Errorf("%w: %s.lb_policy CLUSTER_PROVIDED", ErrUnsupported, path)
		}
	default:
		return fmt.Errorf("%w: %s.lb_policy %s is not supported", ErrUnsupported, path, policy)
	}
	mismatch := func(field string) error {
		return fmt.Errorf("%w: %s.%s with lb_policy %s", ErrInvalid, path, field, policy)
	}
	if lc := c.GetLeastRequestLbConfig(); lc != nil {
		lp := path + ".least_request_lb_config"
		if policy != cluster.Cluster_LEAST_REQUEST {
			return mismatch("least_request_lb_config")
		}
		if err := onlyFields(lc, lp, "choice_count"); err != nil {
			return err
		}
		if n := lc.GetChoiceCount(); n != nil {
			if n.GetValue() < 2 {
				return fmt.Errorf("%w: %s.choice_count %d: at least 2", ErrInvalid, lp, n.GetValue())
			}
			s.choiceCount = n.GetValue()
		}
	}
	if rh := c.GetRingHashLbConfig(); rh != nil {
		rp := path + ".ring_hash_lb_config"
		if policy != cluster.Cluster_RING_HASH {
			return mismatch("ring_hash_lb_config")
		}
		if err := onlyFields(rh, rp, "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
			return err
		}
		if f := rh.GetHashFunction(); f != cluster.Cluster_RingHashLbConfig_XX_HASH {
			return fmt.Errorf("%w: %s.hash_function %s (only XX_HASH)", ErrUnsupported, rp, f)
		}
		if v := rh.GetMinimumRingSize(); v != nil {
			s.ringMin = v.GetValue()
		}
		if v := rh.GetMaximumRingSize(); v != nil {
			s.ringMax = v.GetValue()
		}
		switch {
		case s.ringMin == 0 || s.ringMin > defaultRingMax:
			return fmt.Errorf("%w: %s.minimum_ring_size %d: 1 to %d", ErrInvalid, rp, s.ringMin, defaultRingMax)
		case s.ringMax == 0 || s.ringMax > defaultRingMax:
			return fmt.Errorf("%w: %s.maximum_ring_size %d: 1 to %d", ErrInvalid, rp, s.ringMax, defaultRingMax)
		case s.ringMin > s.ringMax:
			return fmt.Errorf("%w: %s.minimum_ring_size %d > maximum_ring_size %d", ErrInvalid, rp, s.ringMin, s.ringMax)
		}
	}
	if mg := c.GetMaglevLbConfig(); mg != nil {
		mp := path + ".maglev_lb_config"
		if policy != cluster.Cluster_MAGLEV {
			return mismatch("maglev_lb_config")
		}
		if err := onlyFields(mg, mp, "table_size"); err != nil {
			return err
		}
		if v := mg.GetTableSize(); v != nil {
			s.maglevSize = v.GetValue()
		}
		if s.maglevSize > maxMaglevSize || !isPrime(s.maglevSize) {
			return fmt.Errorf("%w: %s.table_size %d: a prime no larger than %d", ErrInvalid, mp, s.maglevSize, maxMaglevSize)
		}
	}
	if cl := c.GetCommonLbConfig(); cl != nil {
		cp := path + ".common_lb_config"
		if err := onlyFields(cl, cp, "healthy_panic_threshold"); err != nil {
			return err
		}
		if p := cl.GetHealthyPanicThreshold(); p != nil {
			v := p.GetValue()
			if !(v >= 0 && v <= 100) {
				return fmt.Errorf("%w: %s.healthy_panic_threshold %v: 0 to 100", ErrInvalid, cp, v)
			}
			s.panicThreshold = v
		}
	}
	return nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// parseBreakers reads circuit_breakers into out, Envoy's defaults where a
// threshold is not given. Only priority DEFAULT is honoured: no route is
// sent at priority HIGH (RouteAction.priority is not something this proxy
// accepts), so HIGH thresholds would never apply; they are refused rather
// than carried along unused.
func parseBreakers(cb *cluster.CircuitBreakers, out *breakerSpec, path string) error {
	*out = breakerSpec{maxConns: defaultMaxConnections, maxPending: defaultMaxPendingRequests,
		maxRequests: defaultMaxRequests, maxRetries: defaultMaxRetries}
	if cb == nil {
		return nil
	}
	if err := onlyFields(cb, path, "thresholds"); err != nil {
		return err
	}
	seen := false
	for i, th := range cb.GetThresholds() {
		tp := fmt.Sprintf("%s.thresholds[%d]", path, i)
		if err := onlyFields(th, tp, "priority", "max_connections", "max_pending_requests", "max_requests",
			"max_retries", "retry_budget"); err != nil {
			return err
		}
		if p := th.GetPriority(); p != core.RoutingPriority_DEFAULT {
			return fmt.Errorf("%w: %s.priority %s: only DEFAULT (no route runs at another priority)", ErrUnsupported, tp, p)
		}
		if seen {
			return fmt.Errorf("%w: %s: a second threshold for priority DEFAULT", ErrInvalid, tp)
		}
		seen = true
		for _, f := range []struct {
			v   interface{ GetValue() uint32 }
			set bool
			dst *uint32
		}{
			{th.GetMaxConnections(), th.GetMaxConnections() != nil, &out.maxConns},
			{th.GetMaxPendingRequests(), th.GetMaxPendingRequests() != nil, &out.maxPending},
			{th.GetMaxRequests(), th.GetMaxRequests() != nil, &out.maxRequests},
			{th.GetMaxRetries(), th.GetMaxRetries() != nil, &out.maxRetries},
		} {
			if f.set {
				*f.dst = f.v.GetValue()
			}
		}
		if rb := th.GetRetryBudget(); rb != nil {
			rp := tp + ".retry_budget"
			if err := onlyFields(rb, rp, "budget_percent", "min_retry_concurrency"); err != nil {
				return err
			}
			out.budget = &retryBudget{percent: defaultRetryBudgetPercent, minConcurrency: defaultMinRetryConcurr}
			if p := rb.GetBudgetPercent(); p != nil {
				v := p.GetValue()
				if !(v >= 0 && v <= 100) {
					return fmt.Errorf("%w: %s.budget_percent %v: 0 to 100", ErrInvalid, rp, v)
				}
				out.budget.percent = v
			}
			if m := rb.GetMinRetryConcurrency(); m != nil {
				out.budget.minConcurrency = m.GetValue()
			}
		}
	}
	return nil
}

// parseOutlier reads outlier_detection with Envoy's defaults, but for
// always_eject_one_host (see docs/proxy.md). The success rate and failure
// percentage detectors are not implemented: their enforcing_* fields are
// accepted only at 0 (off), the others refused.
func parseOutlier(od *cluster.OutlierDetection, path string) (*outlierSpec, error) {
	if err := onlyFields(od, path, "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
		"enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure", "enforcing_consecutive_local_origin_failure",
		"split_external_local_origin_errors", "interval", "base_ejection_time", "max_ejection_time",
		"max_ejection_time_jitter", "max_ejection_percent", "always_eject_one_host",
		"enforcing_success_rate", "enforcing_local_origin_success_rate", "enforcing_failure_percentage",
		"enforcing_failure_percentage_local_origin"); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		v    interface{ GetValue() uint32 }
	}{
		{"enforcing_success_rate", od.GetEnforcingSuccessRate()},
		{"enforcing_local_origin_success_rate", od.GetEnforcingLocalOriginSuccessRate()},
		{"enforcing_failure_percentage", od.GetEnforcingFailurePercentage()},
		{"enforcing_failure_percentage_local_origin", od.GetEnforcingFailurePercentageLocalOrigin()},
	} {
		if n := f.v.GetValue(); n != 0 {
			return nil, fmt.Errorf("%w: %s.%s %d: success rate and failure percentage ejection are not implemented (only 0)",
				ErrUnsupported, path, f.name, n)
		}
	}
	o := &outlierSpec{
		consec5xx: 5, consecGateway: 5, consecLocal: 5,
		enforce5xx: 100, enforceGateway: 0, enforceLocal: 100,
		split:    od.GetSplitExternalLocalOriginErrors(),
		interval: 10 * time.Second, baseEjection: 30 * time.Second,
		maxEjectedPct: 10,
	}
	counts := []struct {
		name string
		v    interface{ GetValue() uint32 }
		set  bool
		dst  *uint32
		pct  bool
	}{
		{"consecutive_5xx", od.GetConsecutive_5Xx(), od.GetConsecutive_5Xx() != nil, &o.consec5xx, false},
		{"consecutive_gateway_failure", od.GetConsecutiveGatewayFailure(), od.GetConsecutiveGatewayFailure() != nil, &o.consecGateway, false},
		{"consecutive_local_origin_failure", od.GetConsecutiveLocalOriginFailure(), od.GetConsecutiveLocalOriginFailure() != nil, &o.consecLocal, false},
		{"enforcing_consecutive_5xx", od.GetEnforcingConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx() != nil, &o.enforce5xx, true},
		{"enforcing_consecutive_gateway_failure", od.GetEnforcingConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure() != nil, &o.enforceGateway, true},
		{"enforcing_consecutive_local_origin_failure", od.GetEnforcingConsecutiveLocalOriginFailure(), od.GetEnforcingConsecutiveLocalOriginFailure() != nil, &o.enforceLocal, true},
		{"max_ejection_percent", od.GetMaxEjectionPercent(), od.GetMaxEjectionPercent() != nil, &o.maxEjectedPct, true},
	}
	for _, f := range counts {
		if !f.set {
			continue
		}
		if n := f.v.GetValue(); f.pct && n > 100 {
			return nil, fmt.Errorf("%w: %s.%s %d: a percentage (0 to 100)", ErrInvalid, path, f.name, n)
		}
		*f.dst = f.v.GetValue()
	}
	if v := od.GetAlwaysEjectOneHost(); v != nil {
		o.alwaysEjectOne = v.GetValue()
	}
	durations := []struct {
		name string
		v    interface{ AsDuration() time.Duration }
		set  bool
		dst  *time.Duration
	}{
		{"interval", od.GetInterval(), od.GetInterval() != nil, &o.interval},
		{"base_ejection_time", od.GetBaseEjectionTime(), od.GetBaseEjectionTime() != nil, &o.baseEjection},
		{"max_ejection_time", od.GetMaxEjectionTime(), od.GetMaxEjectionTime() != nil, &o.maxEjection},
		{"max_ejection_time_jitter", od.GetMaxEjectionTimeJitter(), od.GetMaxEjectionTimeJitter() != nil, &o.jitter},
	}
	for _, f := range durations {
		if !f.set {
			continue
		}
		d := f.v.AsDuration()
		if d < 0 || (d == 0 && f.dst != &o.jitter) {
			return nil, fmt.Errorf("%w: %s.%s must be positive", ErrInvalid, path, f.name)
		}
		*f.dst = d
	}
	if od.GetMaxEjectionTime() == nil {
		o.maxEjection = max(300*time.Second, o.baseEjection)
	} else if o.maxEjection < o.baseEjection {
		return nil, fmt.Errorf("%w: %s.max_ejection_time %v is shorter than base_ejection_time %v", ErrInvalid, path, o.maxEjection, o.baseEjection)
	}
	return o, nil
}
