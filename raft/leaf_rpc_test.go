package raft

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// greedyCSR is a CSR for a new key that asks for every name it should
// not get: another service's SPIFFE ID, a node's, a DNS name and a
// common name.
func greedyCSR(t *testing.T, td string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := url.Parse("spiffe://" + td + "/svc/admin")
	node, _ := url.Parse("spiffe://" + td + "/node/n1")
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin"},
		URIs:     []*url.URL{svc, node},
		DNSNames: []string{"admin.example"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

// TestSignLeafForTheCallerOnly: a client gets, over the cluster RPC, a
// leaf for a service registered on it and its own proxy leaf, named by
// the server whatever the CSR asks, for the CSR's key; a service on
// another node and another node's proxy leaf are refused, naming why.
func TestSignLeafForTheCallerOnly(t *testing.T) {
	s := clusterLeader(t)
	c := joinClient(t, s, "web-01")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, root, _ := s.store.CA(nil)
	ca, err := parseCertPEM(root.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := c.Apply(ctx, registerService("web-01", "web-1", "web"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, registerNode("n1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, registerService("n1", "api-1", "api")); err != nil {
		t.Fatal(err)
	}

	// Its own service: the server's names, the CSR's key.
	key, csr := greedyCSR(t, "test.local")
	cert, err := c.SignLeaf(ctx, &SignLeafRequest{Service: "web", CSR: csr, MinIndex: idx, TTL: time.Hour})
	if err != nil {
		t.Fatalf("a leaf for the client's own service: %v", err)
	}
	if err := checkLeaf(cert, ca, &key.PublicKey, "web-01", "web"); err != nil {
		t.Error(err)
	}
	if len(cert.URIs) != 1 || len(cert.DNSNames) != 0 || cert.Subject.CommonName != "web" {
		t.Errorf("leaf names URIs %v, DNS %v, CN %q; want only spiffe://test.local/svc/web (CN web), nothing from the CSR",
			cert.URIs, cert.DNSNames, cert.Subject.CommonName)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore) - certBackdate; life != time.Hour {
		t.Errorf("leaf lives %s; want the hour asked for", life)
	}

	// Its own proxy leaf, by name or by default.
	for _, node := range []string{"", "web-01"} {
		key, csr := greedyCSR(t, "test.local")
		cert, err := c.SignLeaf(ctx, &SignLeafRequest{Node: node, CSR: csr})
		if err != nil {
			t.Fatalf("the client's own proxy leaf (Node %q): %v", node, err)
		}
		if err := checkLeaf(cert, ca, &key.PublicKey, "web-01", ""); err != nil {
			t.Errorf("proxy leaf (Node %q): %v", node, err)
		}
	}

	// Refusals: PermissionDenied, naming why.
	for _, tc := range []struct {
		what  string
		req   SignLeafRequest
		words string
	}{
		{"a service registered on another node", SignLeafRequest{Service: "api"}, `no instance of service "api" is registered on node "web-01"`},
		{"a service registered nowhere", SignLeafRequest{Service: "admin"}, `no instance of service "admin" is registered on node "web-01"`},
		{"another node's proxy leaf", SignLeafRequest{Node: "n1"}, `may get leaf certificates only for itself, not for node "n1"`},
		{"another node's service, naming that node", SignLeafRequest{Node: "n1", Service: "api"}, `not for node "n1"`},
	} {
		_, csr := greedyCSR(t, "test.local")
		tc.req.CSR = csr
		_, err := c.SignLeaf(ctx, &tc.req)
		if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%s: %v; want PermissionDenied naming %q", tc.what, err, tc.words)
		}
	}

	// A catalog behind what the caller saw is not a refusal: Unavailable,
	// so the caller asks another server.
	defer func(d time.Duration) { leafIndexWait = d }(leafIndexWait)
	leafIndexWait = 50 * time.Millisecond
	_, csr = greedyCSR(t, "test.local")
	var resp SignLeafResponse
	err = c.clients.call(ctx, s.Addr(), "SignLeaf", &SignLeafRequest{Service: "web", CSR: csr, MinIndex: s.fsm.applied.Load() + 1000}, &resp)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "ask another server") {
		t.Errorf("SignLeaf with a MinIndex the server has not reached: %v; want Unavailable", err)
	}
}

// TestClientLeafIssuer: a client's LeafIssuer, signing through the
// servers, holds a leaf for its proxy and for each service registered on
// it, and none for another node's.
func TestClientLeafIssuer(t *testing.T) {
	s := clusterLeader(t)
	c := joinClient(t, s, "web-02")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Apply(ctx, registerService("web-02", "web-1", "web")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, registerNode("n1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, registerService("n1", "api-1", "api")); err != nil {
		t.Fatal(err)
	}
	store := c.Replica().Store()
	l := NewLeafIssuer(store, "web-02", c.SignLeaf, time.Hour, testkit.Logger(t))
	l.sync(ctx, nil, time.Now())
	lv := l.Leaves()
	if lv.Node == nil || lv.Node.URI != "spiffe://test.local/proxy/web-02" {
		t.Fatalf("the client's proxy leaf = %+v", lv.Node)
	}
	if len(lv.Services) != 1 || lv.Services[0].URI != "spiffe://test.local/svc/web" {
		t.Fatalf("the client's service leaves = %+v; want web's only", lv.Services)
	}
}

// TestLeafIssuerKeepsOthersOnARefusal: a refused leaf (its registration
// just went away, say) leaves the others signed and retries soon.
func TestLeafIssuerKeepsOthersOnARefusal(t *testing.T) {
	store, _, src := leafCatalog(t)
	sign := CALeafSigner(store, "n1", src)
	refusing := func(ctx context.Context, req *SignLeafRequest) (*x509.Certificate, error) {
		if req.Service == "db" {
			return nil, &remoteError{sentinel: ErrPermissionDenied, msg: "no instance of service \"db\""}
		}
		return sign(ctx, req)
	}
	l := NewLeafIssuer(store, "n1", refusing, time.Hour, testkit.Logger(t))
	now := time.Now()
	next := l.sync(context.Background(), nil, now)
	lv := l.Leaves()
	if lv.Node == nil || len(lv.Services) != 1 || lv.Services[0].Name != "web" {
		t.Fatalf("leaves after db was refused: node %v, services %+v; want the proxy's and web's", lv.Node, lv.Services)
	}
	if next.After(now.Add(10 * time.Second)) {
		t.Errorf("next sync at %s; want a retry within 10s", next.Sub(now))
	}
}

// TestSignLeafUnavailableWithoutCA: a server that cannot open the CA key
// answers Unavailable (the caller tries another server), not a refusal.
func TestSignLeafUnavailableWithoutCA(t *testing.T) {
	s, ca := openClusterLeader(t, 1)
	testkit.WaitFor(t, 10*time.Second, "the CA in the catalog", func() bool {
		_, root, _ := s.store.CA(nil)
		return root != nil
	})
	if _, err := s.Apply(context.Background(), discovery.RegisterNodeRequest{Node: discovery.Node{Name: "worker", ID: "id-worker", Address: "127.0.0.2"}}); err != nil {
		t.Fatal(err)
	}
	// A CA record with no blob for this server.
	_, root, _ := s.store.CA(nil)
	other, _, _ := newNodeKey("other")
	sealed, err := SealCAKey(&CA{Cert: ca.Cert, Key: ca.Key}, "other", &other.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	next := *root
	next.SealedKeys = []discovery.SealedCAKey{sealed}
	if _, err := s.applyCmd(context.Background(), discovery.SetCARequest{CA: next}); err != nil {
		t.Fatal(err)
	}
	_, csr := greedyCSR(t, "membership.test")
	_, err = s.rpcSignLeaf(callerCtx(t, ca, "worker", "127.0.0.2"), &SignLeafRequest{CSR: csr})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "cannot open the cluster CA key") {
		t.Errorf("SignLeaf on a server without its blob: %v; want Unavailable", err)
	}
}
