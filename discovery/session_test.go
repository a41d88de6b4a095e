package discovery

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Helpers here carry an "ss" prefix (see store_test.go).

// ssCatalog is a node n1 with a passing node check, a service web with a
// passing check and a critical check.
func ssCatalog(t *testing.T) *Store {
	t.Helper()
	s := NewStore()
	stNode(t, s, 1, "n1")
	stMust(t, s.EnsureCheck(2, &Check{Node: "n1", CheckID: NodeLivenessCheckID, Status: HealthPassing}))
	stMust(t, s.EnsureService(3, &Instance{Node: "n1", ID: "web1", Service: "web"}, []*Check{
		{CheckID: "web1-ok", Status: HealthPassing},
		{CheckID: "web1-bad", Status: HealthCritical},
	}))
	return s
}

func ssSession(id string, mods ...func(*Session)) *Session {
	s := &Session{ID: id, Node: "n1", NodeChecks: []string{NodeLivenessCheckID}, Behavior: SessionRelease, LockDelay: 10 * time.Second}
	for _, m := range mods {
		m(s)
	}
	return s
}

func ssTxn(t *testing.T, s *Store, idx uint64, ops ...TxnKVOp) *TxnResult {
	t.Helper()
	return s.Txn(idx, &TxnRequest{Ops: ops})
}

func ssGet(t *testing.T, s *Store, key string) *KVEntry {
	t.Helper()
	_, e, err := s.KVGet(nil, key)
	stMust(t, err)
	return e
}

func TestSessionCreateValidates(t *testing.T) {
	tests := []struct {
		name string
		sess *Session
		want string // "" when it is created
	}{
		{"serfHealth is the node check", ssSession("a"), ""},
		{"the node check by its older name", ssSession("a", func(s *Session) { s.NodeChecks = []string{LegacyNodeLivenessCheckID} }), ""},
		{"no checks", ssSession("a", func(s *Session) { s.NodeChecks = nil }), ""},
		{"service check", ssSession("a", func(s *Session) { s.ServiceChecks = []string{"web1-ok"} }), ""},
		{"unknown node", ssSession("a", func(s *Session) { s.Node = "n9" }), `Node: node "n9" is not registered`},
		{"unknown check", ssSession("a", func(s *Session) { s.ServiceChecks = []string{"nope"} }), `check "nope" is not registered on node "n1"`},
		{"critical check", ssSession("a", func(s *Session) { s.NodeChecks = []string{"web1-bad"} }), `check "web1-bad" on node "n1" is critical`},
		{"bad behavior", ssSession("a", func(s *Session) { s.Behavior = "keep" }), `Behavior: "keep"`},
		{"TTL too short", ssSession("a", func(s *Session) { s.TTL = time.Second }), "TTL: 1s is not between 10s and 24h0m0s"},
		{"lock-delay too long", ssSession("a", func(s *Session) { s.LockDelay = time.Hour }), "LockDelay: 1h0m0s"},
		{"no ID", ssSession(""), "ID: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ssCatalog(t)
			err := s.SessionApply(10, SessionCreate, tt.sess)
			_, got, _ := s.Session(nil, "a")
			if tt.want == "" {
				if err != nil || got == nil || got.CreateIndex != 10 {
					t.Fatalf("create = %v, session %+v; want it created at 10", err, got)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create = %v; want ErrInvalid saying %q", err, tt.want)
			}
			if got != nil {
				t.Errorf("a refused session is stored: %+v", got)
			}
		})
	}
	s := ssCatalog(t)
	stMust(t, s.SessionApply(10, SessionCreate, ssSession("a")))
	if err := s.SessionApply(11, SessionCreate, ssSession("a")); !errors.Is(err, ErrInvalid) {
		t.Errorf("creating session a twice: %v; want ErrInvalid", err)
	}
}

func TestSessionLockRules(t *testing.T) {
	s := ssCatalog(t)
	s.SetLogTime(time.UnixMilli(1_000_000))
	stMust(t, s.SessionApply(10, SessionCreate, ssSession("a")))
	stMust(t, s.SessionApply(11, SessionCreate, ssSession("b")))

	lock := func(idx uint64, sess string) *TxnResult {
		return ssTxn(t, s, idx, TxnKVOp{Verb: TxnKVLock, Key: "k", Value: []byte(sess), Session: sess})
	}
	if r := lock(12, "a"); len(r.Errors) > 0 {
		t.Fatalf("a locks a new key: %+v", r.Errors)
	}
	if e := ssGet(t, s, "k"); e.Session != "a" || e.LockIndex != 1 || string(e.Value) != "a" {
		t.Fatalf("after a's lock: %+v", e)
	}
	if r := lock(13, "b"); len(r.Errors) != 1 || r.Errors[0].Kind != TxnConflict || !strings.Contains(r.Errors[0].What, "already held") {
		t.Fatalf("b locks a's key: %+v; want a conflict", r.Errors)
	}
	if r := lock(14, "a"); len(r.Errors) > 0 || ssGet(t, s, "k").LockIndex != 1 {
		t.Fatalf("a locks its own key again: %+v, %+v; want LockIndex still 1", r.Errors, ssGet(t, s, "k"))
	}
	// A plain write keeps the holder.
	stMust(t, s.KVApply(15, KVSet, &KVEntry{Key: "k", Value: []byte("x")}))
	if e := ssGet(t, s, "k"); e.Session != "a" || e.LockIndex != 1 {
		t.Fatalf("after a plain set: %+v; want still held by a", e)
	}
	if r := ssTxn(t, s, 16, TxnKVOp{Verb: TxnKVUnlock, Key: "k", Session: "b"}); len(r.Errors) != 1 {
		t.Fatalf("b unlocks a's key: %+v; want refused", r)
	}
	if r := ssTxn(t, s, 17, TxnKVOp{Verb: TxnKVUnlock, Key: "k", Session: "a", Value: []byte("free")}); len(r.Errors) > 0 {
		t.Fatalf("a unlocks: %+v", r.Errors)
	}
	if e := ssGet(t, s, "k"); e.Session != "" || e.LockIndex != 1 || string(e.Value) != "free" || e.ModifyIndex != 17 {
		t.Fatalf("after a's unlock: %+v", e)
	}
	// An explicit unlock sets no lock-delay: b takes it at once.
	if r := lock(18, "b"); len(r.Errors) > 0 || ssGet(t, s, "k").LockIndex != 2 {
		t.Fatalf("b locks the released key: %+v, %+v; want LockIndex 2", r.Errors, ssGet(t, s, "k"))
	}
	// A session that does not exist is refused as invalid.
	if r := ssTxn(t, s, 19, TxnKVOp{Verb: TxnKVLock, Key: "k2", Session: "ghost"}); len(r.Errors) != 1 || r.Errors[0].Kind != TxnInvalid {
		t.Fatalf("lock with an unknown session: %+v; want invalid", r.Errors)
	}
}

func TestSessionEndReleasesOrDeletesWithLockDelay(t *testing.T) {
	for _, behavior := range []string{SessionRelease, SessionDelete} {
		t.Run(behavior, func(t *testing.T) {
			s := ssCatalog(t)
			t0 := time.UnixMilli(5_000_000)
			s.SetLogTime(t0)
			stMust(t, s.SessionApply(10, SessionCreate, ssSession("a", func(x *Session) { x.Behavior = behavior; x.LockDelay = 3 * time.Second })))
			stMust(t, s.SessionApply(11, SessionCreate, ssSession("b")))
			if r := ssTxn(t, s, 12, TxnKVOp{Verb: TxnKVLock, Key: "k", Value: []byte("v"), Session: "a"}); len(r.Errors) > 0 {
				t.Fatal(r.Errors)
			}
			stMust(t, s.SessionApply(13, SessionDestroy, &Session{ID: "a"}))
			e := ssGet(t, s, "k")
			switch behavior {
			case SessionRelease:
				if e == nil || e.Session != "" || e.ModifyIndex != 13 || string(e.Value) != "v" {
					t.Fatalf("after destroy: %+v; want k kept, unlocked, at 13", e)
				}
			case SessionDelete:
				if e != nil {
					t.Fatalf("after destroy: %+v; want k deleted", e)
				}
			}
			if _, sess, _ := s.Session(nil, "a"); sess != nil {
				t.Fatal("session a is still there")
			}
			if got := s.LockDelayUntil("k"); got != t0.UnixMilli()+3000 {
				t.Fatalf("lock-delay until %d; want %d", got, t0.UnixMilli()+3000)
			}
			s.SetLogTime(t0.Add(2999 * time.Millisecond))
			if r := ssTxn(t, s, 14, TxnKVOp{Verb: TxnKVLock, Key: "k", Session: "b"}); len(r.Errors) != 1 || !strings.Contains(r.Errors[0].What, "lock-delay") {
				t.Fatalf("b locks during the lock-delay: %+v; want refused", r.Errors)
			}
			s.SetLogTime(t0.Add(3 * time.Second))
			if r := ssTxn(t, s, 15, TxnKVOp{Verb: TxnKVLock, Key: "k", Session: "b"}); len(r.Errors) > 0 {
				t.Fatalf("b locks once the lock-delay is over: %+v", r.Errors)
			}
			// Destroying what is gone is not an error.
			stMust(t, s.SessionApply(16, SessionDestroy, &Session{ID: "a"}))
		})
	}
}

// A session ends when a check it names turns critical or goes, or when
// its node goes; sessions on other checks stay.
func TestSessionInvalidation(t *testing.T) {
	tests := []struct {
		name   string
		change func(s *Store) error
		ended  []string
	}{
		{"node check critical", func(s *Store) error {
			return s.UpdateCheck(20, "n1", NodeLivenessCheckID, HealthCritical, "silent")
		}, []string{"node", "legacy"}},
		{"node check warning", func(s *Store) error {
			return s.UpdateCheck(20, "n1", NodeLivenessCheckID, HealthWarning, "")
		}, nil},
		{"service check critical by a new registration", func(s *Store) error {
			return s.EnsureCheck(20, &Check{Node: "n1", CheckID: "web1-ok", ServiceID: "web1", Status: HealthCritical})
		}, []string{"svc"}},
		{"service check deregistered", func(s *Store) error { return s.DeleteCheck(20, "n1", "web1-ok") }, []string{"svc"}},
		{"service dropped the check", func(s *Store) error {
			return s.EnsureService(20, &Instance{Node: "n1", ID: "web1", Service: "web"}, nil)
		}, []string{"svc"}},
		{"service deregistered", func(s *Store) error { return s.DeleteService(20, "n1", "web1") }, []string{"svc"}},
		{"node deregistered", func(s *Store) error { return s.DeleteNode(20, "n1") }, []string{"node", "legacy", "svc", "none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ssCatalog(t)
			stMust(t, s.SessionApply(10, SessionCreate, ssSession("node")))
			stMust(t, s.SessionApply(11, SessionCreate, ssSession("svc", func(x *Session) { x.NodeChecks, x.ServiceChecks = nil, []string{"web1-ok"} })))
			stMust(t, s.SessionApply(12, SessionCreate, ssSession("none", func(x *Session) { x.NodeChecks = nil })))
			stMust(t, s.SessionApply(13, SessionCreate, ssSession("legacy", func(x *Session) { x.NodeChecks = []string{LegacyNodeLivenessCheckID} })))
			for i, id := range []string{"node", "svc", "none", "legacy"} {
				if r := ssTxn(t, s, uint64(14+i), TxnKVOp{Verb: TxnKVLock, Key: "lock/" + id, Session: id}); len(r.Errors) > 0 {
					t.Fatal(r.Errors)
				}
			}
			stMust(t, tt.change(s))
			for _, id := range []string{"node", "svc", "none", "legacy"} {
				want := true
				for _, e := range tt.ended {
					want = want && e != id
				}
				_, sess, _ := s.Session(nil, id)
				held := ssGet(t, s, "lock/"+id).Session == id
				if (sess != nil) != want || held != want {
					t.Errorf("session %s: exists %v, holds its key %v; want %v", id, sess != nil, held, want)
				}
			}
			idx, _, _ := s.Sessions(nil)
			if tt.ended != nil && idx != 20 {
				t.Errorf("sessions index %d; want 20", idx)
			}
			if tt.ended == nil && idx != 13 {
				t.Errorf("sessions index %d; want 13 (nothing ended)", idx)
			}
		})
	}
}

func TestTxnAtomicAndResults(t *testing.T) {
	s := NewStore()
	stKVSet(t, s, 1, "a")
	stKVSet(t, s, 2, "b")
	// One failing operation: nothing applies, every failure is reported.
	r := ssTxn(t, s, 3,
		TxnKVOp{Verb: TxnKVSet, Key: "new", Value: []byte("1")},
		TxnKVOp{Verb: TxnKVDelete, Key: "a"},
		TxnKVOp{Verb: TxnKVCAS, Key: "b", Value: []byte("x"), Index: 99},
		TxnKVOp{Verb: TxnKVCheckNotExists, Key: "b"},
		TxnKVOp{Verb: "frob", Key: "b"},
	)
	wantErrs := []TxnError{
		{OpIndex: 2, What: `failed to set key "b", index is stale (2, not 99)`, Kind: TxnConflict},
		{OpIndex: 3, What: `key "b" exists`, Kind: TxnConflict},
		{OpIndex: 4, What: `unknown KV verb "frob"`, Kind: TxnInvalid},
	}
	if r.Results != nil || !reflect.DeepEqual(r.Errors, wantErrs) {
		t.Fatalf("failed txn = %+v; want no results and errors %+v", r, wantErrs)
	}
	if ssGet(t, s, "new") != nil || ssGet(t, s, "a") == nil || s.LastIndex() != 2 {
		t.Fatalf("a failed txn changed the store (new %v, a %v, index %d)", ssGet(t, s, "new"), ssGet(t, s, "a"), s.LastIndex())
	}

	// All succeed: applied at one index, writes reported without values,
	// reads with them.
	r = ssTxn(t, s, 4,
		TxnKVOp{Verb: TxnKVSet, Key: "new", Value: []byte("1"), Flags: 7},
		TxnKVOp{Verb: TxnKVCheckIndex, Key: "b", Index: 2},
		TxnKVOp{Verb: TxnKVDelete, Key: "a"},
		TxnKVOp{Verb: TxnKVGet, Key: "new"},
		TxnKVOp{Verb: TxnKVGetTree, Key: ""},
	)
	if len(r.Errors) > 0 {
		t.Fatal(r.Errors)
	}
	want := []*KVEntry{
		{Key: "new", Flags: 7, CreateIndex: 4, ModifyIndex: 4},
		{Key: "b", CreateIndex: 2, ModifyIndex: 2},
		{Key: "new", Flags: 7, Value: []byte("1"), CreateIndex: 4, ModifyIndex: 4},
		{Key: "b", Value: []byte("b"), CreateIndex: 2, ModifyIndex: 2},
		{Key: "new", Flags: 7, Value: []byte("1"), CreateIndex: 4, ModifyIndex: 4},
	}
	if !reflect.DeepEqual(r.Results, want) {
		for i, e := range r.Results {
			t.Logf("result %d: %+v", i, e)
		}
		t.Fatalf("results differ from %+v", want)
	}
	if ssGet(t, s, "a") != nil || s.LastIndex() != 4 {
		t.Fatalf("after the txn: a %v, index %d", ssGet(t, s, "a"), s.LastIndex())
	}
}

func TestSessionSnapshotRestoreRebuildsCheckLinks(t *testing.T) {
	src := ssCatalog(t)
	src.SetLogTime(time.UnixMilli(7_000_000))
	stMust(t, src.SessionApply(10, SessionCreate, ssSession("a", func(x *Session) { x.TTL = 30 * time.Second })))
	stMust(t, src.SessionApply(11, SessionCreate, ssSession("b", func(x *Session) { x.LockDelay = 5 * time.Second })))
	if r := ssTxn(t, src, 12, TxnKVOp{Verb: TxnKVLock, Key: "k", Session: "b"}, TxnKVOp{Verb: TxnKVLock, Key: "k2", Session: "a"}); len(r.Errors) > 0 {
		t.Fatal(r.Errors)
	}
	stMust(t, src.SessionApply(13, SessionDestroy, &Session{ID: "b"}))

	dst := NewStore()
	rs := dst.NewRestorer()
	n := map[RecordType]int{}
	stMust(t, src.Snapshot().Walk(func(rt RecordType, rec any) error {
		n[rt]++
		return rs.Add(rt, rec)
	}))
	rs.Commit()
	if n[RecordSession] != 1 || n[RecordLockDelay] != 1 {
		t.Fatalf("snapshot records %v; want one session and one lock-delay", n)
	}
	_, got, _ := dst.Sessions(nil)
	_, want, _ := src.Sessions(nil)
	if !reflect.DeepEqual(got, want) || dst.LockDelayUntil("k") != 7_005_000 || dst.LastIndex() != 13 {
		t.Fatalf("restored sessions %+v, lock-delay %d, index %d; want %+v, 7005000, 13", got, dst.LockDelayUntil("k"), dst.LastIndex(), want)
	}
	// The check links came back: the node check going critical ends a.
	stMust(t, dst.UpdateCheck(14, "n1", NodeLivenessCheckID, HealthCritical, ""))
	if _, sess, _ := dst.Session(nil, "a"); sess != nil || ssGet(t, dst, "k2").Session != "" {
		t.Fatalf("after the node check failed on the restored catalog: session %+v, k2 %+v", sess, ssGet(t, dst, "k2"))
	}
}
