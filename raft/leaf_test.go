package raft

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/vmesh/vmesh/discovery"
)

// leafCatalog is a catalog whose CA key is sealed to node n1; the
// returned source opens it with n1's node key, as a server does.
func leafCatalog(t *testing.T) (*discovery.Store, *CA, CASource) {
	t.Helper()
	ca, err := NewCA("leaf.test")
	if err != nil {
		t.Fatal(err)
	}
	s := discovery.NewStore()
	certPEM, _, _ := ca.EncodeCA()
	nodeKey, _, err := newNodeKey("n1")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := SealCAKey(ca, "n1", &nodeKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	src := func(root *discovery.CARoot) (*CA, error) { return OpenCAKey(root, "n1", nodeKey) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.EnsureNode(1, &discovery.Node{Name: "n1", ID: "id1"}))
	must(s.EnsureNode(2, &discovery.Node{Name: "n2", ID: "id2"}))
	must(s.SetCA(3, &discovery.CARoot{CertPEM: certPEM, SealedKeys: []discovery.SealedCAKey{sealed}, Fingerprint: Fingerprint(ca.Cert)}))
	must(s.EnsureService(4, &discovery.Instance{Node: "n1", ID: "web-1", Service: "web"}, nil))
	must(s.EnsureService(5, &discovery.Instance{Node: "n1", ID: "web-2", Service: "web"}, nil))
	must(s.EnsureService(6, &discovery.Instance{Node: "n1", ID: "db-1", Service: "db"}, nil))
	must(s.EnsureService(7, &discovery.Instance{Node: "n2", ID: "api-1", Service: "api"}, nil))
	return s, ca, src
}

func leafURI(t *testing.T, l *Leaf, roots *x509.CertPool) string {
	t.Helper()
	pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatalf("leaf %q: %v", l.Name, err)
	}
	cert, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("leaf %q does not verify against the CA: %v", l.Name, err)
	}
	return cert.URIs[0].String()
}

func TestLeafIssuer(t *testing.T) {
	store, ca, src := leafCatalog(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	l := NewLeafIssuer(store, "n1", CALeafSigner(store, "n1", src), time.Hour, slog.Default())
	changed := l.Changed()
	now := time.Now()
	next := l.sync(context.Background(), nil, now)
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not closed after the first issue")
	}
	lv := l.Leaves()
	if lv.Node == nil || leafURI(t, lv.Node, roots) != "spiffe://leaf.test/proxy/n1" {
		t.Fatalf("node leaf = %+v", lv.Node)
	}
	if len(lv.Services) != 2 || lv.Services[0].Name != "db" || lv.Services[1].Name != "web" {
		t.Fatalf("service leaves = %+v; want db and web (one per service, not per instance; not n2's api)", lv.Services)
	}
	if got := leafURI(t, lv.Services[1], roots); got != "spiffe://leaf.test/svc/web" {
		t.Fatalf("web leaf names %s", got)
	}
	if want := now.Add(30 * time.Minute); next.After(want.Add(time.Second)) || next.Before(want.Add(-time.Second)) {
		t.Errorf("next run at %s, want the renewal at half the lifetime (%s)", next, want)
	}

	// Nothing due: nothing changes.
	changed = l.Changed()
	l.sync(context.Background(), nil, now.Add(time.Minute))
	select {
	case <-changed:
		t.Fatal("an idle sync reported a change")
	default:
	}
	if l.Leaves().Services[1].CertPEM == nil || string(l.Leaves().Services[1].CertPEM) != string(lv.Services[1].CertPEM) {
		t.Fatal("an idle sync reissued a leaf")
	}

	// Past half the lifetime every leaf is renewed.
	l.sync(context.Background(), nil, now.Add(31*time.Minute))
	renewed := l.Leaves()
	if string(renewed.Services[1].CertPEM) == string(lv.Services[1].CertPEM) || string(renewed.Node.CertPEM) == string(lv.Node.CertPEM) {
		t.Fatal("leaves were not renewed at half their lifetime")
	}

	// A service that goes away loses its leaf.
	if err := store.DeleteService(8, "n1", "db-1"); err != nil {
		t.Fatal(err)
	}
	l.sync(context.Background(), nil, now.Add(32*time.Minute))
	if svcs := l.Leaves().Services; len(svcs) != 1 || svcs[0].Name != "web" {
		t.Fatalf("after db left: %+v", svcs)
	}
}

// TestProxyLeafIsNotANodeCert: the leaf served to the proxy over SDS must
// not open the cluster port.
func TestProxyLeafIsNotANodeCert(t *testing.T) {
	ca, err := NewCA("leaf.test")
	if err != nil {
		t.Fatal(err)
	}
	key, csr, err := newNodeKey("n1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := newIdentity(ca.Cert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := ca.signNodeLeaf(&key.PublicKey, "n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.SignService(&key.PublicKey, "web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	td, _ := ca.TrustDomain()
	nested, _ := spiffeid.FromSegments(td, "node", "n1", "extra")
	deep, err := ca.sign(&key.PublicKey, "deep", nested.URL(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*x509.Certificate{proxy, svc, deep} {
		if name, err := id.VerifyPeer([][]byte{c.Raw, ca.Cert.Raw}); !errors.Is(err, ErrNotNodeCert) {
			t.Errorf("%s passed as cluster member %q (err %v)", c.URIs[0], name, err)
		}
	}
	if name, err := id.VerifyPeer([][]byte{cert.Raw, ca.Cert.Raw}); err != nil || name != "n1" {
		t.Errorf("the node certificate = %q, %v", name, err)
	}
}

func TestLeafIssuerWaitsForCA(t *testing.T) {
	s := discovery.NewStore()
	if err := s.EnsureNode(1, &discovery.Node{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	l := NewLeafIssuer(s, "n1", CALeafSigner(s, "n1", func(*discovery.CARoot) (*CA, error) { return nil, ErrNoSealedKey }), 0, slog.Default())
	l.sync(context.Background(), nil, time.Now())
	if lv := l.Leaves(); lv.RootsPEM != nil || lv.Node != nil {
		t.Fatalf("leaves issued without a CA: %+v", lv)
	}
}
