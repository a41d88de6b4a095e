package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// One request (a stream) through an HTTP connection manager: upgrade
// check, RBAC, route, then the upstream exchange through
// httputil.ReverseProxy, whose Transport is the stream itself (retries,
// timeouts, breakers and endpoint choice are in RoundTrip, http_upstream.go)
// and which does the rest: hop-by-hop headers, streaming with immediate
// flushes for gRPC and bodies of unknown length, trailers (trailers-only
// responses included), 1xx responses and protocol switches (WebSocket).

var (
	errRouteTimeout = errors.New("proxy: route timeout")
	errStreamIdle   = errors.New("proxy: stream idle timeout")
)

// retryBufferLimit is how much of a request body is kept to replay it on
// a retry; a longer body is not retried (Envoy's per-request buffer
// limit is of the same order).
const retryBufferLimit = 64 << 10

type stream struct {
	hc    *httpConn
	snap  *snapshot
	lrt   *listenerRT
	hcm   *hcmSpec
	r     *http.Request // as received
	w     respWriter
	start time.Time
	grpc  bool
	// upgrade is the protocol the request switches to ("" for none).
	upgrade string
	// closeUnlessSwitched: an HTTP/1 request that offered a protocol
	// switch (or CONNECT); its connection closes after the response
	// unless it switched.
	closeUnlessSwitched bool

	route    *routeSpec
	cluster  *routeCluster
	upstream string // the cluster's name, for metrics ("" before routing)
	hash     uint64
	hasHash  bool
	// setCookie is a generated hash cookie to send back.
	setCookie string

	ctx    context.Context // the request's, canceled by the route and idle timeouts
	cancel context.CancelCauseFunc

	body     *streamBody // nil: no request body
	bodyDone atomic.Bool
	// timer is the route timeout (armed once the request is complete)
	// and the idle timeout.
	timer  streamTimer
	perTry atomic.Pointer[lazyTimer]
	upIn   atomic.Int64 // bytes read from an upgraded downstream connection

	// h1 is the lean server's connection the request came on (nil:
	// HTTP/2), whose writes a timeout aborts.
	h1 *h1Conn

	// held is the last attempt, whose breaker slots, host's active count
	// and context are freed once the response is done.
	mu   sync.Mutex
	held *upstreamAttempt

	// Kept in the stream rather than allocated on their own.
	view    reqView
	resBody activityBody

	// rp does the upstream exchange (kept here: one allocation less per
	// request).
	rp httputil.ReverseProxy

	streamLog // what the access log and the refusal line say (accesslog.go)
	// tr is the stream's span (nil: tracing is off; trace.go).
	tr *streamTrace
}

// ServeHTTP serves one request with the current configuration.
func (hc *httpConn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	snap := hc.p.cur.Load()
	lrt, chain := hc.current(snap)
	s := &stream{hc: hc, snap: snap, lrt: lrt, hcm: chain.http, r: r, start: time.Now(), grpc: isGRPC(r.Header)}
	s.w = respWriter{ResponseWriter: w, s: s}
	if hw, ok := w.(*h1Response); ok {
		s.h1 = hw.c
	}
	defer s.finish()
	s.traceStart()
	if r.ProtoMajor == 1 {
		s.closeUnlessSwitched = r.Method == http.MethodConnect || slices.ContainsFunc(r.Header.Values("Upgrade"), upgradeOffered)
		// Stream the request body while the response streams (gRPC-style
		// bidirectional traffic over HTTP/1.1); an error only means the
		// server cannot, and then it does not matter. (What
		// http.ResponseController does, without its allocation.)
		if fd, ok := w.(interface{ EnableFullDuplex() error }); ok {
			fd.EnableFullDuplex()
		} else {
			http.NewResponseController(w).EnableFullDuplex()
		}
	}
	s.serve(lrt.routes[chain])
}

func (s *stream) serve(routes *routeConfigSpec) {
	r := s.r
	// The connection manager refuses an upgrade it is not configured for
	// before any filter runs (Envoy: 403); CONNECT is not proxied. An
	// HTTP/1.1 request offering h2c (curl --http2) is served as it is, its
	// offer dropped, as Envoy's HTTP/1 codec does.
	s.upgrade = upgradeType(r.Header)
	if strings.EqualFold(s.upgrade, "h2c") {
		dropH2CUpgrade(r.Header)
		s.upgrade = ""
	}
	if r.Method == http.MethodConnect || (s.upgrade != "" && (!strings.EqualFold(s.upgrade, "websocket") || !s.hcm.websocket)) {
		s.localReply(reply(http.StatusForbidden, ""))
		return
	}
	// Before anything reads the path: RBAC, routes, rewrites.
	if err := s.hcm.paths.normalizeRequest(r); err != nil {
		s.localReply(reply(http.StatusBadRequest, bodyBadPath))
		return
	}
	if !s.hcm.rbac.allowed(s.hc.ids) {
		s.localReply(reply(http.StatusForbidden, bodyRBACDenied))
		return
	}
	v := &s.view
	v.init(r, s.hc.tls)
	rt := routes.route(v)
	if rt == nil {
		s.localReply(reply(http.StatusNotFound, ""))
		return
	}
	s.route = rt
	s.cluster = rt.action.pick()
	s.upstream = s.cluster.name
	s.hash, s.hasHash, s.setCookie = rt.action.hashKey(v, s.hc.remote)

	s.ctx, s.cancel = context.WithCancelCause(r.Context())
	idle := s.hcm.streamIdle
	if rt.action.hasIdle {
		idle = rt.action.idle
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		limit := 0
		if rt.action.retry != nil && s.upgrade == "" {
			limit = retryBufferLimit
		}
		s.body = &streamBody{s: s, src: r.Body, limit: limit}
		s.timer.start(idle, rt.action.timeout, s.timedOut, false)
	} else {
		// The request is complete: the route timeout starts now (no
		// attempt, so no per-try timeout, has started yet).
		s.bodyDone.Store(true)
		s.timer.start(idle, rt.action.timeout, s.timedOut, true)
	}
	s.rp = httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      s,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.errorHandler,
		ErrorLog:       s.hc.errLog,
		BufferPool:     copyBuffers,
	}
	s.rp.ServeHTTP(&s.w, r.WithContext(s.ctx))
}

// dropH2CUpgrade removes an h2c upgrade offer from a request's headers.
func dropH2CUpgrade(h http.Header) {
	var keep []string
	for _, v := range h.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.TrimSpace(tok)
			if tok != "" && !strings.EqualFold(tok, "upgrade") && !strings.EqualFold(tok, "http2-settings") {
				keep = append(keep, tok)
			}
		}
	}
	h.Del("Connection")
	if len(keep) > 0 {
		h.Set("Connection", strings.Join(keep, ", "))
	}
	h.Del("Upgrade")
	h.Del("Http2-Settings")
}

// finish ends the stream's timers, frees what it holds and reports it.
// timedOut ends the stream on its idle or route timeout. Once the
// response started, Envoy resets the stream: an HTTP/1 client that does
// not read its response would otherwise hold the handler in a blocked
// write for good, and with it the upstream connection and the
// upstream's handler; its connection's writes fail instead, and the
// connection closes.
func (s *stream) timedOut(cause error) {
	s.cancel(cause)
	if s.h1 != nil && s.w.started.Load() {
		s.h1.abortWrites(s.r)
	}
}

func (s *stream) finish() {
	s.timer.stop()
	if t := s.perTry.Load(); t != nil {
		t.stop()
	}
	if s.cancel != nil {
		s.cancel(nil)
	}
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	if held != nil {
		held.done()
	}
	in := s.upIn.Load()
	if s.body != nil {
		in += s.body.total.Load()
	}
	s.traceEnd()
	d, out := time.Since(s.start), s.w.bytes.Load()
	s.hc.p.cfg.Metrics.streamDone(s.hc.rl.name, s.hcm.stat, s.upstream, s.w.code, d, in, out)
	s.logStream(in, out, d)
}

// requestComplete is called once the downstream request has ended: the
// route timeout (and the current attempt's per-try timeout) start then,
// as in Envoy.
func (s *stream) requestComplete() {
	if !s.bodyDone.CompareAndSwap(false, true) {
		return
	}
	s.timer.armRoute()
	if t := s.perTry.Load(); t != nil {
		t.arm()
	}
}

func (s *stream) touch() { s.timer.touch() }

// rewrite builds the upstream request (ReverseProxy has removed the
// hop-by-hop and forwarding headers from it already).
func (s *stream) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = "upstream.invalid" // the endpoint, per attempt
	s.route.rewritePath(out.URL)
	// Passed on as they came (Envoy's use_remote_address false), and
	// x-forwarded-proto set when the client did not.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host"} {
		if v := in.Header.Values(k); len(v) > 0 {
			out.Header[k] = slices.Clone(v)
		}
	}
	if p := in.Header.Get("X-Forwarded-Proto"); p != "" {
		out.Header.Set("X-Forwarded-Proto", p)
	} else if s.hc.tls {
		out.Header.Set("X-Forwarded-Proto", "https")
	} else {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	// The proxy answers 100-continue itself (net/http does on the first
	// read of the body).
	out.Header.Del("Expect")
	s.forwardClientCert(out.Header)
	s.cluster.reqHeaders.apply(out.Header)
	s.route.reqHeaders.apply(out.Header)
}

// dropUnderscoreAliases deletes the headers whose name is key's with
// underscores for some dashes (X_Forwarded_Client_Cert): CGI-style
// backends (WSGI, PHP, Rack) read both as the same variable, so a client
// could otherwise hand the app an identity the proxy never vouched for.
func dropUnderscoreAliases(h http.Header, key string) {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), key) {
			delete(h, k)
		}
	}
}

// forwardClientCert applies forward_client_cert_details to
// x-forwarded-client-cert.
func (s *stream) forwardClientCert(h http.Header) {
	const key = "X-Forwarded-Client-Cert"
	mtls := s.hc.peer != nil
	if s.hcm.xfcc != xfccAlwaysForwardOnly {
		dropUnderscoreAliases(h, key)
	}
	switch s.hcm.xfcc {
	case xfccSanitize:
		h.Del(key)
	case xfccForwardOnly:
		if !mtls {
			h.Del(key)
		}
	case xfccAppendForward:
		if !mtls {
			h.Del(key)
			return
		}
		cur := s.hc.clientCertDetails(s.hcm.xfccURI)
		if prev := strings.Join(s.r.Header.Values(key), ","); prev != "" {
			cur = prev + "," + cur
		}
		h.Set(key, cur)
	case xfccSanitizeSet:
		h.Del(key)
		if mtls {
			h.Set(key, s.hc.clientCertDetails(s.hcm.xfccURI))
		}
	case xfccAlwaysForwardOnly:
	}
}

// modifyResponse applies the route's (and the weighted cluster's)
// response header changes, and sends a generated hash cookie.
func (s *stream) modifyResponse(res *http.Response) error {
	s.cluster.respHeaders.apply(res.Header)
	s.route.respHeaders.apply(res.Header)
	if s.setCookie != "" {
		res.Header.Add("Set-Cookie", s.setCookie)
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded stream lives on its idle timeout, not the route's.
		s.timer.stopRoute()
	}
	return nil
}

// errorHandler answers a request the upstream exchange failed for.
func (s *stream) errorHandler(_ http.ResponseWriter, _ *http.Request, err error) {
	var lr *localReply
	switch {
	case errors.As(err, &lr):
		s.localReply(lr)
	case context.Cause(s.ctx) == errRouteTimeout:
		s.localReply(reply(http.StatusGatewayTimeout, bodyTimeout))
	case context.Cause(s.ctx) == errStreamIdle:
		s.localReply(reply(http.StatusRequestTimeout, bodyStreamIdle))
	case s.r.Context().Err() != nil:
		// The downstream went away: nobody to answer.
	default:
		s.hc.p.log.Debug("proxying a request", "listener", s.hc.rl.name, "cluster", s.upstream, "err", err)
		s.localReply(reply(http.StatusBadGateway, "upstream protocol error"))
	}
}

// localReply answers the request from the proxy: the status and a text
// body, or for a gRPC request a trailers-only response (HTTP 200 with
// grpc-status and grpc-message).
func (s *stream) localReply(l *localReply) {
	if s.w.started.Load() {
		return
	}
	s.noteLocalReply(l)
	h := s.w.Header()
	clear(h)
	if l.overloaded {
		h.Set("X-Envoy-Overloaded", "true")
	}
	if s.grpc {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(int(l.grpc)))
		msg := l.body
		if msg == "" {
			msg = http.StatusText(l.code)
		}
		h.Set("Grpc-Message", encodeGRPCMessage(msg))
		s.w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(l.body)))
	if l.body != "" {
		h.Set("Content-Type", "text/plain")
	}
	s.w.WriteHeader(l.code)
	if s.r.Method != http.MethodHead && l.body != "" {
		io.WriteString(&s.w, l.body)
	}
}

// hold keeps the final attempt, to free when the stream ends.
func (s *stream) hold(a *upstreamAttempt) {
	s.mu.Lock()
	s.held = a
	s.mu.Unlock()
}

// ---- Timers.

// lazyTimer runs f d after it is armed, unless stopped first (d <= 0:
// never).
type lazyTimer struct {
	d time.Duration
	f func()

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func newLazyTimer(d time.Duration, f func()) *lazyTimer { return &lazyTimer{d: d, f: f} }

func (l *lazyTimer) arm() {
	if l == nil || l.d <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || l.t != nil {
		return
	}
	l.t = time.AfterFunc(l.d, l.f)
}

func (l *lazyTimer) stop() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.t != nil {
		l.t.Stop()
	}
}

// streamTimer is a stream's route timeout (d after it is armed, once
// the request is complete) and idle timeout (once the stream has been
// idle for idle) on one runtime timer, set for the earlier of the two
// and looking at both when it fires: one timer per request instead of
// two. touch marks activity; the timer looks at it when it expires
// instead of being reset on every read and write. Whichever expires
// first cancels the stream with its cause; then the timer is done. The
// zero value has neither.
type streamTimer struct {
	idle   time.Duration // <= 0: none
	route  time.Duration // <= 0: none
	cancel context.CancelCauseFunc
	last   atomic.Int64 // sinceEpoch of the last activity

	mu        sync.Mutex
	t         *time.Timer
	at        int64 // sinceEpoch t is set for (0: not set)
	routeAt   int64 // sinceEpoch the route timeout expires (0: not armed)
	routeDone bool  // armed once already, or stopped (an upgrade)
	stopped   bool
}

// start begins the idle timeout, and the route timeout when the request
// is complete already (else armRoute does, later).
func (st *streamTimer) start(idle, route time.Duration, cancel context.CancelCauseFunc, complete bool) {
	st.idle, st.route, st.cancel = idle, route, cancel
	now := sinceEpoch()
	st.last.Store(now)
	st.mu.Lock()
	defer st.mu.Unlock()
	if complete && route > 0 {
		st.routeDone = true
		st.routeAt = now + int64(route)
		st.schedule(now, st.routeAt)
	}
	if idle > 0 {
		st.schedule(now, now+int64(idle))
	}
}

// armRoute starts the route timeout (the first call only).
func (st *streamTimer) armRoute() {
	if st.route <= 0 {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopped || st.routeDone {
		return
	}
	st.routeDone = true
	now := sinceEpoch()
	st.routeAt = now + int64(st.route)
	st.schedule(now, st.routeAt)
}

// stopRoute ends the route timeout; the idle one goes on.
func (st *streamTimer) stopRoute() {
	st.mu.Lock()
	st.routeAt, st.routeDone = 0, true
	st.mu.Unlock()
}

func (st *streamTimer) touch() {
	if st.idle > 0 {
		st.last.Store(sinceEpoch())
	}
}

func (st *streamTimer) stop() {
	st.mu.Lock()
	st.stopped = true
	if st.t != nil {
		st.t.Stop()
	}
	st.mu.Unlock()
}

// schedule makes the timer fire at at (sinceEpoch) unless it is set
// for earlier already (st.mu held).
func (st *streamTimer) schedule(now, at int64) {
	if st.at != 0 && st.at <= at {
		return
	}
	st.at = at
	d := time.Duration(at - now)
	if st.t == nil {
		st.t = time.AfterFunc(d, st.fire)
	} else {
		st.t.Reset(d)
	}
}

func (st *streamTimer) fire() {
	st.mu.Lock()
	if st.stopped {
		st.mu.Unlock()
		return
	}
	st.at = 0
	now := sinceEpoch()
	var cause error
	switch {
	case st.routeAt != 0 && now >= st.routeAt:
		cause = errRouteTimeout
	case st.idle > 0 && now-st.last.Load() >= int64(st.idle):
		cause = errStreamIdle
	}
	if cause != nil {
		st.stopped = true
		st.mu.Unlock()
		st.cancel(cause)
		return
	}
	if st.routeAt != 0 {
		st.schedule(now, st.routeAt)
	}
	if st.idle > 0 {
		st.schedule(now, st.last.Load()+int64(st.idle))
	}
	st.mu.Unlock()
}

// streamEpoch anchors the stream timers' monotonic clock.
var streamEpoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(streamEpoch)) }

// ---- The request body, replayable for retries.

// streamBody is a downstream request body shared by the attempts of a
// stream. What was read is kept (up to limit) so a retry can send it
// again; only the latest attempt reads on, and once more than limit was
// read no retry is possible.
type streamBody struct {
	s     *stream
	src   io.ReadCloser
	limit int
	total atomic.Int64

	cur      atomic.Pointer[attemptBody]
	overflow atomic.Bool

	mu  sync.Mutex // serializes reads of src and the buffer
	buf []byte
	eof bool
	err error
}

// replayable reports whether a new attempt can send the body from its
// start.
func (b *streamBody) replayable() bool { return b == nil || !b.overflow.Load() }

// attempt is the body for a new attempt; earlier attempts' readers fail
// from now on.
func (b *streamBody) attempt() io.ReadCloser {
	a := &attemptBody{b: b}
	b.cur.Store(a)
	return a
}

type attemptBody struct {
	b    *streamBody
	off  int
	live bool // reads src directly (the buffer overflowed on its watch)
}

func (a *attemptBody) Read(p []byte) (int, error) {
	b := a.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur.Load() != a {
		return 0, errStale
	}
	if !a.live {
		if b.overflow.Load() {
			return 0, errStale // its start is no longer kept
		}
		if a.off < len(b.buf) {
			n := copy(p, b.buf[a.off:])
			a.off += n
			return n, nil
		}
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.src.Read(p)
	if n > 0 {
		b.total.Add(int64(n))
		b.s.touch()
		if !b.overflow.Load() {
			if len(b.buf)+n <= b.limit {
				b.buf = append(b.buf, p[:n]...)
				if b.cur.Load() == a {
					a.off = len(b.buf)
				}
			} else {
				b.overflow.Store(true)
				b.buf = nil
				a.live = b.cur.Load() == a
			}
		}
	}
	switch {
	case err == io.EOF:
		b.eof = true
		b.s.requestComplete()
	case err != nil:
		b.err = err
	}
	return n, err
}

// Close does nothing: the transport closes an attempt's body, the
// downstream body stays open for the next attempt (net/http closes it).
func (a *attemptBody) Close() error { return nil }

// copyBuffers are ReverseProxy's body copy buffers.
var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}

const copyBufferSize = 32 << 10

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufferSize]byte)[:] }

// Put takes back a buffer of Get's (as an array pointer: putting a
// slice would allocate its header every time).
func (b *bufferPool) Put(x []byte) {
	if len(x) == copyBufferSize {
		b.p.Put((*[copyBufferSize]byte)(x))
	}
}
