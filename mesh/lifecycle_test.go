package mesh

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// Parts stop in exactly the reverse order they started, a failed start
// stops only what started (in reverse), and loops end at stop.
func TestLifecycleOrder(t *testing.T) {
	var log []string
	mk := func(name string, fail bool) part {
		return part{
			name: name,
			start: func(context.Context) error {
				log = append(log, "start "+name)
				if fail {
					return errors.New(name + " failed")
				}
				return nil
			},
			stop: func() error { log = append(log, "stop "+name); return nil },
		}
	}

	l := newLifecycle(context.Background(), testkit.Logger(t))
	loopDone := make(chan struct{})
	parts := []part{mk("a", false), mk("b", false), {name: "loop", start: func(context.Context) error {
		l.goLoop("tick", func(ctx context.Context) error {
			defer close(loopDone)
			<-ctx.Done()
			return ctx.Err()
		})
		return nil
	}}, mk("c", false)}
	if err := l.start(context.Background(), parts); err != nil {
		t.Fatal(err)
	}
	if err := l.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	select {
	case <-loopDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end at stop")
	}
	want := "start a|start b|start c|stop c|stop b|stop a"
	if got := strings.Join(log, "|"); got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if err := l.stop(); err != nil { // again: nothing left to stop
		t.Errorf("second stop: %v", err)
	}

	log = nil
	l = newLifecycle(context.Background(), testkit.Logger(t))
	err := l.start(context.Background(), []part{mk("a", false), mk("b", true), mk("c", false)})
	if err == nil || !strings.Contains(err.Error(), "b failed") {
		t.Fatalf("start error %v, want b's", err)
	}
	// b's own stop runs too: a part's stop must work after its start
	// failed half way.
	want = "start a|start b|stop b|stop a"
	if got := strings.Join(log, "|"); got != want {
		t.Errorf("after a failed start %q, want %q", got, want)
	}
}

// A loop that dies on its own (not told to stop) is reported by stop; a
// cancel func waits for its loop.
func TestLifecycleLoopErrors(t *testing.T) {
	l := newLifecycle(context.Background(), testkit.Logger(t))
	l.goLoop("broken", func(context.Context) error { return errors.New("listener closed") })
	stopped := false
	cancel := l.goLoop("worker", func(ctx context.Context) error {
		<-ctx.Done()
		stopped = true
		return nil
	})
	cancel()
	if !stopped {
		t.Error("cancel returned before its loop ended")
	}
	// The broken loop must have ended on its own before stop tells it to.
	testkit.WaitFor(t, 5*time.Second, "the broken loop to end", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.failed) == 1
	})
	if err := l.stop(); err == nil || !strings.Contains(err.Error(), "broken: listener closed") {
		t.Errorf("stop = %v, want the broken loop's error", err)
	}
}
