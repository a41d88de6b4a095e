package raft

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Renewal and the deny list together: what a revoked node may not do
// (renew, even within the grace; a server: sign its own), what a node
// that is only expired or joined again still may, and the index a renewed
// certificate is issued at.
func TestRevokedNodeCannotRenew(t *testing.T) {
	s, ca := openClusterLeaderWith(t, ClusterConfig{Voters: 1, RenewGrace: 24 * time.Hour, LocalCA: backdatedCA(t, "membership.test")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	testkit.WaitFor(t, 10*time.Second, "the CA in the catalog", func() bool {
		_, root, _ := s.store.CA(nil)
		return root != nil
	})
	now := time.Now()
	leftLate := identityAt(t, ca, "left-late", now.Add(-3*time.Hour), now.Add(-time.Hour)) // expired within the grace
	leftValid := testIdentity(t, ca, "left-valid")
	onlyLate := identityAt(t, ca, "only-late", now.Add(-3*time.Hour), now.Add(-time.Hour))
	for _, id := range []*Identity{leftLate, leftValid} {
		if err := s.revokeNode(ctx, id.Name, reasonLeft); err != nil {
			t.Fatal(err)
		}
	}
	rev, _ := s.store.Revocation(nil, "left-valid")
	if rev == nil {
		t.Fatal("no revocation recorded for left-valid")
	}

	// The RPC, as the listener hands it over: refused, naming the
	// revocation, whether the certificate expired within the grace or not.
	for _, id := range []*Identity{leftLate, leftValid} {
		_, csr := greedyCSR(t, "membership.test")
		resp, err := s.rpcRenewNode(peerCtxOf(id), &RenewNodeRequest{CSR: csr})
		if resp != nil || status.Code(err) != codes.PermissionDenied || !errors.Is(rpcErr(err), ErrPermissionDenied) {
			t.Errorf("RenewNode of revoked %s: answered %v, %v; want PermissionDenied", id.Name, resp != nil, err)
		} else if msg := status.Convert(err).Message(); !strings.Contains(msg, "node certificate revoked") || !strings.Contains(msg, "left the cluster") {
			t.Errorf("RenewNode of revoked %s: %q; want it to name the revocation", id.Name, msg)
		}
	}
	// Over the cluster port: the handshake already refuses it.
	_, csr := greedyCSR(t, "membership.test")
	var resp RenewNodeResponse
	if err := rpcAs(t, leftLate).call(ctx, s.Addr(), "RenewNode", &RenewNodeRequest{CSR: csr}, &resp); err == nil || len(resp.Cert) != 0 {
		t.Errorf("RenewNode of a revoked node over the cluster port: %v, %d certificate bytes; want refused", err, len(resp.Cert))
	}

	// A node that is only expired, within the grace, renews; its new
	// certificate is issued at the server's catalog index and comes with
	// the CA that signed it.
	before := s.store.LastIndex()
	key, csr := greedyCSR(t, "membership.test")
	resp = RenewNodeResponse{}
	if err := rpcAs(t, onlyLate).call(ctx, s.Addr(), "RenewNode", &RenewNodeRequest{CSR: csr}, &resp); err != nil {
		t.Fatalf("RenewNode of an expired node that is not revoked: %v", err)
	}
	cert, err := x509.ParseCertificate(resp.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) || issuedIndex(cert) != before || before < rev.Index {
		t.Errorf("renewed only-late: issued at %d (catalog at %d, revocation at %d); want at the catalog's index, which holds the revocations", issuedIndex(cert), before, rev.Index)
	}
	if ca2, err := x509.ParseCertificate(resp.CA); err != nil || !ca2.Equal(ca.Cert) || len(resp.Chain) != 0 || len(resp.Roots) != 0 {
		t.Errorf("the answer's CA %v (%v), chain %d, roots %d; want the CA, no chain, no previous roots", ca2 != nil && ca2.Equal(ca.Cert), err, len(resp.Chain), len(resp.Roots))
	}
	next, err := onlyLate.renewedPair(&resp, key)
	if err != nil {
		t.Fatalf("only-late checking its renewed certificate: %v", err)
	}
	if err := onlyLate.renew("", next, nil); err != nil {
		t.Fatal(err)
	}

	// The same name joined again after its revocation (a later index):
	// its certificate renews, even once expired.
	rejoinKey, rejoinCSR, _ := newNodeKey("left-late")
	rejoinCert, err := ca.SignNodeAt(rejoinCSR, "left-late", rev.Index+1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rejoined, err := newIdentity(ca.Cert, rejoinCert, rejoinKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.rpcRenewNode(peerCtxOf(rejoined), &RenewNodeRequest{CSR: mustCSR(t, "left-late")}); err != nil {
		t.Errorf("RenewNode of a node that joined again after its revocation: %v", err)
	}

	// A server whose own name is revoked does not sign itself a
	// certificate (which would be issued after the revocation).
	self := s.cluster.cfg.Identity
	if _, err := s.renewNodeCert(ctx, mustCSR(t, self.Name), time.Hour); err != nil {
		t.Fatalf("the server renewing itself before any revocation: %v", err)
	}
	if err := s.revokeNode(ctx, self.Name, reasonRemoved); err != nil {
		t.Fatal(err)
	}
	if resp, err := s.renewNodeCert(ctx, mustCSR(t, self.Name), time.Hour); !errors.Is(err, ErrRevoked) {
		t.Errorf("a revoked server renewing itself: %v, %v; want ErrRevoked", resp != nil, err)
	}
}

// TestRenewalMovesToTheRotatedCA: after a CA rotation a node's renewal
// (a client's over RenewNode, a server's own) gets a certificate of the
// new key with the cross-signed chain and the roots still trusted, writes
// them to its data dir, and keeps working; once the old root is dropped,
// renewed nodes still verify against the new root alone while one that
// did not renew is refused.
func TestRenewalMovesToTheRotatedCA(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{})
	testkit.WaitFor(t, 20*time.Second, "a sealed CA key for every server", func() bool {
		_, root, _ := c.leader().store.CA(nil)
		return root != nil && len(root.SealedKeys) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lead := c.leader()
	oldRoot := c.ca.Cert

	// A client with a data dir, so its renewal writes the files.
	dir := t.TempDir()
	tok, _, err := lead.CreateToken(ctx, time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	id, err := Join(ctx, JoinParams{Addr: lead.Addr(), Token: tok, NodeName: "web-01", NodeID: "web-01-id", DataDir: dir, Role: RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	web, err := NewClient(ClientConfig{Identity: id, NodeID: "web-01-id", Addr: "127.0.0.1:1", Servers: []string{lead.Addr()},
		HeartbeatInterval: 100 * time.Millisecond, DataDir: dir, Logger: testkit.Logger(t).With("client", "web-01")}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	web.Start()
	t.Cleanup(func() { web.Close() })
	if err := web.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	stale := joinClient(t, lead, "db-01") // never renews below

	rotated, err := lead.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newRoot, err := parseCertPEM(rotated.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the new CA on web-01's replica and every server", func() bool {
		if _, r, _ := web.Replica().Store().CA(nil); r == nil || r.Fingerprint != rotated.Fingerprint {
			return false
		}
		for _, s := range c.servers {
			if _, r, _ := s.store.CA(nil); r.Fingerprint != rotated.Fingerprint {
				return false
			}
		}
		return true
	})

	// The client renews: a certificate of the new key, the cross-signed
	// chain, both roots, on disk too.
	if err := web.nodeRenewal().renewOnce(ctx); err != nil {
		t.Fatalf("web-01 renewing after the rotation: %v", err)
	}
	checkOnNewCA(t, "web-01", id, newRoot, oldRoot)
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("web-01's data dir after the renewal: %v", err)
	}
	if !loaded.Cert().Equal(id.Cert()) || !loaded.CA().Equal(newRoot) || len(loaded.Roots()) != 2 || len(loaded.Chain()) != 1 {
		t.Errorf("web-01's data dir: same certificate %v, CA new %v, %d roots, %d in the chain; want the renewed pair, the new CA, 2, 1",
			loaded.Cert().Equal(id.Cert()), loaded.CA().Equal(newRoot), len(loaded.Roots()), len(loaded.Chain()))
	}
	// It keeps writing (a new connection, with the new certificate).
	if _, err := web.Apply(ctx, registerService("web-01", "web-1", "web")); err != nil {
		t.Fatalf("web-01 writing after its renewal: %v", err)
	}

	// A follower renews its own, with its own blob of the new key.
	f := c.followers()[0]
	fid := f.cluster.cfg.Identity
	if err := f.nodeRenewal().renewOnce(ctx); err != nil {
		t.Fatalf("%s renewing after the rotation: %v", fid.Name, err)
	}
	checkOnNewCA(t, fid.Name, fid, newRoot, oldRoot)

	// The old root's time is up: the leader drops it. Renewed nodes
	// verify against the new root alone; db-01, still on the old key, does
	// not.
	lead.dropRetiredRoots(ctx, time.Unix(rotated.PreviousRoots[0].DropAfter, 0))
	for _, s := range c.servers {
		testkit.WaitFor(t, 10*time.Second, s.cluster.cfg.Identity.Name+" no longer trusting the old root", func() bool {
			_, r, _ := s.store.CA(nil)
			return len(r.PreviousRoots) == 0
		})
	}
	verifier := c.servers[2].cluster.cfg.Identity
	if verifier == fid {
		verifier = lead.cluster.cfg.Identity
	}
	for _, n := range []*Identity{id, fid} {
		if name, err := verifier.VerifyPeer(n.tlsCertificate().Certificate); err != nil || name != n.Name {
			t.Errorf("%s's renewed certificate after the old root was dropped: %q, %v; want accepted", n.Name, name, err)
		}
	}
	if _, err := verifier.VerifyPeer(stale.cfg.Identity.tlsCertificate().Certificate); !errors.Is(err, ErrNotNodeCert) {
		t.Errorf("db-01's old-key certificate after the old root was dropped: %v; want refused", err)
	}
	// And a renewal now brings no chain and only the new root.
	if err := web.nodeRenewal().renewOnce(ctx); err != nil {
		t.Fatalf("web-01 renewing after the old root was dropped: %v", err)
	}
	if len(id.Chain()) != 0 || len(id.Roots()) != 1 || !id.CA().Equal(newRoot) {
		t.Errorf("web-01 after the drop: %d in the chain, %d roots; want none and the new root", len(id.Chain()), len(id.Roots()))
	}
}

// checkOnNewCA: id's certificate is the new key's, verifies against the
// new root alone, and, through the chain it presents, against the old
// root alone; its data dir's roots are both, the new one first.
func checkOnNewCA(t *testing.T, name string, id *Identity, newRoot, oldRoot *x509.Certificate) {
	t.Helper()
	cert := id.Cert()
	if err := cert.CheckSignatureFrom(newRoot); err != nil {
		t.Errorf("%s's renewed certificate is not the new key's: %v", name, err)
	}
	only := func(root *x509.Certificate) x509.VerifyOptions {
		opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		opts.Roots.AddCert(root)
		for _, c := range id.Chain() {
			opts.Intermediates.AddCert(c)
		}
		return opts
	}
	if _, err := cert.Verify(only(newRoot)); err != nil {
		t.Errorf("%s's renewed certificate against the new root: %v", name, err)
	}
	if _, err := cert.Verify(only(oldRoot)); err != nil {
		t.Errorf("%s's renewed certificate with its chain against the old root: %v", name, err)
	}
	if roots := id.Roots(); len(roots) != 2 || !roots[0].Equal(newRoot) || !roots[1].Equal(oldRoot) || !id.CA().Equal(newRoot) || len(id.Chain()) != 1 {
		t.Errorf("%s: %d roots, %d in the chain; want the new and the old root, and the cross-signed one", name, len(roots), len(id.Chain()))
	}
	if issuedIndex(cert) == 0 {
		t.Errorf("%s's renewed certificate carries no issue index", name)
	}
}
