package raft

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/discovery"
)

// Custody of the CA private key.
//
// The key is in raft only sealed: one blob per raft server, each
// encrypted to that server's node key with HPKE (RFC 9180), so raft.db,
// snapshot files and the memory of a node that does not hold a server's
// node key reveal nothing. A server opens its own blob with its node key
// (tls/node-key.pem) when it signs, keeps the CA key in memory for that
// signature only, and never writes it anywhere.
//
// Blob format, version 1:
//
//	0x01 || enc (65 bytes, the sender's ephemeral P-256 point) || ciphertext
//
// sealed in HPKE base mode with DHKEM(P-256, HKDF-SHA256), HKDF-SHA256 and
// AES-256-GCM, info = "vmesh CA key v1" 0x00 <CA fingerprint> 0x00 <node
// name>, no AAD. The plaintext is the CA key in SEC 1 DER. The info binds
// a blob to its node name and its CA: a blob moved to another node's
// entry, or kept across a CA change, does not open. After opening, the key
// must match the CA certificate's public key.
//
// Who seals: only the leader, which opens its own blob. It seals to a
// server when AddPeer admits it to raft (the public key is the one in the
// caller's node certificate), and again on a heartbeat from a raft member
// whose blob is missing or sealed to an older key; it deletes the blob of
// a node that leaves, is removed or is no longer in the raft
// configuration. A node that is not a raft member never gets a blob.

const sealedKeyVersion = 1

// Errors about the CA key's custody.
var (
	ErrNoSealedKey = errors.New("raft: the CA key is not sealed to this node (it is not a server, or the leader has not sealed it yet)")
	ErrSealedKey   = errors.New("raft: the sealed CA key does not open")
)

var hpkeKDF, hpkeAEAD = hpke.HKDFSHA256(), hpke.AES256GCM()

func sealInfo(fingerprint, node string) []byte {
	return []byte("vmesh CA key v1\x00" + fingerprint + "\x00" + node)
}

// nodePublicKey is the ECDH form of a node's P-256 key.
func nodePublicKey(pub any) (*ecdh.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("raft: node key is %T, not ECDSA P-256", pub)
	}
	e, err := k.ECDH()
	if err != nil {
		return nil, fmt.Errorf("raft: node key: %w", err)
	}
	if e.Curve() != ecdh.P256() {
		return nil, errors.New("raft: node key is not on P-256")
	}
	return e, nil
}

// SealCAKey seals ca's private key to node, whose node public key is pub.
func SealCAKey(ca *CA, node string, pub any) (discovery.SealedCAKey, error) {
	epub, err := nodePublicKey(pub)
	if err != nil {
		return discovery.SealedCAKey{}, err
	}
	return sealCAKeyTo(ca, node, epub)
}

// sealCAKeyTo seals ca's private key to node's P-256 key epub (a
// rotation seals to the recipients the record already holds, rotate.go).
func sealCAKeyTo(ca *CA, node string, epub *ecdh.PublicKey) (discovery.SealedCAKey, error) {
	pk, err := hpke.NewDHKEMPublicKey(epub)
	if err != nil {
		return discovery.SealedCAKey{}, err
	}
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return discovery.SealedCAKey{}, err
	}
	defer clear(der)
	ct, err := hpke.Seal(pk, hpkeKDF, hpkeAEAD, sealInfo(Fingerprint(ca.Cert), node), der)
	if err != nil {
		return discovery.SealedCAKey{}, fmt.Errorf("sealing the CA key to %s: %w", node, err)
	}
	return discovery.SealedCAKey{Node: node, Recipient: epub.Bytes(), Blob: append([]byte{sealedKeyVersion}, ct...)}, nil
}

// OpenCAKey opens root's blob for node with node's key: the CA, in memory,
// for the caller to sign with and drop.
func OpenCAKey(root *discovery.CARoot, node string, key *ecdsa.PrivateKey) (*CA, error) {
	cert, err := parseCertPEM(root.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	sk := root.SealedFor(node)
	if sk == nil || key == nil {
		return nil, ErrNoSealedKey
	}
	if len(sk.Blob) < 1 || sk.Blob[0] != sealedKeyVersion {
		return nil, fmt.Errorf("%w: unknown format", ErrSealedKey)
	}
	ekey, err := key.ECDH()
	if err != nil {
		return nil, err
	}
	sk2, err := hpke.NewDHKEMPrivateKey(ekey)
	if err != nil {
		return nil, err
	}
	der, err := hpke.Open(sk2, hpkeKDF, hpkeAEAD, sealInfo(Fingerprint(cert), node), sk.Blob[1:])
	if err != nil {
		return nil, fmt.Errorf("%w for node %s: %v", ErrSealedKey, node, err)
	}
	defer clear(der)
	caKey, err := x509.ParseECPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSealedKey, err)
	}
	if !caKey.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: the key is not the CA certificate's", ErrSealedKey)
	}
	return &CA{Cert: cert, Key: caKey}, nil
}

// openLegacy reads a clear key written before sealed custody.
func openLegacy(root *discovery.CARoot) (*CA, error) {
	return DecodeCA(root.CertPEM, root.LegacyKeyPEM)
}

// CASource gives the CA to sign with, from the catalog's record, for one
// use: the caller drops it after signing.
type CASource func(root *discovery.CARoot) (*CA, error)

// StaticCA is a CASource for a CA the caller already holds (tests, tools).
func StaticCA(ca *CA) CASource {
	return func(*discovery.CARoot) (*CA, error) { return ca, nil }
}

// UnsealCA opens this server's blob of the CA key with its node key (the
// one it is sealed to: after a renewal, until the blob is sealed again,
// the previous one). Until the leader migrated an old cluster, a legacy
// clear key still serves.
func (s *Server) UnsealCA(root *discovery.CARoot) (*CA, error) {
	if s.cluster == nil {
		return nil, ErrNotInCluster
	}
	id := s.cluster.cfg.Identity
	key := custodyKey(root, id)
	if key == nil {
		key = id.Key()
	}
	ca, err := OpenCAKey(root, id.Name, key)
	if errors.Is(err, ErrNoSealedKey) && len(root.LegacyKeyPEM) > 0 {
		return openLegacy(root)
	}
	return ca, err
}

// custodyKey is the node key of id, current or previous, that root's blob
// for id is sealed to; nil when it is sealed to neither (or there is
// none).
func custodyKey(root *discovery.CARoot, id *Identity) *ecdsa.PrivateKey {
	sk := root.SealedFor(id.Name)
	if sk == nil {
		return nil
	}
	for _, k := range []*ecdsa.PrivateKey{id.Key(), id.prevKey()} {
		if k != nil && bytes.Equal(mustECDHBytes(&k.PublicKey), sk.Recipient) {
			return k
		}
	}
	return nil
}

// signingCA is the CA from the local catalog, unsealed for one signature.
func (s *Server) signingCA() (*CA, error) {
	ca, _, err := s.signingCARecord()
	return ca, err
}

// signingCARecord is signingCA with the CA record it was opened from,
// whose chain and roots go with what it signs (trust.go).
func (s *Server) signingCARecord() (*CA, *discovery.CARoot, error) {
	_, root, err := s.store.CA(nil)
	if err != nil {
		return nil, nil, err
	}
	if root == nil {
		return nil, nil, errNoCAInCatalog
	}
	ca, err := s.UnsealCA(root)
	return ca, root, err
}

// custody serializes the leader's read-modify-write of the CA record:
// SetCA replaces the whole custody, so two changes at once must not race.
type custody struct{ mu sync.Mutex }

// updateCustody applies change to a copy of the CA record's sealed keys
// and writes the record back if it changed. change returns false for no
// change.
func (s *Server) updateCustody(ctx context.Context, change func(root *discovery.CARoot) (bool, error)) error {
	s.custody.mu.Lock()
	defer s.custody.mu.Unlock()
	_, cur, err := s.store.CA(nil)
	if err != nil {
		return err
	}
	if cur == nil {
		return errNoCAInCatalog
	}
	next := *cur
	next.SealedKeys = append([]discovery.SealedCAKey(nil), cur.SealedKeys...)
	changed, err := change(&next)
	if err != nil || !changed {
		return err
	}
	if _, err := s.applyCmd(ctx, discovery.SetCARequest{CA: next}); err != nil {
		return fmt.Errorf("writing the CA key's custody: %w", err)
	}
	return nil
}

// sealCAFor seals the CA key to a raft member node with node public key
// pub, unless its blob is already sealed to that key. Leader only.
func (s *Server) sealCAFor(ctx context.Context, node string, pub any) error {
	epub, err := nodePublicKey(pub)
	if err != nil {
		return err
	}
	return s.updateCustody(ctx, func(root *discovery.CARoot) (bool, error) {
		if sk := root.SealedFor(node); sk != nil && bytes.Equal(sk.Recipient, epub.Bytes()) {
			return false, nil
		}
		ca, err := s.UnsealCA(root)
		if err != nil {
			return false, fmt.Errorf("the leader cannot open its own CA key to seal it to %s: %w", node, err)
		}
		sk, err := SealCAKey(ca, node, pub)
		if err != nil {
			return false, err
		}
		root.SealedKeys = append(dropSealed(root.SealedKeys, node), sk)
		s.logger.Info("sealed the CA key to a server", "node", node)
		return true, nil
	})
}

// dropCAFor deletes node's blob. Leader only; never the last one (the
// catalog refuses that too).
func (s *Server) dropCAFor(ctx context.Context, node string) error {
	return s.updateCustody(ctx, func(root *discovery.CARoot) (bool, error) {
		if root.SealedFor(node) == nil || len(root.SealedKeys) == 1 {
			return false, nil
		}
		root.SealedKeys = dropSealed(root.SealedKeys, node)
		s.logger.Info("deleted a node's sealed CA key", "node", node)
		return true, nil
	})
}

func dropSealed(keys []discovery.SealedCAKey, node string) []discovery.SealedCAKey {
	out := keys[:0:0]
	for _, k := range keys {
		if k.Node != node {
			out = append(out, k)
		}
	}
	return out
}

// reconcileCustody, on the leader: a clear key from an older agent is
// sealed to this leader and removed from the state (a one-time
// migration; the other servers get theirs on their next heartbeat), and
// blobs of nodes that are not raft servers any more are deleted.
func (s *Server) reconcileCustody(ctx context.Context) error {
	self := s.cluster.cfg.Identity
	_, root, err := s.store.CA(nil)
	if err != nil || root == nil {
		return err
	}
	if len(root.LegacyKeyPEM) > 0 {
		err := s.updateCustody(ctx, func(root *discovery.CARoot) (bool, error) {
			if len(root.LegacyKeyPEM) == 0 {
				return false, nil
			}
			ca, err := openLegacy(root)
			if err != nil {
				return false, fmt.Errorf("the clear CA key in raft does not decode: %w", err)
			}
			if sk := root.SealedFor(self.Name); sk == nil || !bytes.Equal(sk.Recipient, mustECDHBytes(&self.Key().PublicKey)) {
				sk, err := SealCAKey(ca, self.Name, &self.Key().PublicKey)
				if err != nil {
					return false, err
				}
				root.SealedKeys = append(dropSealed(root.SealedKeys, self.Name), sk)
			}
			root.LegacyKeyPEM = nil
			s.logger.Warn("migrated the CA key: it was in raft in the clear; it is now sealed to each server's node key (older log entries and snapshot files keep the clear copy until raft compacts them)")
			return true, nil
		})
		if err != nil {
			return err
		}
	}
	// The record first, then the configuration: a blob in the record was
	// sealed after its server entered the configuration, so a server
	// added meanwhile is not taken for a stale one.
	_, root, err = s.store.CA(nil)
	if err != nil || root == nil {
		return err
	}
	members, err := s.raftMemberNames()
	if err != nil {
		return err
	}
	for _, sk := range root.SealedKeys {
		if !members[sk.Node] {
			if err := s.dropCAFor(ctx, sk.Node); err != nil {
				return err
			}
		}
	}
	if len(root.LegacyKeyPEM) > 0 {
		return nil
	}
	if custodyKey(root, self) == nil {
		// It was admitted and the leader that admitted it stopped before
		// sealing, or its blob is sealed to a node key it no longer has:
		// no one can seal to it while it leads, so it hands leadership to
		// a voter that holds a key.
		return s.leadToKeyHolder(root)
	}
	// After a renewal (renew.go) its blob may still be sealed to its
	// previous node key: seal it to the current one.
	return s.sealCAFor(ctx, self.Name, &self.Key().PublicKey)
}

// leadToKeyHolder transfers leadership to a voter that holds a sealed CA
// key.
func (s *Server) leadToKeyHolder(root *discovery.CARoot) error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	_, nodes, err := s.store.Nodes(nil)
	if err != nil {
		return err
	}
	byID := map[string]string{}
	for _, n := range nodes {
		byID[n.ID] = n.Name
	}
	for _, srv := range f.Configuration().Servers {
		name := byID[string(srv.ID)]
		if srv.Suffrage != hraft.Voter || string(srv.ID) == s.nodeID || name == "" || root.SealedFor(name) == nil {
			continue
		}
		s.logger.Warn("this leader holds no sealed CA key and cannot sign certificates; handing leadership to a server that does", "to", name)
		return s.raft.LeadershipTransferToServer(srv.ID, srv.Address).Error()
	}
	return errors.New("raft: this leader holds no sealed CA key and no other voter does; it cannot sign node or service certificates")
}

func mustECDHBytes(pub *ecdsa.PublicKey) []byte {
	e, err := pub.ECDH()
	if err != nil {
		return nil
	}
	return e.Bytes()
}

// raftMemberNames is the node names of the servers in the raft
// configuration, by the catalog's name-to-ID binding (this leader counts
// itself).
func (s *Server) raftMemberNames() (map[string]bool, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, srv := range f.Configuration().Servers {
		ids[string(srv.ID)] = true
	}
	_, nodes, err := s.store.Nodes(nil)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{s.cluster.cfg.Identity.Name: true}
	for _, n := range nodes {
		if ids[n.ID] {
			out[n.Name] = true
		}
	}
	return out, nil
}

// isRaftMember says whether the raft configuration holds server id.
func (s *Server) isRaftMember(id string) bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.ID == hraft.ServerID(id) {
			return true
		}
	}
	return false
}

// healCustody, on a heartbeat from node (raft ID id, node public key pub):
// a raft member whose blob is missing, or sealed to a key it no longer
// has, gets one. The common case is a read and a compare.
func (s *Server) healCustody(ctx context.Context, node, id string, pub any) {
	_, root, err := s.store.CA(nil)
	if err != nil || root == nil {
		return
	}
	epub, err := nodePublicKey(pub)
	if err != nil {
		return
	}
	if sk := root.SealedFor(node); sk != nil && bytes.Equal(sk.Recipient, epub.Bytes()) {
		return
	}
	// The raft ID must be the one the catalog binds to the certificate's
	// name: a heartbeat's NodeID is only a claim, and a node missing from
	// the catalog (it deregistered itself) could otherwise name a
	// server's ID and have the key sealed to its own.
	_, n, _, err := s.store.Node(nil, node)
	if err != nil || n == nil || n.ID != id || !s.isRaftMember(n.ID) {
		return
	}
	if err := s.sealCAFor(ctx, node, pub); err != nil {
		s.logger.Warn("sealing the CA key to a server", "node", node, "err", err)
	}
}
