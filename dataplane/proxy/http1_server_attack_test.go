package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
)

// TestLeanHTTP1HeadOverEdgeLimit: a request head longer than the edge
// holds (maxRequestHead) goes to the server unchecked, the edge passive
// for the rest of the connection; the server must refuse it (431) and
// not serve it — else what follows it on the connection (a request
// with Content-Length and Transfer-Encoding, folded or bare-LF lines)
// reaches net/http's lenient parser unchecked. The head arrives in two
// writes, its end after the edge gave up on it (net.Pipe: a write
// returns once read whole).
func TestLeanHTTP1HeadOverEdgeLimit(t *testing.T) {
	for _, size := range []int{maxRequestHead + 1, maxRequestHead + 2048, maxRequestHead + 4000} {
		client, server := net.Pipe()
		var reasons []string
		edge := newEdgeConn(server, func(r string) { reasons = append(reasons, r) })
		c := newH1Conn(&httpConn{remote: "client"}, edge)
		start := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
		part1 := start + strings.Repeat("a", size-len(start))
		smuggled := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		go func() {
			io.WriteString(client, part1)
			io.WriteString(client, "\r\n\r\n"+smuggled)
			io.Copy(io.Discard, client)
		}()
		if h2, err := c.sniff(); h2 || err != nil {
			t.Fatalf("sniff: %v, %v", h2, err)
		}
		req, err := c.readRequest()
		if err != errTooLarge {
			t.Errorf("a head of %d bytes, past the edge's %d: read %v, %v; want it refused as too large (431)", size+4, maxRequestHead, req != nil, err)
		}
		client.Close()
		server.Close()
		c.release()
	}
}
