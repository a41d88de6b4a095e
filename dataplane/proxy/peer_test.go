package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/anypb"
)

// testCA signs mesh leaves for the tests of this package.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a certificate naming uri, in PEM and as a tls.Certificate.
func (ca *testCA) leaf(t *testing.T, uri string) (certPEM, keyPEM []byte, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, cert
}

// meshTLS is the transport socket the xDS server puts on a mesh cluster:
// SDS roots and the destination's identity in a combined validation
// context.
func meshTLS(t *testing.T, vc *tlsv3.CertificateValidationContext) *core.TransportSocket {
	a, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "web.mesh", CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "leaf"}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         vc,
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "roots"},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: a}}
}

func uriSAN(m *matcher.StringMatcher) *tlsv3.CertificateValidationContext {
	return &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
		SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m}}}
}

// TestParsePeerIdentity: the expected identities of a cluster's TLS
// context are read from a combined validation context; what the proxy
// cannot honour (another SAN type, a validation context that is not the
// identities, roots inline) is refused and named.
func TestParsePeerIdentity(t *testing.T) {
	c := dialCluster(time.Second)
	c.TransportSocket = meshTLS(t, uriSAN(&matcher.StringMatcher{
		MatchPattern: &matcher.StringMatcher_Exact{Exact: "spiffe://td/svc/web"}, IgnoreCase: true}))
	s, err := parseCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.tls.sans) != 1 || !s.tls.sans[0].match("spiffe://td/svc/WEB") || s.tls.sans[0].match("spiffe://td/svc/billing") {
		t.Fatalf("parsed %+v", s.tls)
	}
	for _, tc := range []struct {
		vc   *tlsv3.CertificateValidationContext
		want string
		err  error
	}{
		{&tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "web"}}}}},
			"default_validation_context.match_typed_subject_alt_names[0].san_type DNS", ErrUnsupported},
		{uriSAN(&matcher.StringMatcher{}), "match_typed_subject_alt_names[0].matcher: empty matcher", ErrInvalid},
		{&tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI}}},
			"match_typed_subject_alt_names[0].matcher is missing", ErrInvalid},
		{&tlsv3.CertificateValidationContext{OnlyVerifyLeafCertCrl: true}, "default_validation_context.only_verify_leaf_cert_crl is not supported", ErrUnsupported},
	} {
		c := dialCluster(time.Second)
		c.TransportSocket = meshTLS(t, tc.vc)
		if _, err := parseCluster(c); err == nil || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %v naming %q", err, tc.err, tc.want)
		}
	}
	// The roots inline instead of over SDS.
	a, _ := anypb.New(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: uriSAN(&matcher.StringMatcher{
			MatchPattern: &matcher.StringMatcher_Exact{Exact: "spiffe://td/svc/web"}})}}})
	c = dialCluster(time.Second)
	c.TransportSocket = &core.TransportSocket{Name: "tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: a}}
	if _, err := parseCluster(c); err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "common_tls_context.validation_context: the CA roots come over SDS") {
		t.Errorf("inline validation context: %v", err)
	}
}

// TestUpstreamPeerIdentity: with real TLS, the proxy dials a cluster that
// expects spiffe://vmesh.test/svc/web. An endpoint holding web's
// certificate is served; one holding billing's (valid, from the same CA)
// is refused: the dial fails, the mismatch is counted against the
// cluster, and the log names both identities.
func TestUpstreamPeerIdentity(t *testing.T) {
	ca := newTestCA(t)
	_, _, webCert := ca.leaf(t, "spiffe://vmesh.test/svc/web")
	_, _, billingCert := ca.leaf(t, "spiffe://vmesh.test/svc/billing")
	clientPEM, clientKey, _ := ca.leaf(t, "spiffe://vmesh.test/proxy/node-a")
	serve := func(cert tls.Certificate) *net.TCPAddr {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.(*tls.Conn).Handshake()
					c.Write([]byte("hello"))
				}()
			}
		}()
		return ln.Addr().(*net.TCPAddr)
	}
	web, impostor := serve(webCert), serve(billingCert)

	reg := prometheus.NewRegistry()
	p := testProxy(t, Config{Metrics: NewMetrics(reg)})
	var logs testkit.SyncBuffer
	p.log = slog.New(slog.NewTextHandler(&logs, nil))
	c := dialCluster(2*time.Second, web.AddrPort(), impostor.AddrPort())
	c.Name = "web"
	c.LbPolicy = cluster.Cluster_ROUND_ROBIN
	c.TransportSocket = meshTLS(t, uriSAN(&matcher.StringMatcher{
		MatchPattern: &matcher.StringMatcher_Exact{Exact: "spiffe://vmesh.test/svc/web"}, IgnoreCase: true}))
	cs, err := parseCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	st := &state{clusters: map[string]*clusterSpec{"web": cs}, secrets: secrets(t, clientPEM, clientKey, ca.pem)}
	rt := build(st, nil).clusters["web"]
	if rt == nil || len(rt.hosts) != 2 {
		t.Fatalf("cluster web did not build: %+v", rt)
	}

	conn, err := p.dial(rt, rt.hosts[0])
	if err != nil {
		t.Fatalf("the endpoint holding web's certificate: %v", err)
	}
	conn.Close()
	if n := counterValue(t, reg, "vmesh_upstream_peer_mismatch_total", map[string]string{"cluster": "web"}); n != 0 {
		t.Errorf("%v mismatches counted for a matching peer", n)
	}

	_, err = p.dial(rt, rt.hosts[1])
	var pm *peerMismatchError
	if !errors.As(err, &pm) {
		t.Fatalf("the endpoint holding billing's certificate: %v; want a peer identity mismatch", err)
	}
	if n := counterValue(t, reg, "vmesh_upstream_peer_mismatch_total", map[string]string{"cluster": "web"}); n != 1 {
		t.Errorf("%v mismatches counted for cluster web, want 1", n)
	}
	log := logs.String()
	for _, want := range []string{"upstream peer identity mismatch", "cluster=web", "spiffe://vmesh.test/svc/web", "spiffe://vmesh.test/svc/billing", impostor.String()} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not name %q:\n%s", want, log)
		}
	}
}
