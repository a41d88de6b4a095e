package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestMain fails the package if raft or Server goroutines outlive the tests:
// every Server a test opens must be closed, and Close must stop them all.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitNoRaftGoroutines(3 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func waitNoRaftGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			// A write queued as raft shuts down is never answered
			// (hashicorp/raft#498): applyLocalResp's waiter for it stays
			// blocked, one per such write, by design (server.go).
			if strings.Contains(g, "applyLocalResp.func1") && strings.Contains(g, "deferError") {
				continue
			}
			if strings.Contains(g, "github.com/hashicorp/raft") || strings.Contains(g, "vmesh/raft.(*Server)") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type serverOpts struct {
	trailingLogs uint64
}

func openServer(t *testing.T, dir string, store *discovery.Store, o serverOpts) *Server {
	t.Helper()
	s, err := Open(Config{
		NodeID:       "node-1",
		Addr:         "127.0.0.1:8300",
		DataDir:      dir,
		Bootstrap:    true,
		TrailingLogs: o.trailingLogs,
		Logger:       testkit.Logger(t).With("component", "raft"),
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hurryElection lowers the heartbeat timeout, which makes a follower check
// for a leader at once instead of after hashicorp/raft's randomized 1–2 s
// wait (Config does not expose the timeouts). A single voter then elects
// itself immediately; nothing else about startup changes.
func hurryElection(t *testing.T, s *Server) {
	t.Helper()
	rc := s.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = 500*time.Millisecond, 500*time.Millisecond
	if err := s.raft.ReloadConfig(rc); err != nil {
		t.Fatal(err)
	}
}

func waitLeader(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := s.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
}

func firstLogIndex(t *testing.T, s *Server) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s.Stats()["first_log_index"], 10, 64)
	if err != nil {
		t.Fatalf("first_log_index: %v (stats %v)", err, s.Stats())
	}
	return v
}

func nodeCmd(name string) discovery.Command {
	return discovery.RegisterNodeRequest{Node: discovery.Node{ID: name + "-id", Name: name, Address: "10.0.0.1"}}
}

func kvCmd(key, value string) discovery.Command {
	return discovery.KVRequest{Op: discovery.KVSet, Entry: discovery.KVEntry{Key: key, Value: []byte(value)}}
}

func TestServerLifecycle(t *testing.T) {
	dir := t.TempDir()
	store := discovery.NewStore()
	s := openServer(t, dir, store, serverOpts{trailingLogs: 1})
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	if addr, id := s.Leader(); addr != "" || id != "" {
		t.Fatalf("Leader() = %q, %q right after Open, want none", addr, id)
	}
	hurryElection(t, s)
	waitLeader(t, s)
	if addr, id := s.Leader(); addr != "127.0.0.1:8300" || id != "node-1" {
		t.Errorf("Leader() = %q, %q, want 127.0.0.1:8300, node-1", addr, id)
	}
	if !s.IsLeader() || s.LastContact() != 0 {
		t.Errorf("IsLeader = %v, LastContact = %v on the only voter", s.IsLeader(), s.LastContact())
	}
	if peers, err := s.Peers(); err != nil || !reflect.DeepEqual(peers, []string{"127.0.0.1:8300"}) {
		t.Errorf("Peers() = %v, %v", peers, err)
	}

	ctx := context.Background()
	var last uint64
	apply := func(t *testing.T, cmd discovery.Command) uint64 {
		t.Helper()
		idx, err := s.Apply(ctx, cmd)
		if err != nil {
			t.Fatalf("Apply(%T): %v", cmd, err)
		}
		if idx <= last {
			t.Fatalf("Apply(%T) index %d, not above previous %d", cmd, idx, last)
		}
		if got := store.LastIndex(); got != idx {
			t.Fatalf("store LastIndex = %d right after Apply returned %d", got, idx)
		}
		last = idx
		return idx
	}

	// Writes before the first snapshot.
	steps := []struct {
		cmd   discovery.Command
		check func(t *testing.T, idx uint64)
	}{
		{nodeCmd("n1"), func(t *testing.T, idx uint64) {
			if _, n, _, _ := store.Node(nil, "n1"); n == nil || n.CreateIndex != idx {
				t.Errorf("node = %+v, want created at %d", n, idx)
			}
		}},
		{discovery.RegisterServiceRequest{
			Instance: discovery.Instance{Node: "n1", ID: "web1", Service: "web", Port: 80},
			Checks:   []*discovery.Check{{CheckID: "web1-ttl", Definition: discovery.CheckDefinition{TTL: time.Minute}}},
		}, func(t *testing.T, idx uint64) {
			if _, c, _ := store.Check(nil, "n1", "web1-ttl"); c == nil || c.ModifyIndex != idx || c.Definition.TTL != time.Minute {
				t.Errorf("check = %+v, want at %d with TTL 1m", c, idx)
			}
		}},
		{kvCmd("a", "1"), func(t *testing.T, idx uint64) {
			if _, e, _ := store.KVGet(nil, "a"); e == nil || e.ModifyIndex != idx || string(e.Value) != "1" {
				t.Errorf("kv a = %+v, want 1 at %d", e, idx)
			}
		}},
		{discovery.UpdateCheckRequest{Node: "n1", CheckID: "web1-ttl", Status: discovery.HealthPassing, Output: "ok"},
			func(t *testing.T, idx uint64) {
				if _, c, _ := store.Check(nil, "n1", "web1-ttl"); c.Status != discovery.HealthPassing || c.ModifyIndex != idx {
					t.Errorf("check = %+v, want passing at %d", c, idx)
				}
			}},
	}
	for _, st := range steps {
		st.check(t, apply(t, st.cmd))
	}

	// A snapshot covers every applied entry and compacts the log.
	first := firstLogIndex(t, s)
	snapIdx, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snapIdx < last {
		t.Errorf("Snapshot() = %d, want >= %d", snapIdx, last)
	}
	first2 := firstLogIndex(t, s)
	if first2 <= first {
		t.Errorf("first_log_index %d -> %d after Snapshot with TrailingLogs 1, want it to move forward", first, first2)
	}

	// Writes after the snapshot live only in the log (plus a second
	// snapshot compacts again).
	for i := range 3 {
		apply(t, kvCmd(fmt.Sprintf("b/%d", i), "x"))
	}
	if snap2, err := s.Snapshot(); err != nil || snap2 < last {
		t.Fatalf("second Snapshot() = %d, %v, want >= %d", snap2, err, last)
	}
	if first3 := firstLogIndex(t, s); first3 <= first2 {
		t.Errorf("first_log_index %d -> %d after second Snapshot", first2, first3)
	}
	apply(t, kvCmd("c", "after-snapshot"))
	apply(t, discovery.DeregisterServiceRequest{Node: "n1", ServiceID: "web1"})
	apply(t, nodeCmd("n2"))
	want := records(t, store)
	wantLast := store.LastIndex()

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true

	// Reopen on the same directory with an empty catalog.
	store2 := discovery.NewStore()
	s2 := openServer(t, dir, store2, serverOpts{trailingLogs: 1})
	defer s2.Close()
	if addr, _ := s2.Leader(); addr != "" {
		t.Fatalf("Leader() = %q right after reopen, want none until caught up", addr)
	}
	hurryElection(t, s2)
	// Whenever Leader() names a leader, the catalog must already hold every
	// write acknowledged before the restart.
	deadline := time.Now().Add(4 * time.Second)
	for {
		addr, _ := s2.Leader()
		if addr != "" {
			if addr != "127.0.0.1:8300" {
				t.Errorf("Leader() = %q after reopen", addr)
			}
			if got := store2.LastIndex(); got < wantLast {
				t.Fatalf("Leader() = %q while the catalog is at %d, before %d", addr, got, wantLast)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader 4s after reopen")
		}
		time.Sleep(time.Millisecond)
	}
	if got := store2.LastIndex(); got != wantLast {
		t.Errorf("LastIndex after reopen = %d, want %d", got, wantLast)
	}
	if got := records(t, store2); !reflect.DeepEqual(got, want) {
		t.Errorf("catalog after reopen differs:\n got %+v\nwant %+v", got, want)
	}
	if li, _ := strconv.ParseUint(s2.Stats()["last_snapshot_index"], 10, 64); li == 0 {
		t.Errorf("last_snapshot_index = %q after reopen, want the snapshot", s2.Stats()["last_snapshot_index"])
	}
	idx, err := s2.Apply(ctx, kvCmd("d", "reopened"))
	if err != nil || idx <= last {
		t.Errorf("Apply after reopen = %d, %v, want an index above %d", idx, err, last)
	}
}

func TestServerApplyErrors(t *testing.T) {
	store := discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	hurryElection(t, s)
	waitLeader(t, s)
	if _, err := s.Apply(context.Background(), nodeCmd("n1")); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()

	tests := []struct {
		name      string
		ctx       context.Context
		cmd       discovery.Command
		wantErr   error
		wantIndex bool // the command was committed: Apply returns its index
	}{
		{"cancelled context", cancelled, kvCmd("k", "v"), context.Canceled, false},
		{"expired context", expired, kvCmd("k", "v"), context.DeadlineExceeded, false},
		{"cas conflict", context.Background(),
			discovery.KVRequest{Op: discovery.KVCAS, Entry: discovery.KVEntry{Key: "k", ModifyIndex: 12345}},
			discovery.ErrCASConflict, true},
		{"service on unknown node", context.Background(),
			discovery.RegisterServiceRequest{Instance: discovery.Instance{Node: "ghost", ID: "w", Service: "web"}},
			discovery.ErrNotFound, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := records(t, store)
			idx, err := s.Apply(tt.ctx, tt.cmd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply = %d, %v, want %v", idx, err, tt.wantErr)
			}
			if (idx != 0) != tt.wantIndex {
				t.Errorf("Apply index = %d, want an index: %v", idx, tt.wantIndex)
			}
			if after := records(t, store); !reflect.DeepEqual(before, after) {
				t.Errorf("failed Apply changed the catalog")
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Apply after Close is not tested here: it can block forever (see the
	// report that came with these tests).
}

// Without Bootstrap a server with no state has no configuration: it never
// elects itself and never reports a leader.
func TestServerWithoutBootstrapHasNoLeader(t *testing.T) {
	s, err := Open(Config{NodeID: "n", Addr: "127.0.0.1:8301", DataDir: t.TempDir(), Logger: testkit.Logger(t)}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hurryElection(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.WaitLeader(ctx); !errors.Is(err, ErrNoLeader) {
		t.Errorf("WaitLeader = %v, want ErrNoLeader", err)
	}
	if _, err := s.Apply(context.Background(), kvCmd("k", "v")); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Apply on a non-member = %v, want ErrNotLeader", err)
	}
	if s.raft.State() == hraft.Leader {
		t.Error("non-bootstrapped server became leader")
	}
}

// TestServerApplyAfterCloseReturns: with BatchApplyCh, a command queued as
// raft shuts down is never answered upstream; Apply must still return.
func TestServerApplyAfterCloseReturns(t *testing.T) {
	s := openServer(t, t.TempDir(), discovery.NewStore(), serverOpts{})
	hurryElection(t, s)
	waitLeader(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() { _, err := s.Apply(ctx, kvCmd("k", "v")); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Apply %d after Close = %v, want ErrClosed", i, err)
			}
		case <-time.After(time.Second):
			t.Fatalf("Apply %d after Close (ctx timeout 100ms) still blocked after 1s", i)
		}
	}
}
