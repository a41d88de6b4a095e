package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestStreamTimer: the route and idle timeouts on one timer. The route
// timeout runs from armRoute (or from the start for a complete request)
// whatever the activity; the idle timeout from the last touch; an
// upgrade stops the route timeout only; stop ends both; the first to
// expire cancels with its cause.
func TestStreamTimer(t *testing.T) {
	const (
		tick  = 60 * time.Millisecond
		never = time.Duration(0)
	)
	cases := []struct {
		name        string
		idle, route time.Duration
		complete    bool
		// run drives the timer; it returns when the test may wait.
		run  func(st *streamTimer)
		want error // nil: nothing fires within 6 ticks
		// notBefore: the cause may not come earlier than this.
		notBefore time.Duration
	}{
		{name: "idle", idle: 2 * tick, route: never, run: func(*streamTimer) {}, want: errStreamIdle, notBefore: 2 * tick},
		// Touches every tick against an idle of 4: a loaded machine may
		// late a sleep by up to 3 ticks before the idle timeout fires
		// early for real.
		{name: "activity keeps it alive", idle: 4 * tick, route: never, run: func(st *streamTimer) {
			for range 5 {
				time.Sleep(tick)
				st.touch()
			}
		}, want: errStreamIdle, notBefore: 9 * tick},
		{name: "route from the start when complete", idle: 10 * tick, route: 2 * tick, complete: true,
			run: func(st *streamTimer) { st.touch() }, want: errRouteTimeout, notBefore: 2 * tick},
		{name: "route from armRoute, whatever the activity", idle: 2 * tick, route: 3 * tick, run: func(st *streamTimer) {
			time.Sleep(tick)
			st.touch()
			st.armRoute()
			for range 3 {
				time.Sleep(tick / 2)
				st.touch()
			}
		}, want: errRouteTimeout, notBefore: 4 * tick},
		{name: "armed twice counts from the first", idle: never, route: 3 * tick, run: func(st *streamTimer) {
			st.armRoute()
			time.Sleep(2 * tick)
			st.armRoute()
		}, want: errRouteTimeout, notBefore: 3 * tick},
		{name: "route never armed", idle: never, route: tick, run: func(*streamTimer) {}},
		{name: "upgrade stops the route timeout, idle goes on", idle: 3 * tick, route: tick, complete: true, run: func(st *streamTimer) {
			st.stopRoute()
		}, want: errStreamIdle, notBefore: 3 * tick},
		{name: "stopped", idle: tick, route: tick, complete: true, run: func(st *streamTimer) { st.stop() }},
		{name: "none", idle: never, route: never, complete: true, run: func(st *streamTimer) { st.touch(); st.armRoute() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			var st streamTimer
			start := time.Now()
			st.start(tc.idle, tc.route, cancel, tc.complete)
			tc.run(&st)
			if tc.want == nil {
				select {
				case <-ctx.Done():
					t.Fatalf("canceled after %s: %v; want nothing", time.Since(start), context.Cause(ctx))
				case <-time.After(6 * tick):
				}
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("not canceled within 5 s; want %v", tc.want)
			}
			took := time.Since(start)
			if cause := context.Cause(ctx); !errors.Is(cause, tc.want) {
				t.Errorf("canceled with %v after %s; want %v", cause, took, tc.want)
			}
			if took < tc.notBefore {
				t.Errorf("canceled after %s; want not before %s", took, tc.notBefore)
			}
			st.stop()
		})
	}
}
