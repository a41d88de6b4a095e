package raft

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// caSecrets are byte strings that must never appear in raft's state: the
// PEM header of any private key, the CA key's DER and its scalar.
func caSecrets(t *testing.T, ca *CA) map[string][]byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"a PRIVATE KEY PEM block": []byte("PRIVATE KEY"),
		"the CA key's DER":        der,
		"the CA key's scalar":     ca.Key.D.FillBytes(make([]byte, 32)),
	}
}

func wantNoSecrets(t *testing.T, where string, data []byte, secrets map[string][]byte) {
	t.Helper()
	for what, s := range secrets {
		if bytes.Contains(data, s) {
			t.Errorf("%s holds %s", where, what)
		}
	}
}

func TestSealOpenCAKey(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	certPEM, _, _ := ca.EncodeCA()
	keyA, _, _ := newNodeKey("a")
	keyB, _, _ := newNodeKey("b")
	sealed, err := SealCAKey(ca, "a", &keyA.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if sealed.Node != "a" || !bytes.Equal(sealed.Recipient, mustECDHBytes(&keyA.PublicKey)) || sealed.Blob[0] != sealedKeyVersion {
		t.Fatalf("sealed = node %q, recipient %x, version %d", sealed.Node, sealed.Recipient, sealed.Blob[0])
	}
	wantNoSecrets(t, "the sealed blob", sealed.Blob, caSecrets(t, ca))
	root := &discovery.CARoot{CertPEM: certPEM, Fingerprint: Fingerprint(ca.Cert), SealedKeys: []discovery.SealedCAKey{sealed}}

	got, err := OpenCAKey(root, "a", keyA)
	if err != nil {
		t.Fatalf("node a opens its own blob: %v", err)
	}
	if !got.Key.Equal(ca.Key) || !got.Cert.Equal(ca.Cert) {
		t.Fatal("the opened key is not the CA's")
	}
	if _, err := got.SignNode(mustCSR(t, "n1"), "n1", 0); err != nil {
		t.Fatalf("signing with the opened CA: %v", err)
	}

	// Node b's key does not open a's blob, under either name.
	if _, err := OpenCAKey(root, "b", keyB); !errors.Is(err, ErrNoSealedKey) {
		t.Errorf("b opens with no blob of its own: %v; want ErrNoSealedKey", err)
	}
	if _, err := OpenCAKey(root, "a", keyB); !errors.Is(err, ErrSealedKey) {
		t.Errorf("b's key on a's blob: %v; want ErrSealedKey", err)
	}
	// a's blob moved to b's name opens for no one: the name is bound.
	moved := &discovery.CARoot{CertPEM: certPEM, SealedKeys: []discovery.SealedCAKey{{Node: "b", Recipient: sealed.Recipient, Blob: sealed.Blob}}}
	for _, k := range []struct {
		who  string
		node string
	}{{"a's key", "a"}, {"b's key", "b"}} {
		key := keyA
		if k.node == "b" {
			key = keyB
		}
		if _, err := OpenCAKey(moved, "b", key); !errors.Is(err, ErrSealedKey) {
			t.Errorf("a's blob under b's name, opened with %s: %v; want ErrSealedKey", k.who, err)
		}
	}
	// Bound to the CA too: the same blob under another CA's record fails.
	other := idTestCA(t, idTestTD)
	otherPEM, _, _ := other.EncodeCA()
	if _, err := OpenCAKey(&discovery.CARoot{CertPEM: otherPEM, SealedKeys: root.SealedKeys}, "a", keyA); !errors.Is(err, ErrSealedKey) {
		t.Errorf("a's blob under another CA: %v; want ErrSealedKey", err)
	}
	// A changed byte, or an unknown version, fails.
	bad := append([]byte(nil), sealed.Blob...)
	bad[len(bad)-1] ^= 1
	for name, blob := range map[string][]byte{"tampered": bad, "version 2": append([]byte{2}, sealed.Blob[1:]...), "empty": nil} {
		r := &discovery.CARoot{CertPEM: certPEM, SealedKeys: []discovery.SealedCAKey{{Node: "a", Blob: blob}}}
		if _, err := OpenCAKey(r, "a", keyA); !errors.Is(err, ErrSealedKey) {
			t.Errorf("%s blob: %v; want ErrSealedKey", name, err)
		}
	}
}

func mustCSR(t *testing.T, name string) []byte {
	t.Helper()
	_, csr, err := newNodeKey(name)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// After bootstrap, raft's state holds the CA key only sealed: the
// catalog's record, a snapshot written through the FSM's Persist and the
// raft files on disk have no clear key, and the bootstrap key file is
// gone.
func TestBootstrapStoresNoClearCAKey(t *testing.T) {
	s, ca := openClusterLeader(t, 3)
	var root *discovery.CARoot
	testkit.WaitFor(t, 10*time.Second, "the CA in raft", func() bool {
		_, root, _ = s.store.CA(nil)
		return root != nil
	})
	secrets := caSecrets(t, ca)
	if len(root.LegacyKeyPEM) != 0 || len(root.SealedKeys) != 1 || root.SealedKeys[0].Node != "leader" {
		t.Fatalf("CA record: clear key %d bytes, sealed to %v; want no clear key, sealed to the leader only", len(root.LegacyKeyPEM), root.SealedKeys)
	}
	var rec bytes.Buffer
	if err := codec.NewEncoder(&rec, msgpackHandle).Encode(root); err != nil {
		t.Fatal(err)
	}
	wantNoSecrets(t, "the catalog's CA record", rec.Bytes(), secrets)
	wantNoSecrets(t, "a snapshot", persist(t, s.store), secrets)

	// The leader signs with its sealed copy.
	got, err := s.signingCA()
	if err != nil || !got.Key.Equal(ca.Key) {
		t.Fatalf("signingCA = %v, %v; want the CA", got, err)
	}

	// raft.db and snapshot files (force one) hold no clear key either.
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	files := 0
	filepath.WalkDir(filepath.Join(s.dataDir, "raft"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files++
		wantNoSecrets(t, p, b, secrets)
		return nil
	})
	if files < 2 {
		t.Fatalf("checked %d raft files; want raft.db and a snapshot at least", files)
	}
	if _, err := os.Stat(filepath.Join(tlsDir(s.dataDir), caKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the bootstrap CA key file is still on disk after the CA is in raft: %v", err)
	}
}

// A server that joins gets its own sealed key from the leader; when the
// first server stops, a joined one that leads signs a new node's
// certificate with it. A client replica never sees a sealed key.
func TestJoinedServerHoldsCAKeyAndSigns(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{})
	first := c.servers[0]
	testkit.WaitFor(t, 20*time.Second, "a sealed CA key for every server", func() bool {
		for _, s := range c.servers {
			_, root, _ := s.store.CA(nil)
			if root == nil || len(root.SealedKeys) != 3 {
				return false
			}
		}
		return true
	})
	for _, s := range c.servers {
		_, root, _ := s.store.CA(nil)
		got, err := s.UnsealCA(root)
		if err != nil || !got.Key.Equal(c.ca.Key) {
			t.Fatalf("%s: UnsealCA = %v; want the CA", s.cluster.cfg.Identity.Name, err)
		}
		// It opens only its own: another server's blob is not for it.
		for _, sk := range root.SealedKeys {
			if sk.Node == s.cluster.cfg.Identity.Name {
				continue
			}
			if _, err := OpenCAKey(&discovery.CARoot{CertPEM: root.CertPEM, SealedKeys: []discovery.SealedCAKey{sk}}, sk.Node, s.cluster.cfg.Identity.Key()); err == nil {
				t.Fatalf("%s opened %s's sealed key", s.cluster.cfg.Identity.Name, sk.Node)
			}
		}
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	var lead *Server
	testkit.WaitFor(t, 30*time.Second, "a new leader", func() bool {
		for _, s := range c.servers[1:] {
			if s.IsLeader() {
				lead = s
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, _, err := lead.CreateToken(ctx, time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	id, err := Join(ctx, JoinParams{Addr: lead.Addr(), Token: tok, NodeName: "server-4", NodeID: "server-4-id", DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("joining through the new leader %s: %v", lead.cluster.cfg.Identity.Name, err)
	}
	if id.Name != "server-4" || !id.CA().Equal(c.ca.Cert) {
		t.Fatalf("joined as %q under CA %s", id.Name, Fingerprint(id.CA()))
	}
	if err := id.Cert().CheckSignatureFrom(c.ca.Cert); err != nil {
		t.Fatalf("the new node's certificate is not signed by the cluster CA: %v", err)
	}
	// server-4 is not a raft member: it has no sealed key.
	_, root, _ := lead.store.CA(nil)
	if root.SealedFor("server-4") != nil {
		t.Fatal("a node that only joined (not a raft member) got a sealed CA key")
	}
}

// The leader deletes the sealed key of a node that leaves; the catalog
// refuses to delete the last one.
func TestLeaveDropsSealedKey(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{})
	testkit.WaitFor(t, 20*time.Second, "three sealed keys", func() bool {
		_, root, _ := c.leader().store.CA(nil)
		return root != nil && len(root.SealedKeys) == 3
	})
	f := c.followers()[0]
	name := f.cluster.cfg.Identity.Name
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Leave(ctx, false); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "the leaver's sealed key deleted", func() bool {
		_, root, _ := c.leader().store.CA(nil)
		return root.SealedFor(name) == nil && len(root.SealedKeys) == 2
	})

	_, root, _ := c.leader().store.CA(nil)
	none := *root
	none.SealedKeys = nil
	if _, err := c.leader().applyCmd(ctx, discovery.SetCARequest{CA: none}); err == nil || !errors.Is(err, discovery.ErrInvalid) {
		t.Fatalf("a custody change that leaves no holder: %v; want ErrInvalid", err)
	}
}

// legacyCARoot is the CA record as agents before sealed custody wrote it.
type legacyCARoot struct {
	ID          string
	CertPEM     []byte
	KeyPEM      []byte
	TrustDomain string
	Fingerprint string
	CreateIndex uint64
	ModifyIndex uint64
}

// An old cluster's clear key (in a log entry or a snapshot) still decodes,
// and the leader seals it and writes the record without it, once.
func TestClearCAKeyMigrates(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	certPEM, keyPEM, _ := ca.EncodeCA()
	old := legacyCARoot{ID: "cluster", CertPEM: certPEM, KeyPEM: keyPEM, TrustDomain: idTestTD, Fingerprint: Fingerprint(ca.Cert)}

	// A snapshot record of the old shape restores with its key.
	var buf bytes.Buffer
	buf.WriteByte(snapshotVersion)
	enc := codec.NewEncoder(&buf, msgpackHandle)
	for _, v := range []any{uint8(discovery.RecordCA), old, uint8(0)} {
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
	}
	f := newTestFSM(t)
	if err := f.Restore(nopCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	if _, root, _ := f.store.CA(nil); root == nil || !bytes.Equal(root.LegacyKeyPEM, keyPEM) {
		t.Fatalf("restored CA = %+v; want the old clear key read", root)
	}

	// A log entry of the old shape, applied on a leader, is migrated.
	dir := t.TempDir()
	id := testIdentity(t, ca, "leader")
	s, err := Open(Config{
		NodeID: "id-leader", Addr: "127.0.0.1:0", DataDir: dir, Bootstrap: true, Logger: testkit.Logger(t),
		Cluster: &ClusterConfig{Identity: id, Bind: "127.0.0.1:0"},
	}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	hurryElection(t, s)
	waitLeader(t, s)
	var cmd bytes.Buffer
	cmd.WriteByte(byte(discovery.SetCAType))
	if err := codec.NewEncoder(&cmd, msgpackHandle).Encode(struct{ CA legacyCARoot }{old}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.applyLocal(ctx, cmd.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, root, _ := s.store.CA(nil); root == nil || len(root.LegacyKeyPEM) == 0 {
		t.Fatalf("CA after an old SetCA = %+v; want the clear key (before migration)", root)
	}
	// Before the migration the leader still signs with the clear key.
	if _, err := s.signingCA(); err != nil {
		t.Fatalf("signing before the migration: %v", err)
	}
	// What the leader loop runs when it takes office and every minute.
	if err := s.reconcileCustody(ctx); err != nil {
		t.Fatal(err)
	}
	_, root, _ := s.store.CA(nil)
	if len(root.LegacyKeyPEM) != 0 || root.SealedFor("leader") == nil {
		t.Fatalf("after migration: clear key %d bytes, sealed to %v; want sealed to the leader only", len(root.LegacyKeyPEM), root.SealedKeys)
	}
	wantNoSecrets(t, "a snapshot after the migration", persist(t, s.store), caSecrets(t, ca))
	got, err := s.signingCA()
	if err != nil || !got.Key.Equal(ca.Key) {
		t.Fatalf("signing after the migration: %v", err)
	}
	idx := root.ModifyIndex
	if err := s.reconcileCustody(ctx); err != nil {
		t.Fatal(err)
	}
	if _, root, _ := s.store.CA(nil); root.ModifyIndex != idx {
		t.Fatalf("a second reconcile wrote the CA again (index %d -> %d); the migration is one-time", idx, root.ModifyIndex)
	}
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

// A heartbeat's NodeID is only a claim: a node gets a sealed key only when
// the catalog binds its certificate's name to a raft server's ID.
func TestHeartbeatSealsOnlyToRaftMembers(t *testing.T) {
	s, ca := openClusterLeader(t, 3)
	testkit.WaitFor(t, 10*time.Second, "the CA in raft", func() bool {
		_, root, _ := s.store.CA(nil)
		return root != nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.applyCmd(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "client-1", ID: "id-client-1"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, claim string }{
		{"evil", "id-leader"},       // not in the catalog, claims the leader's raft ID
		{"client-1", "id-client-1"}, // in the catalog, not a raft member
	} {
		if _, err := s.rpcHeartbeat(callerCtx(t, ca, tc.name, "127.0.0.9"), &HeartbeatRequest{NodeID: tc.claim, Addr: "127.0.0.9:7400"}); err != nil {
			t.Logf("heartbeat of %s: %v", tc.name, err)
		}
		if _, root, _ := s.store.CA(nil); root.SealedFor(tc.name) != nil || len(root.SealedKeys) != 1 {
			t.Fatalf("a heartbeat of %s claiming %s got the CA key sealed (%d blobs)", tc.name, tc.claim, len(root.SealedKeys))
		}
	}
}
