package discovery

import (
	"fmt"
	"slices"
	"strings"
)

// Consul's ingress-gateway and terminating-gateway config entries. vmesh
// runs no gateways: its node proxy fronts every mesh service and reaches
// every other one itself. Tools written for Consul still write these
// entries and read what Consul derives from them
// (/v1/catalog/gateway-services/:gateway, /v1/health/ingress/:service), so
// vmesh stores them, validated as Consul validates them, serves them back,
// and derives those views from them (gateway_services.go). They configure
// nothing: MeshState leaves them out (IsGatewayKind), so no listener,
// route, cluster, VIP or capture rule comes of them, exactly as the
// gateway records of the catalog (kinds.go) are left out.

// IsGatewayKind says whether kind is one of the gateway config entry
// kinds, which are records for Consul's tools and nothing else.
func IsGatewayKind(kind string) bool {
	return kind == KindIngressGateway || kind == KindTerminatingGateway
}

// IngressGateway is the body of an ingress-gateway entry, in Consul's
// shape: the listeners an ingress gateway named like the entry would open
// and the services each one exposes.
type IngressGateway struct {
	// TLS is always rendered, as Consul renders it.
	TLS       GatewayTLSConfig      `hcl:"tls"`
	Listeners []IngressListener     `hcl:"listeners"`
	Defaults  *IngressServiceConfig `json:",omitempty" hcl:"defaults"`
}

// IngressServiceConfig is the limits every service of an ingress gateway
// gets unless it sets its own.
type IngressServiceConfig struct {
	MaxConnections        uint32              `hcl:"max_connections"`
	MaxPendingRequests    uint32              `hcl:"max_pending_requests"`
	MaxConcurrentRequests uint32              `hcl:"max_concurrent_requests"`
	PassiveHealthCheck    *PassiveHealthCheck `json:",omitempty" hcl:"passive_health_check"`
}

// PassiveHealthCheck is Consul's outlier detection settings.
type PassiveHealthCheck struct {
	Interval                           Duration  `json:",omitempty" hcl:"interval"`
	MaxFailures                        uint32    `hcl:"max_failures"`
	EnforcingConsecutive5xx            *uint32   `json:",omitempty" hcl:"enforcing_consecutive_5xx"`
	EnforcingConsecutiveGatewayFailure *uint32   `json:",omitempty" hcl:"enforcing_consecutive_gateway_failure"`
	Consecutive5xx                     *uint32   `json:",omitempty" hcl:"consecutive_5xx"`
	ConsecutiveGatewayFailure          *uint32   `json:",omitempty" hcl:"consecutive_gateway_failure"`
	MaxEjectionPercent                 *uint32   `json:",omitempty" hcl:"max_ejection_percent"`
	BaseEjectionTime                   *Duration `json:",omitempty" hcl:"base_ejection_time"`
}

// GatewayTLSConfig is a gateway's or a listener's TLS settings.
type GatewayTLSConfig struct {
	Enabled       bool                 `hcl:"enabled"`
	SDS           *GatewayTLSSDSConfig `json:",omitempty" hcl:"sds"`
	TLSMinVersion string               `json:",omitempty" hcl:"tls_min_version"`
	TLSMaxVersion string               `json:",omitempty" hcl:"tls_max_version"`
	CipherSuites  []string             `json:",omitempty" hcl:"cipher_suites"`
}

// GatewayServiceTLSConfig is one service's TLS settings on a listener.
type GatewayServiceTLSConfig struct {
	SDS *GatewayTLSSDSConfig `json:",omitempty" hcl:"sds"`
}

// GatewayTLSSDSConfig names a certificate an SDS cluster serves.
type GatewayTLSSDSConfig struct {
	ClusterName  string `json:",omitempty" hcl:"cluster_name"`
	CertResource string `json:",omitempty" hcl:"cert_resource"`
}

// IngressListener is one port of an ingress gateway.
type IngressListener struct {
	Port int `hcl:"port"`
	// Protocol is tcp (the default), http, http2 or grpc.
	Protocol string            `hcl:"protocol"`
	TLS      *GatewayTLSConfig `json:",omitempty" hcl:"tls"`
	Services []IngressService  `hcl:"services"`
}

// IngressService is a service a listener exposes: a name, or "*" for
// every service with a Connect endpoint on an HTTP-like listener.
type IngressService struct {
	Name                  string                   `hcl:"name"`
	Hosts                 []string                 `hcl:"hosts"`
	Namespace             string                   `json:",omitempty" hcl:"namespace"`
	Partition             string                   `json:",omitempty" hcl:"partition"`
	TLS                   *GatewayServiceTLSConfig `json:",omitempty" hcl:"tls"`
	RequestHeaders        *HTTPHeaderModifiers     `json:",omitempty" hcl:"request_headers"`
	ResponseHeaders       *HTTPHeaderModifiers     `json:",omitempty" hcl:"response_headers"`
	MaxConnections        uint32                   `json:",omitempty" hcl:"max_connections"`
	MaxPendingRequests    uint32                   `json:",omitempty" hcl:"max_pending_requests"`
	MaxConcurrentRequests uint32                   `json:",omitempty" hcl:"max_concurrent_requests"`
	PassiveHealthCheck    *PassiveHealthCheck      `json:",omitempty" hcl:"passive_health_check"`
	Meta                  map[string]string        `json:",omitempty" hcl:"meta"`
}

// TerminatingGateway is the body of a terminating-gateway entry: the
// services outside the mesh a terminating gateway named like the entry
// would reach, and the TLS it would originate to each.
type TerminatingGateway struct {
	Services []LinkedService `hcl:"services"`
}

// LinkedService is one service of a terminating gateway: a name, or "*"
// for every service of the catalog with an instance that is not
// Connect-native.
type LinkedService struct {
	Name                   string `json:",omitempty" hcl:"name"`
	Namespace              string `json:",omitempty" hcl:"namespace"`
	Partition              string `json:",omitempty" hcl:"partition"`
	CAFile                 string `json:",omitempty" hcl:"ca_file"`
	CertFile               string `json:",omitempty" hcl:"cert_file"`
	KeyFile                string `json:",omitempty" hcl:"key_file"`
	SNI                    string `json:",omitempty" hcl:"sni"`
	DisableAutoHostRewrite bool   `json:",omitempty" hcl:"disable_auto_host_rewrite"`
}

type ingressGatewayWire struct {
	configEntryHeader
	IngressGateway
}

type terminatingGatewayWire struct {
	configEntryHeader
	TerminatingGateway
}

// wildcardService is the name that stands for every eligible service.
const wildcardService = "*"

// TLS versions and cipher suites Consul accepts in a gateway's TLS block.
var (
	gatewayTLSVersions = []string{"TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"}
	// gatewayCipherSuites are the suites Envoy supports, by IANA name.
	gatewayCipherSuites = []string{
		"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_CBC_SHA",
		"TLS_RSA_WITH_AES_256_GCM_SHA384", "TLS_RSA_WITH_AES_256_CBC_SHA",
		"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
		"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	}
)

// ingressProtocols are the protocols of an ingress listener; the last
// three are HTTP-like (several services per listener, hosts, headers).
var ingressProtocols = []string{ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC}

func httpLike(protocol string) bool { return protocol != ProtocolTCP }

// normalize fills in what Consul fills in before it validates: a
// listener's protocol defaults to tcp and is lower-cased.
func (g *IngressGateway) normalize() {
	for i := range g.Listeners {
		l := &g.Listeners[i]
		l.Protocol = strings.ToLower(l.Protocol)
		if l.Protocol == "" {
			l.Protocol = ProtocolTCP
		}
	}
}

func validateGatewayTLS(field string, t *GatewayTLSConfig, bad func(field, format string, args ...any)) {
	for _, v := range []struct{ name, v string }{{"TLSMinVersion", t.TLSMinVersion}, {"TLSMaxVersion", t.TLSMaxVersion}} {
		if v.v != "" && !slices.Contains(gatewayTLSVersions, v.v) {
			bad(field+v.name, "%q is not one of %s", v.v, strings.Join(gatewayTLSVersions, ", "))
		}
	}
	// TLS_AUTO compares with nothing; the concrete versions are in order.
	minI, maxI := slices.Index(gatewayTLSVersions, t.TLSMinVersion), slices.Index(gatewayTLSVersions, t.TLSMaxVersion)
	if minI > 0 && maxI > 0 && maxI < minI {
		bad(field+"TLSMaxVersion", "%s is below TLSMinVersion %s", t.TLSMaxVersion, t.TLSMinVersion)
	}
	if len(t.CipherSuites) > 0 && t.TLSMinVersion == "TLSv1_3" {
		bad(field+"CipherSuites", "apply to TLS 1.2 and earlier only, and TLSMinVersion is TLSv1_3")
	}
	for i, c := range t.CipherSuites {
		if !slices.Contains(gatewayCipherSuites, c) {
			bad(fmt.Sprintf("%sCipherSuites[%d]", field, i), "%q is not a cipher suite Envoy supports", c)
		}
	}
}

func validatePassiveHealthCheck(field string, p *PassiveHealthCheck, bad func(field, format string, args ...any)) {
	if p == nil {
		return
	}
	if p.Interval < 0 {
		bad(field+"Interval", "must not be negative")
	}
	if p.BaseEjectionTime != nil && *p.BaseEjectionTime < 0 {
		bad(field+"BaseEjectionTime", "must not be negative")
	}
	for _, pc := range []struct {
		name string
		v    *uint32
	}{{"EnforcingConsecutive5xx", p.EnforcingConsecutive5xx}, {"EnforcingConsecutiveGatewayFailure", p.EnforcingConsecutiveGatewayFailure}, {"MaxEjectionPercent", p.MaxEjectionPercent}} {
		if pc.v != nil && *pc.v > 100 {
			bad(field+pc.name, "is a percentage, at most 100, got %d", *pc.v)
		}
	}
}

// validHost is Consul's check of an ingress service's host: "*" (not
// with TLS), or a DNS name whose only wildcard is a leftmost "*." label.
func validHost(field, host string, tlsEnabled bool, bad func(field, format string, args ...any)) {
	if host == wildcardService {
		if tlsEnabled {
			bad(field, "\"*\" is not allowed when TLS is enabled: every host must be a DNS name to put in the certificate")
		}
		return
	}
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > 253 || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad(field, "%q is not a valid DNS name", host)
		return
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			bad(field, "%q is not a valid DNS name", host)
			return
		}
	}
	if strings.Contains(strings.TrimPrefix(name, "*."), "*") {
		bad(field, "%q: a wildcard is only allowed as the leftmost label", host)
	}
}

func validateIngressGateway(g *IngressGateway, bad func(field, format string, args ...any)) {
	validateGatewayTLS("TLS.", &g.TLS, bad)
	if d := g.Defaults; d != nil {
		validatePassiveHealthCheck("Defaults.PassiveHealthCheck.", d.PassiveHealthCheck, bad)
	}
	// SDS: a gateway-level certificate needs its cluster.
	gwCluster, gwCert := false, false
	if s := g.TLS.SDS; s != nil {
		if s.ClusterName == "" && s.CertResource != "" {
			bad("TLS.SDS.ClusterName", "missing: CertResource is set")
		}
		gwCluster, gwCert = s.ClusterName != "", s.CertResource != ""
	}
	ports := map[int]bool{}
	for i, l := range g.Listeners {
		lf := fmt.Sprintf("Listeners[%d].", i)
		if l.Port < 1 || l.Port > 65535 {
			bad(lf+"Port", "%d is not a port (1-65535)", l.Port)
		} else if ports[l.Port] {
			bad(lf+"Port", "%d is declared on two listeners", l.Port)
		}
		ports[l.Port] = true
		if !slices.Contains(ingressProtocols, l.Protocol) {
			bad(lf+"Protocol", "%q is not one of %s", l.Protocol, strings.Join(ingressProtocols, ", "))
			continue
		}
		if len(l.Services) == 0 {
			bad(lf+"Services", "no service declared for the listener on port %d", l.Port)
		}
		if !httpLike(l.Protocol) && len(l.Services) > 1 {
			bad(lf+"Services", "a %s listener exposes one service; several need http, http2 or grpc", l.Protocol)
		}
		lisCluster, lisCert := false, false
		if l.TLS != nil {
			validateGatewayTLS(lf+"TLS.", l.TLS, bad)
			if s := l.TLS.SDS; s != nil {
				lisCluster, lisCert = s.ClusterName != "", s.CertResource != ""
			}
		}
		if gwCluster && !gwCert && !lisCert {
			bad(lf+"TLS.SDS.CertResource", "missing: the gateway's TLS.SDS names a cluster but no default certificate")
		}
		if lisCluster && !lisCert {
			bad(lf+"TLS.SDS.CertResource", "missing: ClusterName is set")
		}
		if lisCert && !lisCluster && !gwCluster {
			bad(lf+"TLS.SDS.ClusterName", "missing: CertResource is set and the gateway's TLS.SDS names no cluster")
		}
		hosts := map[string]bool{}
		names := map[string]bool{}
		for j, s := range l.Services {
			sf := fmt.Sprintf("%sServices[%d].", lf, j)
			switch {
			case strings.TrimSpace(s.Name) == "":
				bad(sf+"Name", "missing")
			case s.Name == wildcardService:
				if !httpLike(l.Protocol) {
					bad(sf+"Name", "the wildcard \"*\" needs an http, http2 or grpc listener")
				}
				if len(s.Hosts) > 0 {
					bad(sf+"Hosts", "a wildcard service has no hosts")
				}
			default:
				validServiceName(sf+"Name", s.Name, true, bad)
			}
			defaultOnly(sf+"Namespace", s.Namespace, bad)
			defaultOnly(sf+"Partition", s.Partition, bad)
			if names[strings.ToLower(s.Name)] {
				bad(sf+"Name", "%q is listed twice on the listener", s.Name)
			}
			names[strings.ToLower(s.Name)] = true
			if !httpLike(l.Protocol) {
				if len(s.Hosts) > 0 {
					bad(sf+"Hosts", "hosts need an http, http2 or grpc listener")
				}
				if s.RequestHeaders != nil || s.ResponseHeaders != nil {
					bad(sf+"RequestHeaders", "header changes need an http, http2 or grpc listener")
				}
			}
			svcCert := s.TLS != nil && s.TLS.SDS != nil && s.TLS.SDS.CertResource != ""
			if svcCert && len(s.Hosts) == 0 {
				bad(sf+"TLS.SDS.CertResource", "a service with its own certificate needs at least one entry in Hosts")
			}
			if svcCert && s.TLS.SDS.ClusterName == "" && !lisCluster && !gwCluster {
				bad(sf+"TLS.SDS.ClusterName", "missing: CertResource is set and neither the listener nor the gateway names an SDS cluster")
			}
			for k, h := range s.Hosts {
				hf := fmt.Sprintf("%sHosts[%d]", sf, k)
				if hosts[h] {
					bad(hf, "%q is listed twice on the listener: hosts are unique within a listener", h)
				}
				hosts[h] = true
				validHost(hf, h, g.TLS.Enabled, bad)
			}
			validatePassiveHealthCheck(sf+"PassiveHealthCheck.", s.PassiveHealthCheck, bad)
			validateIntentionMeta(sf+"Meta", s.Meta, bad)
		}
	}
}

func validateTerminatingGateway(g *TerminatingGateway, bad func(field, format string, args ...any)) {
	seen := map[string]bool{}
	for i, s := range g.Services {
		f := fmt.Sprintf("Services[%d].", i)
		if s.Name != wildcardService {
			validServiceName(f+"Name", s.Name, true, bad)
		}
		defaultOnly(f+"Namespace", s.Namespace, bad)
		defaultOnly(f+"Partition", s.Partition, bad)
		if k := strings.ToLower(s.Name); seen[k] {
			bad(f+"Name", "%q is listed twice", s.Name)
		} else {
			seen[k] = true
		}
		// Client certificates come as a set; a CA alone is one-way TLS.
		if (s.CertFile != "" || s.KeyFile != "") && (s.CAFile == "" || s.CertFile == "" || s.KeyFile == "") {
			bad(f+"CertFile", "TLS origination with a client certificate needs CAFile, CertFile and KeyFile")
		}
	}
}
