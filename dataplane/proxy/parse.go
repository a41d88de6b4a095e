package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	origdst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// The parse step turns each xDS resource into a spec, on its own: every
// field is either honoured or refused (onlyFields), so a NACK names the
// resource and the field. Specs refer to each other by name; build.go
// resolves the references.

// defaultConnectTimeout is Envoy's default for a cluster without one.
const defaultConnectTimeout = 5 * time.Second

// defaultMaxConnections is Envoy's default circuit-breaker threshold.
const defaultMaxConnections = 1024

type listenerSpec struct {
	name         string
	addr         netip.AddrPort
	origDst      bool
	tlsInspector bool
	chains       []*chainSpec
	def          *chainSpec
	byKey        map[string]*chainSpec // chains and def by key
	src          *listener.Listener
	// logs log the connections refused before a chain took them
	// (accesslog.go).
	logs []*accessLogSpec
}

type chainSpec struct {
	name string
	// key finds the chain in a later version of its listener: its name,
	// else its place ("filter_chains[2]", "default_filter_chain").
	key         string
	prefixes    []netip.Prefix
	port        uint32
	serverNames []string
	transport   string
	tls         *downstreamTLS
	rbac        *rbacSpec
	// The terminal filter: a TCP proxy or an HTTP connection manager.
	proxy *tcpProxySpec
	http  *hcmSpec
}

type downstreamTLS struct {
	certSecret, rootsSecret string
	requireClient           bool
	alpn                    []string
	// sans are the client identities accepted (none: any the roots
	// verify).
	sans []sanMatcher
}

type tcpProxySpec struct {
	stat     string
	clusters []weightedCluster
	total    uint64
	logs     []*accessLogSpec // accesslog.go
}

type weightedCluster struct {
	name   string
	weight uint32
}

type endpointsSpec struct {
	eps []endpointSpec
}

type endpointSpec struct {
	addr   netip.AddrPort
	weight uint32
	health core.HealthStatus
	// match is the endpoint's envoy.transport_socket_match metadata.
	match *structpb.Struct
}

type secretSpec struct {
	cert  *tls.Certificate
	roots *x509.CertPool
	// digest identifies the content: an unchanged secret in a new SDS
	// response keeps the TLS configs built from it (and so the pooled
	// upstream connections).
	digest [sha256.Size]byte
}

func unpack(a *anypb.Any, m proto.Message, path string) error {
	if a == nil {
		return fmt.Errorf("%w: %s: typed_config is missing", ErrInvalid, path)
	}
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("%w: %s: %s is not supported here", ErrUnsupported, path, strings.TrimPrefix(a.GetTypeUrl(), "type.googleapis.com/"))
	}
	return nil
}

func parseAddr(a *core.Address, path string) (netip.AddrPort, error) {
	if err := onlyFields(a, path, "socket_address"); err != nil {
		return netip.AddrPort{}, err
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %s.socket_address is missing", ErrInvalid, path)
	}
	if err := onlyFields(sa, path+".socket_address", "protocol", "address", "port_value"); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.GetProtocol() != core.SocketAddress_TCP {
		return netip.AddrPort{}, fmt.Errorf("%w: %s.socket_address.protocol %s: UDP is not supported yet", ErrUnsupported, path, sa.GetProtocol())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: %s.socket_address.address %q is not an IP address", ErrInvalid, path, sa.GetAddress())
	}
	if sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s.socket_address.port_value %d", ErrInvalid, path, sa.GetPortValue())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}

func parseListener(l *listener.Listener) (*listenerSpec, error) {
	path := "listener " + l.GetName()
	if l.GetApiListener() != nil {
		return nil, fmt.Errorf("%w: %s.api_listener: API listeners are for proxyless clients", ErrUnsupported, path)
	}
	if l.GetUdpListenerConfig() != nil {
		return nil, fmt.Errorf("%w: %s.udp_listener_config: UDP listeners are not supported yet", ErrUnsupported, path)
	}
	if err := onlyFields(l, path, "name", "address", "filter_chains", "default_filter_chain", "listener_filters", "traffic_direction", "stat_prefix", "access_log"); err != nil {
		return nil, err
	}
	addr, err := parseAddr(l.GetAddress(), path+".address")
	if err != nil {
		return nil, err
	}
	s := &listenerSpec{name: l.GetName(), addr: addr, src: l}
	if s.logs, err = parseAccessLogs(l.GetAccessLog(), path); err != nil {
		return nil, err
	}
	for i, f := range l.GetListenerFilters() {
		fp := fmt.Sprintf("%s.listener_filters[%d]", path, i)
		if err := onlyFields(f, fp, "name", "typed_config"); err != nil {
			return nil, err
		}
		switch f.GetTypedConfig().GetTypeUrl() {
		case "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst":
			var od origdst.OriginalDst
			if err := unpack(f.GetTypedConfig(), &od, fp); err != nil {
				return nil, err
			}
			if err := onlyFields(&od, fp+" original_dst"); err != nil {
				return nil, err
			}
			s.origDst = true
		case "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector":
			var ti tlsinspector.TlsInspector
			if err := unpack(f.GetTypedConfig(), &ti, fp); err != nil {
				return nil, err
			}
			if err := onlyFields(&ti, fp+" tls_inspector"); err != nil {
				return nil, err
			}
			s.tlsInspector = true
		default:
			return nil, fmt.Errorf("%w: %s: listener filter %q (%s)", ErrUnsupported, fp, f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	s.byKey = map[string]*chainSpec{}
	key := func(c *chainSpec, place, cp string) error {
		c.key = place
		if c.name != "" {
			c.key = "name:" + c.name
		}
		if s.byKey[c.key] != nil {
			return fmt.Errorf("%w: %s.name %q is used by another filter chain", ErrInvalid, cp, c.name)
		}
		s.byKey[c.key] = c
		return nil
	}
	for i, fc := range l.GetFilterChains() {
		cp := fmt.Sprintf("%s.filter_chains[%d]", path, i)
		c, err := parseChain(fc, cp, s.tlsInspector)
		if err != nil {
			return nil, err
		}
		if err := key(c, fmt.Sprintf("filter_chains[%d]", i), cp); err != nil {
			return nil, err
		}
		s.chains = append(s.chains, c)
	}
	if fc := l.GetDefaultFilterChain(); fc != nil {
		c, err := parseChain(fc, path+".default_filter_chain", s.tlsInspector)
		if err != nil {
			return nil, err
		}
		if err := key(c, "default_filter_chain", path+".default_filter_chain"); err != nil {
			return nil, err
		}
		s.def = c
	}
	if len(s.chains) == 0 && s.def == nil {
		return nil, fmt.Errorf("%w: %s has no filter chain", ErrInvalid, path)
	}
	return s, nil
}

// chain finds a filter chain by its key (nil: none).
func (l *listenerSpec) chain(key string) *chainSpec { return l.byKey[key] }

func parseChain(fc *listener.FilterChain, path string, inspector bool) (*chainSpec, error) {
	if err := onlyFields(fc, path, "name", "filter_chain_match", "filters", "transport_socket"); err != nil {
		return nil, err
	}
	c := &chainSpec{name: fc.GetName()}
	if m := fc.GetFilterChainMatch(); m != nil {
		mp := path + ".filter_chain_match"
		if err := onlyFields(m, mp, "server_names", "transport_protocol", "prefix_ranges", "destination_port"); err != nil {
			return nil, err
		}
		for i, r := range m.GetPrefixRanges() {
			if err := onlyFields(r, fmt.Sprintf("%s.prefix_ranges[%d]", mp, i), "address_prefix", "prefix_len"); err != nil {
				return nil, err
			}
			ip, err := netip.ParseAddr(r.GetAddressPrefix())
			if err != nil {
				return nil, fmt.Errorf("%w: %s.prefix_ranges[%d]: %v", ErrInvalid, mp, i, err)
			}
			ip = ip.Unmap()
			bits := ip.BitLen()
			if r.GetPrefixLen() != nil {
				bits = int(r.GetPrefixLen().GetValue())
			}
			p, err := ip.Prefix(bits)
			if err != nil {
				return nil, fmt.Errorf("%w: %s.prefix_ranges[%d]: %v", ErrInvalid, mp, i, err)
			}
			c.prefixes = append(c.prefixes, p)
		}
		c.port = m.GetDestinationPort().GetValue()
		for _, n := range m.GetServerNames() {
			if strings.HasPrefix(n, "*") {
				return nil, fmt.Errorf("%w: %s.server_names: wildcard %q", ErrUnsupported, mp, n)
			}
			c.serverNames = append(c.serverNames, strings.ToLower(n))
		}
		c.transport = m.GetTransportProtocol()
		switch c.transport {
		case "", "raw_buffer", "tls":
		default:
			return nil, fmt.Errorf("%w: %s.transport_protocol %q", ErrUnsupported, mp, c.transport)
		}
		if (len(c.serverNames) > 0 || c.transport != "") && !inspector {
			return nil, fmt.Errorf("%w: %s matches on TLS without a tls_inspector listener filter", ErrInvalid, mp)
		}
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		var d tlsv3.DownstreamTlsContext
		tp := path + ".transport_socket"
		if err := onlyFields(ts, tp, "name", "typed_config"); err != nil {
			return nil, err
		}
		if err := unpack(ts.GetTypedConfig(), &d, tp); err != nil {
			return nil, err
		}
		if err := onlyFields(&d, tp+" DownstreamTlsContext", "require_client_certificate", "common_tls_context"); err != nil {
			return nil, err
		}
		ct, err := parseCommonTLS(d.GetCommonTlsContext(), tp+" DownstreamTlsContext.common_tls_context")
		if err != nil {
			return nil, err
		}
		if ct.cert == "" {
			return nil, fmt.Errorf("%w: %s: a server needs a certificate (tls_certificate_sds_secret_configs)", ErrInvalid, tp)
		}
		c.tls = &downstreamTLS{certSecret: ct.cert, rootsSecret: ct.roots, requireClient: d.GetRequireClientCertificate().GetValue(), alpn: ct.alpn, sans: ct.sans}
		if c.tls.requireClient && ct.roots == "" {
			return nil, fmt.Errorf("%w: %s: require_client_certificate without a validation context", ErrInvalid, tp)
		}
	}
	filters := fc.GetFilters()
	for i, f := range filters {
		fp := fmt.Sprintf("%s.filters[%d]", path, i)
		if err := onlyFields(f, fp, "name", "typed_config"); err != nil {
			return nil, err
		}
		last := i == len(filters)-1
		switch f.GetTypedConfig().GetTypeUrl() {
		case "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
			if !last {
				return nil, fmt.Errorf("%w: %s: http_connection_manager is a terminal filter and must come last", ErrInvalid, fp)
			}
			var h hcm.HttpConnectionManager
			if err := unpack(f.GetTypedConfig(), &h, fp); err != nil {
				return nil, err
			}
			hs, err := parseHCM(&h, fp+" http_connection_manager")
			if err != nil {
				return nil, err
			}
			c.http = hs
		case "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC":
			if last || c.rbac != nil {
				return nil, fmt.Errorf("%w: %s: rbac must come once, before the terminal filter", ErrInvalid, fp)
			}
			var r netrbac.RBAC
			if err := unpack(f.GetTypedConfig(), &r, fp); err != nil {
				return nil, err
			}
			rs, err := parseNetworkRBAC(&r, fp+" rbac")
			if err != nil {
				return nil, err
			}
			c.rbac = rs
		case "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":
			if !last {
				return nil, fmt.Errorf("%w: %s: tcp_proxy is a terminal filter and must come last", ErrInvalid, fp)
			}
			var t tcp.TcpProxy
			if err := unpack(f.GetTypedConfig(), &t, fp); err != nil {
				return nil, err
			}
			p, err := parseTCPProxy(&t, fp+" tcp_proxy")
			if err != nil {
				return nil, err
			}
			c.proxy = p
		default:
			return nil, fmt.Errorf("%w: %s: network filter %q (%s)", ErrUnsupported, fp, f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	if c.proxy == nil && c.http == nil {
		return nil, fmt.Errorf("%w: %s has no terminal filter (tcp_proxy or http_connection_manager)", ErrInvalid, path)
	}
	return c, nil
}

// commonTLS is a TLS context's common part: the SDS secret names, ALPN
// and the peer identities to accept (none: any the roots verify).
type commonTLS struct {
	cert, roots string
	alpn        []string
	sans        []sanMatcher
}

// parseCommonTLS reads the common part of a TLS context. The CA roots come
// over SDS, either alone (validation_context_sds_secret_config) or with
// the peer identities to expect (combined_validation_context, as Envoy
// and Istio send them).
func parseCommonTLS(ctc *tlsv3.CommonTlsContext, path string) (commonTLS, error) {
	var out commonTLS
	if ctc == nil {
		return out, fmt.Errorf("%w: %s is missing", ErrInvalid, path)
	}
	if ctc.GetValidationContext() != nil {
		return out, fmt.Errorf("%w: %s.validation_context: the CA roots come over SDS (validation_context_sds_secret_config, or combined_validation_context to match identities too)", ErrUnsupported, path)
	}
	if err := onlyFields(ctc, path, "alpn_protocols", "tls_certificate_sds_secret_configs", "validation_context_sds_secret_config", "combined_validation_context"); err != nil {
		return out, err
	}
	sds := ctc.GetTlsCertificateSdsSecretConfigs()
	if len(sds) > 1 {
		return out, fmt.Errorf("%w: %s.tls_certificate_sds_secret_configs: more than one certificate", ErrUnsupported, path)
	}
	check := func(s *tlsv3.SdsSecretConfig, p string) (string, error) {
		if err := onlyFields(s, p, "name", "sds_config"); err != nil {
			return "", err
		}
		if src := s.GetSdsConfig(); src != nil && src.GetAds() == nil {
			return "", fmt.Errorf("%w: %s.sds_config: secrets come over ADS only", ErrUnsupported, p)
		}
		if s.GetName() == "" {
			return "", fmt.Errorf("%w: %s.name is empty", ErrInvalid, p)
		}
		return s.GetName(), nil
	}
	var err error
	if len(sds) == 1 {
		if out.cert, err = check(sds[0], path+".tls_certificate_sds_secret_configs[0]"); err != nil {
			return out, err
		}
	}
	if v := ctc.GetValidationContextSdsSecretConfig(); v != nil {
		if out.roots, err = check(v, path+".validation_context_sds_secret_config"); err != nil {
			return out, err
		}
	}
	if cv := ctc.GetCombinedValidationContext(); cv != nil {
		cp := path + ".combined_validation_context"
		if err := onlyFields(cv, cp, "default_validation_context", "validation_context_sds_secret_config"); err != nil {
			return out, err
		}
		v := cv.GetValidationContextSdsSecretConfig()
		if v == nil {
			return out, fmt.Errorf("%w: %s.validation_context_sds_secret_config is missing (the CA roots)", ErrInvalid, cp)
		}
		if out.roots, err = check(v, cp+".validation_context_sds_secret_config"); err != nil {
			return out, err
		}
		if out.sans, err = parseSANMatchers(cv.GetDefaultValidationContext(), cp+".default_validation_context"); err != nil {
			return out, err
		}
	}
	for _, p := range ctc.GetAlpnProtocols() {
		if p != "h2" && p != "http/1.1" {
			return out, fmt.Errorf("%w: %s.alpn_protocols %q", ErrUnsupported, path, p)
		}
	}
	out.alpn = ctc.GetAlpnProtocols()
	return out, nil
}

func parseTCPProxy(t *tcp.TcpProxy, path string) (*tcpProxySpec, error) {
	if err := onlyFields(t, path, "stat_prefix", "cluster", "weighted_clusters", "access_log"); err != nil {
		return nil, err
	}
	p := &tcpProxySpec{stat: t.GetStatPrefix()}
	var err error
	if p.logs, err = parseAccessLogs(t.GetAccessLog(), path); err != nil {
		return nil, err
	}
	if c := t.GetCluster(); c != "" {
		p.clusters = []weightedCluster{{name: c, weight: 1}}
	}
	if wc := t.GetWeightedClusters(); wc != nil {
		if err := onlyFields(wc, path+".weighted_clusters", "clusters"); err != nil {
			return nil, err
		}
		for i, w := range wc.GetClusters() {
			if err := onlyFields(w, fmt.Sprintf("%s.weighted_clusters.clusters[%d]", path, i), "name", "weight"); err != nil {
				return nil, err
			}
			if w.GetWeight() > 0 {
				p.clusters = append(p.clusters, weightedCluster{name: w.GetName(), weight: w.GetWeight()})
			}
		}
	}
	if len(p.clusters) == 0 {
		return nil, fmt.Errorf("%w: %s names no cluster", ErrInvalid, path)
	}
	for _, c := range p.clusters {
		p.total += uint64(c.weight)
	}
	return p, nil
}

func parseSecret(s *tlsv3.Secret) (*secretSpec, error) {
	path := "secret " + s.GetName()
	if err := onlyFields(s, path, "name", "tls_certificate", "validation_context"); err != nil {
		return nil, err
	}
	inline := func(d *core.DataSource, p string) ([]byte, error) {
		switch {
		case d.GetInlineBytes() != nil:
			return d.GetInlineBytes(), nil
		case d.GetInlineString() != "":
			return []byte(d.GetInlineString()), nil
		}
		return nil, fmt.Errorf("%w: %s: only inline_bytes and inline_string", ErrUnsupported, p)
	}
	out := &secretSpec{}
	digest := sha256.New()
	if tc := s.GetTlsCertificate(); tc != nil {
		if err := onlyFields(tc, path+".tls_certificate", "certificate_chain", "private_key"); err != nil {
			return nil, err
		}
		certPEM, err := inline(tc.GetCertificateChain(), path+".tls_certificate.certificate_chain")
		if err != nil {
			return nil, err
		}
		keyPEM, err := inline(tc.GetPrivateKey(), path+".tls_certificate.private_key")
		if err != nil {
			return nil, err
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("%w: %s.tls_certificate: %v", ErrInvalid, path, err)
		}
		out.cert = &pair
		fmt.Fprintf(digest, "cert %d %s key %d %s ", len(certPEM), certPEM, len(keyPEM), keyPEM)
	}
	if vc := s.GetValidationContext(); vc != nil {
		if err := onlyFields(vc, path+".validation_context", "trusted_ca"); err != nil {
			return nil, err
		}
		pem, err := inline(vc.GetTrustedCa(), path+".validation_context.trusted_ca")
		if err != nil {
			return nil, err
		}
		out.roots = x509.NewCertPool()
		if !out.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s.validation_context.trusted_ca holds no certificate", ErrInvalid, path)
		}
		fmt.Fprintf(digest, "roots %d %s", len(pem), pem)
	}
	digest.Sum(out.digest[:0])
	if out.cert == nil && out.roots == nil {
		return nil, fmt.Errorf("%w: %s is empty", ErrInvalid, path)
	}
	return out, nil
}
