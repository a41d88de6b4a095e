package raft

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestReplicaStreamScale measures the replica stream at scale: N real
// subscribers (each its own node certificate and TLS connection) against 3
// real servers. It prints a table and asserts nothing about speed.
//
//	VMESH_REPLICA_BENCH=100,1000 go test -count=1 -run TestReplicaStreamScale -v ./raft
func TestReplicaStreamScale(t *testing.T) {
	env := os.Getenv("VMESH_REPLICA_BENCH")
	if env == "" {
		t.Skip("set VMESH_REPLICA_BENCH=100,1000 to run the replica stream scale benchmark")
	}
	var rows []string
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("VMESH_REPLICA_BENCH: %q is not a subscriber count", f)
		}
		rows = append(rows, benchReplicas(t, n))
	}
	t.Logf("\n| subscribers | connect all | change → subscriber p50 | p99 | change → all (mean of 20) | idle CPU per subscriber | heap per subscriber |\n|---|---|---|---|---|---|---|\n%s", strings.Join(rows, "\n"))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchReplicas(t *testing.T, n int) string {
	c := newTestCluster(t, 3, StreamConfig{})
	for _, s := range c.servers {
		s.logger = testkit.Discard()
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
	reps := make([]*Replica, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range n {
		// Spread the subscribers over the servers, as clients would.
		order := append(slices.Clone(addrs[i%3:]), addrs[:i%3]...)
		r, err := NewReplica(ReplicaConfig{Identity: testIdentity(t, c.ca, fmt.Sprintf("client-%d", i)), Servers: order,
			Logger: testkit.Discard()}, discovery.NewStore())
		if err != nil {
			t.Fatal(err)
		}
		reps[i] = r
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
	idx := c.apply(registerNode("bench-host-2"))
	for _, r := range reps {
		waitIndex(t, r, idx)
	}
	connect := time.Since(start)

	// Latency: one registration at a time; every subscriber's arrival.
	var lat []time.Duration
	var all time.Duration
	const changes = 20
	for k := range changes {
		arrive := make([]time.Duration, n)
		var done sync.WaitGroup
		t0 := time.Now()
		idx := c.apply(registerService("bench-host", fmt.Sprintf("svc-%d", k), "bench"))
		for i, r := range reps {
			done.Add(1)
			go func() {
				defer done.Done()
				wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
				defer wcancel()
				if err := r.WaitIndex(wctx, idx); err != nil {
					t.Error(err)
				}
				arrive[i] = time.Since(t0)
			}()
		}
		done.Wait()
		lat = append(lat, arrive...)
		all += slices.Max(arrive)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }

	// Idle: nothing written for 10 s; the process's CPU (servers and
	// subscribers both) over the subscriber count.
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	cpu0, w0 := cpuTime(), time.Now()
	time.Sleep(10 * time.Second) // the measurement window itself, not a wait for a condition
	idleCPU := cpuTime() - cpu0
	wall := time.Since(w0)
	perSub := time.Duration(float64(idleCPU) / float64(n) / wall.Seconds()) // CPU per second per subscriber
	heap := (int64(ms1.HeapInuse) - int64(ms0.HeapInuse)) / int64(n)
	for _, s := range c.servers {
		t.Logf("server %s: %+v", s.Addr(), s.StreamStats())
	}
	return fmt.Sprintf("| %d | %s | %s | %s | %s | %s CPU/s (%.3f%% of a core) | %d KiB |", n,
		connect.Round(time.Millisecond), p(0.5).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond),
		(all / changes).Round(10*time.Microsecond), perSub.Round(100*time.Nanosecond), 100*perSub.Seconds(), heap/1024)
}
