package discovery

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

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

// CARoot is the cluster CA. KeyPEM is secret: no API returns it.
type CARoot struct {
	ID          string
	CertPEM     []byte
	KeyPEM      []byte
	TrustDomain string
	Fingerprint string
	CreateIndex uint64
	ModifyIndex uint64
}

// JoinToken is a join token as stored: only a hash of its secret.
type JoinToken struct {
	ID          string
	SecretHash  []byte
	ExpiresAt   int64 // unix seconds; 0 never expires
	CreateIndex uint64
}

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

// SetCARequest stores the cluster CA. It is accepted once; a second,
// different CA is refused (rotation is not supported yet).
type SetCARequest struct{ CA CARoot }

// TokenCreateRequest stores a join token.
type TokenCreateRequest struct{ Token JoinToken }

// TokenDeleteRequest removes a join token.
type TokenDeleteRequest struct{ ID string }

func (SetCARequest) MessageType() MessageType       { return SetCAType }
func (TokenCreateRequest) MessageType() MessageType { return TokenCreateType }
func (TokenDeleteRequest) MessageType() MessageType { return TokenDeleteType }

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
	if raw != nil {
		if old := raw.(*CARoot); old.Fingerprint == ca.Fingerprint {
			return nil
		}
		return fmt.Errorf("%w: the cluster already has a CA (rotation is not supported)", ErrInvalid)
	}
	c := *ca
	c.ID, c.CreateIndex, c.ModifyIndex = caRootID, idx, idx
	if err := tx.Insert(tableCA, &c); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableCA); err != nil {
		return err
	}
	tx.Commit()
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
	c := *t
	c.CreateIndex = idx
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
