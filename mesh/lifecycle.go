package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"
)

// part is one subsystem of the agent. start brings it up and may run
// background loops (lifecycle.goLoop); stop takes it down and must work
// after a start that failed half-way. Either may be nil.
type part struct {
	name  string
	start func(ctx context.Context) error
	stop  func() error
}

// lifecycle starts an ordered list of parts and stops the ones that
// started in exactly the reverse order. Every background loop runs in one
// errgroup under a context that outlives the start call (a request's
// context must not stop the agent) and ends at stop.
type lifecycle struct {
	logger  *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	loops   errgroup.Group
	started []part

	mu     sync.Mutex
	failed []string // loops that ended before they were told to (tests)
}

func newLifecycle(ctx context.Context, logger *slog.Logger) *lifecycle {
	l := &lifecycle{logger: logger}
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return l
}

// start brings parts up in order. On the first failure it stops what did
// start, in reverse, and returns the failure naming the part.
func (l *lifecycle) start(ctx context.Context, parts []part) error {
	for _, p := range parts {
		l.started = append(l.started, p)
		if p.start == nil {
			continue
		}
		if err := p.start(ctx); err != nil {
			if stopErr := l.stop(); stopErr != nil {
				l.logger.Error("stopping after a failed start", "err", stopErr)
			}
			return err
		}
	}
	return nil
}

// goLoop runs fn in the background until stop (or the returned cancel)
// ends its context. The cancel func waits for fn to return, so a part's
// stop can end its loops before the parts it depends on go away. An error
// fn returns before it is told to stop is logged and reported by stop.
func (l *lifecycle) goLoop(name string, fn func(ctx context.Context) error) (cancel func()) {
	ctx, cancelCtx := context.WithCancel(l.ctx)
	done := make(chan struct{})
	l.loops.Go(func() error {
		defer close(done)
		err := fn(ctx)
		if err == nil || ctx.Err() != nil {
			return nil // a loop that ends because it was told to is clean
		}
		l.logger.Error("background loop stopped", "loop", name, "err", err)
		l.mu.Lock()
		l.failed = append(l.failed, name)
		l.mu.Unlock()
		return fmt.Errorf("%s: %w", name, err)
	})
	return func() {
		cancelCtx()
		<-done
	}
}

// stop takes the started parts down in reverse order, then ends and waits
// for every remaining loop. It may be called more than once.
func (l *lifecycle) stop() error {
	var errs []error
	for i := len(l.started) - 1; i >= 0; i-- {
		p := l.started[i]
		if p.stop == nil {
			continue
		}
		if err := p.stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s: %w", p.name, err))
		}
	}
	l.started = nil
	l.cancel()
	if err := l.loops.Wait(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
