package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// edgeProxy is a proxy with one plaintext HTTP listener, "web", routing
// everything to app; it returns the listener's address and the proxy's
// metrics.
func edgeProxy(t *testing.T, app *httpApp) (string, *prometheus.Registry) {
	t.Helper()
	cp := startControlPlane(t)
	rc := &route.RouteConfiguration{Name: "r1", VirtualHosts: []*route.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*route.Route{prefixRoute("/", "app")}}}}
	cp.setAll(t, "1", []types.Resource{httpListener(t, "web", "r1", nil)},
		[]types.Resource{staticCluster("app", net.JoinHostPort("127.0.0.1", strconv.Itoa(app.port)))}, []types.Resource{rc})
	reg := prometheus.NewRegistry()
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond,
		Logger: testkit.Discard(), Metrics: proxy.NewMetrics(reg)})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	addr := p.ListenerAddrs()["web"].String()
	testkit.WaitFor(t, 5*time.Second, "the app answering through the listener", func() bool {
		code, _, err := tryRawGet(addr, "/ready")
		return err == nil && code == 200
	})
	return addr, reg
}

// TestEdgeHTTP1Framing: requests whose framing another server could read
// differently — Content-Length with Transfer-Encoding, a folded header
// line, lines ending in a bare LF — get 400 from the proxy and never reach
// the app, and are counted; well-framed bodies by length and chunked
// still go through on one keep-alive connection.
func TestEdgeHTTP1Framing(t *testing.T) {
	app := startHTTPApp(t, "app", false)
	addr, reg := edgeProxy(t, app)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
	for _, want := range []string{"hello", "abcde"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("keep-alive echo: %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}

	hits := app.hits.Load()
	for _, tc := range []struct{ name, req, reason string }{
		{"CL+TE", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n", "h1_content_length_and_transfer_encoding"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: web\r\nX-Folded: a\r\n b\r\n\r\n", "h1_obs_fold"},
		{"bare LF", "GET / HTTP/1.1\nHost: web\n\n", "h1_bare_lf"},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, tc.req)
		all, err := io.ReadAll(c) // the proxy closes the connection
		c.Close()
		if err != nil || !strings.HasPrefix(string(all), "HTTP/1.1 400 ") || strings.Count(string(all), "HTTP/1.1") != 1 {
			t.Errorf("%s: read %q, %v; want one 400, then the end of the connection", tc.name, all, err)
		}
		if n := gatherCounter(t, reg, "vmesh_downstream_protocol_errors_total", "reason", tc.reason); n != 1 {
			t.Errorf("%s: %v counted as %s, want 1", tc.name, n, tc.reason)
		}
	}
	if got := app.hits.Load(); got != hits {
		t.Errorf("the app saw %d of the refused requests", got-hits)
	}

	// A request offering a protocol switch ends the edge's checks on its
	// connection, so the connection closes after its (403) answer: what
	// it carried next is never read.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: web\r\nX-Folded: a\r\n b\r\n\r\n")
	all, _ := io.ReadAll(c2)
	if !strings.HasPrefix(string(all), "HTTP/1.1 403 ") || strings.Count(string(all), "HTTP/1.1") != 1 {
		t.Errorf("an upgrade to foo, then more: read %q; want one 403 and the end of the connection", all)
	}
	if got := app.hits.Load(); got != hits {
		t.Errorf("the app saw %d requests after a refused upgrade", got-hits)
	}

	// Headers over the 60 KiB limit: 431, as before the edge.
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c3, "GET /big HTTP/1.1\r\nHost: web\r\nX-Big: "+strings.Repeat("b", 70<<10)+"\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c3), nil); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("70 KiB of headers: %v, %v; want 431", resp, err)
	}
}

// h2Conn is a raw HTTP/2 client connection.
type h2Conn struct {
	c   net.Conn
	fr  *http2.Framer
	bw  *bufio.Writer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2Conn{c: c, bw: bufio.NewWriterSize(c, 64<<10)}
	h.enc = hpack.NewEncoder(&h.hb)
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(64<<10, nil)
	h.bw.WriteString(http2.ClientPreface)
	// Windows wide open: response bodies never wait for this reader.
	h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	h.fr.WriteWindowUpdate(0, 1<<30)
	h.bw.Flush()
	return h
}

// headers is a GET's header block.
func (h *h2Conn) headers(path string) []byte {
	h.hb.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", path}, {":authority", "web"}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return bytes.Clone(h.hb.Bytes())
}

// h2Result is what a raw client read until the server closed.
type h2Result struct {
	settings map[http2.SettingID]uint32
	goAway   *http2.GoAwayFrame
	statuses map[uint32]string
	end      error // what ended the reading
}

// readAll reads frames until the connection ends (or d passes, which
// ends with a timeout error), or until done holds (nil: never).
func (h *h2Conn) readAll(d time.Duration, done func(h2Result) bool) h2Result {
	r := h2Result{settings: map[http2.SettingID]uint32{}, statuses: map[uint32]string{}}
	h.c.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			r.end = err
			return r
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				f.ForeachSetting(func(s http2.Setting) error { r.settings[s.ID] = s.Val; return nil })
			}
		case *http2.GoAwayFrame:
			r.goAway = f
		case *http2.MetaHeadersFrame:
			r.statuses[f.StreamID] = f.PseudoValue("status")
			if done != nil && done(r) {
				return r
			}
		}
	}
}

// TestEdgeH2RapidReset: a client that opens 5,000 streams on one
// connection and resets each at once (CVE-2023-44487) gets GOAWAY
// (ENHANCE_YOUR_CALM) and a closed connection within 2 s, the app sees at
// most a few hundred requests, and the cut is counted; the server keeps
// its concurrent stream and header size limits. A client that resets a
// few of many streams is served on.
func TestEdgeH2RapidReset(t *testing.T) {
	app := startHTTPApp(t, "app", false)
	addr, reg := edgeProxy(t, app)

	// A polite client: 300 requests, then 60 resets, then one more.
	h := dialH2(t, addr)
	id := uint32(1)
	for ; id <= 600; id += 2 {
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.headers("/"), EndStream: true, EndHeaders: true})
	}
	h.bw.Flush()
	if r := h.readAll(10*time.Second, func(r h2Result) bool { return len(r.statuses) == 300 }); r.statuses[599] != "200" || len(r.statuses) != 300 {
		t.Fatalf("300 requests on one connection: %d answered, last %q, %v", len(r.statuses), r.statuses[599], r.end)
	}
	for range 60 {
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.headers("/"), EndStream: true, EndHeaders: true})
		h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		id += 2
	}
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.headers("/"), EndStream: true, EndHeaders: true})
	h.bw.Flush()
	last := id
	if r := h.readAll(10*time.Second, func(r h2Result) bool { return r.statuses[last] != "" }); r.statuses[id] != "200" || r.goAway != nil {
		t.Fatalf("after 60 resets among 361 streams: status %q, GOAWAY %v, %v; want served", r.statuses[id], r.goAway, r.end)
	}

	// The attack.
	hits := app.hits.Load()
	h = dialH2(t, addr)
	go func() {
		for id := uint32(1); id < 2*5000; id += 2 {
			h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.headers("/"), EndStream: true, EndHeaders: true})
			h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		h.bw.Flush()
	}()
	r := h.readAll(2*time.Second, nil)
	if r.goAway == nil || r.goAway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY: %v; want ENHANCE_YOUR_CALM", r.goAway)
	}
	if r.end == nil || errors.Is(r.end, os.ErrDeadlineExceeded) {
		t.Errorf("the connection was not closed within 2 s: %v", r.end)
	}
	if r.settings[http2.SettingMaxConcurrentStreams] != 1000 || r.settings[http2.SettingMaxHeaderListSize] == 0 || r.settings[http2.SettingMaxHeaderListSize] > 128<<10 {
		t.Errorf("server settings %v; want 1000 concurrent streams and a header list limit", r.settings)
	}
	if got := app.hits.Load() - hits; got > 300 {
		t.Errorf("the app saw %d requests of 5,000 reset streams; want a few hundred at most", got)
	} else {
		t.Logf("the app saw %d requests of the 5,000 reset streams", got)
	}
	if n := gatherCounter(t, reg, "vmesh_downstream_protocol_errors_total", "reason", "h2_rapid_reset"); n != 1 {
		t.Errorf("%v rapid resets counted, want 1", n)
	}
	// The proxy serves on.
	if resp, _, _ := do(t, h2cClient(), newReq(t, "GET", "http://"+addr+"/", nil)); resp.StatusCode != 200 {
		t.Errorf("after the cut: %d", resp.StatusCode)
	}
}

// TestEdgeH2ContinuationFlood: a HEADERS frame followed by endless
// CONTINUATION frames gets GOAWAY and a closed connection, and never
// reaches the app.
func TestEdgeH2ContinuationFlood(t *testing.T) {
	app := startHTTPApp(t, "app", false)
	addr, reg := edgeProxy(t, app)
	hits := app.hits.Load()
	h := dialH2(t, addr)
	block := h.headers("/")
	go func() {
		h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:1], EndStream: true})
		for range 10000 {
			h.fr.WriteContinuation(1, false, nil)
		}
		h.bw.Flush()
	}()
	r := h.readAll(2*time.Second, nil)
	if r.goAway == nil || r.goAway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY: %v; want ENHANCE_YOUR_CALM", r.goAway)
	}
	if r.end == nil || errors.Is(r.end, os.ErrDeadlineExceeded) {
		t.Errorf("the connection was not closed within 2 s: %v", r.end)
	}
	if n := gatherCounter(t, reg, "vmesh_downstream_protocol_errors_total", "reason", "h2_continuation_flood"); n != 1 {
		t.Errorf("%v CONTINUATION floods counted, want 1", n)
	}
	if n := app.hits.Load() - hits; n != 0 {
		t.Errorf("the app saw %d requests", n)
	}
}
