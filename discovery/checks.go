package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

var (
	// ErrCheckNotFound is returned by UpdateTTL for a check that the runner
	// does not run.
	ErrCheckNotFound = errors.New("discovery: check not found")
	// ErrNotTTLCheck is returned by UpdateTTL for a check that is not a TTL
	// check.
	ErrNotTTLCheck = errors.New("discovery: check is not a TTL check")
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
	// checkOutputMax is how much of an HTTP body (or a TTL output) is kept.
	checkOutputMax = 4 << 10
	// checkDrainMax is how much of an HTTP body is read (and dropped) past
	// checkOutputMax so that the connection can be reused.
	checkDrainMax = 64 << 10
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

// CheckSink receives results. UpdateCheck is called only when a check's
// status (or, for TTL updates, its output) differs from what the runner last
// knew; DeregisterService is called once when a check has been critical for
// longer than its DeregisterCriticalServiceAfter.
type CheckSink interface {
	UpdateCheck(ctx context.Context, checkID, status, output string) error
	DeregisterService(ctx context.Context, serviceID string) error
}

// CheckRunner runs the health checks of the local node's instances.
//
// For every check the runner keeps the last status it knows the catalog to
// hold (taken from the catalog when the check starts, then updated after
// each successful sink.UpdateCheck) and the last result it observed (from a
// probe, a TTL update or a TTL expiry). A sink call is made only when the
// two differ, so a result is written through raft once per change.
type CheckRunner struct {
	logger *slog.Logger
	sink   CheckSink
	// maxJitter bounds the random delay before a check's first run (tests
	// set it to 0).
	maxJitter time.Duration

	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	checks map[string]*checkRun
	// lastRun holds, per check ID, the most recently started run whose
	// goroutine has not exited yet, so that a restarted check does not
	// write before its predecessor has stopped writing.
	lastRun map[string]*checkRun
}

// NewCheckRunner returns a runner that reports to sink. It runs nothing until
// Sync is called.
func NewCheckRunner(logger *slog.Logger, sink CheckSink) *CheckRunner {
	if logger == nil {
		logger = slog.Default()
	}
	return &CheckRunner{
		logger:    logger,
		sink:      sink,
		maxJitter: checkMaxJitter,
		checks:    make(map[string]*checkRun),
		lastRun:   make(map[string]*checkRun),
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
func (r *CheckRunner) Sync(checks []*Check) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	want := make(map[string]*Check, len(checks))
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
// is cut to 4 KiB.
func (r *CheckRunner) UpdateTTL(ctx context.Context, checkID, status, output string) error {
	output = truncateCheckOutput(output)
	// A restart of the check (its definition changed) between recording and
	// writing stops the run the update was recorded in: record it again in
	// the new run.
	for range 3 {
		r.mu.Lock()
		rc := r.checks[checkID]
		switch {
		case rc == nil:
			r.mu.Unlock()
			return ErrCheckNotFound
		case rc.kind != CheckTTL:
			r.mu.Unlock()
			return ErrNotTTLCheck
		case !ValidHealthState(status):
			r.mu.Unlock()
			return fmt.Errorf("discovery: invalid check status %q", status)
		}
		rc.recordTTL(status, output, time.Now())
		r.mu.Unlock()
		if stopped, err := rc.flush(ctx); !stopped {
			return err
		}
	}
	return ErrCheckNotFound
}

// Close stops every check and waits for their goroutines. Sync does nothing
// after Close, and UpdateTTL returns ErrCheckNotFound.
func (r *CheckRunner) Close() {
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

func (r *CheckRunner) startLocked(c *Check, now time.Time) {
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
	if rc.kind == CheckTTL {
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
	if c.Status == HealthCritical {
		rc.criticalSince = now
	}
	if rc.kind == CheckTTL {
		rc.setObservedLocked(rc.known, now)
		rc.ttlDeadline = now.Add(def.TTL)
	}
	r.checks[rc.id] = rc
	r.lastRun[rc.id] = rc
	r.wg.Add(1)
	go rc.run()
}

// runExited forgets rc as its ID's last run once its goroutine is gone.
func (r *CheckRunner) runExited(rc *checkRun) {
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

type checkResult struct {
	status, output string
}

// checkRun is one running check: one goroutine, plus the state that
// UpdateTTL and Sync share with it.
type checkRun struct {
	r         *CheckRunner
	id        string
	serviceID string
	def       CheckDefinition
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
}

// differs reports whether a and b are different results for the purpose of
// writing: the status, and for TTL checks the output too.
func (rc *checkRun) differs(a, b checkResult) bool {
	return a.status != b.status || (rc.kind == CheckTTL && a.output != b.output)
}

func (rc *checkRun) setObservedLocked(res checkResult, now time.Time) {
	if res.status == HealthCritical {
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
func (rc *checkRun) catalogUpdate(c *Check, now time.Time) {
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
	if rc.kind == CheckTTL {
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
	rc.setObservedLocked(checkResult{HealthCritical, "TTL expired"}, now)
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
	if !rc.hasObserved || !rc.differs(rc.observed, rc.known) {
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
	if rc.kind == CheckTTL {
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
			if rc.kind == CheckTTL {
				// A failed TTL write has no next probe to retry it.
				rc.flush(rc.ctx)
			}
			deregistered = rc.maybeDeregister(deregistered)
		case <-rc.kick:
			rc.flush(rc.ctx)
		}
	}
}

func (rc *checkRun) openProbe() {
	tlsConfig := &tls.Config{
		ServerName:         rc.def.TLSServerName,
		InsecureSkipVerify: rc.def.TLSSkipVerify, //nolint:gosec // the check's owner asked for it
	}
	switch rc.kind {
	case CheckHTTP:
		transport := &http.Transport{
			DialContext: (&net.Dialer{
				Timeout:   rc.timeout,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			TLSClientConfig:       tlsConfig,
			TLSHandshakeTimeout:   rc.timeout,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		rc.httpClient = &http.Client{
			Transport: transport,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	case CheckGRPC:
		target, service, _ := strings.Cut(rc.def.GRPC, "/")
		rc.grpcService = service
		creds := insecure.NewCredentials()
		if rc.def.GRPCUseTLS {
			creds = credentials.NewTLS(tlsConfig)
		}
		// Keep reconnect backoff within the interval, so that a server that
		// comes back is seen by the next run or the one after.
		maxDelay := min(rc.period, backoff.DefaultConfig.MaxDelay)
		rc.grpcConn, rc.grpcErr = grpc.NewClient(target,
			grpc.WithTransportCredentials(creds),
			grpc.WithUserAgent(checkUserAgent),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: backoff.Config{
					BaseDelay:  min(backoff.DefaultConfig.BaseDelay, maxDelay),
					Multiplier: backoff.DefaultConfig.Multiplier,
					Jitter:     backoff.DefaultConfig.Jitter,
					MaxDelay:   maxDelay,
				},
				MinConnectTimeout: rc.timeout,
			}),
		)
	}
}

func (rc *checkRun) closeProbe() {
	if rc.httpClient != nil {
		rc.httpClient.CloseIdleConnections()
	}
	if rc.grpcConn != nil {
		rc.grpcConn.Close()
	}
}

func (rc *checkRun) probe(ctx context.Context) checkResult {
	ctx, cancel := context.WithTimeout(ctx, rc.timeout)
	defer cancel()
	switch rc.kind {
	case CheckHTTP:
		return rc.probeHTTP(ctx)
	case CheckTCP:
		return rc.probeTCP(ctx)
	case CheckGRPC:
		return rc.probeGRPC(ctx)
	}
	return checkResult{HealthCritical, "unsupported check"}
}

func (rc *checkRun) probeHTTP(ctx context.Context) checkResult {
	method := rc.def.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if rc.def.Body != "" {
		body = strings.NewReader(rc.def.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rc.def.HTTP, body)
	if err != nil {
		return checkResult{HealthCritical, err.Error()}
	}
	for k, vs := range rc.def.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", checkUserAgent)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", checkAccept)
	}
	resp, err := rc.httpClient.Do(req)
	if err != nil {
		return checkResult{HealthCritical, err.Error()}
	}
	defer func() {
		// Drain a bounded amount so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, checkDrainMax))
		resp.Body.Close()
	}()
	// Read a little more than is kept so that the cut falls on a rune
	// boundary.
	out, _ := io.ReadAll(io.LimitReader(resp.Body, checkOutputMax+utf8.UTFMax))
	output := fmt.Sprintf("HTTP %s %s: %s Output: %s",
		method, rc.def.HTTP, resp.Status, truncateCheckOutput(string(out)))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return checkResult{HealthPassing, output}
	case resp.StatusCode == http.StatusTooManyRequests:
		return checkResult{HealthWarning, output}
	}
	return checkResult{HealthCritical, output}
}

func (rc *checkRun) probeTCP(ctx context.Context) checkResult {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", rc.def.TCP)
	if err != nil {
		return checkResult{HealthCritical, err.Error()}
	}
	conn.Close()
	return checkResult{HealthPassing, fmt.Sprintf("TCP connect %s: Success", rc.def.TCP)}
}

func (rc *checkRun) probeGRPC(ctx context.Context) checkResult {
	if rc.grpcErr != nil {
		return checkResult{HealthCritical, fmt.Sprintf("gRPC check %s: failed: %v", rc.def.GRPC, rc.grpcErr)}
	}
	if rc.grpcConn.GetState() == connectivity.TransientFailure {
		rc.grpcConn.ResetConnectBackoff()
	}
	resp, err := healthpb.NewHealthClient(rc.grpcConn).Check(ctx,
		&healthpb.HealthCheckRequest{Service: rc.grpcService})
	if err != nil {
		return checkResult{HealthCritical, fmt.Sprintf("gRPC check %s: failed: %v", rc.def.GRPC, err)}
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return checkResult{HealthCritical, fmt.Sprintf("gRPC check %s: failed: status %s", rc.def.GRPC, st)}
	}
	return checkResult{HealthPassing, fmt.Sprintf("gRPC check %s: success", rc.def.GRPC)}
}

// truncateCheckOutput cuts s to at most 4 KiB, on a rune boundary.
func truncateCheckOutput(s string) string {
	if len(s) <= checkOutputMax {
		return s
	}
	i := checkOutputMax
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
