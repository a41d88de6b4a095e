package discovery

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// Sentinel errors. The HTTP API maps ErrNotFound to 404 and ErrInvalid to 400.
var (
	ErrNotFound    = errors.New("discovery: not found")
	ErrInvalid     = errors.New("discovery: invalid request")
	ErrCASConflict = errors.New("discovery: check-and-set index does not match")
)

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
	return maxIndex(tx, tableNodes, tableInstances, tableChecks, tableKV, tableCA, tableTokens, tableConfigEntries, tableVIPs, tableIntentions)
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
	return a.ID == b.ID && a.Address == b.Address && a.Datacenter == b.Datacenter && mapsEqual(a.Meta, b.Meta)
}

// DeleteNode removes a node with its instances and checks.
func (s *Store) DeleteNode(idx uint64, name string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	if raw, err := tx.First(tableNodes, "id", name); err != nil || raw == nil {
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
	// Replace the instance's checks.
	keep := make(map[string]bool, len(checks))
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
	}
	for _, chk := range checks {
		chk.ServiceID, chk.ServiceName, chk.ServiceTags, chk.Node = c.ID, c.Service, c.Tags, c.Node
		if err := ensureCheckTxn(tx, idx, chk); err != nil {
			return err
		}
	}
	if err := bumpIndex(tx, idx, tableInstances, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

// DeleteService removes an instance and its checks. Removing what is not
// there is not an error: deregistration is idempotent, as in Consul.
func (s *Store) DeleteService(idx uint64, node, id string) error {
	db, _ := s.current()
	tx := db.Txn(true)
	defer tx.Abort()
	raw, err := tx.First(tableInstances, "id", node, id)
	if err != nil || raw == nil {
		return err
	}
	if err := tx.Delete(tableInstances, raw); err != nil {
		return err
	}
	if _, err := tx.DeleteAll(tableChecks, "node_service", node, id); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableInstances, tableChecks); err != nil {
		return err
	}
	tx.Commit()
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
	if err := ensureCheckTxn(tx, idx, chk); err != nil {
		return err
	}
	if err := bumpIndex(tx, idx, tableChecks); err != nil {
		return err
	}
	tx.Commit()
	return nil
}

func ensureCheckTxn(tx *memdb.Txn, idx uint64, chk *Check) error {
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
	return tx.Insert(tableChecks, &c)
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
			c.CreateIndex, c.LockIndex = old.CreateIndex, old.LockIndex
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

func collect[T any](ws memdb.WatchSet, tx *memdb.Txn, table, index string, args ...any) ([]*T, error) {
	it, err := tx.Get(table, index, args...)
	if err != nil {
		return nil, err
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*T))
	}
	return out, nil
}

// Nodes lists every node by name.
func (s *Store) Nodes(ws memdb.WatchSet) (uint64, []*Node, error) {
	tx := s.readTxn(ws)
	nodes, err := collect[Node](ws, tx, tableNodes, "id")
	return maxIndex(tx, tableNodes), nodes, err
}

// Node returns a node (nil if unknown) and its instances.
func (s *Store) Node(ws memdb.WatchSet, name string) (uint64, *Node, []*Instance, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableNodes, tableInstances)
	ch, raw, err := tx.FirstWatch(tableNodes, "id", name)
	if err != nil {
		return idx, nil, nil, err
	}
	if ws != nil {
		ws.Add(ch)
	}
	if raw == nil {
		return idx, nil, nil, nil
	}
	insts, err := collect[Instance](ws, tx, tableInstances, "node", name)
	return idx, raw.(*Node), insts, err
}

// NodeInstances lists the instances registered on a node.
func (s *Store) NodeInstances(ws memdb.WatchSet, node string) (uint64, []*Instance, error) {
	tx := s.readTxn(ws)
	insts, err := collect[Instance](ws, tx, tableInstances, "node", node)
	return maxIndex(tx, tableInstances), insts, err
}

// Instance returns one instance, or nil.
func (s *Store) Instance(ws memdb.WatchSet, node, id string) (uint64, *Instance, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableInstances, "id", node, id)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableInstances)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*Instance), nil
}

// ServiceTags maps every service name to the union of its instances' tags.
func (s *Store) ServiceTags(ws memdb.WatchSet) (uint64, map[string][]string, error) {
	tx := s.readTxn(ws)
	insts, err := collect[Instance](ws, tx, tableInstances, "id")
	if err != nil {
		return 0, nil, err
	}
	seen := map[string]map[string]bool{}
	for _, in := range insts {
		if seen[in.Service] == nil {
			seen[in.Service] = map[string]bool{}
		}
		for _, t := range in.Tags {
			seen[in.Service][t] = true
		}
	}
	out := make(map[string][]string, len(seen))
	for name, tags := range seen {
		list := make([]string, 0, len(tags))
		for t := range tags {
			list = append(list, t)
		}
		sort.Strings(list)
		out[name] = list
	}
	return maxIndex(tx, tableInstances), out, nil
}

// hasTags reports whether inst carries every tag in want (case-insensitive,
// as Consul matches tags).
func hasTags(inst *Instance, want []string) bool {
	for _, w := range want {
		found := false
		for _, t := range inst.Tags {
			if strings.EqualFold(t, w) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// ServiceNodes returns the instances of a service, each with its node,
// filtered to those that carry every tag in tags.
func (s *Store) ServiceNodes(ws memdb.WatchSet, service string, tags []string) (uint64, []ServiceEntry, error) {
	tx := s.readTxn(ws)
	entries, err := serviceNodesTxn(ws, tx, service, tags)
	return maxIndex(tx, tableNodes, tableInstances), entries, err
}

func serviceNodesTxn(ws memdb.WatchSet, tx *memdb.Txn, service string, tags []string) ([]ServiceEntry, error) {
	insts, err := collect[Instance](ws, tx, tableInstances, "service", service)
	if err != nil {
		return nil, err
	}
	var out []ServiceEntry
	for _, in := range insts {
		if !hasTags(in, tags) {
			continue
		}
		ch, raw, err := tx.FirstWatch(tableNodes, "id", in.Node)
		if err != nil {
			return nil, err
		}
		if ws != nil {
			ws.Add(ch)
		}
		n, _ := raw.(*Node)
		out = append(out, ServiceEntry{Node: n, Instance: in})
	}
	return out, nil
}

// CheckServiceNodes is ServiceNodes with each entry's checks: the node's
// own checks and the instance's. With passingOnly, entries with any check
// that is not passing are left out. It reads in one transaction, so an
// instance and its checks always come from the same moment.
func (s *Store) CheckServiceNodes(ws memdb.WatchSet, service string, tags []string, passingOnly bool) (uint64, []ServiceEntry, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableNodes, tableInstances, tableChecks)
	entries, err := serviceNodesTxn(ws, tx, service, tags)
	if err != nil {
		return idx, nil, err
	}
	out := entries[:0]
	for _, e := range entries {
		all, err := collect[Check](ws, tx, tableChecks, "node", e.Instance.Node)
		if err != nil {
			return idx, nil, err
		}
		var checks []*Check
		for _, c := range all {
			if c.ServiceID == "" || c.ServiceID == e.Instance.ID {
				checks = append(checks, c)
			}
		}
		if passingOnly && AggregatedStatus(checks) != HealthPassing {
			continue
		}
		e.Checks = checks
		out = append(out, e)
	}
	return idx, out, nil
}

// ServiceChecks lists the checks of every instance of a service.
func (s *Store) ServiceChecks(ws memdb.WatchSet, service string) (uint64, []*Check, error) {
	tx := s.readTxn(ws)
	checks, err := collect[Check](ws, tx, tableChecks, "service", service)
	return maxIndex(tx, tableChecks), checks, err
}

// ChecksInState lists checks in a state; HealthAny lists all of them.
func (s *Store) ChecksInState(ws memdb.WatchSet, state string) (uint64, []*Check, error) {
	tx := s.readTxn(ws)
	var checks []*Check
	var err error
	if state == HealthAny {
		checks, err = collect[Check](ws, tx, tableChecks, "id")
	} else {
		checks, err = collect[Check](ws, tx, tableChecks, "status", state)
	}
	return maxIndex(tx, tableChecks), checks, err
}

// NodeChecks lists every check on a node.
func (s *Store) NodeChecks(ws memdb.WatchSet, node string) (uint64, []*Check, error) {
	tx := s.readTxn(ws)
	checks, err := collect[Check](ws, tx, tableChecks, "node", node)
	return maxIndex(tx, tableChecks), checks, err
}

// Check returns one check, or nil.
func (s *Store) Check(ws memdb.WatchSet, node, id string) (uint64, *Check, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableChecks, "id", node, id)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableChecks)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*Check), nil
}

// KVGet returns one key, or nil.
func (s *Store) KVGet(ws memdb.WatchSet, key string) (uint64, *KVEntry, error) {
	tx := s.readTxn(ws)
	ch, raw, err := tx.FirstWatch(tableKV, "id", key)
	if ws != nil {
		ws.Add(ch)
	}
	idx := maxIndex(tx, tableKV)
	if err != nil || raw == nil {
		return idx, nil, err
	}
	return idx, raw.(*KVEntry), nil
}

// KVList returns every key under prefix, in key order.
func (s *Store) KVList(ws memdb.WatchSet, prefix string) (uint64, []*KVEntry, error) {
	tx := s.readTxn(ws)
	entries, err := collect[KVEntry](ws, tx, tableKV, "id_prefix", prefix)
	return maxIndex(tx, tableKV), entries, err
}

// KVKeys lists the keys under prefix; with a separator, keys are cut after
// the first separator past the prefix and repeated results folded, as
// Consul's ?keys&separator= does.
func (s *Store) KVKeys(ws memdb.WatchSet, prefix, sep string) (uint64, []string, error) {
	idx, entries, err := s.KVList(ws, prefix)
	if err != nil {
		return idx, nil, err
	}
	var keys []string
	last := ""
	for _, e := range entries {
		k := e.Key
		if sep != "" {
			if i := strings.Index(k[len(prefix):], sep); i >= 0 {
				k = k[:len(prefix)+i+len(sep)]
			}
		}
		if k != last || len(keys) == 0 {
			keys = append(keys, k)
			last = k
		}
	}
	return idx, keys, nil
}

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
