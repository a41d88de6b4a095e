package systemd

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 30 * time.Second, false},
		{"400000", strconv.Itoa(os.Getpid()), 400 * time.Millisecond, false},
		{"400000", "1", 0, false}, // meant for another process
		{"soon", "", 0, true},
		{"-5", "", 0, true},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, err := WatchdogInterval()
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v (error: %v)", tc.usec, tc.pid, got, err, tc.want, tc.err)
		}
	}
}

// TestRunWatchdog: pings come at half the interval, stop while the health
// function fails and resume when it passes.
func TestRunWatchdog(t *testing.T) {
	r := &Recorder{}
	var sick atomic.Bool
	healthy := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("health check without a deadline")
		}
		if sick.Load() {
			return errors.New("HTTP API not answering")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RunWatchdog(ctx, r, 100*time.Millisecond, healthy, testkit.Discard())
		close(done)
	}()

	time.Sleep(520 * time.Millisecond) // pings at 0, 50, ..., 500 ms
	n1 := r.Count("WATCHDOG=1")
	if n1 < 4 || n1 > 12 {
		t.Errorf("%d pings in 520ms at a 50ms period; want about 11", n1)
	}
	sick.Store(true)
	time.Sleep(60 * time.Millisecond) // let a tick in flight finish
	n2 := r.Count("WATCHDOG=1")
	time.Sleep(300 * time.Millisecond)
	if n3 := r.Count("WATCHDOG=1"); n3 != n2 {
		t.Errorf("%d pings while unhealthy; want none", n3-n2)
	}
	sick.Store(false)
	time.Sleep(200 * time.Millisecond)
	if n4 := r.Count("WATCHDOG=1"); n4 <= n2 {
		t.Error("no pings after the agent became healthy again")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("RunWatchdog did not return after its context ended")
	}
}

func TestRunWatchdogDisabled(t *testing.T) {
	r := &Recorder{}
	RunWatchdog(context.Background(), r, 0, func(context.Context) error { return nil }, testkit.Discard())
	if len(r.Lines()) != 0 {
		t.Errorf("pings with no watchdog: %q", r.Lines())
	}
}
