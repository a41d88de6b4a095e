package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// Attacks on the HTTP/1.1 upstream transport by a malicious or broken
// upstream: what it sends that is not the response to the request in
// flight must never be read as the response to the next request on a
// pooled connection (which may be another client's), and a connection
// whose framing went wrong is never pooled.

const freshResponse = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"

// poison is a whole response: read as the next request's, a client
// gets a response it never asked for.
const poison = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison"

// TestH1AttackPoolPoisoning: an upstream answers the first request on a
// connection wrongly; the next request must get its own response (from
// a new connection), never bytes left over from the first.
func TestH1AttackPoolPoisoning(t *testing.T) {
	cases := []struct {
		name   string
		method string
		head   http.Header // of the first request
		// first is what the upstream answers the first request; late
		// what it sends once that exchange ended.
		first, late string
		wantErr     bool // the first exchange fails (a 502)
	}{
		{name: "body longer than its Content-Length, sent late", method: "GET",
			first: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", late: poison},
		{name: "body longer than its Content-Length, sent at once", method: "GET",
			first: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + poison},
		{name: "HEAD response with a body, sent late", method: "HEAD",
			first: "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", late: poison},
		{name: "HEAD response with a body, sent at once", method: "HEAD",
			first: "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n" + poison},
		{name: "204 with a body, sent late", method: "GET",
			first: "HTTP/1.1 204 No Content\r\n\r\n", late: poison},
		{name: "304 with a body", method: "GET",
			first: "HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n" + poison},
		{name: "Content-Length and Transfer-Encoding", method: "GET", wantErr: true,
			first: "HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + poison},
		{name: "Transfer-Encoding and Content-Length", method: "GET", wantErr: true,
			first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{name: "two Content-Lengths that differ", method: "GET", wantErr: true,
			first: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"},
		{name: "Transfer-Encoding other than chunked", method: "GET",
			first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"},
		{name: "101 to a request that asked for no upgrade", method: "GET", wantErr: true,
			first: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\n" + poison},
		{name: "1xx then a final response with a body longer than its length", method: "GET",
			first: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", late: poison},
		{name: "chunked body with trailing bytes", method: "GET",
			first: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", late: poison},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var conns atomic.Int64
			late, wrote, gone := make(chan struct{}), make(chan struct{}), make(chan struct{})
			addr := rawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if conns.Add(1) == 1 {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, tc.first)
					<-late
					if tc.late != "" {
						io.WriteString(c, tc.late)
					}
					close(wrote)
					io.Copy(io.Discard, br) // until the transport closes it
					close(gone)
					return
				}
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body)
					io.WriteString(c, freshResponse)
				}
			})
			tr, dials := testH1(t, addr)
			req := h1Req(t, context.Background(), tc.method, addr, "/first", nil)
			res, err := tr.RoundTrip(req)
			if err == nil && res.StatusCode != http.StatusSwitchingProtocols {
				// (A 101 ReverseProxy refuses is left as it is: it
				// neither reads nor closes its body.)
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			if tc.wantErr && err == nil {
				t.Errorf("the first exchange succeeded (%d); want an error", res.StatusCode)
			}
			close(late)
			<-wrote
			if tc.late != "" {
				// The late bytes reach the pooled connection (if it was
				// pooled) before the next request.
				testkit.WaitFor(t, 5*time.Second, "the late bytes on the idle connection", func() bool {
					tr.mu.Lock()
					defer tr.mu.Unlock()
					return len(tr.idle) == 0 || !connAlive(tr.idle[len(tr.idle)-1].conn)
				})
			}
			// (Bounded: a poisoned connection may never answer.)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, body := roundTrip(t, tr, h1Req(t, ctx, "GET", addr, "/second", nil))
			if res.StatusCode != 200 || body != "fresh" {
				t.Fatalf("the next request got %d %q; want 200 \"fresh\" from a new connection", res.StatusCode, body)
			}
			if d := dials.Load(); d != 2 {
				t.Errorf("%d dials; want 2 (the first connection not reused)", d)
			}
			// The first connection is closed, not left open (an
			// upgraded one nobody reads, a leak per request).
			select {
			case <-gone:
			case <-time.After(5 * time.Second):
				t.Error("the first connection was never closed")
			}
		})
	}
}
