package checks

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc"
)

type checkResult struct {
	status, output string
}

// checkRun is one running check: one goroutine, plus the state that
// UpdateTTL and Sync share with it.
type checkRun struct {
	r         *Runner
	id        string
	serviceID string
	def       discovery.CheckDefinition
	kind      string
	period    time.Duration // probe interval, or the TTL
	timeout   time.Duration
	jitter    time.Duration
	logger    *slog.Logger
	ctx       context.Context
	cancel    context.CancelFunc
	kick      chan struct{} // asks the goroutine to flush

	// Probe resources, owned by the goroutine.
	httpClient  *http.Client
	grpcConn    *grpc.ClientConn
	grpcErr     error
	grpcService string

	// writeMu serializes the run's sink calls; prev is the run this one
	// replaced, whose writes must be over before this one writes. Both
	// are only touched with writeMu held.
	writeMu sync.Mutex
	prev    *checkRun

	mu sync.Mutex
	// known is what the runner believes the catalog holds.
	known checkResult
	// observed is the latest result (valid when hasObserved).
	observed    checkResult
	hasObserved bool
	// catalog is the latest view of the check that Sync delivered.
	catalog checkResult
	// writing is set while an UpdateCheck is in flight; pendingUntil ends
	// the window in which a catalog view that differs from known is taken
	// for one from before the runner's last write.
	writing       bool
	pendingUntil  time.Time
	criticalSince time.Time // when observed turned critical (zero: not critical)
	ttlDeadline   time.Time
	// firstDone is set once the run's first observed result was written
	// or found written; outputDue, when set, is when an output-only
	// change is written (Consul's check_update_interval, outputWrite).
	firstDone bool
	outputDue time.Time
}

// outputWriteLocked says whether an output-only change (same status,
// other output) is written now, as Consul's agent does: the run's first
// result at once, so a check that fails from its first run shows why;
// later ones once UpdateInterval (staggered: between a half and one and a
// half of it) has passed since the change was first seen, or at once with
// an interval of 0. A status change is written at once (differs).
func (rc *checkRun) outputWriteLocked(now time.Time) bool {
	if rc.observed.output == rc.known.output {
		return false
	}
	d := rc.r.UpdateInterval
	switch {
	case !rc.firstDone || d <= 0:
		return true
	case rc.outputDue.IsZero():
		rc.outputDue = now.Add(d/2 + rand.N(d))
		return false
	}
	return !now.Before(rc.outputDue)
}

// differs reports whether a and b are different results for the purpose of
// writing: the status, and for TTL checks the output too.
func (rc *checkRun) differs(a, b checkResult) bool {
	return a.status != b.status || (rc.kind == discovery.CheckTTL && a.output != b.output)
}

func (rc *checkRun) setObservedLocked(res checkResult, now time.Time) {
	res.output = capOutput(res.output, rc.r.outputMax())
	if res.status == discovery.HealthCritical {
		if rc.criticalSince.IsZero() {
			rc.criticalSince = now
		}
	} else {
		rc.criticalSince = time.Time{}
	}
	rc.observed = res
	rc.hasObserved = res.status != ""
}

// catalogUpdate takes a catalog view of an unchanged running check.
func (rc *checkRun) catalogUpdate(c *discovery.Check, now time.Time) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.catalog = checkResult{c.Status, c.Output}
	if !rc.differs(rc.catalog, rc.known) {
		rc.pendingUntil = time.Time{} // the runner's last write is in
		return
	}
	rc.reconcileLocked(now)
}

// reconcileLocked adopts the catalog's view as the last known status when it
// differs and cannot be a view from before the runner's own last write.
func (rc *checkRun) reconcileLocked(now time.Time) {
	if rc.writing || now.Before(rc.pendingUntil) || !rc.differs(rc.catalog, rc.known) {
		return
	}
	rc.logger.Debug("check status changed in the catalog",
		"status", rc.catalog.status, "known", rc.known.status)
	rc.known = rc.catalog
	if rc.kind == discovery.CheckTTL {
		// A TTL check has no probe to tell the truth: the catalog's
		// status becomes the check's own.
		rc.setObservedLocked(rc.catalog, now)
		return
	}
	select {
	case rc.kick <- struct{}{}:
	default:
	}
}

func (rc *checkRun) recordTTL(status, output string, now time.Time) {
	rc.mu.Lock()
	rc.ttlDeadline = now.Add(rc.def.TTL)
	rc.setObservedLocked(checkResult{status, output}, now)
	rc.mu.Unlock()
}

// ttlFire handles the TTL timer: it marks the check expired if its deadline
// passed and returns when to look again.
func (rc *checkRun) ttlFire(now time.Time) time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if now.Before(rc.ttlDeadline) {
		return rc.ttlDeadline.Sub(now)
	}
	rc.setObservedLocked(checkResult{discovery.HealthCritical, "TTL expired"}, now)
	return rc.def.TTL
}

// waitPrevLocked waits, with rc.writeMu held, until the run that rc
// replaced can write no more.
func (rc *checkRun) waitPrevLocked() {
	if p := rc.prev; p != nil {
		// p is cancelled: once its writeMu is free it writes no more.
		p.writeMu.Lock()
		//lint:ignore SA2001 an empty critical section is the point: wait for p's last write.
		p.writeMu.Unlock()
		rc.prev = nil
	}
}

// flush writes the observed result if it differs from the last known one.
// stopped reports that the run was stopped, in which case nothing is
// written.
func (rc *checkRun) flush(ctx context.Context) (stopped bool, err error) {
	rc.writeMu.Lock()
	defer rc.writeMu.Unlock()
	rc.waitPrevLocked()
	rc.mu.Lock()
	if rc.ctx.Err() != nil {
		rc.mu.Unlock()
		return true, nil
	}
	if !rc.hasObserved || (!rc.differs(rc.observed, rc.known) && !rc.outputWriteLocked(time.Now())) {
		rc.firstDone = rc.firstDone || rc.hasObserved
		rc.mu.Unlock()
		return false, nil
	}
	target := rc.observed
	rc.writing = true
	rc.mu.Unlock()

	sctx, cancel := context.WithTimeout(ctx, checkSinkTimeout)
	stopCancel := context.AfterFunc(rc.ctx, cancel)
	err = rc.r.sink.UpdateCheck(sctx, rc.id, target.status, target.output)
	stopCancel()
	cancel()

	rc.mu.Lock()
	rc.writing = false
	if err == nil {
		rc.known = target
		rc.firstDone, rc.outputDue = true, time.Time{}
		rc.pendingUntil = time.Now().Add(checkConfirmWindow)
		if !rc.differs(rc.catalog, rc.known) {
			rc.pendingUntil = time.Time{}
		}
	}
	rc.mu.Unlock()
	if err != nil {
		if rc.ctx.Err() != nil {
			return true, nil
		}
		rc.logger.Warn("cannot update check status", "status", target.status, "error", err)
		return false, err
	}
	rc.logger.Debug("check status updated", "status", target.status)
	return false, nil
}

// maybeDeregister calls sink.DeregisterService once the check has been
// critical for longer than its DeregisterCriticalServiceAfter. done says
// whether it was already called for the current critical period; the new
// value is returned.
func (rc *checkRun) maybeDeregister(done bool) bool {
	limit := rc.def.DeregisterCriticalServiceAfter
	if rc.serviceID == "" || limit <= 0 {
		return false
	}
	rc.mu.Lock()
	since := rc.criticalSince
	rc.mu.Unlock()
	if since.IsZero() {
		return false
	}
	if done || time.Since(since) <= limit {
		return done
	}
	rc.writeMu.Lock()
	defer rc.writeMu.Unlock()
	if rc.ctx.Err() != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(rc.ctx, checkSinkTimeout)
	defer cancel()
	if err := rc.r.sink.DeregisterService(ctx, rc.serviceID); err != nil {
		if rc.ctx.Err() == nil {
			rc.logger.Warn("cannot deregister critical service",
				"service", rc.serviceID, "error", err)
		}
		return false
	}
	rc.logger.Info("deregistered service of critical check",
		"service", rc.serviceID, "critical_for", time.Since(since).Round(time.Millisecond))
	return true
}

func (rc *checkRun) run() {
	defer rc.r.wg.Done()
	defer rc.r.runExited(rc)
	defer rc.closeProbe()
	// Resolve the predecessor now rather than at the first write, so that
	// a check restarted many times does not keep a chain of old runs.
	rc.writeMu.Lock()
	rc.waitPrevLocked()
	rc.writeMu.Unlock()
	rc.openProbe()

	var probeTimer, ttlTimer *time.Timer
	var probeC, ttlC <-chan time.Time
	if rc.kind == discovery.CheckTTL {
		rc.mu.Lock()
		wait := time.Until(rc.ttlDeadline)
		rc.mu.Unlock()
		ttlTimer = time.NewTimer(wait)
		defer ttlTimer.Stop()
		ttlC = ttlTimer.C
	} else {
		probeTimer = time.NewTimer(rc.jitter)
		defer probeTimer.Stop()
		probeC = probeTimer.C
	}
	tick := time.NewTicker(min(rc.period, checkMaxHousekeeping))
	defer tick.Stop()

	deregistered := false
	for {
		select {
		case <-rc.ctx.Done():
			return
		case <-probeC:
			res := rc.probe(rc.ctx)
			if rc.ctx.Err() != nil {
				return
			}
			rc.mu.Lock()
			rc.setObservedLocked(res, time.Now())
			rc.mu.Unlock()
			rc.flush(rc.ctx)
			deregistered = rc.maybeDeregister(deregistered)
			probeTimer.Reset(rc.period)
		case <-ttlC:
			ttlTimer.Reset(rc.ttlFire(time.Now()))
			rc.flush(rc.ctx)
			deregistered = rc.maybeDeregister(deregistered)
		case <-tick.C:
			rc.mu.Lock()
			rc.reconcileLocked(time.Now())
			rc.mu.Unlock()
			// A failed TTL write has no next probe to retry it, and an
			// output change may be due (outputWriteLocked).
			rc.flush(rc.ctx)
			deregistered = rc.maybeDeregister(deregistered)
		case <-rc.kick:
			rc.flush(rc.ctx)
		}
	}
}
