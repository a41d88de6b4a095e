package checks

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

const (
	checkDefaultInterval = 10 * time.Second
	checkDefaultTimeout  = 10 * time.Second
	// checkMaxHousekeeping bounds how long a check goes without looking at
	// its deregister deadline, retrying a failed TTL write and reconciling
	// with the catalog.
	checkMaxHousekeeping = time.Second
	// checkMaxJitter bounds the random delay before a check's first run.
	checkMaxJitter = time.Second
	// DefaultOutputMax is how much of a check's output is stored (Consul's
	// check_output_max_size default).
	DefaultOutputMax = 4 << 10
	// checkDrainMax is how much of an HTTP body is read (and dropped) past
	// the output limit so that the connection can be reused.
	checkDrainMax = 64 << 10
	// DefaultUpdateInterval is Consul's check_update_interval default.
	DefaultUpdateInterval = 5 * time.Minute
	// checkSinkTimeout bounds one call to the sink.
	checkSinkTimeout = 30 * time.Second
	// checkConfirmWindow is how long, after the runner wrote a status, a
	// catalog view that still shows something else is taken for a view from
	// before the write (the write has not reached this node's replica yet)
	// rather than for a change made by someone else.
	checkConfirmWindow = 5 * time.Second

	checkUserAgent = "vmesh-health-check"
	checkAccept    = "text/plain, text/*, */*"
)

// Sink receives results. UpdateCheck is called when a check's status
// (or, for TTL updates, its output) differs from what the runner last
// knew, and for an output-only change at the run's first result or once
// UpdateInterval has passed; DeregisterService is called once when a check has been critical for
// longer than its DeregisterCriticalServiceAfter.
type Sink interface {
	UpdateCheck(ctx context.Context, checkID, status, output string) error
	DeregisterService(ctx context.Context, serviceID string) error
}

// Runner runs the health checks of the local node's instances.
//
// For every check the runner keeps the last status it knows the catalog to
// hold (taken from the catalog when the check starts, then updated after
// each successful sink.UpdateCheck) and the last result it observed (from a
// probe, a TTL update or a TTL expiry). A sink call is made only when the
// two differ, so a result is written through raft once per change.
type Runner struct {
	logger *slog.Logger
	sink   Sink
	// maxJitter bounds the random delay before a check's first run (tests
	// set it to 0).
	maxJitter time.Duration

	// Guard keeps probes off the agent's own listeners (guard.go); nil
	// allows every target. OutputMax caps a stored output in bytes (0:
	// DefaultOutputMax). Set both before the first Sync.
	Guard     *Guard
	OutputMax int
	// UpdateInterval is Consul's check_update_interval: how long an
	// output-only change of a check's result waits before it is written
	// (a status change is written at once). New sets
	// DefaultUpdateInterval; 0 writes every change. Set before the first
	// Sync.
	UpdateInterval time.Duration
	// Scripts lets script checks run (script.go): the agent sets it only
	// when its config enables them. Off, such a check is critical and
	// runs nothing, whatever the catalog holds. Set before the first Sync.
	Scripts bool

	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	checks map[string]*checkRun
	// lastRun holds, per check ID, the most recently started run whose
	// goroutine has not exited yet, so that a restarted check does not
	// write before its predecessor has stopped writing.
	lastRun map[string]*checkRun
}

// New returns a runner that reports to sink. It runs nothing until
// Sync is called.
func New(logger *slog.Logger, sink Sink) *Runner {
	if logger == nil {
		logger = slog.Default()
	}
	return &Runner{
		logger:         logger,
		sink:           sink,
		maxJitter:      checkMaxJitter,
		UpdateInterval: DefaultUpdateInterval,
		checks:         make(map[string]*checkRun),
		lastRun:        make(map[string]*checkRun),
	}
}

// Sync makes the running set equal to checks (the local node's checks as the
// catalog has them now). New checks start; checks no longer present stop; a
// check whose Definition (or ServiceID) changed restarts. Checks without a
// runnable definition (Kind() == "") are ignored.
//
// A new check takes its Status (and Output) from the catalog as the last
// known status, so a status that is already stored is not written again.
// For a running check whose definition did not change, Sync costs a
// reflect.DeepEqual and does not touch its timers or probe state; the
// catalog's status is only compared with the runner's: if it shows the
// status the runner wrote, nothing happens; if it shows something else for
// longer than a short window after the runner's last write (someone else
// changed it), the runner adopts it as the last known status, which makes a
// probe check write its current result again and a TTL check take the
// catalog's status as its own.
func (r *Runner) Sync(checks []*discovery.Check) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	want := make(map[string]*discovery.Check, len(checks))
	for _, c := range checks {
		if c == nil || c.CheckID == "" || c.Definition.Kind() == "" {
			continue
		}
		want[c.CheckID] = c
	}
	for id, rc := range r.checks {
		c, ok := want[id]
		if ok && rc.serviceID == c.ServiceID && reflect.DeepEqual(rc.def, c.Definition) {
			rc.catalogUpdate(c, now)
			continue
		}
		rc.cancel()
		delete(r.checks, id)
	}
	for id, c := range want {
		if _, ok := r.checks[id]; !ok {
			r.startLocked(c, now)
		}
	}
}

// UpdateTTL records a TTL check result from the API (pass/warn/fail/update):
// it resets the TTL timer and, if status or output differ from the last
// known, calls sink.UpdateCheck, whose error it returns. Returns
// ErrCheckNotFound if checkID is not a running check, and ErrNotTTLCheck if
// it is not a TTL check. status must be passing, warning or critical. Output
// is cut to OutputMax.
func (r *Runner) UpdateTTL(ctx context.Context, checkID, status, output string) error {
	output = capOutput(output, r.outputMax())
	// A restart of the check (its definition changed) between recording and
	// writing stops the run the update was recorded in: record it again in
	// the new run.
	for range 3 {
		r.mu.Lock()
		rc := r.checks[checkID]
		switch {
		case rc == nil:
			r.mu.Unlock()
			return discovery.ErrCheckNotFound
		case rc.kind != discovery.CheckTTL:
			r.mu.Unlock()
			return discovery.ErrNotTTLCheck
		case !discovery.ValidHealthState(status):
			r.mu.Unlock()
			return fmt.Errorf("discovery: invalid check status %q", status)
		}
		rc.recordTTL(status, output, time.Now())
		r.mu.Unlock()
		if stopped, err := rc.flush(ctx); !stopped {
			return err
		}
	}
	return discovery.ErrCheckNotFound
}

// Close stops every check and waits for their goroutines. Sync does nothing
// after Close, and UpdateTTL returns ErrCheckNotFound.
func (r *Runner) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		for _, rc := range r.checks {
			rc.cancel()
		}
		r.checks = nil
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Runner) startLocked(c *discovery.Check, now time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	def := c.Definition
	def.Header = cloneCheckHeader(def.Header)
	rc := &checkRun{
		r:         r,
		id:        c.CheckID,
		serviceID: c.ServiceID,
		def:       def,
		kind:      def.Kind(),
		ctx:       ctx,
		cancel:    cancel,
		kick:      make(chan struct{}, 1),
		prev:      r.lastRun[c.CheckID],
		logger:    r.logger.With("check", c.CheckID),
	}
	rc.timeout = def.Timeout
	if rc.timeout <= 0 {
		rc.timeout = checkDefaultTimeout
	}
	if rc.kind == discovery.CheckTTL {
		rc.period = def.TTL
	} else {
		rc.period = def.Interval
		if rc.period <= 0 {
			rc.period = checkDefaultInterval
		}
	}
	if rc.jitter = min(rc.period, r.maxJitter); rc.jitter > 0 {
		rc.jitter = rand.N(rc.jitter)
	}
	rc.known = checkResult{c.Status, c.Output}
	rc.catalog = rc.known
	if c.Status == discovery.HealthCritical {
		rc.criticalSince = now
	}
	if rc.kind == discovery.CheckTTL {
		rc.setObservedLocked(rc.known, now)
		rc.ttlDeadline = now.Add(def.TTL)
	}
	r.checks[rc.id] = rc
	r.lastRun[rc.id] = rc
	r.wg.Add(1)
	go rc.run()
}

// runExited forgets rc as its ID's last run once its goroutine is gone.
func (r *Runner) runExited(rc *checkRun) {
	r.mu.Lock()
	if r.lastRun[rc.id] == rc {
		delete(r.lastRun, rc.id)
	}
	r.mu.Unlock()
}

func cloneCheckHeader(h map[string][]string) map[string][]string {
	h = maps.Clone(h)
	for k, v := range h {
		h[k] = slices.Clone(v)
	}
	return h
}

func (r *Runner) outputMax() int {
	if r.OutputMax > 0 {
		return r.OutputMax
	}
	return DefaultOutputMax
}
