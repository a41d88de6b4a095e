package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// h1Server is an HTTP/1.1 server on loopback that counts the
// connections it accepts.
type h1Server struct {
	addr     string
	accepted atomic.Int64
}

func startH1Server(t *testing.T, h http.Handler) *h1Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h1Server{addr: ln.Addr().String()}
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.accepted.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// rawServer accepts connections and hands each to serve (on its own
// goroutine).
func rawServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// testH1 is a transport dialing addr that counts its dials.
func testH1(t *testing.T, addr string) (*h1Transport, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	tr := newH1Transport(func() (net.Conn, error) {
		dials.Add(1)
		return net.Dial("tcp", addr)
	}, nil)
	t.Cleanup(tr.closeIdle)
	return tr, &dials
}

func h1Req(t *testing.T, ctx context.Context, method, addr, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// roundTrip sends req and reads the whole response.
func roundTrip(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	return res, string(b)
}

// TestH1KeepAlive: sequential requests share one connection, which is
// idle in the pool between them.
func TestH1KeepAlive(t *testing.T) {
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path+"?"+r.URL.RawQuery+" "+r.Host+" "+r.Header.Get("X-A"))
	}))
	tr, dials := testH1(t, s.addr)
	for i := range 5 {
		req := h1Req(t, context.Background(), "GET", s.addr, fmt.Sprintf("/p%d?q=%d", i, i), nil)
		req.Header.Set("X-A", " spaced ")
		req.Host = "svc.example"
		res, body := roundTrip(t, tr, req)
		if want := fmt.Sprintf("hello /p%d?q=%d svc.example spaced", i, i); res.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q; want 200 %q", i, res.StatusCode, body, want)
		}
		if n := tr.idleCount(); n != 1 {
			t.Fatalf("after request %d: %d idle connections; want 1", i, n)
		}
	}
	if d, a := dials.Load(), s.accepted.Load(); d != 1 || a != 1 {
		t.Errorf("5 sequential requests: %d dials, %d connections accepted; want 1", d, a)
	}
}

// TestH1ConnectionClose: a connection the response (or the request)
// says closes, or an HTTP/1.0 response without keep-alive, is not
// reused.
func TestH1ConnectionClose(t *testing.T) {
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	}))
	tr, dials := testH1(t, s.addr)
	for range 3 {
		roundTrip(t, tr, h1Req(t, context.Background(), "GET", s.addr, "/close", nil))
	}
	if d := dials.Load(); d != 3 || tr.idleCount() != 0 {
		t.Errorf("3 responses with Connection: close: %d dials, %d idle; want 3 and 0", d, tr.idleCount())
	}
	req := h1Req(t, context.Background(), "GET", s.addr, "/", nil)
	req.Header.Set("Connection", "close")
	roundTrip(t, tr, req)
	if tr.idleCount() != 0 {
		t.Error("a request with Connection: close left its connection idle")
	}

	// HTTP/1.0 without keep-alive: the body ends with the connection.
	addr := rawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nold")
		}
	})
	tr10, _ := testH1(t, addr)
	if _, body := roundTrip(t, tr10, h1Req(t, context.Background(), "GET", addr, "/", nil)); body != "old" || tr10.idleCount() != 0 {
		t.Errorf("HTTP/1.0: body %q, %d idle; want \"old\", 0", body, tr10.idleCount())
	}
}

// TestH1Chunked: a body of unknown length goes chunked with its
// trailers; a chunked response is read with its trailers; the
// connection is reused after both.
func TestH1Chunked(t *testing.T) {
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Write([]byte(fmt.Sprintf("%v %d %s|", r.TransferEncoding, r.ContentLength, b)))
		w.(http.Flusher).Flush()
		io.WriteString(w, "trailer "+r.Trailer.Get("X-Req-Trailer"))
		w.Header().Set("X-Sum", "42")
	}))
	tr, dials := testH1(t, s.addr)
	for i := range 2 {
		pr, pw := io.Pipe()
		req := h1Req(t, context.Background(), "POST", s.addr, "/", pr)
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Req-Trailer": nil}
		go func() {
			io.WriteString(pw, "part one, ")
			io.WriteString(pw, "part two")
			req.Trailer.Set("X-Req-Trailer", "t1")
			pw.Close()
		}()
		res, body := roundTrip(t, tr, req)
		if want := "[chunked] -1 part one, part two|trailer t1"; body != want {
			t.Fatalf("request %d: body %q; want %q", i, body, want)
		}
		if len(res.TransferEncoding) != 1 || res.Trailer.Get("X-Sum") != "42" {
			t.Errorf("response %d: transfer encoding %v, trailer %v; want chunked, X-Sum 42", i, res.TransferEncoding, res.Trailer)
		}
	}
	// A sized body goes with its Content-Length.
	_, body := roundTrip(t, tr, h1Req(t, context.Background(), "PUT", s.addr, "/", strings.NewReader("sized")))
	if body != "[] 5 sized|trailer " {
		t.Errorf("sized body: %q", body)
	}
	testkit.WaitFor(t, 5*time.Second, "the connection back in the pool", func() bool { return tr.idleCount() == 1 })
	if d := dials.Load(); d != 1 {
		t.Errorf("%d dials for 3 requests with bodies; want 1", d)
	}
}

// TestH1Upgrade: a 101 response's body is the connection, read and
// written both ways, bytes the server sent with the 101 included.
func TestH1Upgrade(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil || r.Header.Get("Upgrade") != "echo" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nwelcome;")
		io.Copy(c, br)
	})
	tr, _ := testH1(t, addr)
	req := h1Req(t, context.Background(), "GET", addr, "/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	res, err := tr.RoundTrip(req)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("a 101's body is %T, not an io.ReadWriteCloser", res.Body)
	}
	defer rwc.Close()
	if _, err := io.WriteString(rwc, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("welcome;ping"))
	if _, err := io.ReadFull(rwc, got); err != nil || string(got) != "welcome;ping" {
		t.Fatalf("read %q, %v; want \"welcome;ping\"", got, err)
	}
	if tr.idleCount() != 0 {
		t.Error("an upgraded connection went back to the pool")
	}
}

// TestH1ContextAborts: the request's context ending (a per-try
// timeout) ends a request whose upstream never answers, and a response
// body the upstream stops sending, with the context's cause; the
// connection is closed, not pooled.
func TestH1ContextAborts(t *testing.T) {
	got := make(chan string, 4)
	closed := make(chan struct{}, 4)
	addr := rawServer(t, func(c net.Conn) {
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if r.URL.Path == "/half" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
		}
		got <- r.URL.Path
		io.Copy(io.Discard, c) // until the client closes
		closed <- struct{}{}
	})
	tr, _ := testH1(t, addr)

	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(h1Req(t, ctx, "GET", addr, "/hang", nil))
		errc <- err
	}()
	<-got
	cancel(errPerTryTimeout)
	select {
	case err := <-errc:
		if !errors.Is(err, errPerTryTimeout) {
			t.Errorf("hung upstream: %v; want the per-try timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not end when its context did")
	}
	<-closed

	ctx, cancel = context.WithCancelCause(context.Background())
	res, err := tr.RoundTrip(h1Req(t, ctx, "GET", addr, "/half", nil))
	if err != nil {
		t.Fatal(err)
	}
	<-got
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("first bytes: %q %v", buf, err)
	}
	go cancel(errRouteTimeout)
	if _, err := io.ReadAll(res.Body); !errors.Is(err, errRouteTimeout) {
		t.Errorf("body of a stalled upstream: %v; want the route timeout", err)
	}
	res.Body.Close()
	<-closed
	if tr.idleCount() != 0 {
		t.Error("an aborted connection went back to the pool")
	}
}

// TestH1StaleIdle: a pooled connection the upstream closed is not
// used: a GET is sent again on a new connection; a POST is sent on a
// new one after the pooled one was peeked at; a POST whose pooled
// connection dies after the upstream read it is not sent twice.
func TestH1StaleIdle(t *testing.T) {
	var requests atomic.Int64
	mode := atomic.Value{}
	mode.Store("close-after-response")
	closed := make(chan struct{}, 16)
	addr := rawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			requests.Add(1)
			if mode.Load() == "close-before-response" && r.Header.Get("X-Fresh") == "" {
				closed <- struct{}{}
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if mode.Load() == "close-after-response" {
				closed <- struct{}{}
				return
			}
		}
	})
	tr, dials := testH1(t, addr)
	get := func(method string) (*http.Response, error) {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("data")
		}
		res, err := tr.RoundTrip(h1Req(t, context.Background(), method, addr, "/", body))
		if err == nil {
			io.ReadAll(res.Body)
			res.Body.Close()
		}
		return res, err
	}
	for _, m := range []string{"GET", "GET", "POST", "GET"} {
		if res, err := get(m); err != nil || res.StatusCode != 200 {
			t.Fatalf("%s after the upstream closed its idle connection: %v %v", m, res, err)
		}
		<-closed
	}
	if d := dials.Load(); d != 4 {
		t.Errorf("%d dials; want 4 (every pooled connection was closed)", d)
	}

	// The upstream reads a request and closes without answering.
	mode.Store("keep")
	if _, err := get("GET"); err != nil {
		t.Fatal(err)
	}
	mode.Store("close-before-response")
	before := requests.Load()
	if _, err := get("POST"); err == nil {
		t.Error("a POST the upstream read and dropped succeeded")
	}
	<-closed
	if n := requests.Load() - before; n != 1 {
		t.Errorf("the upstream got the POST %d times; want 1 (not sent again)", n)
	}
}

// TestH1NoBody: HEAD, 204 and 304 responses have no body, whatever
// their Content-Length says, and leave the connection reusable.
func TestH1NoBody(t *testing.T) {
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "1000")
			if r.Method != "HEAD" {
				w.Write(make([]byte, 1000))
			}
		}
	}))
	tr, dials := testH1(t, s.addr)
	for _, c := range []struct{ method, path string }{{"HEAD", "/"}, {"GET", "/204"}, {"GET", "/304"}, {"GET", "/"}} {
		res, body := roundTrip(t, tr, h1Req(t, context.Background(), c.method, s.addr, c.path, nil))
		want := 0
		if c.method == "GET" && c.path == "/" {
			want = 1000
		}
		if len(body) != want {
			t.Errorf("%s %s: %d %d bytes; want %d", c.method, c.path, res.StatusCode, len(body), want)
		}
		if tr.idleCount() != 1 {
			t.Errorf("%s %s: the connection is not back in the pool", c.method, c.path)
		}
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("%d dials; want 1", d)
	}
}

// TestH1Informational: 1xx responses are passed to the trace (which
// ReverseProxy forwards) and skipped; the final response follows.
func TestH1Informational(t *testing.T) {
	addr := rawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
		}
	})
	tr, _ := testH1(t, addr)
	var codes []int
	var link string
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		codes = append(codes, code)
		if code == 103 {
			link = h.Get("Link")
		}
		return nil
	}})
	res, body := roundTrip(t, tr, h1Req(t, ctx, "GET", addr, "/", nil))
	if res.StatusCode != 200 || body != "done" || fmt.Sprint(codes) != "[103 100]" || link != "</a.css>" {
		t.Errorf("got %d %q after 1xx %v (Link %q); want 200 \"done\" after [103 100]", res.StatusCode, body, codes, link)
	}
}

// TestH1Refuses: a header that would split the message is refused
// before anything is dialed.
func TestH1Refuses(t *testing.T) {
	tr, dials := testH1(t, "127.0.0.1:1")
	req := h1Req(t, context.Background(), "GET", "127.0.0.1:1", "/", nil)
	req.Header["X-Evil"] = []string{"a\r\nInjected: yes"}
	if _, err := tr.RoundTrip(req); err == nil || dials.Load() != 0 {
		t.Errorf("CRLF in a header value: %v after %d dials; want an error, no dial", err, dials.Load())
	}
	req = h1Req(t, context.Background(), "GET", "127.0.0.1:1", "/", nil)
	req.Host = "a b"
	if _, err := tr.RoundTrip(req); err == nil {
		t.Error("an invalid Host was sent")
	}
}

// TestH1MaxConnections: the upstream transport of an HTTP/1.1 cluster
// still dials through max_connections: a second request while the only
// connection is busy overflows; once the first response is read the
// connection serves the next; closing it frees the slot.
func TestH1MaxConnections(t *testing.T) {
	release := make(chan struct{})
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "he")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "llo")
	}))
	rt := buildRT(t, breakerCluster(1), nil)
	h := rt.hosts[0]
	h.addr = netip.MustParseAddrPort(s.addr)
	ut := newUpstreamTransport(&Proxy{}, keyFor(rt, h))
	ut.target.Store(&dialTarget{c: rt, h: h})
	t.Cleanup(ut.closeIdle)

	res, err := ut.RoundTrip(h1Req(t, context.Background(), "GET", s.addr, "/slow", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ut.RoundTrip(h1Req(t, context.Background(), "GET", s.addr, "/", nil)); !errors.Is(err, errConnOverflow) {
		t.Errorf("a second connection past max_connections 1: %v; want the overflow", err)
	}
	close(release)
	io.ReadAll(res.Body)
	res.Body.Close()
	roundTrip(t, ut, h1Req(t, context.Background(), "GET", s.addr, "/", nil))
	if a := s.accepted.Load(); a != 1 {
		t.Errorf("%d connections; want 1", a)
	}
	ut.closeIdle()
	if n := rt.st.conns.Load(); n != 0 {
		t.Errorf("%d connection slots held after the idle connection closed; want 0", n)
	}
}

// TestH1ExpectContinue: a request with Expect: 100-continue sends its
// body once the upstream asks for it, and gets the final response; an
// upstream that answers at once without reading the body gets none of it
// and its connection is not reused.
func TestH1ExpectContinue(t *testing.T) {
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/deny" {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "got "+string(b))
	}))
	tr, _ := testH1(t, s.addr)
	var continued atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got100Continue: func() { continued.Store(true) }})
	req := h1Req(t, ctx, "POST", s.addr, "/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	if res, body := roundTrip(t, tr, req); res.StatusCode != 200 || body != "got payload" || !continued.Load() {
		t.Errorf("got %d %q (100 Continue seen: %v); want 200 \"got payload\" after a 100", res.StatusCode, body, continued.Load())
	}
	req = h1Req(t, context.Background(), "POST", s.addr, "/deny", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	if res, _ := roundTrip(t, tr, req); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("denied: %d; want 401", res.StatusCode)
	}
	if tr.idleCount() != 0 {
		t.Error("the connection of a request whose body was not sent went back to the pool")
	}
}

// TestH1Concurrent: many requests at once, with and without bodies,
// share the pool and its buffers; each gets its own answer, and no more
// connections stay idle than were open at once.
func TestH1Concurrent(t *testing.T) {
	s := startH1Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.URL.Path+":"+string(b))
	}))
	tr, dials := testH1(t, s.addr)
	const workers, each = 16, 40
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				path := fmt.Sprintf("/%d/%d", w, i)
				var body io.Reader
				want := path + ":"
				if i%3 == 0 {
					body = strings.NewReader(strings.Repeat("b", i*100))
					want += strings.Repeat("b", i*100)
				}
				res, err := tr.RoundTrip(h1Req(t, context.Background(), "POST", s.addr, path, body))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("%s: %d bytes %v; want %d bytes", path, len(got), err, len(want))
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := tr.idleCount(); n < 1 || int64(n) > dials.Load() || n > workers {
		t.Errorf("%d idle connections after %d dials by %d workers", n, dials.Load(), workers)
	}
}
