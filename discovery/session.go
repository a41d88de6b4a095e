package discovery

import (
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Sessions, as Consul has them: a session ties KV locks to a node and its
// health. It ends (is invalidated) when it is destroyed, when its TTL
// lapses without a renewal (the raft leader tracks that and destroys it
// through raft, raft/sessions.go), when one of its checks turns critical
// or is removed, or when its node is deregistered. Ending it releases, or
// deletes (Behavior), every key it holds, and each of those keys refuses a
// new lock for the session's LockDelay.
//
// Everything here runs inside the FSM and must stay deterministic: the
// lock-delay is measured on the raft entry's own time (SetLogTime), never
// on this node's clock, so every server agrees on whether an acquire
// succeeds.

const (
	tableSessions      = "sessions"
	tableSessionChecks = "session_checks"
	tableLockDelays    = "lock_delays"
)

// Session behaviours: what ending a session does to the keys it holds.
const (
	SessionRelease = "release"
	SessionDelete  = "delete"
)

// Session limits, as Consul's.
const (
	SessionTTLMin = 10 * time.Second
	SessionTTLMax = 24 * time.Hour
	// MaxLockDelay caps a session's LockDelay.
	MaxLockDelay = 60 * time.Second
	// DefaultLockDelay is the lock-delay of a session that does not say.
	DefaultLockDelay = 15 * time.Second
	// SessionTTLMultiplier: the leader ends a session that has not been
	// renewed for TTL times this, as Consul does, so a client renewing at
	// TTL/2 has slack for one lost renewal and a slow network.
	SessionTTLMultiplier = 2
)

// Session is one session.
type Session struct {
	ID   string
	Name string
	Node string
	// NodeChecks and ServiceChecks are the IDs of checks on Node that keep
	// the session alive; the node check's older name (vmesh:node) means
	// the node check.
	NodeChecks    []string
	ServiceChecks []string
	// LockDelay is how long a key this session held refuses new locks
	// after the session ends.
	LockDelay time.Duration
	Behavior  string
	// TTL, when not zero, ends the session unless it is renewed within
	// TTL (times SessionTTLMultiplier, on the leader).
	TTL         time.Duration
	CreateIndex uint64
	ModifyIndex uint64
}

// CheckIDs are the checks that keep the session alive, as the catalog
// names them, without repeats.
func (s *Session) CheckIDs() []string {
	var out []string
	for _, id := range slices.Concat(s.NodeChecks, s.ServiceChecks) {
		id = sessionCheckID(id)
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// sessionCheckID maps the node check's older name to its name.
func sessionCheckID(id string) string {
	if id == LegacyNodeLivenessCheckID {
		return NodeLivenessCheckID
	}
	return id
}

// sessionCheck links a check to a session that depends on it, so that a
// check turning critical finds its sessions by index. Derived from the
// sessions table: not in snapshots, rebuilt on restore.
type sessionCheck struct {
	Node    string
	CheckID string
	Session string
}

// KVLockDelay is a key's lock-delay: no session may lock the key before
// Until (Unix milliseconds, on the raft entries' clock).
type KVLockDelay struct {
	Key   string
	Until int64
}

func sessionTables(t map[string]*memdb.TableSchema) {
	str := func(field string) memdb.Indexer { return &memdb.StringFieldIndex{Field: field} }
	t[tableSessions] = &memdb.TableSchema{Name: tableSessions, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: str("ID")},
		"node": {Name: "node", Indexer: str("Node")},
	}}
	t[tableSessionChecks] = &memdb.TableSchema{Name: tableSessionChecks, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{
			Indexes: []memdb.Indexer{str("Node"), str("CheckID"), str("Session")}}},
		"node_check": {Name: "node_check", Indexer: &memdb.CompoundIndex{
			Indexes: []memdb.Indexer{str("Node"), str("CheckID")}}},
		"session": {Name: "session", Indexer: str("Session")},
	}}
	t[tableLockDelays] = &memdb.TableSchema{Name: tableLockDelays, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: str("Key")},
	}}
}

// SessionOp is what a SessionRequest does.
type SessionOp string

// Session operations.
const (
	SessionCreate  SessionOp = "create"
	SessionDestroy SessionOp = "destroy"
)

// SessionRequest creates or destroys a session. A create carries the
// whole session (its ID chosen by the API that took the request); a
// destroy only its ID.
type SessionRequest struct {
	Op      SessionOp
	Session Session
}

func (SessionRequest) MessageType() MessageType { return SessionType }

// SessionApply performs a SessionRequest.
func (s *Store) SessionApply(idx uint64, op SessionOp, sess *Session) error {
	switch op {
	case SessionCreate:
		return s.sessionCreate(idx, sess)
	case SessionDestroy:
		return s.sessionDestroy(idx, sess.ID)
	}
	return fmt.Errorf("%w: unknown session operation %q", ErrInvalid, op)
}

// ValidateSession checks what a session must be before it is created;
// the HTTP API checks the same before it writes, the FSM again.
func ValidateSession(sess *Session) error {
	switch {
	case sess.ID == "":
		return fmt.Errorf("%w: ID: missing", ErrInvalid)
	case sess.Node == "":
		return fmt.Errorf("%w: Node: missing", ErrInvalid)
	case sess.Behavior != SessionRelease && sess.Behavior != SessionDelete:
		return fmt.Errorf("%w: Behavior: %q is not %q or %q", ErrInvalid, sess.Behavior, SessionRelease, SessionDelete)
	case sess.TTL != 0 && (sess.TTL < SessionTTLMin || sess.TTL > SessionTTLMax):
		return fmt.Errorf("%w: TTL: %s is not between %s and %s", ErrInvalid, sess.TTL, SessionTTLMin, SessionTTLMax)
	case sess.LockDelay < 0 || sess.LockDelay > MaxLockDelay:
		return fmt.Errorf("%w: LockDelay: %s is not between 0s and %s", ErrInvalid, sess.LockDelay, MaxLockDelay)
	}
	return nil
}

func (s *Store) sessionCreate(idx uint64, sess *Session) error {
	if err := ValidateSession(sess); err != nil {
		return err
	}
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if raw, err := tx.First(tableSessions, "id", sess.ID); err != nil {
		return err
	} else if raw != nil {
		return fmt.Errorf("%w: ID: session %q already exists", ErrInvalid, sess.ID)
	}
	if raw, err := tx.First(tableNodes, "id", sess.Node); err != nil {
		return err
	} else if raw == nil {
		return fmt.Errorf("%w: Node: node %q is not registered", ErrInvalid, sess.Node)
	}
	for _, id := range sess.CheckIDs() {
		raw, err := tx.First(tableChecks, "id", sess.Node, id)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: Checks: check %q is not registered on node %q", ErrInvalid, id, sess.Node)
		}
		if st := raw.(*Check).Status; st == HealthCritical {
			return fmt.Errorf("%w: Checks: check %q on node %q is %s", ErrInvalid, id, sess.Node, st)
		}
	}
	c := *sess
	c.NodeChecks, c.ServiceChecks = slices.Clone(sess.NodeChecks), slices.Clone(sess.ServiceChecks)
	c.CreateIndex, c.ModifyIndex = idx, idx
	if err := insertSessionTxn(tx, &c); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableSessions); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// insertSessionTxn stores a session and the links from its checks.
func insertSessionTxn(tx *memdb.Txn, sess *Session) error {
	if err := tx.Insert(tableSessions, sess); err != nil {
		return err
	}
	for _, id := range sess.CheckIDs() {
		if err := tx.Insert(tableSessionChecks, &sessionCheck{Node: sess.Node, CheckID: id, Session: sess.ID}); err != nil {
			return err
		}
	}
	return nil
}

// sessionDestroy ends a session. Ending one that is not there is not an
// error: it may have ended already, by its checks or its TTL.
func (s *Store) sessionDestroy(idx uint64, id string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableSessions, "id", id)
	if err != nil || raw == nil {
		return err
	}
	if err := endSessionTxn(tx, idx, s.logTime.Load(), raw.(*Session)); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// endSessionTxn invalidates a session: its keys are released or deleted
// and get its lock-delay, measured from at (Unix ms), then the session
// and its check links go.
func endSessionTxn(tx *memdb.Txn, idx uint64, at int64, sess *Session) error {
	var held []*KVEntry
	it, err := tx.Get(tableKV, "session", sess.ID)
	if err != nil {
		return err
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		held = append(held, raw.(*KVEntry))
	}
	delay := min(sess.LockDelay, MaxLockDelay)
	for _, e := range held {
		if sess.Behavior == SessionDelete {
			if err := tx.Delete(tableKV, e); err != nil {
				return err
			}
		} else {
			c := *e
			c.Session, c.ModifyIndex = "", idx
			if err := tx.Insert(tableKV, &c); err != nil {
				return err
			}
		}
		if delay > 0 {
			if err := tx.Insert(tableLockDelays, &KVLockDelay{Key: e.Key, Until: at + delay.Milliseconds()}); err != nil {
				return err
			}
		}
	}
	if len(held) > 0 {
		if err := pruneLockDelaysTxn(tx, at); err != nil {
			return err
		}
		if err := bumpIndex(tx, idx, tableKV); err != nil {
			return err
		}
	}
	if _, err := tx.DeleteAll(tableSessionChecks, "session", sess.ID); err != nil {
		return err
	}
	if err := tx.Delete(tableSessions, sess); err != nil {
		return err
	}
	return bumpIndex(tx, idx, tableSessions)
}

// pruneLockDelaysTxn drops the lock-delays that have run out by at, so
// the table holds only the keys that are still delayed.
func pruneLockDelaysTxn(tx *memdb.Txn, at int64) error {
	it, err := tx.Get(tableLockDelays, "id")
	if err != nil {
		return err
	}
	var done []any
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if raw.(*KVLockDelay).Until <= at {
			done = append(done, raw)
		}
	}
	for _, raw := range done {
		if err := tx.Delete(tableLockDelays, raw); err != nil {
			return err
		}
	}
	return nil
}

// lockDelayTxn is when key's lock-delay ends (Unix ms; 0: none).
func lockDelayTxn(tx *memdb.Txn, key string) (int64, error) {
	raw, err := tx.First(tableLockDelays, "id", key)
	if err != nil || raw == nil {
		return 0, err
	}
	return raw.(*KVLockDelay).Until, nil
}

// endCheckSessionsTxn invalidates the sessions that depend on a check:
// it turned critical or went away.
func endCheckSessionsTxn(tx *memdb.Txn, idx uint64, at int64, node, checkID string) error {
	it, err := tx.Get(tableSessionChecks, "node_check", node, checkID)
	if err != nil {
		return err
	}
	var ids []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		ids = append(ids, raw.(*sessionCheck).Session)
	}
	return endSessionsTxn(tx, idx, at, ids)
}

// endNodeSessionsTxn invalidates every session of a node that goes away.
func endNodeSessionsTxn(tx *memdb.Txn, idx uint64, at int64, node string) error {
	it, err := tx.Get(tableSessions, "node", node)
	if err != nil {
		return err
	}
	var ids []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		ids = append(ids, raw.(*Session).ID)
	}
	return endSessionsTxn(tx, idx, at, ids)
}

func endSessionsTxn(tx *memdb.Txn, idx uint64, at int64, ids []string) error {
	for _, id := range ids {
		raw, err := tx.First(tableSessions, "id", id)
		if err != nil {
			return err
		}
		if raw == nil {
			continue // ended by an earlier check of the same change
		}
		if err := endSessionTxn(tx, idx, at, raw.(*Session)); err != nil {
			return err
		}
	}
	return nil
}

// SetLogTime tells the catalog the time of the raft entry the FSM applies
// next: the leader's clock when it appended the entry, which travels with
// the entry, so every server sees the same time for it. Lock-delays are
// measured on it. A catalog that is never told (a client's replica, which
// holds no KV) measures from the zero time.
func (s *Store) SetLogTime(t time.Time) {
	if t.IsZero() {
		s.logTime.Store(0)
		return
	}
	s.logTime.Store(t.UnixMilli())
}

// ---- reads ----

// Session returns a session, or nil.
func (s *Store) Session(ws memdb.WatchSet, id string) (uint64, *Session, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableSessions)
	ch, raw, err := tx.FirstWatch(tableSessions, "id", id)
	if ws != nil {
		ws.Add(ch)
	}
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*Session), nil
}

// Sessions lists every session, by ID.
func (s *Store) Sessions(ws memdb.WatchSet) (uint64, []*Session, error) {
	tx := s.readTxn(ws)
	out, err := collect[Session](ws, tx, tableSessions, "id")
	return maxIndex(tx, tableSessions), out, err
}

// NodeSessions lists the sessions of a node.
func (s *Store) NodeSessions(ws memdb.WatchSet, node string) (uint64, []*Session, error) {
	tx := s.readTxn(ws)
	out, err := collect[Session](ws, tx, tableSessions, "node", node)
	return maxIndex(tx, tableSessions), out, err
}

// LockDelayUntil is when key's lock-delay ends, in Unix milliseconds on
// the raft entries' clock (0: none recorded).
func (s *Store) LockDelayUntil(key string) int64 {
	until, _ := lockDelayTxn(s.readTxn(nil), key)
	return until
}
