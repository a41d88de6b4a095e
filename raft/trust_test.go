package raft

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// rotatedRecord is the CA record after old was rotated to a new CA, as
// the leader writes it (keys aside): the new CA and the record.
func rotatedRecord(t *testing.T, old *CA) (*CA, *discovery.CARoot) {
	t.Helper()
	next, cross, err := newCrossSignedCA(old, idTestTD)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return next, &discovery.CARoot{
		CertPEM: enc(next.Cert), Fingerprint: Fingerprint(next.Cert), TrustDomain: idTestTD, CrossSignedPEM: enc(cross),
		PreviousRoots: []discovery.TrustedRoot{{CertPEM: enc(old.Cert), Fingerprint: Fingerprint(old.Cert)}},
	}
}

// TestCrossSignedChainVerifiesAgainstOldRoot: what the new key signs,
// presented with the cross-signed root, verifies for a peer that trusts
// only the old root; without it, it does not. The new CA keeps the trust
// domain and takes a subject of its own.
func TestCrossSignedChainVerifiesAgainstOldRoot(t *testing.T) {
	old := idTestCA(t, idTestTD)
	next, cross, err := newCrossSignedCA(old, idTestTD)
	if err != nil {
		t.Fatal(err)
	}
	if td, _ := next.TrustDomain(); td.String() != idTestTD || next.Cert.Subject.CommonName == old.Cert.Subject.CommonName {
		t.Fatalf("new CA: trust domain %s, subject %q (old %q); want the same domain, another subject", td, next.Cert.Subject.CommonName, old.Cert.Subject.CommonName)
	}
	if err := cross.CheckSignatureFrom(old.Cert); err != nil || !cross.IsCA || !cross.PublicKey.(*ecdsa.PublicKey).Equal(next.Cert.PublicKey) {
		t.Fatalf("cross-signed root: signature %v, CA %v; want the new key, signed by the old", err, cross.IsCA)
	}
	if cross.NotAfter.After(old.Cert.NotAfter) {
		t.Errorf("the cross-signed root outlives the old root (%s > %s)", cross.NotAfter, old.Cert.NotAfter)
	}
	leaf, _ := idTestNode(t, next, "n2")
	oldOnly := x509.NewCertPool()
	oldOnly.AddCert(old.Cert)
	inter := x509.NewCertPool()
	inter.AddCert(cross)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: oldOnly, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("a new-key certificate with the cross-signed root, against the old root: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: oldOnly, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatal("a new-key certificate verified against the old root without the cross-signed one")
	}

	// On the cluster port: a node that knows only the old root accepts a
	// peer with a new certificate and the chain, as presentedChain sends
	// it, and refuses it without the chain.
	cert, key := idTestNode(t, old, "n1")
	oldNode, err := newIdentity(old.Cert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	newCert, newKey := idTestNode(t, next, "n2")
	newNode, err := newIdentityChain([]*x509.Certificate{next.Cert, old.Cert}, []*x509.Certificate{cross}, newCert, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := oldNode.VerifyPeer(newNode.tlsCertificate().Certificate); err != nil || name != "n2" {
		t.Fatalf("old-root node verifying a new-key node's chain: %q, %v", name, err)
	}
	if _, err := oldNode.VerifyPeer([][]byte{newCert.Raw, next.Cert.Raw}); !errors.Is(err, ErrNotNodeCert) {
		t.Fatalf("old-root node verifying a new-key certificate without the cross-signed root: %v; want refused", err)
	}
	// The new node verifies old-key peers too: its data dir keeps both roots.
	if name, err := newNode.VerifyPeer(oldNode.tlsCertificate().Certificate); err != nil || name != "n1" {
		t.Fatalf("new node verifying an old-key node: %q, %v", name, err)
	}
	// And a joiner pinning the old root finds it in what the new node presents.
	if last := newNode.tlsCertificate().Certificate[len(newNode.tlsCertificate().Certificate)-1]; Fingerprint(mustParse(t, last)) != Fingerprint(old.Cert) {
		t.Error("the presented chain does not end at the oldest root, which join tokens pin")
	}
	// The chain survives the data dir.
	dir := t.TempDir()
	if err := newNode.save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded.Roots()) != 2 || len(loaded.Chain()) != 1 || len(loaded.tlsCertificate().Certificate) != 4 {
		t.Fatalf("loaded identity: %d roots, %d in the chain, presents %d certificates; want 2, 1, 4", len(loaded.Roots()), len(loaded.Chain()), len(loaded.tlsCertificate().Certificate))
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestIdentityTrustsEveryCatalogRoot: a node that follows a catalog
// accepts certificates of the active and of every previous root, with no
// chain; a foreign CA of the same trust domain stays refused.
func TestIdentityTrustsEveryCatalogRoot(t *testing.T) {
	old := idTestCA(t, idTestTD)
	next, rec := rotatedRecord(t, old)
	store := discovery.NewStore()
	if err := store.SetCA(1, rec); err != nil {
		t.Fatal(err)
	}
	cert, key := idTestNode(t, old, "self")
	id, err := newIdentity(old.Cert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	oldPeer, _ := idTestNode(t, old, "a")
	newPeer, _ := idTestNode(t, next, "b")
	foreign, _ := idTestNode(t, idTestCA(t, idTestTD), "c")
	if _, err := id.VerifyPeer([][]byte{newPeer.Raw}); !errors.Is(err, ErrNotNodeCert) {
		t.Fatalf("before following the catalog, a new-key peer without a chain: %v; want refused", err)
	}
	id.followCatalog(store, testkit.Logger(t))
	for _, tc := range []struct {
		name  string
		chain [][]byte
		want  string
	}{
		{"old root", [][]byte{oldPeer.Raw}, "a"},
		{"new root", [][]byte{newPeer.Raw}, "b"},
		{"foreign CA", [][]byte{foreign.Raw}, ""},
	} {
		got, err := id.VerifyPeer(tc.chain)
		if tc.want == "" {
			if !errors.Is(err, ErrNotNodeCert) {
				t.Errorf("%s: %q, %v; want refused", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// Once the old root is dropped, its certificates are refused.
	dropped := *rec
	dropped.PreviousRoots = nil
	if err := store.SetCA(2, &dropped); err != nil {
		t.Fatal(err)
	}
	if _, err := id.VerifyPeer([][]byte{oldPeer.Raw}); !errors.Is(err, ErrNotNodeCert) {
		t.Errorf("an old-key peer after the old root was dropped: %v; want refused", err)
	}
}

// TestIssuedIndex: node certificates carry their issue index; older
// serials (random, below 2^126) read as index 0.
func TestIssuedIndex(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	for _, idx := range []uint64{0, 1, 12345, 1<<64 - 1} {
		cert, err := ca.SignNodeAt(mustCSR(t, "n1"), "n1", idx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got := issuedIndex(cert); got != idx {
			t.Errorf("issued at %d: read %d", idx, got)
		}
		if len(cert.SerialNumber.Bytes()) > 20 {
			t.Errorf("serial of %d bytes; X.509 allows 20", len(cert.SerialNumber.Bytes()))
		}
	}
	for _, sn := range []*big.Int{serial(), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 126), big.NewInt(1)), big.NewInt(7)} {
		if got := issuedIndex(&x509.Certificate{SerialNumber: sn}); got != 0 {
			t.Errorf("serial %x reads as index %d; want 0", sn, got)
		}
	}
}

// dialCluster opens a TLS connection to addr with id's node certificate
// and alpn and reads once: TLS 1.3 tells a client of a refused
// certificate on its first read. It returns nil when the server kept the
// connection (it sent something, or nothing until the deadline), else the
// error of the handshake or of that read.
func dialCluster(t *testing.T, id *Identity, addr, alpn string) error {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, id.clientTLS(alpn))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// TestRevokedNodeRefusedOnHandshake: a client that leaves is revoked: its
// old certificate fails the handshake on the cluster port (raft and RPC),
// a connection open from before is refused its next call, and the leader
// logs it; the same name joined again with a new token is accepted; and a
// client that was only down long enough to be reaped is not revoked and
// comes back with the certificate it has.
func TestRevokedNodeRefusedOnHandshake(t *testing.T) {
	dir := t.TempDir()
	leaderID, ca, err := BootstrapIdentity(dir, idTestTD, "n1")
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.SyncBuffer{}
	s, err := Open(Config{
		NodeID: "n1-id", Addr: "127.0.0.1:0", DataDir: dir, Bootstrap: true,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(logs, testkit.Writer(t)), nil)).With("component", "raft"),
		Cluster: &ClusterConfig{Identity: leaderID, Bind: "127.0.0.1:0", Voters: 1, LocalCA: ca,
			HeartbeatInterval: 50 * time.Millisecond, NodeTTL: 300 * time.Millisecond, ReapAfter: 300 * time.Millisecond},
	}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	hurryElection(t, s)
	waitLeader(t, s)
	testkit.WaitFor(t, 5*time.Second, "the CA in the catalog", func() bool { _, r, _ := s.store.CA(nil); return r != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	web := joinClient(t, s, "web-01")
	old := web.cfg.Identity
	if err := dialCluster(t, old, s.Addr(), alpnRPC); err != nil {
		t.Fatalf("a member's certificate before it leaves: %v; want the connection kept", err)
	}
	// A connection opened before the leave.
	early, err := NewClient(ClientConfig{Identity: old, NodeID: "web-01-id", Addr: "127.0.0.1:1", Servers: []string{s.Addr()},
		Logger: testkit.Logger(t).With("client", "early")}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if _, err := early.Members(ctx); err != nil {
		t.Fatal(err)
	}

	if err := web.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	web.Close()
	for _, alpn := range []string{alpnRPC, alpnRaft} {
		err := dialCluster(t, old, s.Addr(), alpn)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s with the certificate of a node that left: %v; want the handshake refused over the certificate", alpn, err)
		}
	}
	if _, err := early.Members(ctx); !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a call on a connection opened before the leave: %v; want refused as revoked", err)
	}
	if _, err := s.cluster.cfg.Identity.VerifyPeer(old.tlsCertificate().Certificate); !errors.Is(err, ErrRevoked) {
		t.Errorf("VerifyPeer of the revoked chain: %v; want ErrRevoked", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the refusal logged, naming the node and the reason", func() bool {
		out := logs.String()
		return strings.Contains(out, "refused a revoked node certificate") && strings.Contains(out, "node=web-01") && strings.Contains(out, `reason="left the cluster"`)
	})

	// The same name joins again with a new token: its new certificate,
	// issued after the revocation, is accepted.
	again := joinClient(t, s, "web-01")
	if err := dialCluster(t, again.cfg.Identity, s.Addr(), alpnRPC); err != nil {
		t.Fatalf("the re-joined node's new certificate: %v; want the connection kept", err)
	}
	if _, err := again.Members(ctx); err != nil {
		t.Fatalf("the re-joined node's call: %v", err)
	}
	// Its replica started from a snapshot, which carries the deny list.
	if r, _ := again.Replica().Store().Revocation(nil, "web-01"); r == nil {
		t.Error("a replica's snapshot has no revocations: the client could not refuse a revoked server")
	}
	if err := dialCluster(t, old, s.Addr(), alpnRPC); err == nil {
		t.Errorf("the old certificate after the name joined again: %v; want still refused", err)
	}
	again.Close()

	// A client that is only down: reaped after its TTL, never revoked.
	db := joinClient(t, s, "db-01")
	dbID := db.cfg.Identity
	db.Close()
	testkit.WaitFor(t, 20*time.Second, "db-01 reaped", func() bool { _, n, _, _ := s.store.Node(nil, "db-01"); return n == nil })
	if rev, _ := s.store.Revocation(nil, "db-01"); rev != nil {
		t.Fatalf("a reaped node was revoked: %+v", rev)
	}
	back, err := NewClient(ClientConfig{Identity: dbID, NodeID: "db-01-id", Addr: "127.0.0.1:1", Servers: []string{s.Addr()},
		HeartbeatInterval: 50 * time.Millisecond, Logger: testkit.Logger(t).With("client", "db-01")}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	back.Start()
	defer back.Close()
	if err := back.WaitLeader(ctx); err != nil {
		t.Fatalf("a reaped client coming back with its certificate: %v", err)
	}
	if _, err := back.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "db-01-id", Name: "db-01", Address: "127.0.0.1"}}); err != nil {
		t.Fatalf("the reaped client registering again: %v", err)
	}
}

// TestRemoveNodeRevokes: an operator's removal (through a server) takes
// the node out and revokes it, even when the node is down; a client may
// not remove anyone, and the leader not itself.
func TestRemoveNodeRevokes(t *testing.T) {
	s := clusterLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	web := joinClient(t, s, "web-01")
	db := joinClient(t, s, "db-01")
	web.Close() // down: removal needs nothing from it

	_, err := s.rpcRemoveNode(peerCtxOf(db.cfg.Identity), &RemoveNodeRequest{Node: "web-01"})
	wantDenied(t, "a client removing another node", err, `node "db-01" is not a server`)
	if err := s.RemoveNode(ctx, "n1"); !errors.Is(err, ErrIsLeader) || !strings.Contains(err.Error(), "is the leader") {
		t.Errorf("removing the leader: %v; want refused", err)
	}
	if err := s.RemoveNode(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	if _, n, _, _ := s.store.Node(nil, "web-01"); n != nil {
		t.Fatal("web-01 still in the catalog after its removal")
	}
	rev, _ := s.store.Revocation(nil, "web-01")
	if rev == nil || rev.Reason != reasonRemoved {
		t.Fatalf("web-01's revocation = %+v; want reason %q", rev, reasonRemoved)
	}
	if err := dialCluster(t, web.cfg.Identity, s.Addr(), alpnRPC); err == nil {
		t.Errorf("the removed node's certificate: %v; want the handshake refused", err)
	}
	// The client's replica learns the deny list too.
	testkit.WaitFor(t, 10*time.Second, "the revocation on db-01's replica", func() bool {
		r, _ := db.Replica().Store().Revocation(nil, "web-01")
		return r != nil && r.Index == rev.Index
	})
}

// peerCtxOf is the context of a cluster RPC from id's certificate.
func peerCtxOf(id *Identity) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{id.Cert()}}},
	})
}

// TestRotateCA: a rotation asked on a follower runs on the leader; every
// server then holds the new key sealed to it, the old root stays trusted,
// the client's replica follows, leaves are reissued under the new key
// with the chain an old-root peer verifies, a node that joins afterwards
// talks with servers whose certificates the old key signed, and a second
// rotation keeps both previous roots until they are dropped.
func TestRotateCA(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{})
	testkit.WaitFor(t, 20*time.Second, "a sealed CA key for every server", func() bool {
		_, root, _ := c.leader().store.CA(nil)
		return root != nil && len(root.SealedKeys) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	web := joinClient(t, c.leader(), "web-01")
	_, before, _ := c.leader().store.CA(nil)

	// A client may not rotate.
	_, err := c.leader().rpcRotateCA(peerCtxOf(web.cfg.Identity), &Empty{})
	wantDenied(t, "a client rotating the CA", err, `node "web-01" is not a server`)

	f := c.followers()[0]
	rotated, err := f.RotateCA(ctx)
	if err != nil {
		t.Fatalf("rotating through a follower: %v", err)
	}
	if rotated.Fingerprint == before.Fingerprint || len(rotated.PreviousRoots) != 1 || rotated.PreviousRoots[0].Fingerprint != before.Fingerprint {
		t.Fatalf("after the rotation: active %s, previous %+v; want a new root and the old one previous", rotated.Fingerprint, rotated.PreviousRoots)
	}
	if len(rotated.SealedKeys) != 0 {
		t.Error("RotateCA returned sealed keys; it answers the public record")
	}
	newCert, err := parseCertPEM(rotated.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.servers {
		name := s.cluster.cfg.Identity.Name
		testkit.WaitFor(t, 10*time.Second, name+" has the new CA", func() bool {
			_, r, _ := s.store.CA(nil)
			return r.Fingerprint == rotated.Fingerprint
		})
		_, r, _ := s.store.CA(nil)
		if len(r.SealedKeys) != 3 {
			t.Fatalf("%s: the new key is sealed to %d servers; want 3", name, len(r.SealedKeys))
		}
		got, err := s.UnsealCA(r)
		if err != nil {
			t.Fatalf("%s opens the new key: %v", name, err)
		}
		if !got.Cert.Equal(newCert) || got.Key.Equal(c.ca.Key) || !got.Key.PublicKey.Equal(newCert.PublicKey) {
			t.Fatalf("%s: the key it opens is not the new CA's", name)
		}
	}
	// The client's replica follows, without keys.
	testkit.WaitFor(t, 10*time.Second, "the new CA on the client's replica", func() bool {
		_, r, _ := web.Replica().Store().CA(nil)
		return r != nil && r.Fingerprint == rotated.Fingerprint && len(r.PreviousRoots) == 1 && len(r.SealedKeys) == 0
	})
	// The client still writes through the leader.
	if _, err := web.Apply(ctx, registerService("web-01", "web-1", "web")); err != nil {
		t.Fatalf("the client writing after the rotation: %v", err)
	}

	// A server's leaves: signed by the new key, trusting both roots, and
	// verifiable by a proxy that knows only the old root.
	lead := c.leader()
	leadName := lead.cluster.cfg.Identity.Name
	if _, err := lead.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{Name: leadName, ID: leadName + "-id", Address: "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lead.Apply(ctx, registerService(leadName, "api-1", "api")); err != nil {
		t.Fatal(err)
	}
	li := NewLeafIssuer(lead.store, leadName, lead.SignLeaf, time.Hour, testkit.Logger(t))
	li.sync(ctx, nil, time.Now())
	lv := li.Leaves()
	if len(lv.Services) != 1 {
		t.Fatalf("leaves: %+v; want api's", lv.Services)
	}
	roots, err := parseCertsPEM(lv.RootsPEM)
	if err != nil || len(roots) != 2 {
		t.Fatalf("the proxy's roots: %d, %v; want the new and the old", len(roots), err)
	}
	pair, err := tls.X509KeyPair(lv.Services[0].CertPEM, lv.Services[0].KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := mustParse(t, pair.Certificate[0])
	if err := leaf.CheckSignatureFrom(newCert); err != nil {
		t.Fatalf("the reissued leaf is not signed by the new key: %v", err)
	}
	oldOnly, inter := x509.NewCertPool(), x509.NewCertPool()
	oldOnly.AddCert(c.ca.Cert)
	for _, der := range pair.Certificate[1:] {
		inter.AddCert(mustParse(t, der))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: oldOnly, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the new leaf with its chain, against the old root only: %v", err)
	}

	// A node joins after the rotation: its token pins the old root, which
	// every server (still on an old-key certificate) presents.
	tok, _, err := lead.CreateToken(ctx, time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	if pt, _ := ParseToken(tok); pt.Fingerprint != before.Fingerprint {
		t.Errorf("a token after the rotation pins %s; want the oldest trusted root %s", pt.Fingerprint, before.Fingerprint)
	}
	id, err := Join(ctx, JoinParams{Addr: f.Addr(), Token: tok, NodeName: "db-01", NodeID: "db-01-id", DataDir: t.TempDir(), Role: RoleClient})
	if err != nil {
		t.Fatalf("joining after the rotation: %v", err)
	}
	if !id.CA().Equal(newCert) || id.Cert().CheckSignatureFrom(newCert) != nil || len(id.Roots()) != 2 || len(id.Chain()) != 1 {
		t.Fatalf("the joiner: CA %s, %d roots, %d in its chain; want the new CA, 2 roots, the cross-signed root", Fingerprint(id.CA()), len(id.Roots()), len(id.Chain()))
	}
	db, err := NewClient(ClientConfig{Identity: id, NodeID: "db-01-id", Addr: "127.0.0.1:1", Servers: []string{lead.Addr()},
		HeartbeatInterval: 100 * time.Millisecond, Logger: testkit.Logger(t).With("client", "db-01")}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	db.Start()
	defer db.Close()
	if err := db.WaitLeader(ctx); err != nil {
		t.Fatalf("the new-key client with old-key servers: %v", err)
	}
	// A node that knows only the old root (it slept through the rotation)
	// accepts the joiner's certificate through the chain it presents.
	sleeper := testIdentity(t, c.ca, "sleeper")
	if name, err := sleeper.VerifyPeer(id.tlsCertificate().Certificate); err != nil || name != "db-01" {
		t.Fatalf("an old-root node verifying the joiner: %q, %v", name, err)
	}

	// A second rotation keeps both previous roots; the chain reaches the
	// oldest. Once past their time, the leader drops them.
	second, err := lead.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.PreviousRoots) != 2 || second.PreviousRoots[1].Fingerprint != before.Fingerprint {
		t.Fatalf("after a second rotation, previous roots = %d; want 2, the first root oldest", len(second.PreviousRoots))
	}
	if chain, _ := parseCertsPEM(second.ChainPEM()); len(chain) != 2 {
		t.Fatalf("chain after two rotations: %d certificates; want 2", len(chain))
	}
	lead.dropRetiredRoots(ctx, time.Unix(second.PreviousRoots[0].DropAfter, 0))
	_, r, _ := lead.store.CA(nil)
	if len(r.PreviousRoots) != 0 || r.Fingerprint != second.Fingerprint || len(r.SealedKeys) != 3 {
		t.Fatalf("after the previous roots' time: %d previous roots, %d sealed keys; want none, and custody kept", len(r.PreviousRoots), len(r.SealedKeys))
	}
	testkit.WaitFor(t, 10*time.Second, "the client's heartbeat still accepted", func() bool {
		_, chk, _ := lead.store.Check(nil, "db-01", NodeCheckID)
		return chk != nil && chk.Status == discovery.HealthPassing
	})
}

func TestFSMRevocationsSnapshotRoundTrip(t *testing.T) {
	src := discovery.NewStore()
	for i, n := range []string{"web-01", "db-01"} {
		if err := src.RevocationApply(uint64(i+1), discovery.RevocationAdd, &discovery.Revocation{Node: n, Reason: reasonLeft, At: 100}); err != nil {
			t.Fatal(err)
		}
	}
	dst := restoreRoundTrip(t, src, discovery.RecordRevocation, 2)
	if r, _ := dst.store.Revocation(nil, "db-01"); r == nil || r.Index != 2 {
		t.Fatalf("restored revocation = %+v; want db-01's at index 2", r)
	}
}
