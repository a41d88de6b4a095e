package discovery

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Transactions, as Consul's /v1/txn: a list of KV operations applied as
// one raft command, all or nothing. KV locks (?acquire, ?release) are
// transactions of one lock or unlock operation, so that the lock rules
// live in one place.

// MaxTxnOps is how many operations one transaction may hold.
const MaxTxnOps = 64

// KV verbs of a transaction, as Consul spells them.
const (
	TxnKVSet            = "set"
	TxnKVDelete         = "delete"
	TxnKVDeleteCAS      = "delete-cas"
	TxnKVDeleteTree     = "delete-tree"
	TxnKVCAS            = "cas"
	TxnKVLock           = "lock"
	TxnKVUnlock         = "unlock"
	TxnKVGet            = "get"
	TxnKVGetOrEmpty     = "get-or-empty"
	TxnKVGetTree        = "get-tree"
	TxnKVCheckSession   = "check-session"
	TxnKVCheckIndex     = "check-index"
	TxnKVCheckNotExists = "check-not-exists"
)

// TxnKVVerbs lists the verbs in Consul's order, for error messages.
var TxnKVVerbs = []string{TxnKVSet, TxnKVDelete, TxnKVDeleteCAS, TxnKVDeleteTree, TxnKVCAS, TxnKVLock,
	TxnKVUnlock, TxnKVGet, TxnKVGetOrEmpty, TxnKVGetTree, TxnKVCheckSession, TxnKVCheckIndex, TxnKVCheckNotExists}

// TxnKVOp is one KV operation. Index is the ModifyIndex that cas,
// delete-cas and check-index expect; Session the session that lock,
// unlock and check-session name.
type TxnKVOp struct {
	Verb    string
	Key     string
	Value   []byte
	Flags   uint64
	Index   uint64
	Session string
}

// TxnRequest is a transaction: its operations apply together or not at
// all.
type TxnRequest struct {
	Ops []TxnKVOp
}

func (TxnRequest) MessageType() MessageType { return TxnType }

// Kinds of a failed operation. A conflict is the state not being what
// the operation needs (a stale index, a lock held, a lock-delay); invalid
// is an operation that could never succeed as written.
const (
	TxnConflict = "conflict"
	TxnInvalid  = "invalid"
)

// TxnError is why one operation failed.
type TxnError struct {
	OpIndex int
	What    string
	Kind    string
}

// TxnResult is a transaction's outcome: the results of every operation
// when it applied, or the errors of the operations that failed when it
// did not (then nothing changed). A result is the key as the operation
// left it, with its value only for get and get-tree.
type TxnResult struct {
	Results []*KVEntry
	Errors  []TxnError
}

// Txn applies a transaction at idx. A transaction that fails changes
// nothing and is not an error: the result says which operations failed.
func (s *Store) Txn(idx uint64, req *TxnRequest) *TxnResult {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	at := s.logTime.Load()
	res := &TxnResult{}
	if len(req.Ops) > MaxTxnOps {
		res.Errors = append(res.Errors, TxnError{What: fmt.Sprintf("transaction has %d operations; the limit is %d", len(req.Ops), MaxTxnOps), Kind: TxnInvalid})
		return res
	}
	wrote := false
	for i := range req.Ops {
		op := &req.Ops[i]
		out, w, err := txnKVTxn(tx, idx, at, op)
		if err != nil {
			kind := TxnConflict
			if ie, ok := err.(*txnInvalidError); ok {
				kind, err = TxnInvalid, ie.err
			}
			res.Errors = append(res.Errors, TxnError{OpIndex: i, What: err.Error(), Kind: kind})
			continue
		}
		wrote = wrote || w
		res.Results = append(res.Results, out...)
	}
	if len(res.Errors) > 0 {
		res.Results = nil
		return res
	}
	if wrote {
		if err := bumpIndex(tx, idx, tableKV); err != nil {
			return &TxnResult{Errors: []TxnError{{What: err.Error(), Kind: TxnInvalid}}}
		}
	}
	tx.Commit()
	return res
}

type txnInvalidError struct{ err error }

func (e *txnInvalidError) Error() string { return e.err.Error() }

func invalidf(format string, args ...any) error {
	return &txnInvalidError{fmt.Errorf(format, args...)}
}

// txnKVTxn applies one operation; it returns the entries to report and
// whether it wrote.
func txnKVTxn(tx *memdb.Txn, idx uint64, at int64, op *TxnKVOp) ([]*KVEntry, bool, error) {
	if op.Key == "" && op.Verb != TxnKVDeleteTree && op.Verb != TxnKVGetTree {
		return nil, false, invalidf("%s: missing key", op.Verb)
	}
	raw, err := tx.First(tableKV, "id", op.Key)
	if err != nil {
		return nil, false, err
	}
	old, _ := raw.(*KVEntry)
	switch op.Verb {
	case TxnKVSet:
		return kvSetTxn(tx, idx, old, op)
	case TxnKVCAS:
		if cur := modifyIndex(old); cur != op.Index {
			return nil, false, fmt.Errorf("failed to set key %q, index is stale (%d, not %d)", op.Key, cur, op.Index)
		}
		return kvSetTxn(tx, idx, old, op)
	case TxnKVDelete:
		if old == nil {
			return nil, false, nil
		}
		return nil, true, tx.Delete(tableKV, old)
	case TxnKVDeleteCAS:
		if old == nil || old.ModifyIndex != op.Index {
			return nil, false, fmt.Errorf("failed to delete key %q, index is stale (%d, not %d)", op.Key, modifyIndex(old), op.Index)
		}
		return nil, true, tx.Delete(tableKV, old)
	case TxnKVDeleteTree:
		n, err := tx.DeletePrefix(tableKV, "id_prefix", op.Key)
		return nil, n, err
	case TxnKVLock:
		return kvLockTxn(tx, idx, at, old, op)
	case TxnKVUnlock:
		if old == nil || old.Session == "" || old.Session != op.Session {
			return nil, false, fmt.Errorf("failed to unlock key %q, lock isn't held, or is held by another session", op.Key)
		}
		c := &KVEntry{Key: op.Key, Flags: op.Flags, Value: op.Value, LockIndex: old.LockIndex, CreateIndex: old.CreateIndex, ModifyIndex: idx}
		return []*KVEntry{noValue(c)}, true, tx.Insert(tableKV, c)
	case TxnKVGet:
		if old == nil {
			return nil, false, fmt.Errorf("key %q doesn't exist", op.Key)
		}
		c := *old
		return []*KVEntry{&c}, false, nil
	case TxnKVGetOrEmpty:
		if old == nil {
			return []*KVEntry{{Key: op.Key}}, false, nil
		}
		c := *old
		return []*KVEntry{&c}, false, nil
	case TxnKVGetTree:
		es, err := collect[KVEntry](nil, tx, tableKV, "id_prefix", op.Key)
		return es, false, err
	case TxnKVCheckSession:
		if old == nil {
			return nil, false, fmt.Errorf("key %q doesn't exist", op.Key)
		}
		if old.Session != op.Session {
			return nil, false, fmt.Errorf("failed session check for key %q, current session %q != %q", op.Key, old.Session, op.Session)
		}
		return []*KVEntry{noValue(old)}, false, nil
	case TxnKVCheckIndex:
		if old == nil {
			return nil, false, fmt.Errorf("key %q doesn't exist", op.Key)
		}
		if old.ModifyIndex != op.Index {
			return nil, false, fmt.Errorf("current modify index %d != %d", old.ModifyIndex, op.Index)
		}
		return []*KVEntry{noValue(old)}, false, nil
	case TxnKVCheckNotExists:
		if old != nil {
			return nil, false, fmt.Errorf("key %q exists", op.Key)
		}
		return nil, false, nil
	}
	return nil, false, invalidf("unknown KV verb %q", op.Verb)
}

func modifyIndex(e *KVEntry) uint64 {
	if e == nil {
		return 0
	}
	return e.ModifyIndex
}

// noValue is e without its value: what a write reports.
func noValue(e *KVEntry) *KVEntry {
	c := *e
	c.Value = nil
	return &c
}

// kvSetTxn writes a key; a key that is locked stays locked by its holder.
func kvSetTxn(tx *memdb.Txn, idx uint64, old *KVEntry, op *TxnKVOp) ([]*KVEntry, bool, error) {
	c := &KVEntry{Key: op.Key, Flags: op.Flags, Value: op.Value, CreateIndex: idx, ModifyIndex: idx}
	if old != nil {
		c.CreateIndex, c.LockIndex, c.Session = old.CreateIndex, old.LockIndex, old.Session
	}
	return []*KVEntry{noValue(c)}, true, tx.Insert(tableKV, c)
}

// kvLockTxn locks a key for a session: the session must exist, no other
// session may hold the key, and the key's lock-delay must be over. A new
// holder increments LockIndex; the holder locking again only writes.
func kvLockTxn(tx *memdb.Txn, idx uint64, at int64, old *KVEntry, op *TxnKVOp) ([]*KVEntry, bool, error) {
	if op.Session == "" {
		return nil, false, invalidf("lock of key %q: missing session", op.Key)
	}
	raw, err := tx.First(tableSessions, "id", op.Session)
	if err != nil {
		return nil, false, err
	}
	if raw == nil {
		return nil, false, invalidf("lock of key %q: invalid session %q", op.Key, op.Session)
	}
	c := &KVEntry{Key: op.Key, Flags: op.Flags, Value: op.Value, Session: op.Session, CreateIndex: idx, ModifyIndex: idx, LockIndex: 1}
	if old != nil {
		c.CreateIndex = old.CreateIndex
		switch old.Session {
		case op.Session:
			c.LockIndex = old.LockIndex
		case "":
			c.LockIndex = old.LockIndex + 1
		default:
			return nil, false, fmt.Errorf("failed to lock key %q, lock is already held", op.Key)
		}
	}
	if old == nil || old.Session != op.Session {
		until, err := lockDelayTxn(tx, op.Key)
		if err != nil {
			return nil, false, err
		}
		if at < until {
			return nil, false, fmt.Errorf("failed to lock key %q, lock-delay is in effect for %s", op.Key, time.Duration(until-at)*time.Millisecond)
		}
	}
	return []*KVEntry{noValue(c)}, true, tx.Insert(tableKV, c)
}
