package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The upstream side of a stream: RoundTrip picks endpoints, takes the
// cluster's circuit breakers, sends the request over a pooled transport,
// and retries as the route's retry policy says, within the route timeout.

var (
	errPerTryTimeout = errors.New("proxy: per-try timeout")
	// errConnOverflow: max_connections reached when a new upstream
	// connection was needed.
	errConnOverflow = errors.New("proxy: circuit breaker open: max_connections")
)

// upstreamIdleTimeout closes a pooled upstream connection left idle this
// long.
const upstreamIdleTimeout = 90 * time.Second

// idempotent are the methods a request may be retried with after it
// reached an endpoint (connect failures and refused streams are retried
// for any method: nothing was processed).
var idempotent = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodOptions: true,
	http.MethodTrace: true, http.MethodPut: true, http.MethodDelete: true,
}

var grpcRetryOn = map[string]retryOn{
	"1": retryGRPCCancelled, "4": retryGRPCDeadlineExceeded, "8": retryGRPCResourceExhausted,
	"13": retryGRPCInternal, "14": retryGRPCUnavailable,
}

// failKind is why an attempt brought no response.
type failKind int

const (
	failNone failKind = iota
	failNoCluster
	failNoHost
	failOverflow
	failConnect
	failRefused
	failReset
	failPerTryTimeout
	failRouteTimeout
	failIdle
	failDownstream
)

type attempt struct {
	res  *http.Response
	kind failKind
	h    *host
	// ua is what the attempt holds (nil: nothing).
	ua *upstreamAttempt
}

// done frees what the attempt holds; it runs once.
func (a *attempt) done() {
	if a.ua != nil {
		a.ua.done()
	}
}

// discard drops a response that is being retried.
func (a *attempt) discard() {
	if a.res != nil {
		a.res.Body.Close()
	}
	a.done()
}

// RoundTrip is the router: the stream's attempts until one is final.
func (s *stream) RoundTrip(out *http.Request) (*http.Response, error) {
	rp := s.route.action.retry
	attempts := 1
	if rp != nil && s.upgrade == "" {
		attempts += rp.num
	}
	last := s.attempt(out, nil)
	var tried []*host
	for n := 1; n < attempts && s.retryable(last); n++ {
		tried = append(tried, last.h)
		c := s.snap.clusters[s.cluster.name]
		slot, ok := c.take(breakerRetries)
		if !ok {
			break // the retry budget is spent: the last result stands
		}
		c.st.stats.rqRetry.Add(1)
		last.discard()
		if !sleepCtx(s.ctx, backoff(rp, n)) {
			slot.Add(-1)
			last = attempt{kind: s.canceled()}
			break
		}
		last = s.attempt(out, tried)
		// The retry's slot is held as long as its attempt.
		if last.ua != nil {
			last.ua.retry = slot
		} else {
			slot.Add(-1) // (it took nothing and ends here)
		}
	}
	s.noteAttempts(last, len(tried)+1, attempts)
	if last.kind != failNone {
		last.done()
		return nil, s.failure(last.kind)
	}
	s.hold(last.ua)
	res := last.res
	if res.StatusCode != http.StatusSwitchingProtocols {
		// (a 101's body is the upgraded connection, which must stay an
		// io.ReadWriteCloser)
		s.resBody = activityBody{ReadCloser: res.Body, s: s}
		res.Body = &s.resBody
	}
	return res, nil
}

// attempt sends the request to one endpoint of the stream's cluster.
func (s *stream) attempt(out *http.Request, tried []*host) attempt {
	c := s.snap.clusters[s.cluster.name]
	if c == nil {
		return attempt{kind: failNoCluster}
	}
	var h *host
	if c.spec.kind == kindOriginalDst {
		dst := s.hc.dst
		if !dst.IsValid() || dst == s.hc.rl.addr || dst.Addr().IsUnspecified() {
			return attempt{kind: failNoHost} // not redirected here: it would dial us
		}
		h = &host{addr: dst, weight: 1, healthy: true, st: &hostState{}}
	} else if h = c.choose(time.Now(), lbContext{hash: s.hash, hasHash: s.hasHash, tried: tried}); h == nil {
		return attempt{kind: failNoHost}
	}
	ua := &upstreamAttempt{h: h}
	var ok bool
	if ua.requests, ok = c.take(breakerRequests); !ok {
		return attempt{kind: failOverflow}
	}
	if ua.pending, ok = c.take(breakerPending); !ok {
		ua.requests.Add(-1)
		return attempt{kind: failOverflow}
	}
	h.st.active.Add(1)
	// The attempt has a context of its own only when a per-try timeout
	// may cancel it; otherwise the stream's serves (one allocation and
	// one cancel propagation less per request).
	actx := out.Context()
	rp := s.route.action.retry
	perTry := rp != nil && rp.perTry > 0
	if perTry {
		actx, ua.cancel = context.WithCancelCause(actx)
	}
	ua.trace.GotConn = ua.gotConnHook
	s.traceAttempt(ua)
	// A shallow copy: the header is shared by the attempts (the
	// transport only reads it), the URL is the attempt's own.
	req := out.WithContext(httptrace.WithClientTrace(actx, &ua.trace))
	u := *out.URL
	u.Host = h.addr.String()
	req.URL = &u
	if out.Body != nil && s.body != nil {
		req.Body = s.body.attempt()
	} else {
		req.Body, req.ContentLength = nil, 0
	}
	var pt *lazyTimer
	if perTry {
		pt = newLazyTimer(rp.perTry, func() { ua.cancel(errPerTryTimeout) })
		s.perTry.Store(pt)
		if s.bodyDone.Load() {
			pt.arm()
		}
	}
	res, err := s.snap.pool.get(s.hc.p, c, h).RoundTrip(req)
	pt.stop()
	if err == nil && context.Cause(actx) == errPerTryTimeout {
		res.Body.Close()
		res, err = nil, errPerTryTimeout
	}
	a := attempt{res: res, h: h, ua: ua}
	// Outlier detection looks at the cluster's own endpoints (an original
	// destination is none of them).
	record := func(o outcome, code int) {
		if c.spec.kind != kindOriginalDst {
			c.record(h, o, code, time.Now())
		}
	}
	if err != nil {
		a.kind = s.classify(err, actx, ua.gotConn.Load())
		switch a.kind {
		case failConnect, failRefused, failReset:
			record(outcomeConnectFailure, 0)
		case failPerTryTimeout, failRouteTimeout:
			record(outcomeConnectFailure, http.StatusGatewayTimeout)
		case failOverflow, failIdle, failDownstream:
		}
		if a.kind != failConnect && a.kind != failOverflow {
			s.hc.p.log.Debug("upstream request failed", "listener", s.hc.rl.name, "cluster", c.spec.name, "endpoint", h.addr, "err", err)
		}
		return a
	}
	if res.StatusCode >= 500 {
		record(outcome5xx, res.StatusCode)
	} else {
		record(outcomeSuccess, res.StatusCode)
	}
	return a
}

// upstreamAttempt is what one attempt holds: its breaker slots, the
// host's active count and, with a per-try timeout, its context. One
// allocation for all of it, the trace included.
type upstreamAttempt struct {
	h                 *host
	requests, pending *atomic.Int64
	retry             *atomic.Int64 // the max_retries slot of a retry (nil: none)
	pendingReleased   atomic.Bool
	released          atomic.Bool
	gotConn           atomic.Bool
	cancel            context.CancelCauseFunc // nil: no context of its own
	trace             httptrace.ClientTrace
}

// releasePending frees the pending slot: the attempt has a connection,
// or is done.
func (a *upstreamAttempt) releasePending() {
	if a.pendingReleased.CompareAndSwap(false, true) {
		a.pending.Add(-1)
	}
}

func (a *upstreamAttempt) gotConnHook(httptrace.GotConnInfo) {
	a.gotConn.Store(true)
	a.releasePending() // no longer pending: it has a connection
}

// done frees what the attempt holds; it runs once.
func (a *upstreamAttempt) done() {
	if !a.released.CompareAndSwap(false, true) {
		return
	}
	a.releasePending()
	a.requests.Add(-1)
	if a.retry != nil {
		a.retry.Add(-1)
	}
	a.h.st.active.Add(-1)
	if a.cancel != nil {
		a.cancel(nil)
	}
}

// classify says why an attempt failed.
func (s *stream) classify(err error, actx context.Context, gotConn bool) failKind {
	if context.Cause(s.ctx) != nil {
		return s.canceled()
	}
	switch {
	case context.Cause(actx) == errPerTryTimeout || errors.Is(err, errPerTryTimeout):
		return failPerTryTimeout
	case errors.Is(err, errConnOverflow):
		return failOverflow
	case strings.Contains(err.Error(), "REFUSED_STREAM"):
		// (net/http's HTTP/2 stream error type is not exported; it
		// retries a refused stream itself when the request has no body.)
		return failRefused
	case !gotConn:
		return failConnect
	}
	return failReset
}

// canceled says why the stream's context ended: a timeout, or the
// downstream went away.
func (s *stream) canceled() failKind {
	switch context.Cause(s.ctx) {
	case errRouteTimeout:
		return failRouteTimeout
	case errStreamIdle:
		return failIdle
	}
	return failDownstream
}

// retryable decides whether the route's retry policy retries a result.
func (s *stream) retryable(a attempt) bool {
	rp := s.route.action.retry
	if rp == nil || !s.body.replayable() {
		return false
	}
	idem := idempotent[s.r.Method]
	on := rp.on
	switch a.kind {
	case failConnect:
		return on&(retryConnectFailure|retry5xx|retryGatewayError|retryReset) != 0
	case failRefused:
		return on&(retryRefusedStream|retry5xx|retryReset) != 0
	case failReset, failPerTryTimeout:
		return idem && on&(retry5xx|retryGatewayError|retryReset) != 0
	case failNone:
	default:
		return false
	}
	res := a.res
	if res.Header.Get("X-Envoy-Overloaded") != "" {
		return false // the upstream asks for no retries
	}
	if s.grpc {
		if bit := grpcRetryOn[res.Header.Get("Grpc-Status")]; bit != 0 && on&bit != 0 {
			return true // a trailers-only failure: the call was not served
		}
	}
	if !idem {
		return false
	}
	code := res.StatusCode
	switch {
	case on&retry5xx != 0 && code >= 500,
		on&retryGatewayError != 0 && (code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout),
		on&retryRetriable4xx != 0 && code == http.StatusConflict,
		on&retryStatusCodes != 0 && slices.Contains(rp.codes, uint32(code)),
		on&retryRateLimited != 0 && res.Header.Get("X-Envoy-Ratelimited") != "":
		return true
	}
	return false
}

// failure is the local reply for an attempt that brought no response
// (or the error when the downstream is gone).
func (s *stream) failure(k failKind) error {
	switch k {
	case failNoCluster:
		return reply(http.StatusServiceUnavailable, bodyNoCluster)
	case failNoHost:
		return reply(http.StatusServiceUnavailable, bodyNoHealthy)
	case failOverflow:
		r := reply(http.StatusServiceUnavailable, bodyOverflow)
		r.overloaded = true
		return r
	case failConnect:
		return reply(http.StatusServiceUnavailable, bodyConnectFailure)
	case failRefused:
		return reply(http.StatusServiceUnavailable, bodyRefused)
	case failReset:
		return reply(http.StatusServiceUnavailable, bodyReset)
	case failPerTryTimeout, failRouteTimeout:
		return reply(http.StatusGatewayTimeout, bodyTimeout)
	case failIdle:
		return reply(http.StatusRequestTimeout, bodyStreamIdle)
	}
	return context.Canceled
}

// backoff is Envoy's fully jittered exponential back-off before retry n
// (from 1): uniform in [0, (2^n-1) * base), at most max.
func backoff(rp *retrySpec, n int) time.Duration {
	iv := rp.maxDelay
	if n < 20 {
		iv = min(time.Duration(1<<n-1)*rp.base, rp.maxDelay)
	}
	if iv <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(iv)))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// activityBody keeps a stream alive while its response body flows.
type activityBody struct {
	io.ReadCloser
	s *stream
}

func (b *activityBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.s.touch()
	}
	return n, err
}

// ---- Upstream transports.

// transportPool keeps one transport per cluster, endpoint, TLS config and
// protocol, across snapshots: a new snapshot with the same endpoint and
// TLS config (build reuses the *tls.Config while the secrets are the
// same) reuses its connections; a rotated certificate gets a new
// transport, and the old one's idle connections are closed while its
// requests in flight finish.
type transportPool struct {
	mu sync.Mutex
	m  map[transportKey]*upstreamTransport
}

type transportKey struct {
	cluster string
	addr    netip.AddrPort
	tls     *tls.Config
	h2      bool
}

func newTransportPool() *transportPool {
	return &transportPool{m: map[transportKey]*upstreamTransport{}}
}

func keyFor(c *clusterRT, h *host) transportKey {
	return transportKey{cluster: c.spec.name, addr: h.addr, tls: h.tls, h2: c.spec.http2}
}

// get is the transport for an endpoint of a cluster version.
func (tp *transportPool) get(p *Proxy, c *clusterRT, h *host) *upstreamTransport {
	t := h.transport.Load()
	if t == nil || t.retired.Load() {
		k := keyFor(c, h)
		tp.mu.Lock()
		t = tp.m[k]
		if t == nil {
			t = newUpstreamTransport(p, k)
			tp.m[k] = t
		}
		tp.mu.Unlock()
		h.transport.Store(t)
	}
	if cur := t.target.Load(); cur == nil || cur.c != c || cur.h != h {
		t.target.Store(&dialTarget{c: c, h: h})
	}
	return t
}

// retain drops the transports snap does not use, closing their idle
// connections (transports of original destinations go too: they are
// made again on demand).
func (tp *transportPool) retain(snap *snapshot) {
	if tp == nil {
		return
	}
	live := map[transportKey]bool{}
	for _, c := range snap.clusters {
		for _, h := range c.hosts {
			live[keyFor(c, h)] = true
		}
	}
	var gone []*upstreamTransport
	tp.mu.Lock()
	for k, t := range tp.m {
		if !live[k] {
			delete(tp.m, k)
			t.retired.Store(true)
			gone = append(gone, t)
		}
	}
	tp.mu.Unlock()
	for _, t := range gone {
		t.closeIdle()
	}
}

// closeIdle closes the idle connections of every transport.
func (tp *transportPool) closeIdle() {
	tp.mu.Lock()
	all := make([]*upstreamTransport, 0, len(tp.m))
	for _, t := range tp.m {
		all = append(all, t)
	}
	tp.mu.Unlock()
	for _, t := range all {
		t.closeIdle()
	}
}

// dialTarget is the cluster version and host a transport dials for: the
// latest that used it (connect timeout and breakers follow the current
// version).
type dialTarget struct {
	c *clusterRT
	h *host
}

type upstreamTransport struct {
	http.RoundTripper
	closeIdle func()
	target    atomic.Pointer[dialTarget]
	// retired: the pool dropped it (hosts that cached it look it up
	// again).
	retired atomic.Bool
}

func newUpstreamTransport(p *Proxy, k transportKey) *upstreamTransport {
	ut := &upstreamTransport{}
	dial := func() (net.Conn, error) {
		t := ut.target.Load()
		release, ok := t.c.admit(breakerConnections)
		if !ok {
			return nil, errConnOverflow
		}
		var conn net.Conn
		var err error
		if t.c.spec.kind == kindOriginalDst {
			conn, err = p.dialAddr(t.c, t.h.addr)
		} else {
			conn, err = p.dial(t.c, t.h)
		}
		if err != nil {
			release()
			return nil, err
		}
		conn = &releaseConn{Conn: conn, release: release}
		if k.h2 {
			conn = newBatchConn(conn, nil) // h2_batch.go
		}
		return conn, nil
	}
	if !k.h2 {
		// HTTP/1.1: the lean transport, no goroutine per connection
		// (http1_transport.go).
		t := newH1Transport(dial, &ut.retired)
		ut.RoundTripper, ut.closeIdle = t, t.closeIdle
		return ut
	}
	t := &http.Transport{
		// The dial does TLS itself when the endpoint has it: to the
		// transport every endpoint is plaintext "http".
		DialContext:         func(context.Context, string, string) (net.Conn, error) { return dial() },
		DisableCompression:  true,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     upstreamIdleTimeout,
		// A dead peer of a long-lived HTTP/2 connection is noticed.
		HTTP2:     &http.HTTP2Config{SendPingTimeout: time.Minute, PingTimeout: 15 * time.Second},
		Protocols: new(http.Protocols),
	}
	// HTTP/2 with prior knowledge: h2c to a plaintext endpoint, h2 over
	// the endpoint's TLS (whose ALPN the cluster sets).
	t.Protocols.SetUnencryptedHTTP2(true)
	ut.RoundTripper, ut.closeIdle = t, t.CloseIdleConnections
	return ut
}

// releaseConn frees its max_connections slot when closed.
type releaseConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releaseConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
