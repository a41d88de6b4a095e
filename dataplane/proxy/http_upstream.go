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
	// done frees what the attempt holds; it runs once.
	done func()
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
		release, ok := c.admit(breakerRetries)
		if !ok {
			break // the retry budget is spent: the last result stands
		}
		last.discard()
		if !sleepCtx(s.ctx, backoff(rp, n)) {
			release()
			last = attempt{kind: s.canceled(), done: func() {}}
			break
		}
		last = s.attempt(out, tried)
		done := last.done
		last.done = func() { done(); release() }
	}
	if last.kind != failNone {
		last.done()
		return nil, s.failure(last.kind)
	}
	s.hold(last.done)
	res := last.res
	if res.StatusCode != http.StatusSwitchingProtocols {
		// (a 101's body is the upgraded connection, which must stay an
		// io.ReadWriteCloser)
		res.Body = &activityBody{ReadCloser: res.Body, s: s}
	}
	return res, nil
}

// attempt sends the request to one endpoint of the stream's cluster.
func (s *stream) attempt(out *http.Request, tried []*host) attempt {
	nop := func() {}
	c := s.snap.clusters[s.cluster.name]
	if c == nil {
		return attempt{kind: failNoCluster, done: nop}
	}
	var h *host
	if c.spec.kind == kindOriginalDst {
		dst := s.hc.dst
		if !dst.IsValid() || dst == s.hc.rl.addr || dst.Addr().IsUnspecified() {
			return attempt{kind: failNoHost, done: nop} // not redirected here: it would dial us
		}
		h = &host{addr: dst, weight: 1, healthy: true, st: &hostState{}}
	} else if h = c.choose(time.Now(), lbContext{hash: s.hash, hasHash: s.hasHash, tried: tried}); h == nil {
		return attempt{kind: failNoHost, done: nop}
	}
	relReq, ok := c.admit(breakerRequests)
	if !ok {
		return attempt{kind: failOverflow, done: nop}
	}
	relPend, ok := c.admit(breakerPending)
	if !ok {
		relReq()
		return attempt{kind: failOverflow, done: nop}
	}
	h.st.active.Add(1)
	actx, acancel := context.WithCancelCause(out.Context())
	var once sync.Once
	done := func() {
		once.Do(func() {
			relPend()
			relReq()
			h.st.active.Add(-1)
			acancel(nil)
		})
	}
	var gotConn atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		gotConn.Store(true)
		relPend() // no longer pending: it has a connection
	}}
	req := out.Clone(httptrace.WithClientTrace(actx, trace))
	req.URL.Host = h.addr.String()
	if out.Body != nil && s.body != nil {
		req.Body = s.body.attempt()
	} else {
		req.Body, req.ContentLength = nil, 0
	}
	var pt *lazyTimer
	if rp := s.route.action.retry; rp != nil && rp.perTry > 0 {
		pt = newLazyTimer(rp.perTry, func() { acancel(errPerTryTimeout) })
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
	a := attempt{res: res, h: h, done: done}
	// Outlier detection looks at the cluster's own endpoints (an original
	// destination is none of them).
	record := func(o outcome, code int) {
		if c.spec.kind != kindOriginalDst {
			c.record(h, o, code, time.Now())
		}
	}
	if err != nil {
		a.kind = s.classify(err, actx, gotConn.Load())
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
	k := keyFor(c, h)
	tp.mu.Lock()
	t := tp.m[k]
	if t == nil {
		t = newUpstreamTransport(p, k)
		tp.m[k] = t
	}
	tp.mu.Unlock()
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
		return &releaseConn{Conn: conn, release: release}, nil
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
	if k.h2 {
		// HTTP/2 with prior knowledge: h2c to a plaintext endpoint, h2
		// over the endpoint's TLS (whose ALPN the cluster sets).
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
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
