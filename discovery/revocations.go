package discovery

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Revocations: the deny list of the cluster port. A node that leaves or
// that an operator removes is revoked: its node certificates issued at or
// before the revocation's raft index are refused on every cluster
// handshake (raft/trust.go). A node that is merely down, or reaped after
// its TTL, is never revoked. The raft package decides what a revocation
// means; the catalog stores it, so it replicates to servers and clients
// and snapshots with everything else.

const tableRevocations = "revocations"

// Revocation denies a node's certificates issued at or before Index.
type Revocation struct {
	Node string
	// Index is the raft index of the revocation itself, set by the
	// catalog when it applies it: every node certificate carries the
	// index it was issued at, so one issued to the same name after a new
	// join (a later index) is not denied.
	Index uint64
	// Reason says why, for logs and operators ("left the cluster",
	// "removed by an operator").
	Reason string
	// At is when, on the leader's clock (unix seconds); the leader deletes
	// the row once no certificate it denies can still be valid.
	At          int64
	CreateIndex uint64
	ModifyIndex uint64
}

// RevocationOp is what a RevocationRequest does.
type RevocationOp string

// Revocation operations.
const (
	RevocationAdd    RevocationOp = "revoke"
	RevocationDelete RevocationOp = "delete"
)

// RevocationRequest records (RevocationAdd) or deletes (RevocationDelete)
// a node's revocation. A delete names the Index it deletes, so a newer
// revocation of the same node is never deleted by mistake.
type RevocationRequest struct {
	Op         RevocationOp
	Revocation Revocation
}

// MessageType carries IgnoreUnknownTypeFlag: an older server that skips a
// revocation only does not enforce it, which it does not know how to do
// anyway.
func (RevocationRequest) MessageType() MessageType { return RevocationType | IgnoreUnknownTypeFlag }

func revocationTables(tables map[string]*memdb.TableSchema) {
	tables[tableRevocations] = &memdb.TableSchema{Name: tableRevocations, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Node"}},
	}}
}

// RevocationApply applies a RevocationRequest at idx.
func (s *Store) RevocationApply(idx uint64, op RevocationOp, r *Revocation) error {
	if r.Node == "" {
		return fmt.Errorf("%w: Revocation.Node is empty", ErrInvalid)
	}
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableRevocations, "id", r.Node)
	if err != nil {
		return err
	}
	switch op {
	case RevocationAdd:
		c := *r
		c.Index, c.CreateIndex, c.ModifyIndex = idx, idx, idx
		if raw != nil {
			c.CreateIndex = raw.(*Revocation).CreateIndex
		}
		if err := tx.Insert(tableRevocations, &c); err != nil {
			return err
		}
	case RevocationDelete:
		if raw == nil || raw.(*Revocation).Index != r.Index {
			return nil // already gone, or revoked again since: keep it
		}
		if err := tx.Delete(tableRevocations, raw); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: Revocation op %q", ErrInvalid, op)
	}
	if err := bumpIndex(tx, idx, tableRevocations); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// Revocation returns node's revocation, or nil.
func (s *Store) Revocation(ws memdb.WatchSet, node string) (*Revocation, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableRevocations, "id", node)
	if ws != nil {
		ws.Add(ch)
	}
	if err != nil || raw == nil {
		return nil, err
	}
	return raw.(*Revocation), nil
}

// Revocations lists every revocation, by node name.
func (s *Store) Revocations(ws memdb.WatchSet) (uint64, []*Revocation, error) {
	tx := s.readTxn(ws)
	out, err := collect[Revocation](ws, tx, tableRevocations, "id")
	return maxIndex(tx, tableRevocations), out, err
}
