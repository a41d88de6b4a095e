package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // go:linkname, for net/http's request parser

	"golang.org/x/net/http/httpguts"
)

// A lean HTTP/1.1 server for one downstream connection: what net/http's
// server does for HTTP/1 (conn.serve, readRequest, the response writer),
// on the connection's goroutine and with nothing per request but the
// request itself. net/http's server costs a goroutine hand-off per
// request (its background read, started for every request) and a dozen
// allocations (the response, its buffered writers, the chunk writer, a
// context); here the connection's buffers, response writer and header
// map are reused, and the client going away is watched for only once a
// request has waited on its upstream for watchDelay.
//
// Requests are parsed by net/http's own parser (strict: it is the one
// its server uses), reached by linkname because http.ReadRequest drops
// the Host header before the checks the server makes on it; those checks
// follow, as in net/http's conn.readRequest, and a bad request is
// answered exactly as net/http answers it (400, 431, 501, 505, 417, with
// "Connection: close"). HTTP/2 (the preface) still goes to http.Server.

// readRequest is net/http's request parser, as its server calls it:
// with the Host header still in the request's headers.
//
//go:linkname readRequest net/http.readRequest
func readRequest(b *bufio.Reader) (*http.Request, error)

const (
	// maxPostHandlerReadBytes is how much of a request body the handler
	// left unread is read and dropped to keep the connection (net/http's
	// bound); past it, the connection closes.
	maxPostHandlerReadBytes = 256 << 10
	// watchDelay is how long a request runs before its connection is
	// watched for the client going away (which cancels the request):
	// most requests are done sooner, and then nobody had to watch.
	watchDelay = 5 * time.Millisecond
	// rstAvoidanceDelay is how long a connection closed with a request
	// unread waits after its last response (net/http's): long enough for
	// the client to read it before the reset that unread data causes.
	rstAvoidanceDelay = 500 * time.Millisecond
)

// dateCache is the Date header's value for the current second.
var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	sec int64
	s   string
}

// httpDate is the current time in the Date header's format, formatted
// once a second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &cachedDate{sec: now.Unix(), s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

// aLongTimeAgo is a deadline that has passed: it wakes blocked I/O (the
// server's reads, the upstream transport's reads and writes).
var aLongTimeAgo = time.Unix(1, 0)

var (
	h1ReaderPool sync.Pool
	h1WriterPool sync.Pool
)

type h1State int

const (
	h1Idle     h1State = iota // waiting for a request's first bytes
	h1Active                  // reading or serving a request
	h1H2                      // handed to http.Server (HTTP/2)
	h1Hijacked                // taken over by a protocol switch
)

// h1Conn is one downstream connection served by the lean server.
type h1Conn struct {
	hc   *httpConn
	conn net.Conn // the edgeConn
	cr   connReader
	br   *bufio.Reader
	bw   *bufio.Writer
	// ctx is every request's context: canceled once the client is seen
	// gone.
	ctx    context.Context
	cancel context.CancelFunc

	// mu orders the drain with the wait for the next request: an idle
	// connection closes on drain, a busy one after its response.
	mu       sync.Mutex
	state    h1State
	draining atomic.Bool
	h2drain  func()

	// w is the response writer, reused by each request; wmu orders 100
	// Continue (sent from the body's reader) with the response head.
	w          h1Response
	wmu        sync.Mutex
	lastMethod string

	// amu orders a stream's timeout (abortWrites) with the request in
	// flight changing: a late timeout never touches the next request.
	amu      sync.Mutex
	inflight *http.Request
	aborted  bool
}

// abortWrites makes the connection's writes fail, a blocked one too,
// if req is still in flight: its stream timed out after its response
// started. The connection closes after it.
func (c *h1Conn) abortWrites(req *http.Request) {
	c.amu.Lock()
	defer c.amu.Unlock()
	if c.inflight == req && !c.aborted {
		c.aborted = true
		c.conn.SetWriteDeadline(aLongTimeAgo)
	}
}

// setInflight marks req in flight (nil: none); false when the request
// that was had its writes aborted.
func (c *h1Conn) setInflight(req *http.Request) bool {
	c.amu.Lock()
	defer c.amu.Unlock()
	c.inflight = req
	return !c.aborted
}

func newH1Conn(hc *httpConn, conn net.Conn) *h1Conn {
	c := &h1Conn{hc: hc, conn: conn}
	c.cr = connReader{c: c, conn: conn, remain: 1 << 62}
	c.cr.cond.L = &c.cr.mu
	c.br, _ = h1ReaderPool.Get().(*bufio.Reader)
	if c.br == nil {
		c.br = bufio.NewReaderSize(&c.cr, 4<<10)
	} else {
		c.br.Reset(&c.cr)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// sniff tells HTTP/2 (the client preface) from HTTP/1, reading no more
// than it must: the bytes read stay in br.
func (c *h1Conn) sniff() (h2 bool, err error) {
	for n := 1; ; {
		b, err := c.br.Peek(n)
		if len(b) < n {
			return false, err
		}
		if !strings.HasPrefix(h2Preface, string(b)) {
			return false, nil
		}
		if len(b) == len(h2Preface) {
			return true, nil
		}
		n = min(max(c.br.Buffered(), n+1), len(h2Preface))
	}
}

// drain ends keep-alive: an idle connection closes now, a busy one after
// the response in flight (with "Connection: close"), HTTP/2 through its
// server's Shutdown.
func (c *h1Conn) drain() {
	c.draining.Store(true)
	c.mu.Lock()
	st, h2drain := c.state, c.h2drain
	if st == h1Idle {
		c.conn.SetReadDeadline(aLongTimeAgo)
	}
	c.mu.Unlock()
	if st == h1H2 {
		h2drain()
	}
}

// setState moves to st unless the connection drains (false then).
func (c *h1Conn) setState(st h1State) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.draining.Load() {
		return false
	}
	c.state = st
	return true
}

// handOff gives the connection to http.Server for HTTP/2; drain then
// runs h2drain. False: the connection drains already.
func (c *h1Conn) handOff(h2drain func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.h2drain = h2drain
	c.state = h1H2
	return !c.draining.Load()
}

// bufferedConn is a connection whose first bytes were read into br.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.br != nil {
		if b.br.Buffered() > 0 {
			return b.br.Read(p)
		}
		b.br = nil
	}
	return b.Conn.Read(p)
}

// serve serves HTTP/1 requests until the connection ends or is hijacked
// (the first request's bytes are in br already, under the header
// timeout).
func (c *h1Conn) serve() {
	hijacked := false
	defer func() {
		c.cancel()
		c.cr.stopTimer()
		if hijacked {
			return
		}
		c.conn.Close()
		if b := c.w.body; b != nil {
			// A reader of the body the handler left behind (its upstream
			// request, still sending it) lets go of br before br goes
			// back to its pool: the closed connection ends its read.
			b.Close()
		}
		c.release()
		c.hc.closed()
	}()
	if !c.setState(h1Active) {
		return
	}
	hto := httpHeaderTimeout
	idle := c.hc.chain.http.idleTimeout
	for first := true; ; first = false {
		if !first {
			if c.draining.Load() {
				return
			}
			if c.br.Buffered() == 0 {
				// Keep-alive: wait for the next request's first byte under
				// the idle timeout, the header timeout starting then. (The
				// deadline first: a drain once idle cuts it short.)
				if idle > 0 {
					c.conn.SetReadDeadline(time.Now().Add(idle))
				} else {
					c.conn.SetReadDeadline(time.Time{})
				}
				if !c.setState(h1Idle) {
					return
				}
				if _, err := c.br.Peek(1); err != nil {
					return
				}
				if !c.setState(h1Active) {
					return
				}
			}
			c.conn.SetReadDeadline(time.Now().Add(hto))
		}
		req, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		c.conn.SetReadDeadline(time.Time{})
		w := c.startResponse(req)
		if w == nil {
			return
		}
		c.setInflight(req)
		if !c.callHandler(w, req) {
			// A panic (http.ErrAbortHandler: the response was cut short):
			// the connection goes with it.
			w.handlerDone = true
			c.cr.stopWatch()
			if w.hijacked {
				hijacked = true
			}
			return
		}
		w.handlerDone = true
		if w.hijacked {
			hijacked = true
			return
		}
		c.cr.stopWatch()
		if !w.finish() || !c.setInflight(nil) {
			return
		}
	}
}

// release returns the connection's buffers to their pools.
func (c *h1Conn) release() {
	if c.br != nil {
		c.br.Reset(nil)
		h1ReaderPool.Put(c.br)
		c.br = nil
	}
	if c.bw != nil {
		c.bw.Reset(nil)
		h1WriterPool.Put(c.bw)
		c.bw = nil
	}
}

func (c *h1Conn) writer() *bufio.Writer {
	if c.bw == nil {
		c.bw, _ = h1WriterPool.Get().(*bufio.Writer)
		if c.bw == nil {
			c.bw = bufio.NewWriterSize(c.conn, 4<<10)
		} else {
			c.bw.Reset(c.conn)
		}
	}
	return c.bw
}

// callHandler runs the handler; false if it panicked.
func (c *h1Conn) callHandler(w *h1Response, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.hc.errLog.Printf("http: panic serving %v: %v\n%s", c.hc.remote, p, buf)
			}
			ok = false
		}
	}()
	c.hc.ServeHTTP(w, req)
	return true
}

// errTooLarge is a request head over the limit.
var errTooLarge = errors.New("http: request too large")

// statusError is a request refused with a status (net/http's).
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return http.StatusText(e.code) + ": " + e.text }

func badRequest(text string) error { return statusError{http.StatusBadRequest, text} }

// readRequest reads and checks a request head: net/http's conn.readRequest.
func (c *h1Conn) readRequest() (*http.Request, error) {
	c.cr.remain = maxRequestHead
	if c.lastMethod == http.MethodPost {
		// RFC 7230 section 3 tolerance for old buggy clients.
		peek, _ := c.br.Peek(4)
		c.br.Discard(numLeadingCRorLF(peek))
	}
	// What br holds already is of this head too: the head is read
	// within maxRequestHead bytes in all, the edge's bound. A longer
	// one the edge let through unchecked (and stopped checking the
	// connection): read, it would let what follows it past the edge.
	c.cr.remain = maxRequestHead - int64(c.br.Buffered())
	req, err := readRequest(c.br)
	if err != nil {
		if c.cr.remain <= 0 {
			return nil, errTooLarge
		}
		return nil, err
	}
	c.cr.remain = 1 << 62
	if req.ProtoMajor != 1 && (req.ProtoMajor != 2 || req.ProtoMinor != 0 || req.Method != "PRI" || req.RequestURI != "*") {
		return nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	c.lastMethod = req.Method
	hosts, haveHost := req.Header["Host"]
	isH2Upgrade := req.Method == "PRI" && len(req.Header) == 0 && req.URL.Path == "*" && req.Proto == "HTTP/2.0"
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && !isH2Upgrade && req.Method != http.MethodConnect {
		return nil, badRequest("missing required Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, badRequest("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, badRequest("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, badRequest("invalid header value")
			}
		}
	}
	delete(req.Header, "Host")
	req.RemoteAddr = c.hc.remote
	return req.WithContext(c.ctx), nil
}

func numLeadingCRorLF(v []byte) (n int) {
	for _, b := range v {
		if b == '\r' || b == '\n' {
			n++
			continue
		}
		break
	}
	return
}

// refuse answers a request that could not be read, as net/http does,
// and the connection closes.
func (c *h1Conn) refuse(err error) {
	const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
	var se statusError
	switch {
	case err == errTooLarge:
		const publicErr = "431 Request Header Fields Too Large"
		io.WriteString(c.conn, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
		c.closeWriteAndWait()
	case reflect.TypeOf(err).String() == "*http.unsupportedTEError":
		// (The type is not exported.)
		code := http.StatusNotImplemented
		fmt.Fprintf(c.conn, "HTTP/1.1 %d %s%sUnsupported transfer encoding", code, http.StatusText(code), errorHeaders)
	case isCommonNetReadError(err):
		// Nobody to answer.
	case errors.As(err, &se):
		fmt.Fprintf(c.conn, "HTTP/1.1 %d %s: %s%s%d %s: %s", se.code, http.StatusText(se.code), se.text, errorHeaders, se.code, http.StatusText(se.code), se.text)
	default:
		const publicErr = "400 Bad Request"
		io.WriteString(c.conn, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
	}
}

func isCommonNetReadError(err error) bool {
	if err == io.EOF {
		return true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return true
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "read" {
		return true
	}
	return false
}

// closeWriteAndWait half-closes and waits for the client to read the
// last response before the connection is closed (net/http's).
func (c *h1Conn) closeWriteAndWait() {
	if c.bw != nil {
		c.bw.Flush()
	}
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	time.Sleep(rstAvoidanceDelay)
}

// startResponse prepares the response to req (nil: the request was
// answered already and the connection closes).
func (c *h1Conn) startResponse(req *http.Request) *h1Response {
	w := &c.w
	h := w.header
	if h == nil {
		h = make(http.Header)
	}
	*w = h1Response{c: c, req: req, header: h, bw: c.writer(), contentLength: -1, status: http.StatusOK, trailers: w.trailers[:0]}
	w.isHEAD = req.Method == http.MethodHead
	w.wantsClose = req.Close
	w.wants10KeepAlive = !req.ProtoAtLeast(1, 1) && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "keep-alive")
	if req.Method == "PRI" {
		w.closeAfter = true
	}
	var body *h1Body
	if req.Body != nil && req.Body != http.NoBody {
		body = &h1Body{c: c, w: w, src: req.Body}
		req.Body = body
		w.body = body
	}
	if expect := req.Header["Expect"]; len(expect) > 0 {
		if httpguts.HeaderValuesContainsToken(expect, "100-continue") {
			if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 && body != nil {
				body.cont = true
				w.canContinue = true
			}
		} else if expect[0] != "" {
			w.header.Set("Connection", "close")
			w.WriteHeader(http.StatusExpectationFailed)
			w.body = nil
			w.finish()
			return nil
		}
	}
	if body == nil || req.ContentLength == 0 {
		c.cr.startWatch()
	} else {
		c.cr.allowWatch()
	}
	return w
}

// ---- The connection's reader.

// connReader reads the connection for br, bounding a request head's
// bytes, and watches it for the client going away while a handler runs
// (net/http's background read, started only for a request still running
// after watchDelay).
type connReader struct {
	c      *h1Conn
	conn   net.Conn
	remain int64 // bytes br may still read (the head's limit)

	mu   sync.Mutex
	cond sync.Cond
	// watch: the request is read whole and its handler runs, so a read
	// now only sees the client go away or pipeline the next request.
	watch   bool
	allowed bool // the handler runs (watch once its body ends)
	inRead  bool // the watch is reading
	aborted bool
	hasByte bool
	byteBuf [1]byte
	timer   *time.Timer
}

func (cr *connReader) Read(p []byte) (int, error) {
	// Reads and the watch never overlap: the watch starts once the
	// request is read whole and is stopped (stopWatch) before the
	// connection is read again.
	if cr.remain <= 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	if cr.hasByte {
		p[0] = cr.byteBuf[0]
		cr.hasByte = false
		cr.remain--
		return 1, nil
	}
	n, err := cr.conn.Read(p)
	cr.remain -= int64(n)
	return n, err
}

// allowWatch: the handler runs; the watch may start once the request
// body has ended.
func (cr *connReader) allowWatch() {
	cr.mu.Lock()
	cr.allowed = true
	cr.mu.Unlock()
}

// startWatch: the request is read whole; if the handler still runs after
// watchDelay, the connection is read for the client going away.
func (cr *connReader) startWatch() {
	cr.mu.Lock()
	cr.allowed = true
	cr.arm()
	cr.mu.Unlock()
}

// bodyEnded: the request body was read to its end (while the handler
// runs: its reader may outlive it).
func (cr *connReader) bodyEnded() {
	cr.mu.Lock()
	if cr.allowed {
		cr.arm()
	}
	cr.mu.Unlock()
}

func (cr *connReader) arm() {
	cr.watch = true
	if cr.timer == nil {
		cr.timer = time.AfterFunc(watchDelay, cr.backgroundRead)
	} else {
		cr.timer.Reset(watchDelay)
	}
}

func (cr *connReader) backgroundRead() {
	cr.mu.Lock()
	if !cr.watch || cr.inRead || cr.hasByte {
		cr.mu.Unlock()
		return
	}
	cr.inRead = true
	cr.mu.Unlock()
	n, err := cr.conn.Read(cr.byteBuf[:])
	cr.mu.Lock()
	if n == 1 {
		// The next request, pipelined: kept for br.
		cr.hasByte = true
	}
	if ne, ok := err.(net.Error); ok && cr.aborted && ne.Timeout() {
		// stopWatch ended the read.
	} else if err != nil {
		cr.c.cancel()
	}
	cr.aborted = false
	cr.inRead = false
	cr.mu.Unlock()
	cr.cond.Broadcast()
}

// stopTimer stops the watch's timer for good (the connection ends).
func (cr *connReader) stopTimer() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.watch, cr.allowed = false, false
	if cr.timer != nil {
		cr.timer.Stop()
	}
}

// stopWatch ends the watch (its read too) before the connection is read
// again or handed over.
func (cr *connReader) stopWatch() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.watch, cr.allowed = false, false
	if !cr.inRead {
		return
	}
	cr.aborted = true
	cr.conn.SetReadDeadline(aLongTimeAgo)
	for cr.inRead {
		cr.cond.Wait()
	}
	cr.conn.SetReadDeadline(time.Time{})
}

// ---- The request body.

// h1Body is a request body as the handler reads it: sends 100 Continue
// on the first read when the client waits for it, starts the watch at
// its end, and reads nothing once the handler is done (what is left is
// then read and dropped, up to a bound, to keep the connection).
type h1Body struct {
	c    *h1Conn
	w    *h1Response
	src  io.ReadCloser
	mu   sync.Mutex
	cont bool // send 100 Continue before reading
	// closed: the handler closed it or returned.
	closed bool
	sawEOF atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.sawEOF.Load() {
		return 0, io.EOF
	}
	if b.cont {
		b.cont = false
		b.w.writeContinue()
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		b.sawEOF.Store(true)
		b.c.cr.bodyEnded()
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// discard reads and drops what the handler left of the body; false: too
// much or broken, and the connection cannot carry another request.
func (b *h1Body) discard() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.sawEOF.Load() {
		return true
	}
	if b.cont {
		// The client still waits for 100 Continue: the body never came.
		return false
	}
	n, err := io.CopyN(io.Discard, b.src, maxPostHandlerReadBytes+1)
	return err == io.EOF && n <= maxPostHandlerReadBytes
}

// ---- The response writer.

// h1Response writes a response: its head once the body starts (or the
// handler flushes or returns), then the body as is with a
// Content-Length, else chunked (HTTP/1.1) or up to the close (HTTP/1.0),
// then the trailers.
type h1Response struct {
	c      *h1Conn
	req    *http.Request
	body   *h1Body
	bw     *bufio.Writer
	header http.Header
	status int
	// wroteHeader: the handler wrote the status; headerSent: the head
	// is written to bw.
	wroteHeader bool
	headerSent  bool
	handlerDone bool
	hijacked    bool

	contentLength int64 // -1: unknown
	written       int64
	chunking      bool
	noBody        bool
	isHEAD        bool
	closeAfter    bool
	wantsClose    bool
	// wants10KeepAlive: an HTTP/1.0 request asking for keep-alive.
	wants10KeepAlive bool
	trailers         []string // declared trailer names

	// canContinue: 100 Continue is still to be sent on the first read of
	// the body (under the connection's wmu).
	canContinue bool
	scratch     [32]byte
}

func (w *h1Response) Header() http.Header { return w.header }

func (w *h1Response) EnableFullDuplex() error { return nil }

func (w *h1Response) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational response goes out now.
		w.c.wmu.Lock()
		if code == http.StatusContinue {
			w.canContinue = false
		}
		w.writeStatusLine(code)
		w.writeHeaders(w.header, true)
		w.bw.WriteString("\r\n")
		w.bw.Flush()
		w.c.wmu.Unlock()
		return
	}
	w.wroteHeader, w.status = true, code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.hc.errLog.Printf("http: invalid Content-Length of %q", cl)
			w.header.Del("Content-Length")
		}
	}
}

// writeContinue sends 100 Continue, unless the response started.
func (w *h1Response) writeContinue() {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	if !w.canContinue {
		return
	}
	w.canContinue = false
	w.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	w.bw.Flush()
}

func (w *h1Response) writeStatusLine(code int) {
	if w.req.ProtoAtLeast(1, 1) {
		w.bw.WriteString("HTTP/1.1 ")
	} else {
		w.bw.WriteString("HTTP/1.0 ")
	}
	w.bw.Write(strconv.AppendInt(w.scratch[:0], int64(code), 10))
	w.bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		w.bw.WriteString(text)
	} else {
		w.bw.WriteString("status code ")
		w.bw.Write(strconv.AppendInt(w.scratch[:0], int64(code), 10))
	}
	w.bw.WriteString("\r\n")
}

// writeHeaders writes h's fields (noBody: without the framing ones),
// dropping invalid names and turning line breaks in values into spaces
// (as net/http does).
func (w *h1Response) writeHeaders(h http.Header, noBody bool) {
	for k, vv := range h {
		if noBody && (k == "Content-Length" || k == "Transfer-Encoding") {
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			w.writeField(k, v)
		}
	}
}

var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

func (w *h1Response) writeField(k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = newlineToSpace.Replace(v)
	}
	writeField(w.bw, k, v)
}

func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199:
		return false
	case status == http.StatusNoContent, status == http.StatusNotModified:
		return false
	}
	return true
}

// sendHeader writes the response head (done: the handler returned with
// no body written), settling the framing and whether the connection is
// kept: net/http's chunkWriter.writeHeader.
func (w *h1Response) sendHeader(done bool) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	w.canContinue = false
	w.headerSent = true
	h := w.header
	code := w.status

	trailers := false
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
			break
		}
	}
	for _, v := range h["Trailer"] {
		trailers = true
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(f))
			}
		}
	}
	te := h.Get("Transfer-Encoding")
	hasTE := te != ""
	if done && !trailers && !hasTE && bodyAllowedForStatus(code) && w.contentLength == -1 && !w.isHEAD {
		w.contentLength = 0
		h.Set("Content-Length", "0")
	}
	keepAlives := !w.c.draining.Load()
	if w.wants10KeepAlive && keepAlives {
		if h.Get("Content-Length") != "" && h.Get("Connection") == "keep-alive" {
			w.closeAfter = false
		}
	}
	hasCL := w.contentLength != -1
	if w.wants10KeepAlive && (w.isHEAD || hasCL || !bodyAllowedForStatus(code)) {
		if _, set := h["Connection"]; !set {
			h.Set("Connection", "keep-alive")
		}
	} else if !w.req.ProtoAtLeast(1, 1) || w.wantsClose {
		w.closeAfter = true
	}
	if h.Get("Connection") == "close" || !keepAlives {
		w.closeAfter = true
	}
	if w.body != nil && w.body.cont {
		// The client waits for 100 Continue, and will not get it: its
		// body never comes, so no request can follow.
		w.closeAfter = true
	}
	if !bodyAllowedForStatus(code) {
		w.noBody = true
		if code == http.StatusNotModified {
			h.Del("Content-Type")
		}
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		hasCL = false
	}
	if hasCL && hasTE && te != "identity" {
		w.c.hc.errLog.Printf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		h.Del("Content-Length")
		w.contentLength, hasCL = -1, false
	}
	switch {
	case w.isHEAD || w.noBody:
		h.Del("Transfer-Encoding")
	case hasCL:
		h.Del("Transfer-Encoding")
	case w.req.ProtoAtLeast(1, 1):
		if hasTE && te == "identity" {
			w.closeAfter = true
		} else {
			w.chunking = true
		}
		h.Del("Transfer-Encoding")
	default:
		w.closeAfter = true
		h.Del("Transfer-Encoding")
	}
	if w.chunking {
		h.Del("Content-Length")
	}
	if w.closeAfter && (keepAlives || !httpguts.HeaderValuesContainsToken(h["Connection"], "close")) {
		h.Del("Connection")
		if w.req.ProtoAtLeast(1, 1) {
			h.Set("Connection", "close")
		}
	}
	w.writeStatusLine(code)
	w.writeHeaders(h, false)
	if _, ok := h["Date"]; !ok {
		// As net/http's server and Envoy: every response has a Date
		// (an upstream's own is kept).
		w.writeField("Date", httpDate())
	}
	if w.chunking {
		w.bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	w.bw.WriteString("\r\n")
}

func (w *h1Response) Write(p []byte) (int, error) {
	if write, err := w.startBody(len(p)); !write {
		if err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if _, err := w.bw.Write(p); err != nil {
		return 0, err
	}
	return w.endBody(len(p))
}

func (w *h1Response) WriteString(s string) (int, error) {
	if write, err := w.startBody(len(s)); !write {
		if err != nil {
			return 0, err
		}
		return len(s), nil
	}
	if _, err := w.bw.WriteString(s); err != nil {
		return 0, err
	}
	return w.endBody(len(s))
}

// startBody readies n bytes of body (the head first, then the chunk
// header); false when they are not to be written: an error, or nothing
// to write (an empty write, a HEAD response's body).
func (w *h1Response) startBody(n int) (bool, error) {
	if w.hijacked {
		return false, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if n == 0 {
		return false, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return false, http.ErrBodyNotAllowed
	}
	w.written += int64(n)
	if w.contentLength != -1 && w.written > w.contentLength {
		return false, http.ErrContentLength
	}
	if !w.headerSent {
		w.sendHeader(false)
	}
	if w.isHEAD {
		return false, nil
	}
	if w.chunking {
		w.bw.Write(strconv.AppendUint(w.scratch[:0], uint64(n), 16))
		w.bw.WriteString("\r\n")
	}
	return true, nil
}

func (w *h1Response) endBody(n int) (int, error) {
	if w.chunking {
		if _, err := w.bw.WriteString("\r\n"); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (w *h1Response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(false)
	}
	return w.bw.Flush()
}

func (w *h1Response) Flush() { w.FlushError() }

// Hijack hands the connection over (a protocol switch): what br holds
// goes with it.
func (w *h1Response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.handlerDone {
		return nil, nil, errors.New("proxy: Hijack after the handler returned")
	}
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.c.wmu.Lock()
	w.canContinue = false
	w.c.wmu.Unlock()
	if w.wroteHeader && !w.headerSent {
		w.sendHeader(false)
	}
	if err := w.bw.Flush(); err != nil {
		return nil, nil, err
	}
	c := w.c
	c.cr.stopWatch()
	if c.cr.hasByte {
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return nil, nil, fmt.Errorf("proxy: reading the byte the watch read: %w", err)
		}
	}
	c.cr.remain = 1 << 62
	w.hijacked = true
	c.mu.Lock()
	c.state = h1Hijacked
	c.mu.Unlock()
	return c.conn, bufio.NewReadWriter(c.br, c.bw), nil
}

// finish ends the response after the handler returned; false: the
// connection cannot carry another request.
func (w *h1Response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headerSent {
		w.sendHeader(true)
	}
	if w.chunking {
		w.bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				w.writeField(k, v)
			}
		}
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
				for _, v := range vv {
					w.writeField(name, v)
				}
			}
		}
		w.bw.WriteString("\r\n")
	}
	err := w.bw.Flush()
	clear(w.header)
	if w.trailers != nil {
		w.trailers = w.trailers[:0]
	}
	keep := err == nil && !w.closeAfter
	if !w.isHEAD && !w.noBody && w.contentLength != -1 && w.written != w.contentLength {
		// Too short: the client would read the next response as the
		// rest of this one.
		keep = false
	}
	if w.body != nil && !w.body.discard() {
		if keep {
			w.c.closeWriteAndWait()
		}
		return false
	}
	return keep
}
