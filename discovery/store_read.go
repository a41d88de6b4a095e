package discovery

import (
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
)

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
// own checks and the instance's (a sidecar record's: its service's). With
// passingOnly, entries with any check that is not passing are left out.
// It reads in one transaction, so an instance and its checks always come
// from the same moment.
func (s *Store) CheckServiceNodes(ws memdb.WatchSet, service string, tags []string, passingOnly bool) (uint64, []ServiceEntry, error) {
	return s.checkServiceNodes(ws, serviceNodesTxn, service, tags, passingOnly)
}

func (s *Store) checkServiceNodes(ws memdb.WatchSet, nodes func(memdb.WatchSet, *memdb.Txn, string, []string) ([]ServiceEntry, error),
	service string, tags []string, passingOnly bool) (uint64, []ServiceEntry, error) {
	tx := s.readTxn(ws)
	idx := maxIndex(tx, tableNodes, tableInstances, tableChecks)
	entries, err := nodes(ws, tx, service, tags)
	if err != nil {
		return idx, nil, err
	}
	out := entries[:0]
	for _, e := range entries {
		all, err := collect[Check](ws, tx, tableChecks, "node", e.Instance.Node)
		if err != nil {
			return idx, nil, err
		}
		// A sidecar record's health is its service's (sidecar.go): the
		// node proxy forwards nothing to a critical service.
		parent := e.Instance.SidecarFor
		var checks []*Check
		for _, c := range all {
			if c.ServiceID == "" || c.ServiceID == e.Instance.ID || (parent != "" && c.ServiceID == parent) {
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
