package discovery

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Cluster state kept in the catalog: the cluster CA and join tokens. The
// raft package owns what they mean; the catalog only stores them, so they
// replicate, snapshot and restore with everything else.

const (
	tableCA     = "ca"
	tableTokens = "tokens"
	caRootID    = "cluster"
)

// CARoot is the cluster CA. Its private key is never stored in the
// clear: SealedKeys holds it encrypted to each server's own node key
// (raft/custody.go says how), so raft's log, its snapshots and a copy of
// the catalog reveal nothing without a server's node key.
type CARoot struct {
	ID          string
	CertPEM     []byte
	TrustDomain string
	Fingerprint string
	// CrossSignedPEM is this root's certificate signed by the key of the
	// root it replaced (PreviousRoots[0]): an intermediate through which
	// a peer that trusts only the old root verifies what the new key
	// signs. Empty for a CA that replaced none.
	CrossSignedPEM []byte `json:",omitempty"`
	// PreviousRoots are the roots this one replaced that are still
	// trusted, newest first. They sign nothing any more; the leader drops
	// each after its DropAfter (raft/rotate.go).
	PreviousRoots []TrustedRoot `json:",omitempty"`
	// SealedKeys is the CA private key sealed to each raft server, one
	// per node name, sorted by Node. Clients never receive it (Public).
	SealedKeys []SealedCAKey
	// LegacyKeyPEM is the clear key that agents before sealed custody
	// stored (under the name KeyPEM). It is only ever decoded from old
	// log entries and snapshots; the leader seals it and writes the
	// record again without it (raft/custody.go).
	LegacyKeyPEM []byte `codec:"KeyPEM" json:"-"`
	CreateIndex  uint64
	ModifyIndex  uint64
}

// TrustedRoot is a CA root that a rotation replaced: it signs nothing
// any more, but what it signed is still accepted until DropAfter.
type TrustedRoot struct {
	CertPEM     []byte
	Fingerprint string
	// CrossSignedPEM is this root signed by the key of the root before it
	// (as CARoot.CrossSignedPEM was while this root was active).
	CrossSignedPEM []byte `json:",omitempty"`
	// RetiredAt is when a rotation replaced it; DropAfter when no
	// certificate it signed can still be valid, after which the leader
	// stops trusting it. Unix seconds, the leader's clock.
	RetiredAt int64
	DropAfter int64
}

// RootsPEM is every root the cluster trusts, the active one first, as
// concatenated PEM: what verifiers load (the proxy's validation context,
// the cluster port).
func (ca *CARoot) RootsPEM() []byte {
	out := append([]byte(nil), ca.CertPEM...)
	for _, r := range ca.PreviousRoots {
		out = append(out, r.CertPEM...)
	}
	return out
}

// ChainPEM is what a certificate signed by the active key presents after
// itself so that a peer trusting only an older root still verifies it:
// the active root cross-signed by the previous one, that one cross-signed
// by the one before, down to the oldest root still trusted. Empty when
// no previous root is trusted.
func (ca *CARoot) ChainPEM() []byte {
	if len(ca.PreviousRoots) == 0 {
		return nil
	}
	out := append([]byte(nil), ca.CrossSignedPEM...)
	for _, r := range ca.PreviousRoots[:len(ca.PreviousRoots)-1] {
		out = append(out, r.CrossSignedPEM...)
	}
	return out
}

// SealedCAKey is the CA private key sealed to one server. Recipient is the
// server's node public key (uncompressed P-256 point, public): the leader
// compares it with the key in the node's certificate to know whether the
// blob is still the node's. Blob is opaque here (raft/custody.go).
type SealedCAKey struct {
	Node      string
	Recipient []byte
	Blob      []byte
}

// SealedFor returns the sealed key of node, or nil.
func (ca *CARoot) SealedFor(node string) *SealedCAKey {
	for i := range ca.SealedKeys {
		if ca.SealedKeys[i].Node == node {
			return &ca.SealedKeys[i]
		}
	}
	return nil
}

// holdsKey says whether anyone can recover the CA key from the record.
func (ca *CARoot) holdsKey() bool { return len(ca.SealedKeys) > 0 || len(ca.LegacyKeyPEM) > 0 }

// Join token limits. A token is a bearer credential for a node
// certificate, so it is short-lived and counted: every token expires, and
// each join spends one use.
const (
	DefaultJoinTokenTTL  = time.Hour
	MaxJoinTokenTTL      = 7 * 24 * time.Hour
	DefaultJoinTokenUses = 1
	MaxJoinTokenUses     = 1000
)

// Join token refusals. The FSM returns them from TokenUse, so every node
// reaches the same verdict; the leader maps them to what a joiner reads.
var (
	ErrTokenUsed    = errors.New("join token already used")
	ErrTokenRevoked = errors.New("join token revoked")
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenUnknown = errors.New("no such join token, or a wrong secret")
)

// JoinToken is a join token as stored: only a hash of its secret. Tokens
// written before uses were counted decode with UsesLeft 0 and ExpiresAt 0:
// they are spent, and no longer admit anyone.
type JoinToken struct {
	ID          string
	SecretHash  []byte
	CreatedAt   int64 // unix seconds
	ExpiresAt   int64 // unix seconds
	Uses        int   // uses it was created with
	UsesLeft    int
	Revoked     bool
	RevokedAt   int64 // unix seconds
	CreateIndex uint64
	ModifyIndex uint64
}

// JoinTokenInfo is a join token without its secret or the secret's hash:
// what create, list and revoke report (GET /v1/vmesh/tokens).
type JoinTokenInfo struct {
	ID        string
	CreatedAt time.Time
	ExpiresAt time.Time
	Uses      int
	UsesLeft  int
	Revoked   bool
}

// JoinTokenInfoOf is t as an operator may see it.
func JoinTokenInfoOf(t *JoinToken) JoinTokenInfo {
	return JoinTokenInfo{
		ID: t.ID, CreatedAt: time.Unix(t.CreatedAt, 0).UTC(), ExpiresAt: time.Unix(t.ExpiresAt, 0).UTC(),
		Uses: t.Uses, UsesLeft: t.UsesLeft, Revoked: t.Revoked,
	}
}

// Expired says whether the token is past its expiry at now (unix
// seconds): it admits no one from its expiry second on.
func (t *JoinToken) Expired(now int64) bool { return t.ExpiresAt == 0 || now >= t.ExpiresAt }

// HashTokenSecret is how a token's secret is stored.
func HashTokenSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// SecretMatches compares a presented secret with the stored hash in
// constant time.
func (t *JoinToken) SecretMatches(secret string) bool {
	return subtle.ConstantTimeCompare(t.SecretHash, HashTokenSecret(secret)) == 1
}

// SetCARequest stores the cluster CA. Once one is stored, a request is
// either a change of the same CA (same fingerprint and certificate: its
// key custody, whether the legacy clear key is still there, and dropping
// previous roots) or a rotation: a new CA of the same trust domain whose
// PreviousRoots start with the current root and keep only roots already
// trusted. Anything else is refused, so no write plants a root the
// cluster did not trust.
type SetCARequest struct{ CA CARoot }

// TokenCreateRequest stores a join token.
type TokenCreateRequest struct{ Token JoinToken }

// TokenDeleteRequest removes a join token.
type TokenDeleteRequest struct{ ID string }

// TokenUseRequest spends one use of a join token. The leader sends it
// before it signs a joiner's certificate; Now (the leader's clock, unix
// seconds) travels in the command so that every node judges expiry the
// same way.
type TokenUseRequest struct {
	ID  string
	Now int64
}

// TokenRevokeRequest marks a join token revoked. It stays in the catalog
// until it expires, so a join with it is told "revoked".
type TokenRevokeRequest struct {
	ID  string
	Now int64
}

func (SetCARequest) MessageType() MessageType       { return SetCAType }
func (TokenCreateRequest) MessageType() MessageType { return TokenCreateType }
func (TokenDeleteRequest) MessageType() MessageType { return TokenDeleteType }
func (TokenUseRequest) MessageType() MessageType    { return TokenUseType }
func (TokenRevokeRequest) MessageType() MessageType { return TokenRevokeType }

func clusterTables(tables map[string]*memdb.TableSchema) {
	tables[tableCA] = &memdb.TableSchema{Name: tableCA, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}}
	tables[tableTokens] = &memdb.TableSchema{Name: tableTokens, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}}
}

// SetCA stores the cluster CA.
func (s *Store) SetCA(idx uint64, ca *CARoot) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableCA, "id", caRootID)
	if err != nil {
		return err
	}
	c := *ca
	c.ID, c.CreateIndex, c.ModifyIndex = caRootID, idx, idx
	c.SealedKeys = append([]SealedCAKey(nil), ca.SealedKeys...)
	sort.Slice(c.SealedKeys, func(i, j int) bool { return c.SealedKeys[i].Node < c.SealedKeys[j].Node })
	for i := 1; i < len(c.SealedKeys); i++ {
		if c.SealedKeys[i].Node == c.SealedKeys[i-1].Node {
			return fmt.Errorf("%w: SealedKeys: node %q appears twice", ErrInvalid, c.SealedKeys[i].Node)
		}
	}
	c.PreviousRoots = append([]TrustedRoot(nil), ca.PreviousRoots...)
	if raw != nil {
		old := raw.(*CARoot)
		if err := checkCAChange(old, &c); err != nil {
			return err
		}
		// A change never leaves the key with no one. A client's replica
		// holds no key at all, so there it changes nothing.
		if old.holdsKey() && !c.holdsKey() {
			return fmt.Errorf("%w: SealedKeys: the change would leave the CA key sealed to no server", ErrInvalid)
		}
		c.CreateIndex = old.CreateIndex
	}
	if err := tx.Insert(tableCA, &c); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableCA); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// checkCAChange says whether next may replace cur: the same CA (custody,
// fewer previous roots) or a rotation that keeps cur trusted.
func checkCAChange(cur, next *CARoot) error {
	trusted := map[string][]byte{}
	for _, r := range cur.PreviousRoots {
		trusted[r.Fingerprint] = r.CertPEM
	}
	prev := next.PreviousRoots
	if cur.Fingerprint == next.Fingerprint && bytes.Equal(cur.CertPEM, next.CertPEM) {
		if !bytes.Equal(cur.CrossSignedPEM, next.CrossSignedPEM) {
			return fmt.Errorf("%w: CrossSignedPEM: a CA's cross-signed certificate does not change", ErrInvalid)
		}
	} else {
		// A rotation.
		if next.TrustDomain != cur.TrustDomain {
			return fmt.Errorf("%w: TrustDomain: a rotation keeps the trust domain %q, not %q", ErrInvalid, cur.TrustDomain, next.TrustDomain)
		}
		if len(prev) == 0 || prev[0].Fingerprint != cur.Fingerprint || !bytes.Equal(prev[0].CertPEM, cur.CertPEM) {
			return fmt.Errorf("%w: the cluster already has a CA; a new one is accepted only as a rotation that keeps the current root (%s) trusted", ErrInvalid, cur.Fingerprint)
		}
		if len(next.CrossSignedPEM) == 0 {
			return fmt.Errorf("%w: CrossSignedPEM: a rotation carries the new root signed by the current key", ErrInvalid)
		}
		prev = prev[1:]
	}
	for _, r := range prev {
		if pem, ok := trusted[r.Fingerprint]; !ok || !bytes.Equal(pem, r.CertPEM) {
			return fmt.Errorf("%w: PreviousRoots: root %s is not trusted now; only a rotation adds a root", ErrInvalid, r.Fingerprint)
		}
		delete(trusted, r.Fingerprint) // and only once
	}
	return nil
}

// CA returns the cluster CA, or nil before bootstrap has stored it.
func (s *Store) CA(ws memdb.WatchSet) (uint64, *CARoot, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableCA, "id", caRootID)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableCA)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*CARoot), nil
}

// TokenCreate stores a join token.
func (s *Store) TokenCreate(idx uint64, t *JoinToken) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	// The leader chose the uses and the expiry (raft.CreateToken checks
	// them); a token without either is stored but admits no one.
	if t.ID == "" || len(t.SecretHash) == 0 {
		return fmt.Errorf("%w: a join token needs an ID and a secret hash", ErrInvalid)
	}
	if raw, err := tx.First(tableTokens, "id", t.ID); err != nil {
		return err
	} else if raw != nil {
		return fmt.Errorf("%w: join token %s exists", ErrInvalid, t.ID)
	}
	c := *t
	c.CreateIndex, c.ModifyIndex = idx, idx
	if err := tx.Insert(tableTokens, &c); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableTokens); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// TokenDelete removes a join token.
func (s *Store) TokenDelete(idx uint64, id string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if _, err := tx.DeleteAll(tableTokens, "id", id); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableTokens); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// TokenUse spends one use of a join token, or says why it cannot: the
// check and the decrement are one transaction, so of two joiners racing
// on a single-use token exactly one gets it.
func (s *Store) TokenUse(idx uint64, id string, now int64) error {
	return s.tokenUpdate(idx, id, func(t *JoinToken) error {
		switch {
		case t.Revoked:
			return ErrTokenRevoked
		case t.Expired(now):
			return fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(t.ExpiresAt, 0).UTC().Format(time.RFC3339))
		case t.UsesLeft < 1:
			return ErrTokenUsed
		}
		t.UsesLeft--
		return nil
	})
}

// TokenRevoke marks a join token revoked; revoking it again changes
// nothing.
func (s *Store) TokenRevoke(idx uint64, id string, now int64) error {
	return s.tokenUpdate(idx, id, func(t *JoinToken) error {
		if t.Revoked {
			return errNoChange
		}
		t.Revoked, t.RevokedAt = true, now
		return nil
	})
}

// errNoChange tells tokenUpdate to commit nothing and report success.
var errNoChange = errors.New("no change")

func (s *Store) tokenUpdate(idx uint64, id string, change func(*JoinToken) error) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableTokens, "id", id)
	if err != nil {
		return err
	}
	if raw == nil {
		return fmt.Errorf("%w: %w", ErrNotFound, ErrTokenUnknown)
	}
	c := *raw.(*JoinToken) // the stored one is shared with readers: copy
	if err := change(&c); errors.Is(err, errNoChange) {
		return nil
	} else if err != nil {
		return err
	}
	c.ModifyIndex = idx
	if err := tx.Insert(tableTokens, &c); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableTokens); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// Token returns a join token, or nil.
func (s *Store) Token(id string) (*JoinToken, error) {
	raw, err := s.readTxn(nil).First(tableTokens, "id", id)
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*JoinToken), nil
}

// Tokens lists the join tokens.
func (s *Store) Tokens() ([]*JoinToken, error) {
	return collect[JoinToken](nil, s.readTxn(nil), tableTokens, "id")
}
