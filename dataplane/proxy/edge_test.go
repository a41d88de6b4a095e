package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// scriptConn reads its input in chunks of a fixed size.
type scriptConn struct {
	net.Conn
	in    []byte
	chunk int
	wrote bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.chunk, len(c.in))
	copy(p, c.in[:n])
	c.in = c.in[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error)      { return c.wrote.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// readEdge reads everything net/http would read of in through an
// edgeConn, arriving in chunks of size chunk, and the reasons it
// reported. net/http's reads alternate between a large buffer and a
// tiny one (as its reads and its one-byte watch do).
func readEdge(t *testing.T, in string, chunk int) (string, []string, error) {
	t.Helper()
	var reasons []string
	g := newEdgeConn(&scriptConn{in: []byte(in), chunk: chunk}, func(r string) { reasons = append(reasons, r) })
	var out bytes.Buffer
	large, tiny := make([]byte, 32<<10), make([]byte, 5)
	for i := 0; ; i++ {
		buf := large
		if i%2 == 1 {
			buf = tiny
		}
		n, err := g.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return out.String(), reasons, err
		}
	}
}

var chunkSizes = []int{1, 2, 3, 7, 64, 1 << 20}

// TestEdgeHTTP1PassesValid: well-framed HTTP/1 traffic — keep-alive,
// pipelining, bodies by length and chunked (extensions, trailers), an h2c
// offer, a protocol switch followed by anything — reaches net/http byte
// for byte, however the reads split it.
func TestEdgeHTTP1PassesValid(t *testing.T) {
	in := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Length: 11\r\n\r\nhello\nworld" +
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n" +
		"5;ext=1\r\nhello\r\na \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n" +
		"GET /d HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n" +
		"GET /e HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n" +
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" +
		"\x81\x05hello Transfer-Encoding: chunked\n\n junk\r\n"
	for _, n := range chunkSizes {
		out, reasons, err := readEdge(t, in, n)
		if out != in || len(reasons) != 0 || err != nil {
			t.Errorf("chunks of %d: read %q, reasons %v, %v; want the input unchanged", n, out, reasons, err)
		}
	}
	// HTTP/2: the preface and frames pass as they are.
	h2 := h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00" + "\x00\x00\x01\x01\x05\x00\x00\x00\x01\x82"
	for _, n := range chunkSizes {
		if out, reasons, err := readEdge(t, h2, n); out != h2 || len(reasons) != 0 || err != nil {
			t.Errorf("HTTP/2, chunks of %d: read %q, %v, %v", n, out, reasons, err)
		}
	}
}

// TestEdgeHTTP1Refuses: a request head framed ambiguously reaches net/http
// as a request line it answers with 400 (and closes), after the requests
// before it; the reason is reported.
func TestEdgeHTTP1Refuses(t *testing.T) {
	first := "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct{ name, head, reason string }{
		{"CL then TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", reasonCLTE},
		{"TE then CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\n\r\n", reasonCLTE},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n", reasonObsFold},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n", reasonObsFold},
		{"bare LF head", "GET / HTTP/1.1\nHost: x\n\n", reasonBareLF},
		{"bare LF header", "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", reasonBareLF},
		{"bare LF end", "GET / HTTP/1.1\r\nHost: x\r\n\n", reasonBareLF},
		{"bare CR", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", reasonBareCR},
		{"TE gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", reasonTransferEncoding},
		{"TE twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", reasonTransferEncoding},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", reasonTransferEncoding},
		{"CL differ", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", reasonContentLength},
		{"CL sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", reasonContentLength},
		{"CL list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", reasonContentLength},
		{"space before colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\n", reasonMalformed},
		{"empty request line", "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", reasonMalformed},
	} {
		for _, n := range chunkSizes {
			out, reasons, err := readEdge(t, first+tc.head+"abc", n)
			if out != first+string(rejectedHead) || len(reasons) != 1 || reasons[0] != tc.reason || err != nil {
				t.Errorf("%s, chunks of %d: read %q, reasons %v, %v; want the first request, then the refusal (%s)", tc.name, n, out, reasons, err, tc.reason)
			}
		}
	}
}

// TestEdgeChunkedMalformed: a chunked body whose framing is broken (a
// bare LF, a folded trailer, a missing CRLF after the data) ends the
// connection where it breaks.
func TestEdgeChunkedMalformed(t *testing.T) {
	head := "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, body := range []string{"3\nabc\r\n0\r\n\r\n", "3\r\nabcX\r\n", "0\r\nX: a\r\n b\r\n\r\n", "zz\r\n", "0\r\n\n"} {
		for _, n := range chunkSizes {
			out, reasons, err := readEdge(t, head+body+"GET / HTTP/1.1\r\n\r\n", n)
			if !errors.Is(err, errEdge) || len(reasons) != 1 || reasons[0] != reasonChunked || !strings.HasPrefix(out, head) || strings.Contains(out, "GET") {
				t.Errorf("body %q, chunks of %d: read %q, reasons %v, %v", body, n, out, reasons, err)
			}
		}
	}
}

// deadlineConn fails its second read with a timeout, as a read of net/http
// does when it ends its watch for the client going away.
type deadlineConn struct {
	scriptConn
	reads int
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.reads++; c.reads == 2 {
		return 0, timeoutErr{}
	}
	return c.scriptConn.Read(p)
}

// TestEdgeDeadlineKeepsHead: a deadline in the middle of a request head
// is reported, and the head still arrives whole on the next read.
func TestEdgeDeadlineKeepsHead(t *testing.T) {
	in := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	var reasons []string
	g := newEdgeConn(&deadlineConn{scriptConn: scriptConn{in: []byte(in), chunk: 4}}, func(r string) { reasons = append(reasons, r) })
	buf := make([]byte, 1)
	if _, err := g.Read(buf); err == nil {
		t.Fatal("the deadline was not reported")
	}
	got, err := io.ReadAll(g)
	if string(got) != in || err != nil || len(reasons) != 0 {
		t.Errorf("after the deadline: %q, %v, %v; want the head", got, err, reasons)
	}
}

// TestEdgeGoAwayBetweenFrames: a GOAWAY due while the server writes goes
// after the end of the frame being written (and never before the
// server's first frame), and nothing is written after it.
func TestEdgeGoAwayBetweenFrames(t *testing.T) {
	sc := &scriptConn{}
	g := newEdgeConn(sc, func(string) {})
	g.h2.Store(true)
	g.goAwayDue, g.goAwayID = true, 7
	settings := "\x00\x00\x06\x04\x00\x00\x00\x00\x00" + "\x00\x03\x00\x00\x03\xe8"
	data := "\x00\x00\x02\x00\x01\x00\x00\x00\x01" + "hi"
	if n, err := g.Write([]byte(settings[:5])); n != 5 || err != nil {
		t.Fatalf("the first bytes of SETTINGS: %d, %v", n, err)
	}
	if _, err := g.Write([]byte(settings[5:] + data)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the write that ends the frame: %v, want closed", err)
	}
	goAway := "\x00\x00\x08\x07\x00\x00\x00\x00\x00" + "\x00\x00\x00\x07" + "\x00\x00\x00\x0b"
	if got := sc.wrote.String(); got != settings+goAway {
		t.Errorf("wrote %q, want SETTINGS then GOAWAY(7, ENHANCE_YOUR_CALM)", got)
	}
	if _, err := g.Write([]byte(data)); err == nil {
		t.Error("a write after the GOAWAY went through")
	}
	select {
	case <-g.cut:
	default:
		t.Error("the cut is not marked done")
	}
}
