package raft

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
)

// TestReplicaStreamScale measures the replica stream at scale: N real
// subscribers (each its own node certificate and TLS connection) against 3
// real servers, in this one process. It prints a table and asserts nothing
// about speed.
//
//	VMESH_REPLICA_BENCH=100,1000 go test -count=1 -run TestReplicaStreamScale -v ./raft
//
// With VMESH_REPLICA_BENCH_RAW=1 the subscribers are bare stream readers
// (rawSubscriber) instead of replicas.
//
// Every goroutine carries a profile label (side=server or side=client), and
// the change and idle phases each run under a CPU profile that is split by
// it, so the servers' CPU is reported apart from the subscribers'. With
// VMESH_REPLICA_BENCH_PROFILE=DIR the change phase's profile is kept there
// (changes-N.pprof; go tool pprof -tagfocus side=server ...). It cannot run
// together with go test -cpuprofile.
func TestReplicaStreamScale(t *testing.T) {
	env := os.Getenv("VMESH_REPLICA_BENCH")
	if env == "" {
		t.Skip("set VMESH_REPLICA_BENCH=100,1000 to run the replica stream scale benchmark")
	}
	// VMESH_REPLICA_BENCH_RAW=1: the subscribers read the stream and note
	// its indexes but apply nothing, so the client side costs a TLS read
	// and a JSON scan per event: what is left is mostly the servers'.
	raw := os.Getenv("VMESH_REPLICA_BENCH_RAW") == "1"
	var rows, cpuRows []string
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("VMESH_REPLICA_BENCH: %q is not a subscriber count", f)
		}
		row, cpuRow := benchReplicas(t, n, raw)
		rows, cpuRows = append(rows, row), append(cpuRows, cpuRow)
	}
	t.Logf("\n| subscribers | connect all | change → subscriber p50 | p99 | change → all (mean of %d) | max | idle CPU per subscriber | heap per subscriber |\n|---|---|---|---|---|---|---|---|\n%s", benchChanges, strings.Join(rows, "\n"))
	t.Logf("\n| subscribers | change phase wall | servers' CPU per change | per change and subscriber | subscribers' CPU per change and subscriber | unlabeled (GC, runtime) per change | servers' idle CPU per subscriber |\n|---|---|---|---|---|---|---|\n%s", strings.Join(cpuRows, "\n"))
}

// benchChanges is how many registrations the latency is measured over.
const benchChanges = 20

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// indexMoves records when a replica's index moved, from its own goroutine.
type indexMoves struct {
	mu    sync.Mutex
	moves []indexMove
}

type indexMove struct {
	index uint64
	at    time.Time
}

func (m *indexMoves) add(idx uint64) {
	now := time.Now()
	m.mu.Lock()
	m.moves = append(m.moves, indexMove{idx, now})
	m.mu.Unlock()
}

// reached is when the index first reached idx; it forgets the moves.
func (m *indexMoves) reached(idx uint64) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer func() { m.moves = m.moves[:0] }()
	for _, mv := range m.moves {
		if mv.index >= idx {
			return mv.at, true
		}
	}
	return time.Time{}, false
}

func benchReplicas(t *testing.T, n int, raw bool) (row, cpuRow string) {
	var c *testCluster
	withSide("server", func() { c = newTestCluster(t, 3, StreamConfig{}) })
	for _, s := range c.servers {
		s.logger = testkit.Discard()
		// newTestCluster hurries the first election; under the load of
		// thousands of subscribers on 2 CPUs the servers keep raft's own
		// timeouts, as a real server does.
		rc := s.raft.ReloadableConfig()
		def := hraft.DefaultConfig()
		rc.HeartbeatTimeout, rc.ElectionTimeout = def.HeartbeatTimeout, def.ElectionTimeout
		if err := s.raft.ReloadConfig(rc); err != nil {
			t.Fatal(err)
		}
	}
	c.apply(registerNode("bench-host"))
	addrs := make([]string, len(c.servers))
	for i, s := range c.servers {
		addrs[i] = s.Addr()
	}
	var ms0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)

	start := time.Now()
	reps := make([]benchSubscriber, n)
	moves := make([]indexMoves, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		// Spread the subscribers over the servers, as clients would.
		order := append(slices.Clone(addrs[i%3:]), addrs[:i%3]...)
		id := testIdentity(t, c.ca, fmt.Sprintf("client-%d", i))
		var r benchSubscriber
		if raw {
			r = &rawSubscriber{id: id, servers: order, onIndex: moves[i].add}
		} else {
			rep, err := NewReplica(ReplicaConfig{Identity: id, Servers: order, Logger: testkit.Discard()}, discovery.NewStore())
			if err != nil {
				t.Fatal(err)
			}
			rep.onIndex = moves[i].add
			r = rep
		}
		reps[i] = r
		wg.Add(1)
		go withSide("client", func() { defer wg.Done(); r.Run(ctx) })
	}
	idx := benchApply(t, c, registerNode("bench-host-2"))
	for i, r := range reps {
		benchWait(t, c, i, r, idx)
	}
	connect := time.Since(start)

	// Latency: one registration at a time; each replica's arrival, taken
	// on the replica's own goroutine when it applied the change.
	var lat, worst []time.Duration
	var wall time.Duration
	changeCPU, err := profilePhase(t, fmt.Sprintf("changes-%d.pprof", n), func() {
		w0 := time.Now()
		for k := range benchChanges {
			for i := range moves {
				moves[i].reached(0) // forget the moves so far
			}
			t0 := time.Now()
			idx := benchApply(t, c, registerService("bench-host", fmt.Sprintf("svc-%d", k), "bench"))
			for i, r := range reps {
				benchWait(t, c, i, r, idx)
			}
			var last time.Duration
			for i := range moves {
				at, ok := moves[i].reached(idx)
				if !ok {
					t.Fatalf("replica %d reached index %d without recording it", i, idx)
				}
				lat = append(lat, at.Sub(t0))
				last = max(last, at.Sub(t0))
			}
			worst = append(worst, last)
		}
		wall = time.Since(w0)
	})
	if err != nil {
		t.Logf("no CPU split of the change phase: %v", err)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	var sumWorst time.Duration
	for _, w := range worst {
		sumWorst += w
	}

	// Idle: nothing written for 10 s; the process's CPU (servers and
	// subscribers both) over the subscriber count, and the servers' alone.
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	var idleCPU, idleWall time.Duration
	idleSplit, err := profilePhase(t, "", func() {
		cpu0, w0 := cpuTime(), time.Now()
		time.Sleep(10 * time.Second) // the measurement window itself, not a wait for a condition
		idleCPU, idleWall = cpuTime()-cpu0, time.Since(w0)
	})
	if err != nil {
		t.Logf("no CPU split of the idle phase: %v", err)
	}
	perSub := time.Duration(float64(idleCPU) / float64(n) / idleWall.Seconds()) // CPU per second per subscriber
	heap := (int64(ms1.HeapInuse) - int64(ms0.HeapInuse)) / int64(n)
	for _, s := range c.servers {
		t.Logf("server %s: %+v", s.Addr(), s.StreamStats())
	}
	row = fmt.Sprintf("| %d | %s | %s | %s | %s | %s | %s CPU/s (%.3f%% of a core) | %d KiB |", n,
		connect.Round(time.Millisecond), p(0.5).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond),
		(sumWorst / benchChanges).Round(10*time.Microsecond), slices.Max(worst).Round(10*time.Microsecond),
		perSub.Round(100*time.Nanosecond), 100*perSub.Seconds(), heap/1024)
	per := func(d time.Duration, div int) string {
		return (d / time.Duration(div)).Round(100 * time.Nanosecond).String()
	}
	cpuRow = fmt.Sprintf("| %d | %s | %s | %s | %s | %s | %s CPU/s |", n, wall.Round(time.Millisecond),
		per(changeCPU["server"], benchChanges), per(changeCPU["server"], benchChanges*n),
		per(changeCPU["client"], benchChanges*n), per(changeCPU[""]+changeCPU["bench"], benchChanges),
		per(time.Duration(float64(idleSplit["server"])/idleWall.Seconds()), n))
	return row, cpuRow
}

// benchWait waits for replica i to reach idx, and says where it stands
// when it does not.
func benchWait(t *testing.T, c *testCluster, i int, r benchSubscriber, idx uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.WaitIndex(ctx, idx); err != nil {
		for _, s := range c.servers {
			t.Logf("server %s: applied %d, %+v", s.Addr(), s.fsm.applied.Load(), s.StreamStats())
		}
		t.Fatalf("subscriber %d (following %q, last heard %s ago): %v", i, r.Server(),
			time.Since(r.LastContact()).Round(time.Millisecond), err)
	}
}

// benchApply applies cmd, again when leadership moved under it: on 2 CPUs
// shared with thousands of subscribers, raft's heartbeats can miss the
// leader lease. The commands are idempotent registrations. Each retry is
// logged: it says the run's latencies include an election.
func benchApply(t *testing.T, c *testCluster, cmd discovery.Command) uint64 {
	t.Helper()
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		idx, err := c.leader().Apply(ctx, cmd)
		cancel()
		if err == nil {
			return idx
		}
		if try == 5 || !(errors.Is(err, ErrLeadershipLost) || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)) {
			t.Fatalf("applying %T: %v", cmd, err)
		}
		t.Logf("applying %T again: %v", cmd, err)
	}
}

// profilePhase runs fn under a CPU profile and splits it by side. With
// VMESH_REPLICA_BENCH_PROFILE set and a name, the profile is also written
// there.
func profilePhase(t *testing.T, name string, fn func()) (cpuSplit, error) {
	dir := os.Getenv("VMESH_REPLICA_BENCH_PROFILE")
	if dir == "" || name == "" {
		return profileCPU(fn, nil)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return profileCPU(fn, f)
}

// benchSubscriber is a Replica, or a rawSubscriber.
type benchSubscriber interface {
	Run(ctx context.Context) error
	WaitIndex(ctx context.Context, index uint64) error
	Server() string
	LastContact() time.Time
}

// rawSubscriber follows the replica stream as a replica does (same
// connection options, resume from its last index) but keeps only the
// index: it decodes each event's kind and indexes and applies nothing.
type rawSubscriber struct {
	id      *Identity
	servers []string
	onIndex func(uint64)

	last    atomic.Uint64
	contact atomic.Int64
	server  atomic.Pointer[string]
	mu      sync.Mutex
	notify  chan struct{}
}

// rawEvent is what a rawSubscriber decodes of a SubscribeEvent.
type rawEvent struct {
	Kind   uint8
	Index  uint64
	Deltas []struct{ Index uint64 }
}

func (s *rawSubscriber) Run(ctx context.Context) error {
	for i := 0; ; i++ {
		s.follow(ctx, s.servers[i%len(s.servers)])
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50*time.Millisecond + rand.N(50*time.Millisecond)):
		}
	}
}

func (s *rawSubscriber) follow(ctx context.Context, addr string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc, err := grpc.NewClient(addr, replicaDialOptions(s.id)...)
	if err != nil {
		return err
	}
	defer cc.Close()
	stream, err := cc.NewStream(ctx, &replicaStreamDesc, "/"+rpcService+"/Subscribe")
	if err != nil {
		return err
	}
	if err := stream.SendMsg(&SubscribeRequest{FromIndex: s.last.Load()}); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	s.server.Store(&addr)
	defer s.server.Store(nil)
	for {
		var ev rawEvent
		if err := stream.RecvMsg(&ev); err != nil {
			return err
		}
		s.contact.Store(time.Now().UnixNano())
		idx := uint64(0)
		switch ev.Kind {
		case EventSnapshotEnd, EventProgress:
			idx = ev.Index
		case EventDeltas:
			if len(ev.Deltas) > 0 {
				idx = ev.Deltas[len(ev.Deltas)-1].Index
			}
		}
		if idx > s.last.Load() {
			s.last.Store(idx)
			s.mu.Lock()
			if s.notify != nil {
				close(s.notify)
				s.notify = nil
			}
			s.mu.Unlock()
			s.onIndex(idx)
		}
	}
}

func (s *rawSubscriber) WaitIndex(ctx context.Context, index uint64) error {
	for {
		s.mu.Lock()
		if s.notify == nil {
			s.notify = make(chan struct{})
		}
		ch := s.notify
		s.mu.Unlock()
		if s.last.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d (at %d): %w", index, s.last.Load(), ctx.Err())
		}
	}
}

func (s *rawSubscriber) Server() string {
	if p := s.server.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *rawSubscriber) LastContact() time.Time { return time.Unix(0, s.contact.Load()) }
