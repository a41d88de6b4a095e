package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"golang.org/x/net/websocket"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The lean HTTP/1.1 server (http1_server.go), through a proxy in front of
// a backend whose handlers the tests control.

// leanBackend is the app behind the proxy.
type leanBackend struct {
	addr    string
	arrived chan string   // a /hold request reached the app (its id)
	release chan struct{} // lets a /hold request answer
	gone    chan string   // a /hold request's context ended first (its id)
}

func startLeanBackend(t *testing.T) *leanBackend {
	t.Helper()
	b := &leanBackend{arrived: make(chan string, 8), release: make(chan struct{}, 8), gone: make(chan string, 8)}
	mux := http.NewServeMux()
	mux.HandleFunc("/len", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/nodate", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Date"] = nil // net/http then sends none
		w.Header().Set("X-Date", time.Now().UTC().Format(http.TimeFormat))
		io.WriteString(w, "x")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Body-Len", strconv.Itoa(len(body)))
		w.Write(body)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "part1,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
		w.Header().Set("X-Sum", "11")
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		b.arrived <- id
		select {
		case <-b.release:
			io.WriteString(w, "released")
		case <-r.Context().Done():
			b.gone <- id
		}
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	srv := &http.Server{Handler: mux}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

// leanProxy is a proxy with one plaintext HTTP listener, "web", routing
// everything to b; drop removes the listener (its connections drain).
func leanProxy(t *testing.T, b *leanBackend, mutate func(*hcm.HttpConnectionManager)) (addr string, drop func()) {
	t.Helper()
	cp := startControlPlane(t)
	rc := &route.RouteConfiguration{Name: "r1", VirtualHosts: []*route.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*route.Route{prefixRoute("/", "app")}}}}
	clusters := []types.Resource{staticCluster("app", b.addr)}
	cp.setAll(t, "1", []types.Resource{httpListener(t, "web", "r1", mutate)}, clusters, []types.Resource{rc})
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: 20 * time.Second, MinBackoff: 50 * time.Millisecond,
		Logger: testkit.Discard()})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	addr = p.ListenerAddrs()["web"].String()
	testkit.WaitFor(t, 5*time.Second, "the app answering through the listener", func() bool {
		code, _, err := tryRawGet(addr, "/len")
		return err == nil && code == 200
	})
	return addr, func() {
		cp.setAll(t, "2", nil, clusters, nil)
		testkit.WaitFor(t, 5*time.Second, "the listener dropped", func() bool { return p.Status()[resource.ListenerType].Acked == "2" })
	}
}

func dialLean(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readLean(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the response to %s: %v", method, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of the response to %s: %v", method, err)
	}
	return resp, string(body)
}

// TestLeanHTTP1KeepAlive: requests pipelined on one connection — by
// length, chunked, HEAD, a chunked response with a trailer, HTTP/1.0 —
// are answered in order, each framed right.
func TestLeanHTTP1KeepAlive(t *testing.T) {
	addr, _ := leanProxy(t, startLeanBackend(t), nil)
	c, br := dialLean(t, addr)
	io.WriteString(c, "GET /len HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"+
		"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n2\r\n12\r\n0\r\n\r\n"+
		"HEAD /len HTTP/1.1\r\nHost: x\r\n\r\n"+
		"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readLean(t, br, "GET"); resp.StatusCode != 200 || body != "hello" || resp.ContentLength != 5 || resp.Close {
		t.Errorf("GET /len: %d %q, length %d, close %v", resp.StatusCode, body, resp.ContentLength, resp.Close)
	}
	if resp, body := readLean(t, br, "POST"); resp.StatusCode != 200 || body != "abc" {
		t.Errorf("POST /echo by length: %d %q", resp.StatusCode, body)
	}
	if resp, body := readLean(t, br, "POST"); resp.StatusCode != 200 || body != "wxyz12" || resp.Header.Get("X-Body-Len") != "6" {
		t.Errorf("POST /echo chunked: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := readLean(t, br, "HEAD"); resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
		t.Errorf("HEAD /len: %d %q, length %d", resp.StatusCode, body, resp.ContentLength)
	}
	resp, body := readLean(t, br, "GET")
	if resp.StatusCode != 200 || body != "part1,part2" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Trailer.Get("X-Sum") != "11" {
		t.Errorf("GET /chunked: %d %q, transfer encoding %v, trailer %v", resp.StatusCode, body, resp.TransferEncoding, resp.Trailer)
	}

	// HTTP/1.0 without keep-alive: the answer ends with the connection.
	io.WriteString(c, "GET /len HTTP/1.0\r\n\r\n")
	if resp, body := readLean(t, br, "GET"); resp.StatusCode != 200 || body != "hello" || !resp.Close {
		t.Errorf("GET /len over HTTP/1.0: %d %q, close %v", resp.StatusCode, body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after an HTTP/1.0 response: %v; want the connection closed", err)
	}
}

// TestLeanHTTP1Date: every response has a Date, as from net/http's
// server and Envoy: the upstream's when it sent one, else the proxy's.
func TestLeanHTTP1Date(t *testing.T) {
	addr, _ := leanProxy(t, startLeanBackend(t), nil)
	c, br := dialLean(t, addr)
	io.WriteString(c, "GET /nodate HTTP/1.1\r\nHost: x\r\n\r\nGET /len HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := readLean(t, br, "GET")
	got, err := http.ParseTime(resp.Header.Get("Date"))
	sent, _ := http.ParseTime(resp.Header.Get("X-Date"))
	if err != nil || len(resp.Header["Date"]) != 1 || got.Sub(sent).Abs() > 5*time.Second {
		t.Errorf("upstream without Date: the proxy's Date is %q (%v), the upstream's clock %q", resp.Header["Date"], err, resp.Header.Get("X-Date"))
	}
	if resp, _ := readLean(t, br, "GET"); len(resp.Header["Date"]) != 1 {
		t.Errorf("upstream with Date: %q, want exactly the upstream's", resp.Header["Date"])
	}
}

// TestLeanHTTP1Continue: a request that waits for 100 Continue gets it
// once the proxy reads its body, then its response.
func TestLeanHTTP1Continue(t *testing.T) {
	addr, _ := leanProxy(t, startLeanBackend(t), nil)
	c, br := dialLean(t, addr)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q, %v; want 100 Continue", line, err)
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\r\n" {
		t.Fatalf("after 100 Continue: %q, %v", blank, err)
	}
	io.WriteString(c, "hello")
	if resp, body := readLean(t, br, "POST"); resp.StatusCode != 200 || body != "hello" {
		t.Errorf("the response: %d %q", resp.StatusCode, body)
	}
	// The connection carries the next request.
	io.WriteString(c, "GET /len HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readLean(t, br, "GET"); resp.StatusCode != 200 || body != "hello" {
		t.Errorf("the next request: %d %q", resp.StatusCode, body)
	}
}

// TestLeanHTTP1Refusals: a request net/http's server refuses before its
// handler gets the same answer from the proxy: the status, and the
// connection closed — unless the edge refuses it first (edge.go: 400),
// as it did in front of net/http.
func TestLeanHTTP1Refusals(t *testing.T) {
	addr, _ := leanProxy(t, startLeanBackend(t), nil)
	ref := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), MaxHeaderBytes: 60 << 10}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ref.Serve(ln)
	t.Cleanup(func() { ref.Close() })

	big := "X-Big: " + strings.Repeat("a", 70<<10) + "\r\n"
	cases := []struct {
		name, req string
		code      int
		edge      bool // refused by the edge: 400
	}{
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400, false},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, false},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, false},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nBad(Name): v\r\n\r\n", 400, false},
		{"bad header value", "GET / HTTP/1.1\r\nHost: x\r\nX-V: a\x01b\r\n\r\n", 400, false},
		{"bad request line", "GARBAGE\r\n\r\n", 400, false},
		{"bad method", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, false},
		{"bad version", "GET / HTTP/x.y\r\nHost: x\r\n\r\n", 400, false},
		{"HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, false},
		{"unsupported transfer encoding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, true},
		{"unknown expectation", "GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417, false},
		{"headers over the limit", "GET / HTTP/1.1\r\nHost: x\r\n" + big + "\r\n", 431, false},
		{"bad Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400, false},
	}
	ask := func(addr, req string) (int, bool, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, false, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, false, err
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Close, nil
	}
	for _, tc := range cases {
		want, wantClose, err := ask(ln.Addr().String(), tc.req)
		if err != nil || want != tc.code {
			t.Fatalf("%s: net/http answers %d, %v; the table says %d", tc.name, want, err, tc.code)
		}
		if tc.edge {
			want = 400
		}
		got, gotClose, err := ask(addr, tc.req)
		if err != nil || got != want || gotClose != wantClose {
			t.Errorf("%s: the proxy answers %d (close %v), %v; net/http %d (close %v)", tc.name, got, gotClose, err, want, wantClose)
		}
	}
}

// TestLeanHTTP1Timeouts: a connection idle past the connection manager's
// idle_timeout is closed, and so is one that does not finish its request
// head within the header timeout.
func TestLeanHTTP1Timeouts(t *testing.T) {
	proxy.SetHTTPHeaderTimeout(t, 300*time.Millisecond)
	addr, _ := leanProxy(t, startLeanBackend(t), func(h *hcm.HttpConnectionManager) {
		h.CommonHttpProtocolOptions = &core.HttpProtocolOptions{IdleTimeout: durationpb.New(300 * time.Millisecond)}
	})
	c, br := dialLean(t, addr)
	io.WriteString(c, "GET /len HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readLean(t, br, "GET"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("GET /len: %d, close %v", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("an idle connection: %v; want it closed (EOF) by the idle timeout", err)
	}

	c, br = dialLean(t, addr)
	io.WriteString(c, "GET /len HTTP/1.1\r\nHost: x\r\n")
	if b, err := br.ReadByte(); err != io.EOF {
		t.Errorf("a request head left unfinished: %q, %v; want the connection closed (EOF) by the header timeout", b, err)
	}
}

// TestLeanHTTP1Drain: when the listener goes away, an idle connection
// (after a request, or before its first) closes at once, and one with a request in flight gets its response
// with "Connection: close", then closes.
func TestLeanHTTP1Drain(t *testing.T) {
	b := startLeanBackend(t)
	addr, drop := leanProxy(t, b, nil)
	idle, idleR := dialLean(t, addr)
	io.WriteString(idle, "GET /len HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := readLean(t, idleR, "GET"); resp.StatusCode != 200 {
		t.Fatalf("GET /len: %d", resp.StatusCode)
	}
	_, silentR := dialLean(t, addr) // connected, nothing sent yet
	busy, busyR := dialLean(t, addr)
	io.WriteString(busy, "GET /hold?id=busy HTTP/1.1\r\nHost: x\r\n\r\n")
	if id := <-b.arrived; id != "busy" {
		t.Fatalf("arrived: %q", id)
	}
	drop()
	// (The listener's drain timeout is 20 s: what closes the connections
	// here is the drain itself.)
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Errorf("the idle connection after the drain: %v; want it closed (EOF)", err)
	}
	if _, err := silentR.ReadByte(); err != io.EOF {
		t.Errorf("a connection that sent nothing yet, after the drain: %v; want it closed (EOF)", err)
	}
	b.release <- struct{}{}
	resp, body := readLean(t, busyR, "GET")
	if resp.StatusCode != 200 || body != "released" || !resp.Close {
		t.Errorf("the response in flight: %d %q, close %v; want 200 with Connection: close", resp.StatusCode, body, resp.Close)
	}
	if _, err := busyR.ReadByte(); err != io.EOF {
		t.Errorf("the busy connection after its response: %v; want it closed (EOF)", err)
	}
}

// TestLeanHTTP1WebSocket: a WebSocket upgrade takes the connection over
// (Hijack) and carries messages both ways.
func TestLeanHTTP1WebSocket(t *testing.T) {
	addr, _ := leanProxy(t, startLeanBackend(t), func(h *hcm.HttpConnectionManager) {
		h.UpgradeConfigs = []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	})
	cfg, err := websocket.NewConfig("ws://"+addr+"/ws", "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("the WebSocket handshake through the proxy: %v", err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	for i := range 3 {
		msg := fmt.Sprintf("message %d", i)
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
}

// TestLeanHTTP1ClientGone: a client that goes away while its request
// waits on the upstream cancels the upstream request; a request on
// another connection is served meanwhile.
func TestLeanHTTP1ClientGone(t *testing.T) {
	b := startLeanBackend(t)
	addr, _ := leanProxy(t, b, nil)
	c, _ := dialLean(t, addr)
	io.WriteString(c, "GET /hold?id=gone HTTP/1.1\r\nHost: x\r\n\r\n")
	if id := <-b.arrived; id != "gone" {
		t.Fatalf("arrived: %q", id)
	}
	c.Close()
	select {
	case id := <-b.gone:
		if id != "gone" {
			t.Errorf("canceled: %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not canceled once its client went away")
	}
	if code, _, err := tryRawGet(addr, "/len"); err != nil || code != 200 {
		t.Errorf("another request meanwhile: %d, %v", code, err)
	}
}
