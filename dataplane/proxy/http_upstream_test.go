package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// selfSigned returns a certificate and key in PEM.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func secrets(t *testing.T, certPEM, keyPEM, caPEM []byte) map[string]*secretSpec {
	t.Helper()
	inline := func(b []byte) *core.DataSource {
		return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
	}
	leaf, err := parseSecret(&tlsv3.Secret{Name: "leaf", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}}})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := parseSecret(&tlsv3.Secret{Name: "roots", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: inline(caPEM)}}})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*secretSpec{"leaf": leaf, "roots": roots}
}

// TestTransportReuse: a new snapshot with the same endpoint and the same
// secrets (parsed again from a new SDS response) keeps the endpoint's TLS
// config and so its pooled transport; a rotated certificate gets a new
// config and a new transport, and the old one leaves the pool.
func TestTransportReuse(t *testing.T) {
	certPEM, keyPEM := selfSigned(t, "leaf")
	caPEM, _ := selfSigned(t, "ca")
	cs := &clusterSpec{name: "c", kind: kindStatic, connectTimeout: time.Second, lb: cluster.Cluster_ROUND_ROBIN,
		static: &endpointsSpec{eps: []endpointSpec{
			{addr: netip.MustParseAddrPort("127.0.0.1:1"), weight: 1},
			{addr: netip.MustParseAddrPort("127.0.0.1:2"), weight: 1},
		}},
		tls: &upstreamTLS{sni: "c.mesh", certSecret: "leaf", rootsSecret: "roots", alpn: []string{"h2"}}}
	st := &state{clusters: map[string]*clusterSpec{"c": cs}, secrets: secrets(t, certPEM, keyPEM, caPEM)}
	p := &Proxy{}
	s1 := build(st, nil)
	c1 := s1.clusters["c"]
	if len(c1.hosts) != 2 || c1.hosts[0].tls == nil || c1.hosts[0].tls != c1.hosts[1].tls {
		t.Fatalf("hosts: %+v; want two sharing one TLS config", c1.hosts)
	}
	t1 := s1.pool.get(p, c1, c1.hosts[0])

	// The same secrets again, as a new SDS response parses them.
	st2 := &state{clusters: st.clusters, secrets: secrets(t, certPEM, keyPEM, caPEM)}
	s2 := build(st2, s1)
	c2 := s2.clusters["c"]
	if c2.hosts[0].tls != c1.hosts[0].tls {
		t.Error("an unchanged secret gave a new TLS config")
	}
	s2.pool.retain(s2)
	if t2 := s2.pool.get(p, c2, c2.hosts[0]); t2 != t1 {
		t.Error("the same endpoint and TLS config got a new transport")
	}

	// A rotated certificate.
	cert2, key2 := selfSigned(t, "leaf-2")
	st3 := &state{clusters: st.clusters, secrets: secrets(t, cert2, key2, caPEM)}
	s3 := build(st3, s2)
	c3 := s3.clusters["c"]
	if c3.hosts[0].tls == c2.hosts[0].tls {
		t.Fatal("a rotated certificate kept the old TLS config")
	}
	s3.pool.retain(s3)
	if len(s3.pool.m) != 0 {
		t.Errorf("the pool kept %d transports no endpoint uses", len(s3.pool.m))
	}
	if t3 := s3.pool.get(p, c3, c3.hosts[0]); t3 == t1 {
		t.Error("a rotated certificate reused the old transport")
	}
}
