package raft

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// identityAt is a node identity of name from ca whose certificate is
// valid from notBefore to notAfter (in the past, for an expired one).
func identityAt(t *testing.T, ca *CA, name string, notBefore, notAfter time.Time) *Identity {
	t.Helper()
	key, _, err := newNodeKey(name)
	if err != nil {
		t.Fatal(err)
	}
	td, _ := ca.TrustDomain()
	nid, _ := NodeID(td, name)
	cert, err := ca.signWindow(&key.PublicKey, name, nid.URL(), notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	id, err := newIdentity(ca.Cert, cert, key)
	if err != nil {
		t.Fatalf("an identity with a certificate valid %s to %s: %v", notBefore, notAfter, err)
	}
	return id
}

// backdatedCA is a CA for td valid since a year ago, so that it can have
// signed certificates that have expired since.
func backdatedCA(t *testing.T, td string) *CA {
	t.Helper()
	ca, err := NewCA(td)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *ca.Cert
	tmpl.NotBefore = time.Now().Add(-365 * 24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &ca.Key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: ca.Key}
}

// rpcAs is the cluster RPC as the node of id.
func rpcAs(t *testing.T, id *Identity) *rpcClients {
	c := &rpcClients{id: id}
	t.Cleanup(c.closeAll)
	return c
}

// TestAdmitPeer: the one decision on a peer's node certificate. Expired
// ones only renew, within the grace; a revoked node's certificates issued
// up to its revocation are refused for every use, renewal within the
// grace too, while one issued after (a new join) and other nodes' are not.
func TestAdmitPeer(t *testing.T) {
	now := time.Now()
	cert := func(notBefore, notAfter time.Time, issued uint64) *x509.Certificate {
		return &x509.Certificate{NotBefore: notBefore, NotAfter: notAfter, SerialNumber: issuedSerial(issued)}
	}
	valid := cert(now.Add(-time.Hour), now.Add(time.Hour), 5)
	late := cert(now.Add(-3*time.Hour), now.Add(-time.Hour), 5)
	gone := cert(now.Add(-50*time.Hour), now.Add(-25*time.Hour), 5)
	rejoined := cert(now.Add(-time.Hour), now.Add(time.Hour), 11)
	rejoinedLate := cert(now.Add(-3*time.Hour), now.Add(-time.Hour), 11)
	legacy := &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), SerialNumber: serial()} // no issue index
	grace := 24 * time.Hour

	store := discovery.NewStore()
	if err := store.RevocationApply(10, discovery.RevocationAdd, &discovery.Revocation{Node: "left", Reason: reasonLeft, At: now.Unix()}); err != nil {
		t.Fatal(err)
	}
	id := &Identity{}
	id.followCatalog(store, testkit.Logger(t))

	for _, tc := range []struct {
		name  string
		node  string
		cert  *x509.Certificate
		use   peerUse
		want  error  // nil: admitted
		words string // in the refusal
	}{
		{"valid, handshake", "web", valid, useHandshake, nil, ""},
		{"valid, cluster", "web", valid, useCluster, nil, ""},
		{"valid, renewal", "web", valid, useRenewal, nil, ""},
		{"expired within the grace, handshake", "web", late, useHandshake, nil, ""},
		{"expired within the grace, renewal", "web", late, useRenewal, nil, ""},
		{"expired within the grace, cluster", "web", late, useCluster, ErrCertExpired, "may only renew itself"},
		{"expired beyond the grace, handshake", "web", gone, useHandshake, nil, ""},
		{"expired beyond the grace, renewal", "web", gone, useRenewal, ErrCertExpired, "longer ago than the renewal grace (24h0m0s)"},
		{"expired beyond the grace, cluster", "web", gone, useCluster, ErrCertExpired, "may only renew itself"},

		{"revoked, handshake", "left", valid, useHandshake, ErrRevoked, `node "left": left the cluster`},
		{"revoked, cluster", "left", valid, useCluster, ErrRevoked, "raft index 10"},
		{"revoked, renewal", "left", valid, useRenewal, ErrRevoked, "issued before, at index 5"},
		{"revoked, expired within the grace, handshake", "left", late, useHandshake, ErrRevoked, "join again with a new token"},
		{"revoked, expired within the grace, renewal", "left", late, useRenewal, ErrRevoked, "join again with a new token"},
		{"revoked, from before issue indexes", "left", legacy, useCluster, ErrRevoked, "at index 0"},
		{"revoked, expired beyond the grace, renewal", "left", gone, useRenewal, ErrCertExpired, "longer ago than the renewal grace"},
		{"joined again after the revocation, cluster", "left", rejoined, useCluster, nil, ""},
		{"joined again, expired within the grace, renewal", "left", rejoinedLate, useRenewal, nil, ""},
	} {
		err := id.admitPeer(tc.node, tc.cert, tc.use, now, grace)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != nil && (!errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.words)):
			t.Errorf("%s: %v; want %v naming %q", tc.name, err, tc.want, tc.words)
		}
	}
}

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := func(life time.Duration) *x509.Certificate {
		return &x509.Certificate{NotBefore: t0.Add(-certBackdate), NotAfter: t0.Add(life)}
	}
	for _, tc := range []struct {
		name string
		life time.Duration
		ttl  time.Duration
		want time.Time
	}{
		{"half of its life", 24 * time.Hour, 24 * time.Hour, t0.Add(12 * time.Hour)},
		{"a shorter life than configured", time.Hour, 24 * time.Hour, t0.Add(30 * time.Minute)},
		{"a minute", time.Minute, time.Minute, t0.Add(30 * time.Second)},
		{"over twice the configured life: at once", 24 * time.Hour, time.Minute, t0.Add(-certBackdate)},
		{"an old five-year certificate: at once", 5 * 365 * 24 * time.Hour, 24 * time.Hour, t0.Add(-certBackdate)},
	} {
		if got := renewAt(cert(tc.life), tc.ttl); !got.Equal(tc.want) {
			t.Errorf("%s: renewAt = %s; want %s", tc.name, got, tc.want)
		}
	}
}

// TestRenewNodeForTheCallerOnly: RenewNode signs the name in the caller's
// certificate, whatever the CSR asks, for the CSR's key, for at most the
// server's lifetime; a call without a node certificate is refused.
func TestRenewNodeForTheCallerOnly(t *testing.T) {
	s, ca := openClusterLeaderWith(t, ClusterConfig{Voters: 1, NodeCertTTL: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	web := testIdentity(t, ca, "web-03")
	rpc := rpcAs(t, web)
	for _, tc := range []struct {
		ask, want time.Duration
	}{{48 * time.Hour, time.Hour}, {10 * time.Minute, 10 * time.Minute}, {0, time.Hour}, {time.Second, MinNodeCertTTL}} {
		key, csr := greedyCSR(t, "membership.test") // asks for node/n1 and svc/admin
		var resp RenewNodeResponse
		if err := rpc.call(ctx, s.Addr(), "RenewNode", &RenewNodeRequest{CSR: csr, TTL: tc.ask}, &resp); err != nil {
			t.Fatalf("RenewNode asking for %s: %v", tc.ask, err)
		}
		cert, err := x509.ParseCertificate(resp.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if name, err := web.VerifyPeer([][]byte{cert.Raw}); err != nil || name != "web-03" {
			t.Errorf("renewed certificate names %q (%v); want web-03, the caller", name, err)
		}
		if len(cert.URIs) != 1 || len(cert.DNSNames) != 0 || cert.Subject.CommonName != "web-03" || !key.PublicKey.Equal(cert.PublicKey) {
			t.Errorf("renewed certificate: URIs %v DNS %v CN %q, key from the CSR %v; want only web-03's names and the CSR's key",
				cert.URIs, cert.DNSNames, cert.Subject.CommonName, key.PublicKey.Equal(cert.PublicKey))
		}
		if life := cert.NotAfter.Sub(cert.NotBefore) - certBackdate; life != tc.want {
			t.Errorf("asking for %s: the certificate lives %s; want %s", tc.ask, life, tc.want)
		}
	}

	var resp RenewNodeResponse
	err := rpc.call(ctx, s.Addr(), "RenewNode", &RenewNodeRequest{CSR: []byte("junk")}, &resp)
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("RenewNode with a bad CSR: %v; want InvalidArgument", err)
	}

	// Without a node certificate: refused.
	cc, err := grpc.NewClient("passthrough:///"+s.Addr(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpnRPC}})),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, csr := greedyCSR(t, "membership.test")
	err = cc.Invoke(ctx, "/"+rpcService+"/RenewNode", &RenewNodeRequest{CSR: csr}, &resp)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("RenewNode without a certificate: %v; want Unauthenticated", err)
	}
}

// TestExpiredNodeCertRenewsOnly: a node certificate that expired within
// the grace renews itself and is refused for every other RPC, the
// replica stream and raft; one expired longer ago than the grace does
// not renew.
func TestExpiredNodeCertRenewsOnly(t *testing.T) {
	s, ca := openClusterLeaderWith(t, ClusterConfig{Voters: 1, RenewGrace: 24 * time.Hour, LocalCA: backdatedCA(t, "membership.test")})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now()
	late := identityAt(t, ca, "late", now.Add(-3*time.Hour), now.Add(-time.Hour))
	gone := identityAt(t, ca, "gone", now.Add(-50*time.Hour), now.Add(-25*time.Hour))
	lateRPC := rpcAs(t, late)

	key, csr := greedyCSR(t, "membership.test")
	var resp RenewNodeResponse
	if err := lateRPC.call(ctx, s.Addr(), "RenewNode", &RenewNodeRequest{CSR: csr}, &resp); err != nil {
		t.Fatalf("RenewNode with a certificate expired an hour ago (grace 24h): %v", err)
	}
	cert, _ := x509.ParseCertificate(resp.Cert)
	if name, err := late.VerifyPeer([][]byte{resp.Cert}); err != nil || name != "late" || !key.PublicKey.Equal(cert.PublicKey) {
		t.Errorf("the renewed certificate names %q (%v); want a valid certificate for late, for the CSR's key", name, err)
	}

	err := rpcAs(t, gone).call(ctx, s.Addr(), "RenewNode", &RenewNodeRequest{CSR: csr}, &resp)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "longer ago than the renewal grace") {
		t.Errorf("RenewNode with a certificate expired 25h ago (grace 24h): %v; want Unauthenticated naming the grace", err)
	}

	// Every other RPC (Join takes a token, not a certificate).
	for _, m := range clusterServiceDesc.Methods {
		if m.MethodName == "Join" || m.MethodName == "RenewNode" {
			continue
		}
		var out map[string]any
		err := lateRPC.call(ctx, s.Addr(), m.MethodName, &struct{}{}, &out)
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "expired") {
			t.Errorf("%s with an expired node certificate: %v; want Unauthenticated naming the expiry", m.MethodName, err)
		}
	}
	// A valid certificate gets through (so the loop above tests the
	// expiry, not something else).
	var stats StatsResponse
	if err := rpcAs(t, testIdentity(t, ca, "fresh")).call(ctx, s.Addr(), "Stats", &Empty{}, &stats); err != nil {
		t.Errorf("Stats with a valid node certificate: %v", err)
	}

	// The replica stream.
	cc, err := lateRPC.get(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	st, err := cc.NewStream(ctx, &replicaStreamDesc, "/"+rpcService+"/Subscribe")
	if err == nil {
		if err = st.SendMsg(&SubscribeRequest{}); err == nil {
			st.CloseSend()
			var ev map[string]any
			err = st.RecvMsg(&ev)
		}
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("Subscribe with an expired node certificate: %v; want Unauthenticated", err)
	}

	// Raft: the handshake passes, then the listener closes the connection.
	conn, err := tls.Dial("tcp", s.Addr(), late.clientTLS(alpnRaft))
	if err != nil {
		t.Fatalf("the TLS handshake with an expired node certificate: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a raft connection with an expired node certificate: read %v; want the listener to close it (EOF)", err)
	}
}

// TestClientRenewsItsNodeCert: a client renews its node certificate
// before it expires, writes the new pair to its data dir (0600, no other
// key, nothing left over) and uses it: once the first certificate has
// expired, its writes still go through.
func TestClientRenewsItsNodeCert(t *testing.T) {
	s, ca := openClusterLeaderWith(t, ClusterConfig{Voters: 1})
	testkit.WaitFor(t, 10*time.Second, "the CA in the catalog", func() bool {
		_, root, _ := s.store.CA(nil)
		return root != nil
	})
	now := time.Now()
	id := identityAt(t, ca, "web-04", now.Add(-time.Minute), now.Add(4*time.Second)) // renewed 2s from now
	first := id.Cert()
	dir := t.TempDir()
	c, err := NewClient(ClientConfig{Identity: id, NodeID: "web-04-id", Addr: "127.0.0.1:1", Servers: []string{s.Addr()},
		HeartbeatInterval: 100 * time.Millisecond, DataDir: dir, NodeCertTTL: time.Minute,
		Logger: testkit.Logger(t).With("client", "web-04")}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "web-04's certificate renewed", func() bool { return id.epoch() > 0 })
	cur := id.Cert()
	if cur.Equal(first) || cur.NotAfter.Sub(cur.NotBefore)-certBackdate != time.Minute {
		t.Fatalf("after renewal the certificate lives %s (same as before: %v); want a new one of 1m", cur.NotAfter.Sub(cur.NotBefore), cur.Equal(first))
	}

	files, _ := os.ReadDir(tlsDir(dir))
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
		if info, _ := f.Info(); info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v; want 0600", f.Name(), info.Mode().Perm())
		}
	}
	if strings.Join(names, " ") != "node-key.pem node.pem" {
		t.Errorf("the client's tls dir holds %v; want only node-key.pem and node.pem (no earlier key, nothing half-written)", names)
	}
	certs, key, err := loadPair(tlsDir(dir))
	if err != nil || !certs[0].Equal(id.Cert()) || !key.Equal(id.Key()) {
		t.Errorf("the files hold another pair than the one in use (%v)", err)
	}

	testkit.WaitFor(t, 20*time.Second, "the first certificate expired", func() bool { return time.Now().After(first.NotAfter) })
	if _, err := c.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "web-04-id", Name: "web-04", Address: "127.0.0.1"}}); err != nil {
		t.Errorf("a write after the first certificate expired: %v; want it to go through with the renewed one", err)
	}
}

// TestServerRenewalKeepsCAKey: a server renews its own certificate with
// its own CA key, seals the CA key to its new node key, keeps the earlier
// key on disk, and still signs.
func TestServerRenewalKeepsCAKey(t *testing.T) {
	s, _ := openClusterLeaderWith(t, ClusterConfig{Voters: 1, NodeCertTTL: time.Minute}) // the bootstrap certificate lives 24h: renewed at once
	id := s.cluster.cfg.Identity
	first := id.Key()
	testkit.WaitFor(t, 20*time.Second, "the leader's certificate renewed and its blob sealed to the new key", func() bool {
		_, root, _ := s.store.CA(nil)
		return id.epoch() > 0 && root != nil && custodyKey(root, id) == id.Key()
	})
	if life := id.Cert().NotAfter.Sub(id.Cert().NotBefore) - certBackdate; life != time.Minute {
		t.Errorf("the renewed certificate lives %s; want 1m", life)
	}
	if _, err := s.signingCA(); err != nil {
		t.Errorf("the server cannot open the CA key after its renewal: %v", err)
	}
	loaded, err := LoadIdentity(s.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert().Equal(id.Cert()) || loaded.prevKey() == nil || !loaded.prevKey().Equal(first) {
		t.Errorf("on disk: the renewed certificate %v, the earlier key kept %v; want both", loaded.Cert().Equal(id.Cert()), loaded.prevKey() != nil)
	}
}

// TestRenewalBeforeResealOpensWithPreviousKey: a server that stopped
// between its renewal and the new seal still opens the CA key with the
// earlier node key it kept, and the leader seals it to the new one.
func TestRenewalBeforeResealOpensWithPreviousKey(t *testing.T) {
	s, ca := openClusterLeader(t, 1)
	testkit.WaitFor(t, 10*time.Second, "the CA in the catalog", func() bool {
		_, root, _ := s.store.CA(nil)
		return root != nil
	})
	id := s.cluster.cfg.Identity
	old := id.Key()
	key, csr, _ := newNodeKey(id.Name)
	cert, err := ca.SignNode(csr, id.Name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := renewTo(id, s.dataDir, cert, key, old); err != nil {
		t.Fatal(err)
	}
	// As after a restart from disk.
	loaded, err := LoadIdentity(s.dataDir)
	if err != nil || !loaded.Key().Equal(key) || loaded.prevKey() == nil || !loaded.prevKey().Equal(old) {
		t.Fatalf("LoadIdentity after a renewal: %v; want the new pair and the earlier key", err)
	}
	_, root, _ := s.store.CA(nil)
	if custodyKey(root, id) != old {
		t.Fatal("the blob is not sealed to the earlier key: the test does not test anything")
	}
	if _, err := s.UnsealCA(root); err != nil {
		t.Fatalf("opening the CA key with the earlier node key: %v", err)
	}
	if err := s.reconcileCustody(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, root, _ = s.store.CA(nil)
	if custodyKey(root, id) != key {
		t.Error("reconcileCustody did not seal the CA key to the leader's new node key")
	}
}

// TestSavePairCompletesAnInterruptedRenewal: a crash between savePair's
// two renames leaves the new key beside the old certificate; loading
// puts the new certificate in place. A pair that does not match without
// that is an error naming the files.
func TestSavePairCompletesAnInterruptedRenewal(t *testing.T) {
	dir := t.TempDir()
	id, ca, err := BootstrapIdentity(dir, "pair.test", "n1")
	if err != nil {
		t.Fatal(err)
	}
	tdir := tlsDir(dir)
	key, csr, _ := newNodeKey("n1")
	cert, _ := ca.SignNode(csr, "n1", time.Hour)

	// Before the first rename: the old pair, leftovers removed.
	writeNew := func() {
		keyDER, _ := x509.MarshalECPrivateKey(key)
		os.WriteFile(filepath.Join(tdir, nodeKeyFile+newSuffix), pemBlock("EC PRIVATE KEY", keyDER), 0o600)
		os.WriteFile(filepath.Join(tdir, nodeFile+newSuffix), pemBlock("CERTIFICATE", cert.Raw), 0o600)
	}
	writeNew()
	got, err := LoadIdentity(dir)
	if err != nil || !got.Cert().Equal(id.Cert()) {
		t.Fatalf("after a crash before the renames: %v; want the old pair", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(tdir, "*"+newSuffix)); len(leftovers) != 0 {
		t.Errorf("leftovers not removed: %v", leftovers)
	}

	// Between the renames.
	writeNew()
	if err := os.Rename(filepath.Join(tdir, nodeKeyFile+newSuffix), filepath.Join(tdir, nodeKeyFile)); err != nil {
		t.Fatal(err)
	}
	got, err = LoadIdentity(dir)
	if err != nil || !got.Cert().Equal(cert) || !got.Key().Equal(key) {
		t.Fatalf("after a crash between the renames: %v; want the new pair", err)
	}
	if _, err := os.Stat(filepath.Join(tdir, nodeFile+newSuffix)); !os.IsNotExist(err) {
		t.Errorf("node.pem.new still there: %v", err)
	}

	// A key that matches nothing.
	other, _, _ := newNodeKey("n1")
	otherDER, _ := x509.MarshalECPrivateKey(other)
	os.WriteFile(filepath.Join(tdir, nodeKeyFile), pemBlock("EC PRIVATE KEY", otherDER), 0o600)
	if _, err := LoadIdentity(dir); err == nil || !strings.Contains(err.Error(), "does not match the key in") {
		t.Errorf("a mismatched pair loaded: %v", err)
	}
}

// TestExpiredIdentityLoads: an agent whose node certificate expired while
// it was down starts, and renews.
func TestExpiredIdentityLoads(t *testing.T) {
	dir := t.TempDir()
	ca := backdatedCA(t, "expired.test")
	now := time.Now()
	id := identityAt(t, ca, "n1", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	if err := id.save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadIdentity(dir)
	if err != nil || !loaded.Cert().Equal(id.Cert()) {
		t.Fatalf("loading an identity whose certificate expired a day ago: %v", err)
	}
	if !renewAt(loaded.Cert(), DefaultNodeCertTTL).Before(now) {
		t.Error("an expired certificate is not due for renewal at once")
	}
}

// renewTo installs cert and key as id's renewed pair, under its current
// roots and chain, as the renewal does with a signer's answer.
func renewTo(id *Identity, dataDir string, cert *x509.Certificate, key, keep *ecdsa.PrivateKey) error {
	cur := id.cur.Load()
	next, err := id.newPair(cert, key, cur.chain, cur.roots, 0)
	if err != nil {
		return err
	}
	return id.renew(dataDir, next, keep)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
