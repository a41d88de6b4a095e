package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-memdb"
)

// Sentinel errors. The HTTP API maps ErrNotFound to 404 and ErrInvalid to 400.
var (
	ErrNotFound    = errors.New("discovery: not found")
	ErrInvalid     = errors.New("discovery: invalid request")
	ErrCASConflict = errors.New("discovery: check-and-set index does not match")
)

// problems collects what is wrong with a request, each naming its field,
// so that one answer reports them all.
type problems []error

// bad adds a problem with field.
func (p *problems) bad(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// err is every problem in one error wrapping ErrInvalid (nil: none).
func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(p...))
}

const (
	tableNodes     = "nodes"
	tableInstances = "instances"
	tableChecks    = "checks"
	tableKV        = "kv"
	tableIndex     = "index"
)

// indexEntry records the highest raft index that changed a table, so that a
// read of a table (even of a row that was deleted) returns an index that
// moves forward.
type indexEntry struct {
	Key   string
	Value uint64
}

func schema() *memdb.DBSchema {
	s := baseSchema()
	clusterTables(s.Tables)
	configEntryTables(s.Tables)
	intentionTables(s.Tables)
	vipTables(s.Tables)
	aclTables(s.Tables)
	sessionTables(s.Tables)
	revocationTables(s.Tables)
	autopilotTables(s.Tables)
	return s
}

func baseSchema() *memdb.DBSchema {
	str := func(field string, lower bool) memdb.Indexer {
		return &memdb.StringFieldIndex{Field: field, Lowercase: lower}
	}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableNodes: {Name: tableNodes, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: str("Name", false)},
		}},
		tableInstances: {Name: tableInstances, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{
				Indexes: []memdb.Indexer{str("Node", false), str("ID", false)}}},
			"node":    {Name: "node", Indexer: str("Node", false)},
			"service": {Name: "service", Indexer: str("Service", true)},
		}},
		tableChecks: {Name: tableChecks, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{
				Indexes: []memdb.Indexer{str("Node", false), str("CheckID", false)}}},
			"node":    {Name: "node", Indexer: str("Node", false)},
			"status":  {Name: "status", Indexer: str("Status", false)},
			"service": {Name: "service", AllowMissing: true, Indexer: str("ServiceName", true)},
			"node_service": {Name: "node_service", AllowMissing: true, Indexer: &memdb.CompoundIndex{
				Indexes: []memdb.Indexer{str("Node", false), str("ServiceID", false)}}},
		}},
		tableKV: {Name: tableKV, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: str("Key", false)},
			// The keys a session holds (session.go); unlocked keys are not
			// indexed.
			"session": {Name: "session", AllowMissing: true, Indexer: str("Session", false)},
		}},
		tableIndex: {Name: tableIndex, Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: str("Key", false)},
		}},
	}}
}

// Store is the catalog: an in-memory, transactional, watchable database
// that only the raft FSM writes. Every write takes the raft index of the log
// entry that carries it; every read returns the highest index of the tables
// it looked at and can add watch channels to a memdb.WatchSet.
//
// Restore swaps in a whole new database and closes the abandon channel of
// the old one, which wakes every blocked reader so it re-reads.
type Store struct {
	mu      sync.RWMutex
	db      *memdb.MemDB
	abandon chan struct{}
	// logTime is the time of the raft entry being applied, in Unix ms
	// (SetLogTime, session.go).
	logTime atomic.Int64
}

// NewStore returns an empty catalog.
func NewStore() *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		panic(fmt.Sprintf("discovery: bad schema: %v", err)) // a programming error
	}
	return &Store{db: db, abandon: make(chan struct{})}
}

func (s *Store) current() (*memdb.MemDB, chan struct{}) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db, s.abandon
}

func (s *Store) readTxn(ws memdb.WatchSet) *memdb.Txn {
	db, abandon := s.current()
	if ws != nil {
		ws.Add(abandon)
	}
	return db.Txn(false)
}

// Blocking runs query until it returns an index above minIndex, ctx ends, or
// the query fails. It is the engine behind every blocking read: the query
// adds the channels it depends on to ws and the loop waits on them.
func (s *Store) Blocking(ctx context.Context, minIndex uint64, query func(ws memdb.WatchSet) (uint64, error)) error {
	for {
		_, abandon := s.current()
		ws := memdb.NewWatchSet()
		idx, err := query(ws)
		if err != nil || minIndex == 0 || idx > minIndex {
			return err
		}
		if err := ws.WatchCtx(ctx); err != nil {
			// The wait ended: the caller answers with what it has.
			return nil
		}
		select {
		case <-abandon:
			// The catalog was replaced by a snapshot restore: answer now,
			// even if the restored index is not higher, as Consul does.
			_, _ = query(memdb.NewWatchSet())
			return nil
		default:
		}
	}
}

func maxIndex(tx *memdb.Txn, tables ...string) uint64 {
	var max uint64
	for _, t := range tables {
		raw, err := tx.First(tableIndex, "id", t)
		if err == nil && raw != nil {
			if v := raw.(*indexEntry).Value; v > max {
				max = v
			}
		}
	}
	return max
}

func bumpIndex(tx *memdb.Txn, idx uint64, tables ...string) error {
	for _, t := range tables {
		if err := tx.Insert(tableIndex, &indexEntry{Key: t, Value: idx}); err != nil {
			return fmt.Errorf("updating index of %s: %w", t, err)
		}
	}
	return nil
}

// LastIndex is the highest index of any table.
func (s *Store) LastIndex() uint64 {
	tx := s.readTxn(nil)
	return maxIndex(tx, tableNodes, tableInstances, tableChecks, tableKV, tableCA, tableTokens, tableConfigEntries, tableVIPs, tableIntentions,
		tableACLTokens, tableACLPolicies, tableACLRoles, tableACLMeta, tableACLEpoch, tableSessions, tableRevocations, tableAutopilot)
}

// ---- writes (FSM only) ----

// EnsureNode creates or updates a node.
func (s *Store) EnsureNode(idx uint64, n *Node) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if err := ensureNodeTxn(tx, idx, n); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func ensureNodeTxn(tx *memdb.Txn, idx uint64, n *Node) error {
	raw, err := tx.First(tableNodes, "id", n.Name)
	if err != nil {
		return err
	}
	c := *n
	c.CreateIndex, c.ModifyIndex = idx, idx
	if raw != nil {
		old := raw.(*Node)
		c.CreateIndex = old.CreateIndex
		if nodeEqual(old, &c) {
			return nil
		}
	}
	if err := tx.Insert(tableNodes, &c); err != nil {
		return err
	}
	return bumpIndex(tx, idx, tableNodes)
}

func nodeEqual(a, b *Node) bool {
	return a.ID == b.ID && a.Address == b.Address && a.Datacenter == b.Datacenter && mapsEqual(a.Meta, b.Meta) &&
		mapsEqual(a.TaggedAddresses, b.TaggedAddresses) && a.External == b.External
}

// DeleteNode removes a node with its instances and checks.
func (s *Store) DeleteNode(idx uint64, name string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if raw, err := tx.First(tableNodes, "id", name); err != nil || raw == nil {
		return err
	}
	if err := endNodeSessionsTxn(tx, idx, s.logTime.Load(), name); err != nil {
		return err
	}
	if _, err := tx.DeleteAll(tableNodes, "id", name); err != nil {
		return err
	}
	if _, err := tx.DeleteAll(tableInstances, "node", name); err != nil {
		return err
	}
	if _, err := tx.DeleteAll(tableChecks, "node", name); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableNodes, tableInstances, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// EnsureService creates or updates an instance and replaces the set of
// checks attached to it with checks. A check whose definition is unchanged
// keeps its current status and output.
func (s *Store) EnsureService(idx uint64, inst *Instance, checks []*Check) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if err := ensureServiceTxn(tx, idx, s.logTime.Load(), inst, checks); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableInstances, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func ensureServiceTxn(tx *memdb.Txn, idx uint64, at int64, inst *Instance, checks []*Check) error {
	if raw, err := tx.First(tableNodes, "id", inst.Node); err != nil {
		return err
	} else if raw == nil {
		return fmt.Errorf("%w: node %q is not registered", ErrNotFound, inst.Node)
	}
	raw, err := tx.First(tableInstances, "id", inst.Node, inst.ID)
	if err != nil {
		return err
	}
	c := *inst
	c.CreateIndex, c.ModifyIndex = idx, idx
	if raw != nil {
		c.CreateIndex = raw.(*Instance).CreateIndex
	}
	if err := tx.Insert(tableInstances, &c); err != nil {
		return err
	}
	// Replace the instance's checks, all but its maintenance check: a
	// re-registration (a service file's sync at start, say) does not take
	// the instance out of maintenance, as Consul's does not.
	keep := map[string]bool{ServiceMaintenanceCheckID(inst.ID): true}
	for _, chk := range checks {
		keep[chk.CheckID] = true
	}
	it, err := tx.Get(tableChecks, "node_service", inst.Node, inst.ID)
	if err != nil {
		return err
	}
	var drop []*Check
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if old := raw.(*Check); !keep[old.CheckID] {
			drop = append(drop, old)
		}
	}
	for _, old := range drop {
		if err := tx.Delete(tableChecks, old); err != nil {
			return err
		}
		if err := endCheckSessionsTxn(tx, idx, at, old.Node, old.CheckID); err != nil {
			return err
		}
	}
	for _, chk := range checks {
		chk.ServiceID, chk.ServiceName, chk.ServiceTags, chk.Node = c.ID, c.Service, c.Tags, c.Node
		if err := ensureCheckTxn(tx, idx, at, chk); err != nil {
			return err
		}
	}
	return nil
}

// DeleteService removes an instance and its checks, and the sidecar record
// its registration made (sidecar.go). Removing what is not there is not
// an error: deregistration is idempotent, as in Consul.
func (s *Store) DeleteService(idx uint64, node, id string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableInstances, "id", node, id)
	if err != nil || raw == nil {
		return err
	}
	at := s.logTime.Load()
	if err := deleteServiceTxn(tx, idx, at, raw.(*Instance)); err != nil {
		return err
	}
	if err := deleteSidecarTxn(tx, idx, at, node, id); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableInstances, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// deleteServiceTxn removes in and its checks, ending the sessions that
// held them.
func deleteServiceTxn(tx *memdb.Txn, idx uint64, at int64, in *Instance) error {
	if err := tx.Delete(tableInstances, in); err != nil {
		return err
	}
	checks, err := collect[Check](nil, tx, tableChecks, "node_service", in.Node, in.ID)
	if err != nil {
		return err
	}
	for _, chk := range checks {
		if err := tx.Delete(tableChecks, chk); err != nil {
			return err
		}
		if err := endCheckSessionsTxn(tx, idx, at, in.Node, chk.CheckID); err != nil {
			return err
		}
	}
	return nil
}

// EnsureCheck creates or updates a check. A check that names a service
// takes the service's name and tags.
func (s *Store) EnsureCheck(idx uint64, chk *Check) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if raw, err := tx.First(tableNodes, "id", chk.Node); err != nil {
		return err
	} else if raw == nil {
		return fmt.Errorf("%w: node %q is not registered", ErrNotFound, chk.Node)
	}
	if chk.ServiceID != "" {
		raw, err := tx.First(tableInstances, "id", chk.Node, chk.ServiceID)
		if err != nil {
			return err
		}
		if raw == nil {
			return fmt.Errorf("%w: ServiceID %q is not registered on node %q", ErrNotFound, chk.ServiceID, chk.Node)
		}
		inst := raw.(*Instance)
		chk.ServiceName, chk.ServiceTags = inst.Service, inst.Tags
	}
	if err := ensureCheckTxn(tx, idx, s.logTime.Load(), chk); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// ensureCheckTxn stores a check; one that is critical ends the sessions
// that depend on it, at (Unix ms) being the entry's time.
func ensureCheckTxn(tx *memdb.Txn, idx uint64, at int64, chk *Check) error {
	c := *chk
	c.CreateIndex, c.ModifyIndex = idx, idx
	raw, err := tx.First(tableChecks, "id", c.Node, c.CheckID)
	if err != nil {
		return err
	}
	if raw != nil {
		old := raw.(*Check)
		c.CreateIndex = old.CreateIndex
		if c.Status == "" {
			c.Status, c.Output = old.Status, old.Output
		}
	}
	if c.Status == "" {
		c.Status = HealthCritical
	}
	if err := tx.Insert(tableChecks, &c); err != nil {
		return err
	}
	if c.Status == HealthCritical {
		return endCheckSessionsTxn(tx, idx, at, c.Node, c.CheckID)
	}
	return nil
}

// DeleteCheck removes a check.
func (s *Store) DeleteCheck(idx uint64, node, id string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableChecks, "id", node, id)
	if err != nil || raw == nil {
		return err
	}
	if err := tx.Delete(tableChecks, raw); err != nil {
		return err
	}
	if err := endCheckSessionsTxn(tx, idx, s.logTime.Load(), node, id); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// UpdateCheck sets a check's status and output.
func (s *Store) UpdateCheck(idx uint64, node, id, status, output string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableChecks, "id", node, id)
	if err != nil {
		return err
	}
	if raw == nil {
		return fmt.Errorf("%w: check %q on node %q", ErrNotFound, id, node)
	}
	c := *raw.(*Check)
	c.Status, c.Output, c.ModifyIndex = status, output, idx
	if err := tx.Insert(tableChecks, &c); err != nil {
		return err
	}
	if status == HealthCritical {
		if err := endCheckSessionsTxn(tx, idx, s.logTime.Load(), node, id); err != nil {
			return err
		}
	}
	if err := bumpIndex(tx, idx, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// KVOp is a key/value operation.
type KVOp string

// Key/value operations.
const (
	KVSet        KVOp = "set"
	KVCAS        KVOp = "cas"
	KVDelete     KVOp = "delete"
	KVDeleteCAS  KVOp = "delete-cas"
	KVDeleteTree KVOp = "delete-tree"
)

// KVApply performs op on e. For KVCAS and KVDeleteCAS, e.ModifyIndex is
// the index the caller expects (0: the key must not exist); a mismatch
// returns ErrCASConflict and changes nothing.
func (s *Store) KVApply(idx uint64, op KVOp, e *KVEntry) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableKV, "id", e.Key)
	if err != nil {
		return err
	}
	var old *KVEntry
	if raw != nil {
		old = raw.(*KVEntry)
	}
	if op == KVCAS || op == KVDeleteCAS {
		cur := uint64(0)
		if old != nil {
			cur = old.ModifyIndex
		}
		if cur != e.ModifyIndex || (op == KVDeleteCAS && old == nil) {
			return ErrCASConflict
		}
	}
	switch op {
	case KVSet, KVCAS:
		c := &KVEntry{Key: e.Key, Flags: e.Flags, Value: e.Value, CreateIndex: idx, ModifyIndex: idx}
		if old != nil {
			// A plain write keeps the lock: the holder still holds it.
			c.CreateIndex, c.LockIndex, c.Session = old.CreateIndex, old.LockIndex, old.Session
		}
		if err := tx.Insert(tableKV, c); err != nil {
			return err
		}
	case KVDelete, KVDeleteCAS:
		if old == nil {
			return nil
		}
		if err := tx.Delete(tableKV, old); err != nil {
			return err
		}
	case KVDeleteTree:
		if _, err := tx.DeletePrefix(tableKV, "id_prefix", e.Key); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown KV operation %q", ErrInvalid, op)
	}
	if err := bumpIndex(tx, idx, tableKV); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// ---- reads ----

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
