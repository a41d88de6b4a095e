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
	maxConns       uint32
	outlier        *outlierSpec
	tls            *upstreamTLS
	tlsMatches     []tlsMatch
}

type tlsMatch struct {
	match *structpb.Struct
	tls   *upstreamTLS // nil: plaintext
}

type upstreamTLS struct {
	sni                     string
	certSecret, rootsSecret string
	alpn                    []string
}

type outlierSpec struct {
	consecutive   uint32
	baseEjection  time.Duration
	maxEjectedPct uint32
}

func parseCluster(c *cluster.Cluster) (*clusterSpec, error) {
	path := "cluster " + c.GetName()
	if err := onlyFields(c, path, "name", "type", "eds_cluster_config", "connect_timeout", "lb_policy", "lb_config",
		"ring_hash_lb_config", "least_request_lb_config", "circuit_breakers", "outlier_detection", "transport_socket",
		"transport_socket_matches", "load_assignment", "typed_extension_protocol_options"); err != nil {
		return nil, err
	}
	s := &clusterSpec{name: c.GetName(), connectTimeout: defaultConnectTimeout, lb: c.GetLbPolicy(), maxConns: defaultMaxConnections}
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
	switch c.GetLbPolicy() {
	case cluster.Cluster_ROUND_ROBIN, cluster.Cluster_RANDOM, cluster.Cluster_LEAST_REQUEST:
	case cluster.Cluster_CLUSTER_PROVIDED:
		if s.kind != kindOriginalDst {
			return nil, fmt.Errorf("%w: %s.lb_policy CLUSTER_PROVIDED", ErrUnsupported, path)
		}
	default:
		return nil, fmt.Errorf("%w: %s.lb_policy %s is not supported yet", ErrUnsupported, path, c.GetLbPolicy())
	}
	if lc := c.GetLeastRequestLbConfig(); lc != nil {
		if err := onlyFields(lc, path+".least_request_lb_config", "choice_count"); err != nil {
			return nil, err
		}
		if n := lc.GetChoiceCount(); n != nil && n.GetValue() != 2 {
			return nil, fmt.Errorf("%w: %s.least_request_lb_config.choice_count %d (only 2)", ErrUnsupported, path, n.GetValue())
		}
	}
	if c.GetRingHashLbConfig() != nil {
		return nil, fmt.Errorf("%w: %s.ring_hash_lb_config", ErrUnsupported, path)
	}
	if cb := c.GetCircuitBreakers(); cb != nil {
		if err := onlyFields(cb, path+".circuit_breakers", "thresholds"); err != nil {
			return nil, err
		}
		for i, th := range cb.GetThresholds() {
			tp := fmt.Sprintf("%s.circuit_breakers.thresholds[%d]", path, i)
			// Pending requests, requests and retries are L7 limits: a TCP
			// proxy has none of them, so they cannot change what it does.
			if err := onlyFields(th, tp, "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries"); err != nil {
				return nil, err
			}
			if th.GetPriority() != core.RoutingPriority_DEFAULT {
				continue
			}
			if m := th.GetMaxConnections(); m != nil {
				s.maxConns = m.GetValue()
			}
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		op := path + ".outlier_detection"
		if err := onlyFields(od, op, "consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent"); err != nil {
			return nil, err
		}
		s.outlier = &outlierSpec{consecutive: 5, baseEjection: 30 * time.Second, maxEjectedPct: 10}
		if v := od.GetConsecutive_5Xx(); v != nil {
			s.outlier.consecutive = v.GetValue()
		}
		if v := od.GetBaseEjectionTime(); v != nil {
			s.outlier.baseEjection = v.AsDuration()
		}
		if v := od.GetMaxEjectionPercent(); v != nil {
			s.outlier.maxEjectedPct = min(v.GetValue(), 100)
		}
	}
	for k, v := range c.GetTypedExtensionProtocolOptions() {
		if k != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
			return nil, fmt.Errorf("%w: %s.typed_extension_protocol_options[%q]", ErrUnsupported, path, k)
		}
		// HTTP protocol options shape HTTP connections only, which no
		// accepted listener makes (L7 listeners are refused).
		var o httpopts.HttpProtocolOptions
		if err := unpack(v, &o, fmt.Sprintf("%s.typed_extension_protocol_options[%q]", path, k)); err != nil {
			return nil, err
		}
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
	cert, roots, alpn, err := parseCommonTLS(u.GetCommonTlsContext(), path+" UpstreamTlsContext.common_tls_context")
	if err != nil {
		return nil, err
	}
	if roots == "" {
		// Envoy would connect without verifying the peer; a mesh proxy
		// must not.
		return nil, fmt.Errorf("%w: %s: upstream TLS without a validation context", ErrUnsupported, path)
	}
	return &upstreamTLS{sni: u.GetSni(), certSecret: cert, rootsSecret: roots, alpn: alpn}, nil
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
