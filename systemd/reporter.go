package systemd

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Service is what a Reporter asks of the service it reports on.
type Service interface {
	// Ready is closed once the service serves; nil means it serves now.
	Ready() <-chan struct{}
	// Status is the line `systemctl status` shows.
	Status() string
	// Healthy reports whether the service's main loops are alive; the
	// watchdog is pinged only while it returns nil.
	Healthy(ctx context.Context) error
}

// statusInterval is how often the STATUS= line is refreshed (it is sent
// only when it changed).
const statusInterval = 5 * time.Second

// Reporter tells systemd about a service's lifecycle (sd_notify): READY=1
// once it serves, STATUS= lines, RELOADING=1 and READY=1 around a reload,
// STOPPING=1 on shutdown, and WATCHDOG=1 while healthy. Without
// NOTIFY_SOCKET (not under systemd) every message is a no-op.
type Reporter struct {
	svc    Service
	n      Notifier
	logger *slog.Logger

	mu         sync.Mutex
	ready      bool // the first READY=1 went out
	stopping   bool
	lastStatus string
	reloadErr  error

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartReporter reports on svc to systemd ($NOTIFY_SOCKET, with the
// watchdog interval from $WATCHDOG_USEC); call it once svc has started.
func StartReporter(svc Service, logger *slog.Logger) *Reporter {
	interval, err := WatchdogInterval()
	if err != nil {
		logger.Warn("not sending watchdog pings", "err", err)
	}
	return StartReporterWith(svc, NewNotifier(), interval, logger)
}

// StartReporterWith reports to n and pings its watchdog every interval/2
// (never when interval is 0).
func StartReporterWith(svc Service, n Notifier, interval time.Duration, logger *slog.Logger) *Reporter {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reporter{svc: svc, n: n, logger: logger, cancel: cancel}
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.run(ctx)
	}()
	go func() {
		defer r.wg.Done()
		RunWatchdog(ctx, n, interval, svc.Healthy, logger)
	}()
	return r
}

// run sends READY=1 once the service is ready, then keeps STATUS= current.
func (r *Reporter) run(ctx context.Context) {
	if ready := r.svc.Ready(); ready != nil {
		select {
		case <-ready:
		case <-ctx.Done():
			return
		}
	}
	r.mu.Lock()
	if !r.stopping {
		r.ready = true
		r.lastStatus = r.status()
		r.check("READY=1", r.n.Ready(r.lastStatus))
		r.logger.Info("told systemd the agent is ready", "status", r.lastStatus)
	}
	r.mu.Unlock()

	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		if st := r.status(); st != r.lastStatus && !r.stopping {
			r.lastStatus = st
			r.check("STATUS=", r.n.Status(st))
		}
		r.mu.Unlock()
	}
}

func (r *Reporter) status() string {
	st := r.svc.Status()
	if r.reloadErr != nil {
		st += "; last reload failed: " + r.reloadErr.Error()
	}
	return st
}

// Reloading is called when a reload begins. Before the first READY=1 it
// sends nothing: that READY=1 is still to come.
func (r *Reporter) Reloading() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready && !r.stopping {
		r.check("RELOADING=1", r.n.Reloading())
	}
}

// Reloaded ends a reload with READY=1; a failed reload keeps the running
// configuration, and the STATUS= line says so.
func (r *Reporter) Reloaded(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reloadErr = err
	if r.ready && !r.stopping {
		r.lastStatus = r.status()
		r.check("READY=1", r.n.Ready(r.lastStatus))
	}
}

// Stop sends STOPPING=1 and ends the reporter's loops; call it before the
// service stops. It may be called again.
func (r *Reporter) Stop() {
	r.mu.Lock()
	if !r.stopping {
		r.stopping = true
		r.check("STOPPING=1", r.n.Stopping())
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

func (r *Reporter) check(what string, err error) {
	if err != nil {
		r.logger.Warn("telling systemd "+what, "err", err)
	}
}
