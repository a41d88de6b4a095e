package raft

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fastSessions makes the leader end a session after ttl/div instead of
// twice its TTL, so tests need not wait 20 s for the shortest one.
func fastSessions(t *testing.T, div time.Duration) {
	old := sessionPeriod
	sessionPeriod = func(ttl time.Duration) time.Duration { return ttl / div }
	t.Cleanup(func() { sessionPeriod = old })
}

func mustApply(t *testing.T, w interface {
	Apply(context.Context, discovery.Command) (uint64, error)
}, cmd discovery.Command) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idx, err := w.Apply(ctx, cmd)
	if err != nil {
		t.Fatalf("applying %T: %v", cmd, err)
	}
	return idx
}

func createSession(id, node string, ttl time.Duration) discovery.SessionRequest {
	return discovery.SessionRequest{Op: discovery.SessionCreate, Session: discovery.Session{
		ID: id, Node: node, Behavior: discovery.SessionRelease, TTL: ttl}}
}

func lockTxn(key, session string) discovery.TxnRequest {
	return discovery.TxnRequest{Ops: []discovery.TxnKVOp{{Verb: discovery.TxnKVLock, Key: key, Value: []byte(session), Session: session}}}
}

// The FSM measures lock-delays on each entry's AppendedAt, so two
// servers that apply the same log agree, whatever their own clocks say;
// and a snapshot carries sessions and lock-delays to a restored server.
func TestFSMSessionsFollowEntryTime(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	logAt := func(idx uint64, cmd discovery.Command, at time.Time) *hraft.Log {
		l := commandLog(t, idx, cmd)
		l.AppendedAt = at
		return l
	}
	logs := []*hraft.Log{
		logAt(1, discovery.RegisterNodeRequest{Node: discovery.Node{Name: "n1"}}, t0),
		logAt(2, discovery.SessionRequest{Op: discovery.SessionCreate, Session: discovery.Session{
			ID: "a", Node: "n1", Behavior: discovery.SessionRelease, LockDelay: 5 * time.Second}}, t0),
		logAt(3, discovery.SessionRequest{Op: discovery.SessionCreate, Session: discovery.Session{
			ID: "b", Node: "n1", Behavior: discovery.SessionDelete, TTL: time.Minute}}, t0),
		logAt(4, lockTxn("k", "a"), t0),
		logAt(5, discovery.SessionRequest{Op: discovery.SessionDestroy, Session: discovery.Session{ID: "a"}}, t0.Add(time.Second)),
		// Within a's lock-delay by the entry's time: refused.
		logAt(6, lockTxn("k", "b"), t0.Add(5999*time.Millisecond)),
	}
	var fsms []*fsm
	for range 2 {
		f := newTestFSM(t)
		for _, l := range logs {
			f.Apply(l)
		}
		fsms = append(fsms, f)
	}
	if r, ok := fsms[0].Apply(logAt(7, lockTxn("k", "b"), t0.Add(6*time.Second))).(*discovery.TxnResult); !ok || len(r.Errors) > 0 {
		t.Fatalf("lock once the lock-delay is over: %+v", r)
	}
	if r, ok := fsms[1].Apply(logAt(7, lockTxn("k", "b"), t0.Add(5999*time.Millisecond))).(*discovery.TxnResult); !ok || len(r.Errors) != 1 {
		t.Fatalf("lock within the lock-delay: %+v; want refused", r)
	}
	for _, f := range fsms[:1] {
		if _, e, _ := f.store.KVGet(nil, "k"); e == nil || e.Session != "b" || e.LockIndex != 2 {
			t.Fatalf("k = %+v; want held by b, LockIndex 2", e)
		}
	}

	// Snapshot and restore: sessions and lock-delays come back, and the
	// restored server decides the next acquire as the source does.
	f := fsms[1]
	dst := newTestFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(persist(t, f.store)))); err != nil {
		t.Fatal(err)
	}
	if got, want := records(t, dst.store), records(t, f.store); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored records differ:\n got %+v\nwant %+v", got, want)
	}
	_, sess, _ := dst.store.Session(nil, "b")
	if sess == nil || sess.TTL != time.Minute || sess.Behavior != discovery.SessionDelete || dst.store.LockDelayUntil("k") != t0.Add(6*time.Second).UnixMilli() {
		t.Fatalf("restored session b %+v, lock-delay %d", sess, dst.store.LockDelayUntil("k"))
	}
	for _, g := range []*fsm{f, dst} {
		r, _ := g.Apply(logAt(8, lockTxn("k", "b"), t0.Add(5999*time.Millisecond))).(*discovery.TxnResult)
		if r == nil || len(r.Errors) != 1 {
			t.Fatalf("acquire within the lock-delay after restore: %+v; want refused", r)
		}
	}
}

// The leader ends a session that is not renewed, through raft, and
// releases its keys; a renewal keeps it alive.
func TestSessionTTLOnLeader(t *testing.T) {
	fastSessions(t, 10) // a 10 s TTL ends after 1 s
	s := clusterLeader(t)
	mustApply(t, s, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "n1-id", Name: "n1", Address: "127.0.0.1"}})
	mustApply(t, s, createSession("short", "n1", 10*time.Second))
	mustApply(t, s, createSession("renewed", "n1", 30*time.Second)) // 3 s
	mustApply(t, s, createSession("forever", "n1", 0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, r, err := s.ApplyTxn(ctx, lockTxn("lock", "short")); err != nil || len(r.Errors) > 0 {
		t.Fatalf("locking with session short: %v %+v", err, r)
	}
	created := time.Now()
	stop := make(chan struct{})
	renewed := make(chan error, 1)
	go func() {
		for {
			if sess, err := s.RenewSession(ctx, "renewed"); err != nil || sess == nil {
				renewed <- err
				return
			}
			select {
			case <-stop:
				renewed <- nil
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	testkit.WaitFor(t, 10*time.Second, "session short ended by the leader", func() bool {
		_, sess, _ := s.store.Session(nil, "short")
		return sess == nil
	})
	if _, e, _ := s.store.KVGet(nil, "lock"); e == nil || e.Session != "" {
		t.Errorf("the expired session's key = %+v; want released", e)
	}
	// Renewed every 100 ms for more than two of its 3 s periods: alive.
	testkit.WaitFor(t, 20*time.Second, "two periods of renewals", func() bool { return time.Since(created) > 7*time.Second })
	close(stop)
	if err := <-renewed; err != nil {
		t.Fatalf("renewing: %v", err)
	}
	for _, id := range []string{"renewed", "forever"} {
		if _, sess, _ := s.store.Session(nil, id); sess == nil {
			t.Errorf("session %s ended; want it alive", id)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "session renewed ended once renewals stopped", func() bool {
		_, sess, _ := s.store.Session(nil, "renewed")
		return sess == nil
	})
	if sess, err := s.RenewSession(ctx, "renewed"); err != nil || sess != nil {
		t.Errorf("renewing an ended session = %+v, %v; want nil, nil", sess, err)
	}
}

// A new leader rebuilds the timers from the catalog: a session whose
// leader died still ends.
func TestSessionTTLSurvivesLeaderChange(t *testing.T) {
	fastSessions(t, 5) // a 10 s TTL ends after 2 s
	c := newTestCluster(t, 3, StreamConfig{})
	old := c.leader()
	mustApply(t, old, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "app-id", Name: "app", Address: "127.0.0.1"}})
	mustApply(t, old, createSession("s", "app", 10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, r, err := old.ApplyTxn(ctx, lockTxn("leader", "s")); err != nil || len(r.Errors) > 0 {
		t.Fatalf("locking: %v %+v", err, r)
	}
	for _, f := range c.followers() {
		testkit.WaitFor(t, 10*time.Second, "followers hold the lock", func() bool {
			_, e, _ := f.store.KVGet(nil, "leader")
			return e != nil && e.Session == "s"
		})
	}
	old.Close()
	nl := c.leader()
	testkit.WaitFor(t, 20*time.Second, "the new leader ends the session", func() bool {
		_, sess, _ := nl.store.Session(nil, "s")
		_, e, _ := nl.store.KVGet(nil, "leader")
		return sess == nil && e != nil && e.Session == ""
	})
}

// A client forwards sessions, transactions, renewals and the reads its
// replica cannot serve to the leader.
func TestClientSessionsTxnAndReads(t *testing.T) {
	s := clusterLeader(t)
	c := joinClient(t, s, "web-01")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mustApply(t, c, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "web-01-id", Name: "web-01", Address: "127.0.0.1"}})
	// A session write does not wait for the replica, which never holds it.
	mustApply(t, c, createSession("s1", "web-01", 0))
	if _, sess, _ := c.Replica().Store().Session(nil, "s1"); sess != nil {
		t.Fatal("the client's replica holds a session")
	}
	idx, r, err := c.ApplyTxn(ctx, lockTxn("job", "s1"))
	if err != nil || len(r.Errors) > 0 || len(r.Results) != 1 || r.Results[0].Session != "s1" || r.Results[0].ModifyIndex != idx {
		t.Fatalf("ApplyTxn lock = %d %+v %v; want the locked key at its index", idx, r, err)
	}
	// A failed transaction comes back with its errors, not as an error.
	_, r, err = c.ApplyTxn(ctx, discovery.TxnRequest{Ops: []discovery.TxnKVOp{
		{Verb: discovery.TxnKVSet, Key: "other", Value: []byte("x")},
		{Verb: discovery.TxnKVCheckIndex, Key: "job", Index: idx + 100},
	}})
	if err != nil || len(r.Errors) != 1 || r.Errors[0].OpIndex != 1 || r.Results != nil {
		t.Fatalf("failing ApplyTxn = %+v, %v; want op 1's error", r, err)
	}
	res, err := c.KVRead(ctx, discovery.KVQuery{Op: "get", Key: "job"})
	if err != nil || len(res.Entries) != 1 || res.Entries[0].Session != "s1" || res.Index < idx {
		t.Fatalf("KVRead job = %+v, %v", res, err)
	}
	if res, err := c.KVRead(ctx, discovery.KVQuery{Op: "session-node", Key: "web-01", Consistent: true}); err != nil || len(res.Sessions) != 1 || res.Sessions[0].ID != "s1" {
		t.Fatalf("consistent KVRead of web-01's sessions = %+v, %v", res, err)
	}
	if res, err := c.KVRead(ctx, discovery.KVQuery{Op: "session-info", Key: "nope"}); err != nil || len(res.Sessions) != 0 {
		t.Fatalf("KVRead of an unknown session = %+v, %v", res, err)
	}
	if sess, err := c.RenewSession(ctx, "s1"); err != nil || sess == nil || sess.ID != "s1" {
		t.Fatalf("RenewSession through the client = %+v, %v", sess, err)
	}

	// A blocking read wakes when the key changes.
	got := make(chan discovery.KVResult, 1)
	go func() {
		res, err := c.KVRead(ctx, discovery.KVQuery{Op: "get", Key: "job", MinIndex: res.Index, Wait: time.Minute})
		if err != nil {
			t.Errorf("blocking KVRead: %v", err)
		}
		got <- res
	}()
	destroyed := mustApply(t, c, discovery.SessionRequest{Op: discovery.SessionDestroy, Session: discovery.Session{ID: "s1"}})
	select {
	case res := <-got:
		if res.Index < destroyed || len(res.Entries) != 1 || res.Entries[0].Session != "" {
			t.Fatalf("blocking read after the destroy = %+v; want job released at %d", res, destroyed)
		}
	case <-ctx.Done():
		t.Fatal("the blocking read did not wake")
	}

	// Txn carries transactions only.
	buf, err := encodeCommand(discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: "k"}})
	if err != nil {
		t.Fatal(err)
	}
	var resp TxnForwardResponse
	err = c.leaderCall(ctx, "Txn", &TxnForwardRequest{Command: buf}, &resp, false)
	if err == nil || !strings.Contains(err.Error(), "only a transaction") {
		t.Errorf("Txn with a KV command: %v; want refused", err)
	}
	if _, err := s.rpcTxn(context.Background(), &TxnForwardRequest{Command: buf}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Txn without a certificate: %v; want Unauthenticated", err)
	}
	if _, err := s.rpcSessionRenew(context.Background(), &SessionRenewRequest{ID: "s1"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("SessionRenew without a certificate: %v; want Unauthenticated", err)
	}
}

// With ACLs on, the leader authorizes a client's forwarded transaction
// and renewal with the request's token, whatever the client checked.
func TestClientSessionsACL(t *testing.T) {
	s := clusterLeader(t)
	r, err := acl.NewResolver(acl.ResolverConfig{Store: s.store, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, discovery.ACLPolicySetRequest{Policy: acl.Policy{ID: "p1", Name: "locks",
		Rules: `session "web-01" { policy = "write" }
key_prefix "locks/" { policy = "write" }`}})
	mustApply(t, s, discovery.ACLTokenSetRequest{Token: acl.Token{AccessorID: "a1", SecretID: "locks-secret", Policies: []acl.Link{{ID: "p1"}}}})
	c := joinClient(t, s, "web-01")
	mustApply(t, s, createSession("s1", "web-01", 0))
	s.SetACL(r)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	withTok := discovery.WithToken(ctx, "locks-secret")
	if _, _, err := c.ApplyTxn(ctx, lockTxn("locks/a", "s1")); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("a transaction forwarded without a token: %v; want Permission denied", err)
	}
	if _, _, err := c.ApplyTxn(withTok, lockTxn("other/a", "s1")); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("a transaction on a key the token may not write: %v; want Permission denied", err)
	}
	if _, r, err := c.ApplyTxn(withTok, lockTxn("locks/a", "s1")); err != nil || len(r.Errors) > 0 {
		t.Errorf("a transaction the token allows: %+v, %v", r, err)
	}
	if _, err := c.RenewSession(ctx, "s1"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("a renewal without a token: %v; want Permission denied", err)
	}
	if sess, err := c.RenewSession(withTok, "s1"); err != nil || sess == nil {
		t.Errorf("a renewal with the token: %+v, %v", sess, err)
	}
	// A session read keeps what session:read allows.
	if res, err := c.KVRead(ctx, discovery.KVQuery{Op: "session-list"}); err != nil || len(res.Sessions) != 0 || !res.Filtered {
		t.Errorf("session-list without a token = %+v, %v; want none, filtered", res, err)
	}
	if res, err := c.KVRead(ctx, discovery.KVQuery{Op: "session-info", Key: "s1", Token: "locks-secret"}); err != nil || len(res.Sessions) != 1 || res.Filtered {
		t.Errorf("session-info with the token = %+v, %v; want s1", res, err)
	}
}
