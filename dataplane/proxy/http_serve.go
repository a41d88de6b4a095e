package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc/codes"
)

// Serving HTTP on a filter chain whose terminal filter is an HTTP
// connection manager. The chain was chosen, TLS terminated and the
// network filters passed as for TCP (conn.go); from there the connection
// speaks HTTP/2 (ALPN "h2", or the HTTP/2 preface in plaintext: gRPC's
// prior knowledge) or HTTP/1.1, and every request is routed on its own
// with the configuration current when it arrives: the listener and its
// chain are looked up again by name, so new intentions and routes apply
// to open keep-alive connections at once.

// httpHeaderTimeout bounds reading a request's headers once its first
// byte came, and the first bytes of a connection (to tell HTTP/2 from
// HTTP/1.1). A variable for the tests.
var httpHeaderTimeout = 30 * time.Second

const (
	// maxRequestHeaderBytes is Envoy's max_request_headers_kb default.
	maxRequestHeaderBytes = 60 << 10
	// maxConcurrentStreams bounds the streams of one downstream HTTP/2
	// connection.
	maxConcurrentStreams = 1000
)

// listenerLife is one bound life of a listener: from the snapshot that
// started it until the one that drops it (or moves it to another
// address). HTTP connections drain when it ends.
type listenerLife struct {
	once  sync.Once
	drain chan struct{}
}

func newListenerLife() *listenerLife { return &listenerLife{drain: make(chan struct{})} }

func (l *listenerLife) end() { l.once.Do(func() { close(l.drain) }) }

// retire ends the lives of the listeners old served and next does not,
// and closes the idle upstream connections next no longer uses (all of
// them once the proxy stops).
func (p *Proxy) retire(old, next *snapshot) {
	for name, l := range old.listeners {
		if n := next.listeners[name]; (n == nil || n.life != l.life) && l.life != nil {
			l.life.end()
		}
	}
	next.pool.retain(next)
	if old.pool == nil && next.pool != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-p.ctx.Done()
			next.pool.closeIdle()
		}()
	}
}

// httpConn is one downstream connection served by an HTTP connection
// manager.
type httpConn struct {
	p  *Proxy
	rl *runningListener
	// What the connection was accepted with. Each request uses the
	// listener's current version of the chain (found by key) instead, as
	// long as the listener lives and the chain is still an HTTP one.
	lrt   *listenerRT
	chain *chainSpec
	dst   netip.AddrPort
	// remote is the downstream address ("ip:port").
	remote string
	tls    bool
	// ids are the verified peer's identities; peer its certificate and
	// localURI ours (for x-forwarded-client-cert).
	ids      []string
	peer     *x509.Certificate
	localURI string
	sni      string // the TLS server name the peer asked for
	errLog   *log.Logger
	// xfcc caches this hop's x-forwarded-client-cert element, without
	// and with the peer's URI: the peer and our certificate are the
	// connection's.
	xfcc [2]struct {
		once sync.Once
		v    string
	}

	drainOnce sync.Once
	drainCh   chan struct{}
	doneOnce  sync.Once
	done      chan struct{}
}

// serveHTTP serves the connection until it ends or, once drained, its
// requests in flight are done: HTTP/2 (the connection starts with the
// preface: prior knowledge in plaintext, or ALPN "h2" on TLS, where the
// preface follows too) through net/http's server, HTTP/1 through the
// lean one (http1_server.go).
func (p *Proxy) serveHTTP(rl *runningListener, lrt *listenerRT, chain *chainSpec, conn net.Conn, dst netip.AddrPort, cs *tls.ConnectionState, ids []string) {
	hc := &httpConn{p: p, rl: rl, lrt: lrt, chain: chain, dst: dst, remote: conn.RemoteAddr().String(), ids: ids,
		drainCh: make(chan struct{}), done: make(chan struct{})}
	hc.errLog = slog.NewLogLogger(p.log.With("listener", rl.name).Handler(), slog.LevelDebug)
	if cs != nil {
		hc.tls = true
		if len(cs.PeerCertificates) > 0 {
			hc.peer = cs.PeerCertificates[0]
		}
		hc.localURI = localURI(lrt.tls[chain])
		hc.sni = cs.ServerName
	}
	// Below net/http, the edge's checks (edge.go). net/http no longer sees
	// a *tls.Conn: it tells HTTP/2 from HTTP/1.1 by the preface, on TLS
	// as in plaintext (ALPN only ever offers the two).
	// Under the edge, HTTP/2's writes are batched (h2_batch.go).
	batch := newBatchConn(conn, nil)
	edge := newEdgeConn(batch, func(reason string) {
		p.cfg.Metrics.ProtocolError(rl.name, reason)
		hc.edgeRefused(reason) // accesslog.go: the access log and a rate-limited warn line
	})
	batch.on = edge.h2.Load
	conn = edge
	// HTTP/1 on the lean server (http1_server.go), on this goroutine;
	// HTTP/2 (the preface, on TLS as in plaintext) on net/http's.
	c := newH1Conn(hc, conn)
	conn.SetReadDeadline(time.Now().Add(httpHeaderTimeout)) // (before a drain can cut it short)
	go hc.watchDrain(c.drain)
	h2, err := c.sniff()
	switch {
	case err != nil:
		c.cancel()
		conn.Close()
		c.release()
		hc.closed()
		return
	case !h2:
		c.serve()
		<-hc.done
		return
	}
	hcm := chain.http
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{
		Handler:           hc,
		Protocols:         protocols,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxConcurrentStreams},
		ReadHeaderTimeout: httpHeaderTimeout,
		IdleTimeout:       hcm.idleTimeout,
		MaxHeaderBytes:    maxRequestHeaderBytes,
		ErrorLog:          hc.errLog,
		BaseContext:       func(net.Listener) context.Context { return context.Background() },
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				hc.closed()
			}
		},
	}
	if hcm.idleTimeout == 0 {
		hs.IdleTimeout = -1 // none (0 would fall back to ReadTimeout)
	}
	// What the sniff read, net/http reads again.
	ln := &oneConnListener{conn: &bufferedConn{Conn: conn, br: c.br}, closed: make(chan struct{})}
	c.br = nil
	if !c.handOff(func() { hc.shutdown(hs) }) {
		go hc.shutdown(hs)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		hs.Serve(ln)
		// A drain that came first stops Serve before it takes the
		// connection: nothing else would close it.
		if c := ln.take(); c != nil {
			c.Close()
			hc.closed()
		}
	}()
	<-hc.done
	ln.Close()
	<-served
	c.cancel()
}

// closed marks the connection done: net/http closed it, or the protocol
// switch that took it over ended.
func (hc *httpConn) closed() { hc.doneOnce.Do(func() { close(hc.done) }) }

// watchDrain stops keep-alive once the connection must drain — its
// listener's life ended, the proxy is stopping, or its chain changed —
// letting the requests in flight finish: HTTP/1.1 answers them with
// "Connection: close", HTTP/2 sends GOAWAY. onDrain does it.
func (hc *httpConn) watchDrain(onDrain func()) {
	var lifeDrain <-chan struct{}
	if life := hc.lrt.life; life != nil {
		lifeDrain = life.drain
	}
	select {
	case <-lifeDrain:
	case <-hc.p.ctx.Done():
	case <-hc.drainCh:
	case <-hc.done:
		return
	}
	onDrain()
}

// shutdown drains an HTTP/2 connection's server.
func (hc *httpConn) shutdown(hs *http.Server) {
	hs.SetKeepAlivesEnabled(false)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-hc.done
		cancel()
	}()
	hs.Shutdown(ctx)
}

func (hc *httpConn) drain() { hc.drainOnce.Do(func() { close(hc.drainCh) }) }

// current is the listener and chain a request is served with: the
// current version of the connection's chain, or, when its listener ended
// or the chain is no longer an HTTP one, the one the connection was
// accepted with (and the connection drains).
func (hc *httpConn) current(snap *snapshot) (*listenerRT, *chainSpec) {
	l := snap.listeners[hc.rl.name]
	if l != nil && l.life == hc.lrt.life {
		if c := l.spec.chain(hc.chain.key); c != nil && c.http != nil && (c.tls == nil) == (hc.chain.tls == nil) && l.routes[c] != nil {
			return l, c
		}
	}
	hc.drain()
	return hc.lrt, hc.chain
}

// localURI is the first URI SAN of a TLS server config's certificate.
func localURI(cfg *tls.Config) string {
	if cfg == nil || len(cfg.Certificates) == 0 {
		return ""
	}
	leaf := cfg.Certificates[0].Leaf
	if leaf == nil && len(cfg.Certificates[0].Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	}
	if leaf == nil || len(leaf.URIs) == 0 {
		return ""
	}
	return leaf.URIs[0].String()
}

// clientCertDetails is this hop's x-forwarded-client-cert element, in
// Envoy's format: By (our URI SAN), Hash (of the peer's certificate) and,
// when asked, URI (the peer's).
func (hc *httpConn) clientCertDetails(withURI bool) string {
	i := 0
	if withURI {
		i = 1
	}
	c := &hc.xfcc[i]
	c.once.Do(func() { c.v = hc.makeClientCertDetails(withURI) })
	return c.v
}

func (hc *httpConn) makeClientCertDetails(withURI bool) string {
	var parts []string
	if hc.localURI != "" {
		parts = append(parts, "By="+hc.localURI)
	}
	sum := sha256.Sum256(hc.peer.Raw)
	parts = append(parts, "Hash="+hex.EncodeToString(sum[:]))
	if withURI && len(hc.peer.URIs) > 0 {
		parts = append(parts, "URI="+hc.peer.URIs[0].String())
	}
	return strings.Join(parts, ";")
}

// oneConnListener hands net/http one connection, then blocks until it is
// closed.
type oneConnListener struct {
	mu     sync.Mutex
	conn   net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if c := l.take(); c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

// take returns the connection if nobody took it yet.
func (l *oneConnListener) take() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.conn
	l.conn = nil
	return c
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return dummyAddr{} }

type dummyAddr struct{}

func (dummyAddr) Network() string { return "tcp" }
func (dummyAddr) String() string  { return "proxy" }

// ---- Local replies.

// localReply is a response the proxy makes itself.
type localReply struct {
	code       int
	body       string
	grpc       codes.Code
	overloaded bool
}

func (l *localReply) Error() string { return "local reply " + strconv.Itoa(l.code) + ": " + l.body }

// Envoy's local reply bodies.
const (
	bodyRBACDenied     = "RBAC: access denied"
	bodyNoHealthy      = "no healthy upstream"
	bodyNoCluster      = "cluster not found"
	bodyConnectFailure = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset          = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyRefused        = "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
	bodyOverflow       = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyTimeout        = "upstream request timeout"
	bodyStreamIdle     = "stream timeout"
	bodyBadPath        = "invalid path"
)

// grpcCode maps a local reply's HTTP status to the gRPC status a gRPC
// client gets instead.
func grpcCode(code int) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return codes.Unavailable
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return codes.DeadlineExceeded
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.Unavailable
	}
	return codes.Unknown
}

func reply(code int, body string) *localReply {
	return &localReply{code: code, body: body, grpc: grpcCode(code)}
}

// isGRPC is Envoy's test of a gRPC request: its content type.
func isGRPC(h http.Header) bool {
	ct := h.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// encodeGRPCMessage percent-encodes a grpc-message value (the gRPC wire
// spec).
func encodeGRPCMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return b.String()
}

// upgradeType is the protocol a request asks to switch to ("" for none).
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// ---- The response writer of a stream.

// respWriter records what a stream sent downstream: the status and the
// body bytes, and marks the stream active on every write.
type respWriter struct {
	http.ResponseWriter
	s    *stream
	code int
	// started: the response began (its header was written; read by the
	// stream's timer too).
	started atomic.Bool
	bytes   atomic.Int64
}

func (w *respWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		if w.started.Load() {
			return
		}
		w.code = code
		w.started.Store(true)
		if w.s.closeUnlessSwitched && code != http.StatusSwitchingProtocols {
			// The edge stopped checking this connection's requests
			// when this one offered to switch protocols (edge.go).
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if !w.started.Load() {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes.Add(int64(n))
	w.s.touch()
	return n, err
}

func (w *respWriter) FlushError() error {
	// What http.ResponseController does, without its allocation.
	switch f := w.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands over the connection for a protocol switch (WebSocket): the
// 101 is sent on it, and what it carries is counted and keeps the stream
// alive.
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.code = http.StatusSwitchingProtocols
	w.started.Store(true)
	return &countingConn{Conn: c, s: w.s}, brw, nil
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingConn counts an upgraded stream's bytes.
type countingConn struct {
	net.Conn
	s *stream
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.s.upIn.Add(int64(n))
	c.s.touch()
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.s.w.bytes.Add(int64(n))
	c.s.touch()
	return n, err
}

// Close ends the upgraded stream, and with it the connection.
func (c *countingConn) Close() error {
	err := c.Conn.Close()
	c.s.hc.closed()
	return err
}

// errStale is what an earlier attempt reads of a request body once a
// retry took it over.
var errStale = errors.New("proxy: request body taken over by a retry")
