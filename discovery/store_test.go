package discovery

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Helpers here carry a "st" prefix so that they cannot collide with the
// helpers of other test files in the package.

func stMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func stNode(t *testing.T, s *Store, idx uint64, name string) {
	t.Helper()
	stMust(t, s.EnsureNode(idx, &Node{ID: name + "-id", Name: name, Address: "10.0.0." + name[len(name)-1:], Datacenter: "dc1"}))
}

func stKVSet(t *testing.T, s *Store, idx uint64, key string) {
	t.Helper()
	stMust(t, s.KVApply(idx, KVSet, &KVEntry{Key: key, Value: []byte(key)}))
}

func stKeys(t *testing.T, s *Store, prefix string) []string {
	t.Helper()
	_, entries, err := s.KVList(nil, prefix)
	stMust(t, err)
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.Key)
	}
	return keys
}

func TestStoreKVKeys(t *testing.T) {
	s := NewStore()
	for i, k := range []string{"a/b", "a/c/d", "a/c/e", "a/c/f/g", "ab", "b/x", "a/"} {
		stKVSet(t, s, uint64(i+1), k)
	}
	tests := []struct {
		prefix, sep string
		want        []string
	}{
		{"a/", "/", []string{"a/", "a/b", "a/c/"}},
		{"a/", "", []string{"a/", "a/b", "a/c/d", "a/c/e", "a/c/f/g"}},
		{"a/c/", "/", []string{"a/c/d", "a/c/e", "a/c/f/"}},
		{"a", "/", []string{"a/", "ab"}},
		{"", "/", []string{"a/", "ab", "b/"}},
		{"a/c", "", []string{"a/c/d", "a/c/e", "a/c/f/g"}},
		{"zzz", "/", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"|"+tt.sep, func(t *testing.T) {
			idx, keys, err := s.KVKeys(nil, tt.prefix, tt.sep)
			stMust(t, err)
			if !reflect.DeepEqual(keys, tt.want) {
				t.Errorf("KVKeys(%q, %q) = %q, want %q", tt.prefix, tt.sep, keys, tt.want)
			}
			if idx != 7 {
				t.Errorf("index = %d, want 7", idx)
			}
		})
	}
}

func TestStoreKVList(t *testing.T) {
	s := NewStore()
	for i, k := range []string{"web/b", "web/a", "webx", "db/a"} {
		stKVSet(t, s, uint64(i+1), k)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"web/", []string{"web/a", "web/b"}},
		{"web", []string{"web/a", "web/b", "webx"}},
		{"", []string{"db/a", "web/a", "web/b", "webx"}},
		{"nope", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := stKeys(t, s, tt.prefix); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("KVList(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestStoreKVApply(t *testing.T) {
	// Each case starts from a store holding "k" (created at 10, modified at
	// 11) and "t/1", "t/2", "tx" (at 12), applies one op at index 20.
	seed := func(t *testing.T) *Store {
		s := NewStore()
		stMust(t, s.KVApply(10, KVSet, &KVEntry{Key: "k", Value: []byte("v0")}))
		stMust(t, s.KVApply(11, KVSet, &KVEntry{Key: "k", Value: []byte("v1"), Flags: 7}))
		for _, k := range []string{"t/1", "t/2", "tx"} {
			stKVSet(t, s, 12, k)
		}
		return s
	}
	tests := []struct {
		name      string
		op        KVOp
		entry     KVEntry
		wantErr   error
		wantKeys  []string
		check     func(t *testing.T, s *Store)
		wantIndex uint64 // KV table index after the op
	}{
		{
			name: "set updates and keeps CreateIndex", op: KVSet,
			entry:    KVEntry{Key: "k", Value: []byte{0, 1, 255}, Flags: 42},
			wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 20,
			check: func(t *testing.T, s *Store) {
				_, e, _ := s.KVGet(nil, "k")
				want := &KVEntry{Key: "k", Value: []byte{0, 1, 255}, Flags: 42, CreateIndex: 10, ModifyIndex: 20}
				if !reflect.DeepEqual(e, want) {
					t.Errorf("k = %+v, want %+v", e, want)
				}
			},
		},
		{
			name: "cas create-if-absent", op: KVCAS,
			entry:    KVEntry{Key: "new", Value: []byte("n"), ModifyIndex: 0},
			wantKeys: []string{"k", "new", "t/1", "t/2", "tx"}, wantIndex: 20,
			check: func(t *testing.T, s *Store) {
				_, e, _ := s.KVGet(nil, "new")
				if e == nil || e.CreateIndex != 20 || e.ModifyIndex != 20 || string(e.Value) != "n" {
					t.Errorf("new = %+v, want created at 20", e)
				}
			},
		},
		{
			name: "cas create-if-absent on existing key conflicts", op: KVCAS,
			entry:   KVEntry{Key: "k", Value: []byte("x"), ModifyIndex: 0},
			wantErr: ErrCASConflict, wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 12,
		},
		{
			name: "cas with matching index", op: KVCAS,
			entry:    KVEntry{Key: "k", Value: []byte("v2"), ModifyIndex: 11},
			wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 20,
			check: func(t *testing.T, s *Store) {
				_, e, _ := s.KVGet(nil, "k")
				if string(e.Value) != "v2" || e.ModifyIndex != 20 || e.CreateIndex != 10 {
					t.Errorf("k = %+v, want v2 modified at 20", e)
				}
			},
		},
		{
			name: "cas with stale index", op: KVCAS,
			entry:   KVEntry{Key: "k", Value: []byte("v2"), ModifyIndex: 10},
			wantErr: ErrCASConflict, wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 12,
		},
		{
			name: "cas on absent key with nonzero index", op: KVCAS,
			entry:   KVEntry{Key: "new", ModifyIndex: 5},
			wantErr: ErrCASConflict, wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 12,
		},
		{
			name: "delete", op: KVDelete, entry: KVEntry{Key: "k"},
			wantKeys: []string{"t/1", "t/2", "tx"}, wantIndex: 20,
		},
		{
			name: "delete-cas with matching index", op: KVDeleteCAS,
			entry:    KVEntry{Key: "k", ModifyIndex: 11},
			wantKeys: []string{"t/1", "t/2", "tx"}, wantIndex: 20,
		},
		{
			name: "delete-cas with stale index", op: KVDeleteCAS,
			entry:   KVEntry{Key: "k", ModifyIndex: 10},
			wantErr: ErrCASConflict, wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 12,
		},
		{
			name: "delete-cas of absent key", op: KVDeleteCAS,
			entry:   KVEntry{Key: "nope", ModifyIndex: 0},
			wantErr: ErrCASConflict, wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 12,
		},
		{
			name: "delete-tree", op: KVDeleteTree, entry: KVEntry{Key: "t/"},
			wantKeys: []string{"k", "tx"}, wantIndex: 20,
		},
		{
			name: "delete-tree without separator is a plain prefix", op: KVDeleteTree, entry: KVEntry{Key: "t"},
			wantKeys: []string{"k"}, wantIndex: 20,
		},
		{
			name: "unknown op", op: KVOp("frob"), entry: KVEntry{Key: "k"},
			wantErr: ErrInvalid, wantKeys: []string{"k", "t/1", "t/2", "tx"}, wantIndex: 12,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := seed(t)
			_, before, _ := s.KVGet(nil, "k")
			e := tt.entry
			err := s.KVApply(20, tt.op, &e)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("KVApply = %v, want %v", err, tt.wantErr)
			}
			if got := stKeys(t, s, ""); !reflect.DeepEqual(got, tt.wantKeys) {
				t.Errorf("keys = %q, want %q", got, tt.wantKeys)
			}
			idx, after, _ := s.KVGet(nil, "k")
			if idx != tt.wantIndex {
				t.Errorf("KV index = %d, want %d", idx, tt.wantIndex)
			}
			if tt.wantErr != nil && !reflect.DeepEqual(before, after) {
				t.Errorf("failed op changed k: %+v -> %+v", before, after)
			}
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

func TestStoreEnsureServiceReplacesChecks(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	web := &Instance{Node: "n1", ID: "web1", Service: "web", Tags: []string{"v1"}, Port: 80}
	stMust(t, s.EnsureService(2, web, []*Check{
		{CheckID: "c1", Name: "http", Definition: CheckDefinition{HTTP: "http://x/health", Interval: time.Second}},
		{CheckID: "c2", Name: "tcp", Definition: CheckDefinition{TCP: "x:80", Interval: time.Second}},
	}))
	// Another service's check and a node check on the same node must
	// survive web's re-registration.
	stMust(t, s.EnsureService(3, &Instance{Node: "n1", ID: "db1", Service: "db"}, []*Check{{CheckID: "d1", Status: HealthPassing}}))
	stMust(t, s.EnsureCheck(4, &Check{Node: "n1", CheckID: "serf", Status: HealthPassing}))
	stMust(t, s.UpdateCheck(5, "n1", "c1", HealthPassing, "200 OK"))

	web2 := *web
	web2.Tags = []string{"v2"}
	stMust(t, s.EnsureService(6, &web2, []*Check{
		{CheckID: "c1", Name: "http", Definition: CheckDefinition{HTTP: "http://x/health", Interval: time.Second}},
		{CheckID: "c3", Name: "ttl", Definition: CheckDefinition{TTL: time.Minute}},
	}))

	_, checks, err := s.NodeChecks(nil, "n1")
	stMust(t, err)
	type row struct {
		ID, Status, Output, ServiceID, ServiceName string
		Tags                                       []string
		Create                                     uint64
	}
	var got []row
	for _, c := range checks {
		got = append(got, row{c.CheckID, c.Status, c.Output, c.ServiceID, c.ServiceName, c.ServiceTags, c.CreateIndex})
	}
	want := []row{
		{"c1", HealthPassing, "200 OK", "web1", "web", []string{"v2"}, 2}, // kept its status and output, took new tags
		{"c3", HealthCritical, "", "web1", "web", []string{"v2"}, 6},      // new checks start critical
		{"d1", HealthPassing, "", "db1", "db", nil, 3},
		{"serf", HealthPassing, "", "", "", nil, 4},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("checks after re-registration:\n got %+v\nwant %+v", got, want)
	}

	_, inst, _ := s.Instance(nil, "n1", "web1")
	if inst.CreateIndex != 2 || inst.ModifyIndex != 6 || !reflect.DeepEqual(inst.Tags, []string{"v2"}) {
		t.Errorf("instance = %+v, want created 2, modified 6, tags [v2]", inst)
	}

	// Re-registering with no checks drops all of web's checks.
	stMust(t, s.EnsureService(7, &web2, nil))
	_, checks, _ = s.NodeChecks(nil, "n1")
	var ids []string
	for _, c := range checks {
		ids = append(ids, c.CheckID)
	}
	if want := []string{"d1", "serf"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("checks after registering without checks = %q, want %q", ids, want)
	}
	if idx, _, _ := s.ChecksInState(nil, HealthAny); idx != 7 {
		t.Errorf("checks index = %d, want 7", idx)
	}
}

func TestStoreRegistrationsOnUnknownTargets(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	stMust(t, s.EnsureService(2, &Instance{Node: "n1", ID: "web1", Service: "web"}, nil))
	tests := []struct {
		name string
		op   func() error
	}{
		{"service on unknown node", func() error {
			return s.EnsureService(10, &Instance{Node: "ghost", ID: "web1", Service: "web"}, nil)
		}},
		{"check on unknown service", func() error {
			return s.EnsureCheck(10, &Check{Node: "n1", CheckID: "c", ServiceID: "nope"})
		}},
		{"check on unknown node's service", func() error {
			return s.EnsureCheck(10, &Check{Node: "ghost", CheckID: "c", ServiceID: "web1"})
		}},
		{"update of unknown check", func() error {
			return s.UpdateCheck(10, "n1", "nope", HealthPassing, "")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			last := s.LastIndex()
			if err := tt.op(); !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if got := s.LastIndex(); got != last {
				t.Errorf("LastIndex moved from %d to %d on a failed write", last, got)
			}
		})
	}
	if _, insts, _ := s.NodeInstances(nil, "ghost"); len(insts) != 0 {
		t.Errorf("ghost has instances: %+v", insts)
	}
}

func TestStoreCheckServiceNodes(t *testing.T) {
	s := NewStore()
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	// n1: web-a (passing), web-b (warning check)
	// n2: web-c (passing) but a critical node check
	// n3: web-d (critical check), web-e with no checks and tags [Prod, Blue]
	for _, n := range []string{"n1", "n2", "n3"} {
		stNode(t, s, next(), n)
	}
	reg := func(node, id string, tags []string, statuses ...string) {
		var checks []*Check
		for i, st := range statuses {
			checks = append(checks, &Check{CheckID: id + "-chk" + string(rune('0'+i)), Status: st})
		}
		stMust(t, s.EnsureService(next(), &Instance{Node: node, ID: id, Service: "web", Tags: tags}, checks))
	}
	reg("n1", "web-a", []string{"prod"}, HealthPassing, HealthPassing)
	reg("n1", "web-b", []string{"prod", "blue"}, HealthPassing, HealthWarning)
	reg("n2", "web-c", []string{"PROD"}, HealthPassing)
	reg("n3", "web-d", []string{"blue"}, HealthCritical)
	reg("n3", "web-e", []string{"Prod", "Blue"})
	stMust(t, s.EnsureService(next(), &Instance{Node: "n1", ID: "db", Service: "db"}, []*Check{{CheckID: "db-chk", Status: HealthCritical}}))
	stMust(t, s.EnsureCheck(next(), &Check{Node: "n2", CheckID: "serf", Status: HealthCritical}))
	stMust(t, s.EnsureCheck(next(), &Check{Node: "n1", CheckID: "serf", Status: HealthPassing}))
	last := idx

	tests := []struct {
		name        string
		service     string
		tags        []string
		passingOnly bool
		want        map[string][]string // instance ID -> its check IDs
	}{
		{"all", "web", nil, false, map[string][]string{
			"web-a": {"serf", "web-a-chk0", "web-a-chk1"},
			"web-b": {"serf", "web-b-chk0", "web-b-chk1"},
			"web-c": {"serf", "web-c-chk0"},
			"web-d": {"web-d-chk0"},
			"web-e": nil,
		}},
		{"passing only drops warning, critical and critical node checks", "web", nil, true, map[string][]string{
			"web-a": {"serf", "web-a-chk0", "web-a-chk1"},
			"web-e": nil,
		}},
		{"tag is case-insensitive", "web", []string{"prod"}, false, map[string][]string{
			"web-a": {"serf", "web-a-chk0", "web-a-chk1"},
			"web-b": {"serf", "web-b-chk0", "web-b-chk1"},
			"web-c": {"serf", "web-c-chk0"},
			"web-e": nil,
		}},
		{"all tags required", "web", []string{"PROD", "blue"}, false, map[string][]string{
			"web-b": {"serf", "web-b-chk0", "web-b-chk1"},
			"web-e": nil,
		}},
		{"tags and passing", "web", []string{"prod", "BLUE"}, true, map[string][]string{
			"web-e": nil,
		}},
		{"service name is case-insensitive", "WEB", []string{"blue"}, false, map[string][]string{
			"web-b": {"serf", "web-b-chk0", "web-b-chk1"},
			"web-d": {"web-d-chk0"},
			"web-e": nil,
		}},
		{"other service", "db", nil, false, map[string][]string{"db": {"db-chk", "serf"}}},
		{"unknown service", "nope", nil, false, map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotIdx, entries, err := s.CheckServiceNodes(nil, tt.service, tt.tags, tt.passingOnly)
			stMust(t, err)
			if gotIdx != last {
				t.Errorf("index = %d, want %d", gotIdx, last)
			}
			got := map[string][]string{}
			for _, e := range entries {
				if e.Node == nil || e.Node.Name != e.Instance.Node {
					t.Errorf("%s: node = %+v, want %s", e.Instance.ID, e.Node, e.Instance.Node)
				}
				var ids []string
				for _, c := range e.Checks {
					if c.Node != e.Instance.Node || (c.ServiceID != "" && c.ServiceID != e.Instance.ID) {
						t.Errorf("%s carries foreign check %+v", e.Instance.ID, c)
					}
					ids = append(ids, c.CheckID)
				}
				sort.Strings(ids)
				got[e.Instance.ID] = ids
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// A node check bears on every instance of the node: a blocked health query
// for passing instances must wake when it changes, and the instance must
// then show up.
func TestStoreCheckServiceNodesWatchesNodeChecks(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	stMust(t, s.EnsureService(2, &Instance{Node: "n1", ID: "web", Service: "web"}, []*Check{{CheckID: "w", Status: HealthPassing}}))
	stMust(t, s.EnsureCheck(3, &Check{Node: "n1", CheckID: "serf", Status: HealthCritical}))

	var entries []ServiceEntry
	query := func(ws memdb.WatchSet) (uint64, error) {
		idx, es, err := s.CheckServiceNodes(ws, "web", nil, true)
		entries = es
		return idx, err
	}
	stMust(t, s.Blocking(context.Background(), 0, query))
	if len(entries) != 0 {
		t.Fatalf("critical node check: got %d passing entries, want 0", len(entries))
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		if err := s.UpdateCheck(4, "n1", "serf", HealthPassing, ""); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	stMust(t, s.Blocking(ctx, 3, query))
	if took := time.Since(start); took >= 900*time.Millisecond {
		t.Errorf("blocked query woke after %v: node check change not watched", took)
	}
	if len(entries) != 1 || entries[0].Instance.ID != "web" {
		t.Errorf("after node check passes: entries = %+v, want web", entries)
	}
}

func TestStoreDeleteBumpsIndex(t *testing.T) {
	tests := []struct {
		name string
		// setup writes at indexes 1..9, del deletes at 10, read reads the
		// deleted object and returns (index, found).
		setup func(t *testing.T, s *Store)
		del   func(s *Store) error
		read  func(s *Store) (uint64, bool)
	}{
		{
			"kv delete",
			func(t *testing.T, s *Store) { stKVSet(t, s, 5, "k"); stKVSet(t, s, 6, "other") },
			func(s *Store) error { return s.KVApply(10, KVDelete, &KVEntry{Key: "k"}) },
			func(s *Store) (uint64, bool) { i, e, _ := s.KVGet(nil, "k"); return i, e != nil },
		},
		{
			"kv delete-tree",
			func(t *testing.T, s *Store) { stKVSet(t, s, 5, "d/k") },
			func(s *Store) error { return s.KVApply(10, KVDeleteTree, &KVEntry{Key: "d/"}) },
			func(s *Store) (uint64, bool) { i, e, _ := s.KVList(nil, "d/"); return i, len(e) > 0 },
		},
		{
			"service delete",
			func(t *testing.T, s *Store) {
				stNode(t, s, 1, "n1")
				stMust(t, s.EnsureService(5, &Instance{Node: "n1", ID: "w", Service: "web"}, []*Check{{CheckID: "c"}}))
			},
			func(s *Store) error { return s.DeleteService(10, "n1", "w") },
			func(s *Store) (uint64, bool) { i, e, _ := s.Instance(nil, "n1", "w"); return i, e != nil },
		},
		{
			"check delete",
			func(t *testing.T, s *Store) {
				stNode(t, s, 1, "n1")
				stMust(t, s.EnsureCheck(5, &Check{Node: "n1", CheckID: "c"}))
			},
			func(s *Store) error { return s.DeleteCheck(10, "n1", "c") },
			func(s *Store) (uint64, bool) { i, e, _ := s.Check(nil, "n1", "c"); return i, e != nil },
		},
		{
			"node delete",
			func(t *testing.T, s *Store) { stNode(t, s, 5, "n1") },
			func(s *Store) error { return s.DeleteNode(10, "n1") },
			func(s *Store) (uint64, bool) { i, n, _, _ := s.Node(nil, "n1"); return i, n != nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore()
			tt.setup(t, s)
			before, found := tt.read(s)
			if !found || before >= 10 {
				t.Fatalf("before delete: index %d, found %v", before, found)
			}
			stMust(t, tt.del(s))
			after, found := tt.read(s)
			if found {
				t.Error("still there after delete")
			}
			if after != 10 {
				t.Errorf("index after delete = %d, want 10", after)
			}
			if s.LastIndex() != 10 {
				t.Errorf("LastIndex = %d, want 10", s.LastIndex())
			}
		})
	}
}

func TestStoreDeleteNode(t *testing.T) {
	s := NewStore()
	for i, n := range []string{"n1", "n2"} {
		stNode(t, s, uint64(i+1), n)
	}
	for i, n := range []string{"n1", "n2"} {
		stMust(t, s.EnsureService(uint64(3+i), &Instance{Node: n, ID: "web", Service: "web"}, []*Check{{CheckID: "web-chk", Status: HealthPassing}}))
		stMust(t, s.EnsureCheck(uint64(5+i), &Check{Node: n, CheckID: "serf", Status: HealthPassing}))
	}
	stMust(t, s.DeleteNode(10, "n1"))

	tests := []struct {
		name string
		got  func() any
		want any
	}{
		{"node gone", func() any { _, n, _, _ := s.Node(nil, "n1"); return n == nil }, true},
		{"instances gone", func() any { _, i, _ := s.NodeInstances(nil, "n1"); return len(i) }, 0},
		{"checks gone", func() any { _, c, _ := s.NodeChecks(nil, "n1"); return len(c) }, 0},
		{"service lists only n2", func() any {
			_, es, _ := s.CheckServiceNodes(nil, "web", nil, false)
			var nodes []string
			for _, e := range es {
				nodes = append(nodes, e.Instance.Node)
			}
			return nodes
		}, []string{"n2"}},
		{"n2 checks kept", func() any { _, c, _ := s.NodeChecks(nil, "n2"); return len(c) }, 2},
		{"all checks", func() any { _, c, _ := s.ChecksInState(nil, HealthAny); return len(c) }, 2},
		{"nodes index", func() any { i, _, _ := s.Nodes(nil); return i }, uint64(10)},
		{"instances index", func() any { i, _, _ := s.NodeInstances(nil, "n2"); return i }, uint64(10)},
		{"checks index", func() any { i, _, _ := s.NodeChecks(nil, "n2"); return i }, uint64(10)},
		{"deleting an unknown node is a no-op", func() any {
			if err := s.DeleteNode(11, "ghost"); err != nil {
				return err
			}
			return s.LastIndex()
		}, uint64(10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.got(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStoreBlocking(t *testing.T) {
	kvQuery := func(s *Store, key string, seen *uint64) func(memdb.WatchSet) (uint64, error) {
		return func(ws memdb.WatchSet) (uint64, error) {
			idx, _, err := s.KVGet(ws, key)
			*seen = idx
			return idx, err
		}
	}
	tests := []struct {
		name     string
		key      string // the key the query watches ("k" when empty)
		minIndex func(s *Store) uint64
		write    func(s *Store) error // run after a short delay, if set
		timeout  time.Duration
		// The call must return within maxWait, no sooner than minWait, with
		// the query's last index at wantIndex.
		minWait, maxWait time.Duration
		wantIndex        uint64
	}{
		{
			name:     "minIndex 0 returns at once",
			minIndex: func(*Store) uint64 { return 0 },
			timeout:  5 * time.Second, maxWait: 500 * time.Millisecond, wantIndex: 5,
		},
		{
			name:     "index already past minIndex returns at once",
			minIndex: func(*Store) uint64 { return 3 },
			timeout:  5 * time.Second, maxWait: 500 * time.Millisecond, wantIndex: 5,
		},
		{
			name:     "watched key changes",
			minIndex: func(s *Store) uint64 { return s.LastIndex() },
			write:    func(s *Store) error { return s.KVApply(6, KVSet, &KVEntry{Key: "k", Value: []byte("new")}) },
			timeout:  5 * time.Second, maxWait: time.Second, wantIndex: 6,
		},
		{
			name:     "watched key deleted",
			minIndex: func(s *Store) uint64 { return s.LastIndex() },
			write:    func(s *Store) error { return s.KVApply(6, KVDelete, &KVEntry{Key: "k"}) },
			timeout:  5 * time.Second, maxWait: time.Second, wantIndex: 6,
		},
		{
			name:     "absent key created",
			key:      "k2",
			minIndex: func(s *Store) uint64 { return s.LastIndex() },
			write:    func(s *Store) error { return s.KVApply(6, KVSet, &KVEntry{Key: "k2"}) },
			timeout:  5 * time.Second, maxWait: time.Second, wantIndex: 6,
		},
		{
			name:     "nothing changes: returns at the deadline",
			minIndex: func(s *Store) uint64 { return s.LastIndex() },
			timeout:  200 * time.Millisecond, minWait: 150 * time.Millisecond, maxWait: time.Second, wantIndex: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore()
			stKVSet(t, s, 5, "k")
			key := tt.key
			if key == "" {
				key = "k"
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			if tt.write != nil {
				go func() {
					time.Sleep(50 * time.Millisecond)
					if err := tt.write(s); err != nil {
						t.Error(err)
					}
				}()
			}
			var seen uint64
			start := time.Now()
			err := s.Blocking(ctx, tt.minIndex(s), kvQuery(s, key, &seen))
			took := time.Since(start)
			stMust(t, err)
			if took > tt.maxWait || took < tt.minWait {
				t.Errorf("returned after %v, want between %v and %v", took, tt.minWait, tt.maxWait)
			}
			if seen != tt.wantIndex {
				t.Errorf("last query index = %d, want %d", seen, tt.wantIndex)
			}
		})
	}
}

func TestStoreBlockingQueryError(t *testing.T) {
	s := NewStore()
	stKVSet(t, s, 5, "k")
	boom := errors.New("boom")
	err := s.Blocking(context.Background(), 5, func(memdb.WatchSet) (uint64, error) { return 5, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestStoreRestoreWakesBlockedReader(t *testing.T) {
	src := NewStore()
	stKVSet(t, src, 9, "k")
	dst := NewStore()
	stKVSet(t, dst, 5, "k")

	calls := make(chan uint64, 10)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		done <- dst.Blocking(ctx, 5, func(ws memdb.WatchSet) (uint64, error) {
			idx, _, err := dst.KVGet(ws, "k")
			calls <- idx
			return idx, err
		})
	}()
	if got := <-calls; got != 5 {
		t.Fatalf("first read index = %d, want 5", got)
	}
	r := dst.NewRestorer()
	stMust(t, src.Snapshot().Walk(r.Add))
	r.Commit()
	select {
	case err := <-done:
		stMust(t, err)
	case <-time.After(time.Second):
		t.Fatal("blocked reader not woken by restore")
	}
	if got := <-calls; got != 9 {
		t.Errorf("read after restore index = %d, want 9", got)
	}
}

// TestStoreCheckServiceNodesConsistentRead: an instance and its checks come
// from one moment, so a deleted instance never shows up passing.
func TestStoreCheckServiceNodesConsistentRead(t *testing.T) {
	s := NewStore()
	stNode(t, s, 1, "n1")
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for idx := uint64(2); ; idx += 2 {
			select {
			case <-stop:
				return
			default:
			}
			_ = s.EnsureService(idx, &Instance{Node: "n1", ID: "web", Service: "web"}, []*Check{{CheckID: "c", Status: HealthCritical}})
			_ = s.DeleteService(idx+1, "n1", "web")
		}
	}()
	defer func() { close(stop); <-done }()
	for n, deadline := 0, time.Now().Add(time.Second); time.Now().Before(deadline); n++ {
		idx, entries, err := s.CheckServiceNodes(nil, "web", nil, true)
		stMust(t, err)
		if len(entries) > 0 {
			t.Fatalf("read %d: index %d lists %s as passing with checks %v", n, idx, entries[0].Instance.ID, entries[0].Checks)
		}
	}
}

func TestStoreNodeCheckOnUnknownNode(t *testing.T) {
	s := NewStore()
	if err := s.EnsureCheck(1, &Check{Node: "ghost", CheckID: "serf", Status: HealthPassing}); !errors.Is(err, ErrNotFound) {
		t.Errorf("EnsureCheck on unknown node = %v, want ErrNotFound", err)
	}
}
