package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The HTTP/1.1 upstream transport: what net/http.Transport does for an
// HTTP/1.1 endpoint, without its two goroutines per connection. The
// request is written and the response read on the caller's goroutine
// (ReverseProxy's), through bufio buffers taken from pools for the time
// of the exchange; an idle connection holds no buffer and no goroutine.
// net/http's readLoop and writeLoop cost about a quarter of the proxy's
// CPU, plus the scheduler's hand-offs between them and the caller, on
// every request.
//
// Only a request with a body gets a goroutine of its own, for its
// exchange: the body is written while the response is read, as
// net/http does, so an upstream that answers before it has read the
// whole body (an early 413) and HTTP/1.1 bidirectional streaming work,
// and a downstream that stalls mid-body never pins the caller, which
// must see its context end.
//
// The context of the request aborts a blocked read or write at once
// (context.AfterFunc sets a past deadline on the connection, which then
// is not reused). A connection goes back to the pool when its response
// body reached EOF on a reusable exchange: no Connection: close either
// way, not HTTP/1.0 without keep-alive, nothing unread in the buffer,
// the request fully written, the context not ended. Idle connections
// are kept newest first (LIFO), at most h1MaxIdle, each closed after
// upstreamIdleTimeout by one timer per transport. With no goroutine
// reading an idle connection, a connection the upstream closed while
// idle is found when it is used: it is peeked at (one non-blocking
// MSG_PEEK) before every request, and a request without a body of an
// idempotent method that fails on a pooled connection before any byte
// of the response is sent once more on a new one (net/http retries the
// same ones). The peek also finds bytes the upstream sent after a
// response ended (a body longer than its Content-Length, a body after a
// HEAD, 204 or 304 response): read as the response to the next request,
// possibly another client's, they would poison it; net/http's readLoop
// closes such a connection too ("Unsolicited response").

const (
	// h1MaxIdle bounds the idle connections of a transport
	// (net/http's MaxIdleConnsPerHost as it was set).
	h1MaxIdle = 256
	// h1MaxHeaderBytes bounds a response's header (net/http's default
	// for a transport).
	h1MaxHeaderBytes = 10 << 20
	// h1WriteWait is how long a finished response waits for its
	// request's body to be written before the connection is given up
	// rather than reused (net/http's maxWriteWaitBeforeConnReuse).
	h1WriteWait = 50 * time.Millisecond
	// h1ContinueWait is how long a request with Expect: 100-continue
	// waits for the 100 before it sends its body anyway.
	h1ContinueWait = time.Second
)

var (
	errH1HeaderTooLarge = errors.New("proxy: upstream response header larger than 10 MiB")
	errH1ClosedBody     = errors.New("proxy: read on a closed upstream response body")
	errH1SkipBody       = errors.New("proxy: request body not sent: the upstream answered without 100 Continue")
	errH1CLTE           = errors.New("proxy: upstream response with both Content-Length and Transfer-Encoding")
	errH1Unasked101     = errors.New("proxy: upstream switched protocols when no upgrade was asked for")
)

var (
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
)

// h1Transport pools the connections to one endpoint (a transport key).
type h1Transport struct {
	dial    func() (net.Conn, error)
	retired *atomic.Bool // the transport left its pool: connections are not kept
	idleFor time.Duration

	mu    sync.Mutex
	idle  []*h1UpConn // oldest first; a request takes the last
	timer *time.Timer
	armed bool
}

func newH1Transport(dial func() (net.Conn, error), retired *atomic.Bool) *h1Transport {
	return &h1Transport{dial: dial, retired: retired, idleFor: upstreamIdleTimeout}
}

// h1UpConn is a connection to the endpoint.
type h1UpConn struct {
	t      *h1Transport
	conn   net.Conn
	idleAt time.Time

	// Owned by the exchange in progress (its reading goroutine).
	limit int64 // what the reader may still read of the header (< 0: no limit)
	nread int64 // bytes read of the response

	aborted atomic.Bool // the request's context ended: the connection has a past deadline
}

// Read is what the pooled bufio.Reader reads: the connection, with the
// header's size limit and a count of the response's bytes.
func (pc *h1UpConn) Read(p []byte) (int, error) {
	if pc.limit >= 0 {
		if pc.limit == 0 {
			return 0, errH1HeaderTooLarge
		}
		if int64(len(p)) > pc.limit {
			p = p[:pc.limit]
		}
	}
	n, err := pc.conn.Read(p)
	pc.nread += int64(n)
	if pc.limit >= 0 {
		pc.limit -= int64(n)
	}
	return n, err
}

func (pc *h1UpConn) abort() {
	pc.aborted.Store(true)
	pc.conn.SetDeadline(aLongTimeAgo)
}

func (pc *h1UpConn) close() { pc.conn.Close() }

// err is what an exchange reports for an I/O error: the context's cause
// when the context aborted it.
func (pc *h1UpConn) err(ctx context.Context, err error) error {
	if pc.aborted.Load() {
		if c := context.Cause(ctx); c != nil {
			return c
		}
	}
	return err
}

// RoundTrip sends one request and reads its response.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := validH1Request(req); err != nil {
		closeReqBody(req)
		return nil, err
	}
	if req.Body == http.NoBody {
		r := *req // (a RoundTripper leaves its request as it is)
		r.Body = nil
		req = &r
	}
	ctx := req.Context()
	trace := httptrace.ContextClientTrace(ctx)
	// Only these may be sent again when a pooled connection turns out
	// to be closed: nothing of them was consumed, and the upstream
	// cannot have acted on them.
	retryable := req.Body == nil && idempotent[req.Method]
	for fresh := false; ; fresh = true {
		pc, pooled, idle, err := t.getConn(ctx, fresh)
		if err != nil {
			closeReqBody(req)
			return nil, err
		}
		if trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: pc.conn, Reused: pooled, WasIdle: pooled, IdleTime: idle})
		}
		res, stale, err := pc.roundTrip(req, trace)
		if err == nil {
			return res, nil
		}
		if !stale || !pooled || !retryable || fresh {
			return nil, err // (a body's writer closes it)
		}
	}
}

// closeReqBody closes a request's body, as a RoundTripper must.
func closeReqBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// getConn is a pooled connection (the newest) or a new one. pooled
// says which; idle is how long it was idle.
func (t *h1Transport) getConn(ctx context.Context, fresh bool) (pc *h1UpConn, pooled bool, idle time.Duration, err error) {
	if !fresh {
		now := time.Now()
		for {
			t.mu.Lock()
			n := len(t.idle)
			if n == 0 {
				t.mu.Unlock()
				break
			}
			pc = t.idle[n-1]
			t.idle[n-1] = nil
			t.idle = t.idle[:n-1]
			t.mu.Unlock()
			idle = now.Sub(pc.idleAt)
			// (Peeked at even when just pooled: bytes that came after
			// the last response are no answer to the next request.)
			if idle >= t.idleFor || !connAlive(pc.conn) {
				pc.close()
				continue
			}
			return pc, true, idle, nil
		}
	}
	pc, err = t.dialConn(ctx)
	return pc, false, 0, err
}

// dialConn dials a new connection. The dial is bounded by the cluster's
// connect timeout and the proxy's life, not by the request: when the
// request's context ends first, the request fails at once and the
// connection, once up, joins the pool (as net/http does).
func (t *h1Transport) dialConn(ctx context.Context) (*h1UpConn, error) {
	if ctx.Done() == nil {
		conn, err := t.dial()
		if err != nil {
			return nil, err
		}
		return &h1UpConn{t: t, conn: conn}, nil
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := t.dial()
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		return &h1UpConn{t: t, conn: r.conn}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil {
				t.put(&h1UpConn{t: t, conn: r.conn})
			}
		}()
		return nil, context.Cause(ctx)
	}
}

// put makes a connection idle, or closes it when the pool is full or
// the transport retired.
func (t *h1Transport) put(pc *h1UpConn) {
	if t.retired != nil && t.retired.Load() {
		pc.close()
		return
	}
	pc.idleAt = time.Now()
	t.mu.Lock()
	if len(t.idle) >= h1MaxIdle {
		t.mu.Unlock()
		pc.close()
		return
	}
	t.idle = append(t.idle, pc)
	if !t.armed {
		t.armed = true
		if t.timer == nil {
			t.timer = time.AfterFunc(t.idleFor, t.prune)
		} else {
			t.timer.Reset(t.idleFor)
		}
	}
	t.mu.Unlock()
}

// prune closes the connections idle for upstreamIdleTimeout, and sets
// the timer for the next one.
func (t *h1Transport) prune() {
	now := time.Now()
	t.mu.Lock()
	i := 0
	for i < len(t.idle) && now.Sub(t.idle[i].idleAt) >= t.idleFor {
		i++
	}
	dead := make([]*h1UpConn, i)
	copy(dead, t.idle[:i])
	n := copy(t.idle, t.idle[i:])
	clear(t.idle[n:])
	t.idle = t.idle[:n]
	if n > 0 {
		t.timer.Reset(t.idle[0].idleAt.Add(t.idleFor).Sub(now))
	} else {
		t.armed = false
	}
	t.mu.Unlock()
	for _, pc := range dead {
		pc.close()
	}
}

// closeIdle closes the idle connections (those in use go on).
func (t *h1Transport) closeIdle() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

// idleCount is the number of idle connections (for tests).
func (t *h1Transport) idleCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.idle)
}

// h1Exchange is one request on a connection; it is the response's body
// while that is read.
type h1Exchange struct {
	pc    *h1UpConn
	ctx   context.Context
	stop  func() bool // ends the context's hold on the connection
	br    *bufio.Reader
	inner io.ReadCloser // the body http.ReadResponse gave
	// closeAfter: the exchange says the connection closes after it.
	closeAfter bool
	// wrote is the request body's writer result (nil: no body, written
	// already).
	wrote chan error
	// cont carries the go-ahead for a body waiting for 100 Continue.
	cont     chan bool
	contSent bool

	state atomic.Int32 // h1Open, h1EOF, h1Done
	rerr  error        // the error a failed read returned (the reader's goroutine)
}

const (
	h1Open int32 = iota
	h1EOF
	h1Done
)

// roundTrip runs one exchange. stale: it failed before any byte of the
// response arrived, without the context ending.
func (pc *h1UpConn) roundTrip(req *http.Request, trace *httptrace.ClientTrace) (res *http.Response, stale bool, err error) {
	ctx := req.Context()
	pc.aborted.Store(false)
	ex := &h1Exchange{pc: pc, ctx: ctx}
	ex.stop = context.AfterFunc(ctx, pc.abort)
	ex.closeAfter = req.Close || httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")

	bw := h1Writers.Get().(*bufio.Writer)
	bw.Reset(pc.conn)
	chunked := req.Body != nil && req.ContentLength <= 0
	writeH1Head(bw, req, chunked)
	if req.Body == nil {
		err = bw.Flush()
		bw.Reset(nil)
		h1Writers.Put(bw)
		if err != nil {
			ex.stop()
			pc.close()
			return nil, !pc.aborted.Load(), pc.err(ctx, err)
		}
	} else {
		ex.wrote = make(chan error, 1)
		if req.ProtoAtLeast(1, 1) && httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
			ex.cont = make(chan bool, 1)
		}
		go ex.writeBody(bw, req, chunked)
	}

	br := h1Readers.Get().(*bufio.Reader)
	br.Reset(pc)
	ex.br = br
	pc.limit, pc.nread = h1MaxHeaderBytes, 0
	var clte, unchecked bool
	for {
		clte, unchecked = h1HeadCLTE(br)
		res, err = http.ReadResponse(br, req)
		if err != nil {
			break
		}
		code := res.StatusCode
		if code == http.StatusContinue && ex.cont != nil {
			if trace != nil && trace.Got100Continue != nil {
				trace.Got100Continue()
			}
			ex.goAhead(true)
		}
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		// Informational: passed on to whoever listens (ReverseProxy
		// forwards it), then the final response follows.
		if trace != nil && trace.Got1xxResponse != nil {
			if err = trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				break
			}
			pc.limit = h1MaxHeaderBytes // the listener bounds the 1xx it accepts
		}
	}
	pc.limit = -1
	if err == nil && len(res.TransferEncoding) > 0 && clte {
		// The upstream and the proxy may frame the body differently
		// (http.ReadResponse drops the length): a 502, and the
		// connection goes (Envoy refuses it too).
		res.Body.Close()
		err = errH1CLTE
	}
	if err == nil && res.StatusCode == http.StatusSwitchingProtocols && upgradeType(req.Header) == "" {
		// Nobody would read or close the connection: a 502.
		err = errH1Unasked101
	}
	if err != nil {
		stale = pc.nread == 0 && !pc.aborted.Load()
		err = pc.err(ctx, err)
		ex.stop()
		pc.close()
		ex.release()
		ex.goAhead(false)
		return nil, stale, err
	}
	// A chunked response whose head was not checked whole is not
	// trusted with the next request.
	ex.closeAfter = ex.closeAfter || res.Close || (unchecked && len(res.TransferEncoding) > 0)
	ex.goAhead(!ex.closeAfter)

	if res.StatusCode == http.StatusSwitchingProtocols {
		// The connection is the upgraded stream's now; ReverseProxy
		// ends it with the request's context.
		if !ex.stop() {
			pc.close()
			ex.release()
			return nil, false, pc.err(ctx, context.Canceled)
		}
		up := &h1Upgraded{conn: pc.conn}
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			up.pending = append([]byte(nil), b...)
		}
		ex.release()
		res.Body = up
		return res, false, nil
	}
	if res.Body == http.NoBody {
		ex.state.Store(h1EOF)
		ex.finish(true)
		return res, false, nil
	}
	ex.inner = res.Body
	res.Body = ex
	return res, false, nil
}

// h1HeadCLTE looks at the response head at the start of br before
// http.ReadResponse reads it (which drops a Content-Length that comes
// with Transfer-Encoding): clte, it has both; unchecked, br does not
// hold it whole (a head that came in pieces, or bare LF line ends).
func h1HeadCLTE(br *bufio.Reader) (clte, unchecked bool) {
	if _, err := br.Peek(1); err != nil {
		return false, false // http.ReadResponse fails the same way
	}
	b, _ := br.Peek(br.Buffered())
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return false, true
	}
	b = b[:end+2]
	var cl, te bool
	for i := bytes.IndexByte(b, '\n') + 1; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		line := b[i : i+j]
		i += j + 1
		switch {
		case hasPrefixFold(line, "content-length:"):
			cl = true
		case hasPrefixFold(line, "transfer-encoding:"):
			te = true
		}
	}
	return cl && te, false
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && asciiEqualFold(b[:len(prefix)], prefix)
}

// asciiEqualFold compares ASCII case-insensitively (bytes.EqualFold
// folds Unicode too: "ſ" would match "s").
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// release returns the reader buffer to its pool.
func (ex *h1Exchange) release() {
	ex.br.Reset(nil)
	h1Readers.Put(ex.br)
	ex.br = nil
}

// goAhead tells a body waiting for 100 Continue whether to go (once).
func (ex *h1Exchange) goAhead(send bool) {
	if ex.cont != nil && !ex.contSent {
		ex.contSent = true
		ex.cont <- send
	}
}

// writeBody writes the request's body (on a goroutine of its own) and
// reports the result on ex.wrote; a failure closes the connection,
// since the upstream would wait for the rest.
func (ex *h1Exchange) writeBody(bw *bufio.Writer, req *http.Request, chunked bool) {
	err := bw.Flush() // the header goes before the body is read
	if err == nil && ex.cont != nil {
		t := time.NewTimer(h1ContinueWait)
		select {
		case send := <-ex.cont:
			if !send {
				err = errH1SkipBody
			}
		case <-t.C:
		}
		t.Stop()
	}
	if err == nil {
		if chunked {
			err = writeChunked(bw, req)
		} else {
			err = writeSized(bw, req)
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	h1Writers.Put(bw)
	req.Body.Close()
	if err != nil {
		ex.pc.close()
	}
	ex.wrote <- err
}

// writeSized writes a body of Content-Length bytes and reads it to its
// end (where the downstream's body reports its end, and so the request
// is complete for the route timeout).
func writeSized(bw *bufio.Writer, req *http.Request) error {
	n, err := bw.ReadFrom(io.LimitReader(req.Body, req.ContentLength))
	if err != nil {
		return err
	}
	if n != req.ContentLength {
		return fmt.Errorf("proxy: request body of %d bytes, not its Content-Length %d", n, req.ContentLength)
	}
	var one [1]byte
	for {
		m, err := req.Body.Read(one[:])
		if m > 0 {
			return fmt.Errorf("proxy: request body longer than its Content-Length %d", req.ContentLength)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// writeChunked writes a body in chunks, each sent as it is read (a
// stream flows), then the trailers.
func writeChunked(bw *bufio.Writer, req *http.Request) error {
	buf := copyBuffers.Get()
	defer copyBuffers.Put(buf)
	var hex [16]byte
	for {
		n, rerr := req.Body.Read(buf)
		if n > 0 {
			bw.Write(strconv.AppendInt(hex[:0], int64(n), 16))
			bw.WriteString("\r\n")
			bw.Write(buf[:n])
			bw.WriteString("\r\n")
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	bw.WriteString("0\r\n")
	// Trailers are known only once the body is read: checked here.
	if err := checkFields(req.Trailer, "trailer"); err != nil {
		return err
	}
	for k, vs := range req.Trailer {
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// Read reads the response body; at its end the connection goes back to
// the pool when the exchange allows.
func (ex *h1Exchange) Read(p []byte) (int, error) {
	switch ex.state.Load() {
	case h1EOF:
		return 0, io.EOF
	case h1Done:
		if ex.rerr != nil {
			return 0, ex.rerr
		}
		return 0, errH1ClosedBody
	}
	n, err := ex.inner.Read(p)
	if err == nil {
		return n, nil
	}
	if err == io.EOF {
		if ex.state.CompareAndSwap(h1Open, h1EOF) {
			ex.finish(true)
		}
		return n, err
	}
	err = ex.pc.err(ex.ctx, err)
	if ex.state.CompareAndSwap(h1Open, h1Done) {
		ex.rerr = err
		ex.finish(false)
	}
	return n, err
}

// Close ends the response: before its end, the connection is closed
// (what is left of the body is not read).
func (ex *h1Exchange) Close() error {
	if ex.state.CompareAndSwap(h1Open, h1Done) {
		// A read may be blocked: closing the connection ends it, and
		// the reader buffer is left to it (not pooled).
		ex.stop()
		ex.pc.close()
	}
	return nil
}

// finish ends an exchange on its reading goroutine: the connection is
// pooled when ok and the exchange allows, else closed.
func (ex *h1Exchange) finish(ok bool) {
	pc := ex.pc
	reuse := ex.stop() && ok && !ex.closeAfter && ex.br.Buffered() == 0
	ex.release()
	if reuse && ex.wrote != nil {
		reuse = ex.written()
	}
	if reuse {
		pc.t.put(pc)
	} else {
		pc.close()
	}
}

// written waits briefly for the request body's writer: a response that
// ended before its request did leaves the connection unusable.
func (ex *h1Exchange) written() bool {
	select {
	case err := <-ex.wrote:
		return err == nil
	default:
	}
	t := time.NewTimer(h1WriteWait)
	defer t.Stop()
	select {
	case err := <-ex.wrote:
		return err == nil
	case <-t.C:
		return false
	}
}

// h1Upgraded is the body of a 101 response: the connection itself,
// after what the reader had buffered of it.
type h1Upgraded struct {
	conn    net.Conn
	pending []byte
}

func (u *h1Upgraded) Read(p []byte) (int, error) {
	if len(u.pending) > 0 {
		n := copy(p, u.pending)
		u.pending = u.pending[n:]
		return n, nil
	}
	return u.conn.Read(p)
}

func (u *h1Upgraded) Write(p []byte) (int, error) { return u.conn.Write(p) }
func (u *h1Upgraded) Close() error                { return u.conn.Close() }

// CloseWrite half-closes the connection when it can.
func (u *h1Upgraded) CloseWrite() error {
	c := u.conn
	if rc, ok := c.(*releaseConn); ok {
		c = rc.Conn
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("CloseWrite: %w", http.ErrNotSupported)
}

// ---- Writing a request.

// validH1Request refuses what cannot be written as HTTP/1.1 (net/http's
// transport checks the same): a method that is no token, an invalid
// Host, a header name or value that could split the message.
func validH1Request(req *http.Request) error {
	if req.URL == nil {
		return errors.New("proxy: request without a URL")
	}
	if m := req.Method; m != "" && !httpguts.ValidHeaderFieldName(m) { // a token
		return fmt.Errorf("proxy: invalid method %q", m)
	}
	host := h1Host(req)
	if !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("proxy: invalid Host %q", host)
	}
	if err := checkFields(req.Header, "header"); err != nil {
		return err
	}
	for k := range req.Trailer {
		switch http.CanonicalHeaderKey(k) {
		case "Transfer-Encoding", "Trailer", "Content-Length":
			return fmt.Errorf("proxy: invalid trailer %q", k)
		}
	}
	// (A path is written escaped; these are written as they are.)
	if hasCTL(req.URL.RawQuery) || hasCTL(req.URL.Opaque) {
		return errors.New("proxy: control character in the request URL")
	}
	return nil
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// h1Host is the request's Host header.
func h1Host(req *http.Request) string {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	return host
}

// writeH1Head writes the request line and header (into bw: nothing is
// sent before a flush).
func writeH1Head(bw *bufio.Writer, req *http.Request, chunked bool) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	writeRequestURI(bw, req)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(h1Host(req))
	bw.WriteString("\r\n")
	// ReverseProxy sets an empty User-Agent when the client sent none:
	// none is sent then.
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case req.Body != nil:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), req.ContentLength, 10))
		bw.WriteString("\r\n")
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		// (net/http sends it for these; many servers want it)
		bw.WriteString("Content-Length: 0\r\n")
	}
	if req.Close && !httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	for k, vs := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	if chunked && len(req.Trailer) > 0 {
		bw.WriteString("Trailer: ")
		first := true
		for k := range req.Trailer {
			if !first {
				bw.WriteByte(',')
			}
			first = false
			bw.WriteString(http.CanonicalHeaderKey(k))
		}
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// writeField writes one header line, its value trimmed as net/http
// writes it.
func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(v))
	bw.WriteString("\r\n")
}

// writeRequestURI writes what URL.RequestURI returns, without building
// it.
func writeRequestURI(bw *bufio.Writer, req *http.Request) {
	u := req.URL
	if req.Method == http.MethodConnect {
		bw.WriteString(h1Host(req))
		return
	}
	if u.Opaque != "" {
		bw.WriteString(u.RequestURI())
		return
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	bw.WriteString(p)
	if u.ForceQuery || u.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
}

// checkFields refuses a name or value that would break the request's
// framing on the wire (CR, LF, NUL, a name that is not a token), as
// net/http's transport does.
func checkFields(h http.Header, what string) error {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("proxy: invalid request %s name %q", what, k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("proxy: invalid request %s value for %q", what, k)
			}
		}
	}
	return nil
}
