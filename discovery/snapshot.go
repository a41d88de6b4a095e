package discovery

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
)

// Snapshot is a point-in-time, read-only view of the whole catalog. Taking
// one is O(1) (memdb's radix trees are immutable); the FSM hands it to
// raft's Persist, which walks it while writes go on.
type Snapshot struct {
	tx *memdb.Txn
}

// Snapshot returns a point-in-time view of the catalog.
func (s *Store) Snapshot() *Snapshot {
	return &Snapshot{tx: s.readTxn(nil)}
}

// Records are the kinds of record a snapshot stream holds.
type RecordType uint8

// Record kinds. Numbers are part of the on-disk format: never reuse one.
const (
	RecordNode       RecordType = 1
	RecordInstance   RecordType = 2
	RecordCheck      RecordType = 3
	RecordKV         RecordType = 4
	RecordIndex      RecordType = 5
	RecordCA         RecordType = 6
	RecordToken      RecordType = 7
	RecordConfig     RecordType = 8
	RecordVIP        RecordType = 9 // vips.go; intentions take 10
	RecordIntention  RecordType = 10
	RecordRevocation RecordType = 11 // revocations.go
	RecordSession    RecordType = 12 // session.go
	RecordLockDelay  RecordType = 13
	// 14 is the autopilot configuration (autopilot.go).
	// 40-43 are the ACL records (acl.go).
)

// IndexRecord is a table's highest index, as stored in a snapshot.
type IndexRecord struct {
	Table string
	Index uint64
}

// Walk calls fn for every record of the snapshot: nodes before instances
// before checks, so that a restore can insert them in order.
func (sn *Snapshot) Walk(fn func(RecordType, any) error) error {
	walk := func(table string, rt RecordType) error {
		it, err := sn.tx.Get(table, "id")
		if err != nil {
			return err
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			rec := raw
			if e, ok := raw.(*indexEntry); ok {
				rec = &IndexRecord{Table: e.Key, Index: e.Value}
			}
			if err := fn(rt, rec); err != nil {
				return err
			}
		}
		return nil
	}
	for _, t := range []struct {
		table string
		rt    RecordType
	}{
		{tableNodes, RecordNode}, {tableInstances, RecordInstance}, {tableChecks, RecordCheck},
		{tableKV, RecordKV}, {tableIndex, RecordIndex},
		{tableCA, RecordCA}, {tableTokens, RecordToken},
		{tableConfigEntries, RecordConfig},
		{tableIntentions, RecordIntention},
		{tableVIPs, RecordVIP},
		{tableACLTokens, RecordACLToken}, {tableACLPolicies, RecordACLPolicy},
		{tableACLRoles, RecordACLRole}, {tableACLMeta, RecordACLMeta},
		{tableRevocations, RecordRevocation},
		{tableSessions, RecordSession}, {tableLockDelays, RecordLockDelay},
		{tableAutopilot, RecordAutopilot},
	} {
		if err := walk(t.table, t.rt); err != nil {
			return fmt.Errorf("walking %s: %w", t.table, err)
		}
	}
	return nil
}

// Restorer builds a new catalog from snapshot records. Commit swaps it in
// and wakes every blocked reader.
type Restorer struct {
	store *Store
	db    *memdb.MemDB
	tx    *memdb.Txn
}

// NewRestorer starts a restore into a fresh database.
func (s *Store) NewRestorer() *Restorer {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("discovery: bad schema: %v", err))
	}
	return &Restorer{store: s, db: db, tx: db.Txn(true)}
}

// Add inserts one record, taking ownership of it.
func (r *Restorer) Add(rt RecordType, rec any) error {
	switch v := rec.(type) {
	case *Node:
		return r.tx.Insert(tableNodes, v)
	case *Instance:
		return r.tx.Insert(tableInstances, v)
	case *Check:
		return r.tx.Insert(tableChecks, v)
	case *KVEntry:
		return r.tx.Insert(tableKV, v)
	case *IndexRecord:
		return r.tx.Insert(tableIndex, &indexEntry{Key: v.Table, Value: v.Index})
	case *CARoot:
		return r.tx.Insert(tableCA, v)
	case *JoinToken:
		return r.tx.Insert(tableTokens, v)
	case *ConfigEntry:
		return r.tx.Insert(tableConfigEntries, v)
	case *Intention:
		return r.tx.Insert(tableIntentions, v)
	case *VIP:
		return r.tx.Insert(tableVIPs, v)
	case *acl.Token:
		return r.tx.Insert(tableACLTokens, v)
	case *acl.Policy:
		return r.tx.Insert(tableACLPolicies, v)
	case *acl.Role:
		return r.tx.Insert(tableACLRoles, v)
	case *ACLMeta:
		return r.tx.Insert(tableACLMeta, v)
	case *Revocation:
		return r.tx.Insert(tableRevocations, v)
	case *Session:
		// Its check links are derived, not in the stream.
		return insertSessionTxn(r.tx, v)
	case *KVLockDelay:
		return r.tx.Insert(tableLockDelays, v)
	case *AutopilotConfig:
		return r.tx.Insert(tableAutopilot, v)
	}
	return fmt.Errorf("%w: record type %d (%T)", ErrInvalid, rt, rec)
}

// NewRecord returns an empty value to decode a record of type rt into.
func NewRecord(rt RecordType) (any, error) {
	switch rt {
	case RecordNode:
		return &Node{}, nil
	case RecordInstance:
		return &Instance{}, nil
	case RecordCheck:
		return &Check{}, nil
	case RecordKV:
		return &KVEntry{}, nil
	case RecordIndex:
		return &IndexRecord{}, nil
	case RecordCA:
		return &CARoot{}, nil
	case RecordToken:
		return &JoinToken{}, nil
	case RecordConfig:
		return &ConfigEntry{}, nil
	case RecordIntention:
		return &Intention{}, nil
	case RecordVIP:
		return &VIP{}, nil
	case RecordACLToken:
		return &acl.Token{}, nil
	case RecordACLPolicy:
		return &acl.Policy{}, nil
	case RecordACLRole:
		return &acl.Role{}, nil
	case RecordACLMeta:
		return &ACLMeta{}, nil
	case RecordRevocation:
		return &Revocation{}, nil
	case RecordSession:
		return &Session{}, nil
	case RecordLockDelay:
		return &KVLockDelay{}, nil
	case RecordAutopilot:
		return &AutopilotConfig{}, nil
	}
	return nil, fmt.Errorf("%w: unknown snapshot record type %d", ErrInvalid, rt)
}

// Commit swaps the restored database in.
func (r *Restorer) Commit() {
	r.tx.Commit()
	s := r.store
	s.mu.Lock()
	old := s.abandon
	s.db, s.abandon = r.db, make(chan struct{})
	s.mu.Unlock()
	close(old)
}

// Abort drops a restore that failed.
func (r *Restorer) Abort() { r.tx.Abort() }
