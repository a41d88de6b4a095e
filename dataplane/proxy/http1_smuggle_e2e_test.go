package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLeanHTTP1Smuggling: requests framed to make the edge and the lean
// server disagree on where a request ends. Whatever the framing, the
// proxy answers at most the requests the edge saw, in order, and a
// connection whose framing broke is closed: the pipelined request that
// would be smuggled (GET /smuggled) never reaches the app.
func TestLeanHTTP1Smuggling(t *testing.T) {
	b := startLeanBackend(t)
	addr, _ := leanProxy(t, b, nil)
	const next = "GET /len HTTP/1.1\r\nHost: x\r\n\r\n"
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := []struct {
		name string
		in   string
		// want: the statuses of the responses, in order (0: any, an
		// error the broken body caused); then the connection is closed
		// if closed.
		want   []int
		closed bool
	}{
		{"HTTP/1.0 keep-alive with a body, pipelined",
			"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello" + next, []int{200, 200}, false},
		{"chunk size over 15 hex digits",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + smuggled, []int{0}, true},
		{"chunk extension with a bare LF",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n" + smuggled, []int{0}, true},
		{"chunk extension with a bare CR",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n" + smuggled, []int{0}, true},
		{"chunk size with a space inside",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 5\r\nhello\r\n0\r\n\r\n" + smuggled, []int{0}, true},
		{"chunked, identity",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + smuggled, []int{400}, true},
		{"Transfer-Encoding with obs-fold",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + smuggled, []int{400}, true},
		{"Transfer-Encoding with a Unicode s (ſ)",
			"POST /echo HTTP/1.1\r\nHost: x\r\nTran\u017ffer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, []int{400}, true},
		{"same Content-Length twice",
			"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + next, []int{200, 200}, false},
		{"NUL in a header value",
			"GET /len HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + smuggled, []int{400}, true},
		{"NUL in the request target",
			"GET /len\x00 HTTP/1.1\r\nHost: x\r\n\r\n" + smuggled, []int{400}, true},
		{"bare LF after a body",
			"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /smuggled HTTP/1.1\nHost: x\n\n", []int{200, 400}, true},
		{"CONNECT, then anything",
			"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n" + smuggled, []int{403}, true},
		{"Upgrade offered without Connection: upgrade",
			"GET /len HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n" + smuggled, []int{200}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, tc.in)
			br := bufio.NewReader(c)
			var got []int
			for len(got) < len(tc.want) {
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					break
				}
				body, err := io.ReadAll(res.Body)
				if strings.Contains(string(body), "smuggled") || err != nil && !res.Close {
					t.Errorf("response %d: %q, %v", len(got), body, err)
				}
				got = append(got, res.StatusCode)
				if res.Close {
					break
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("answers %v; want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] && tc.want[i] != 0 {
					t.Fatalf("answers %v; want %v", got, tc.want)
				}
			}
			// Closed, or open for the next request.
			io.WriteString(c, next)
			res, err := http.ReadResponse(br, nil)
			if tc.closed && err == nil {
				t.Errorf("the connection stays open (%d); want it closed", res.StatusCode)
			}
			if !tc.closed && (err != nil || res.StatusCode != 200) {
				t.Errorf("the connection does not serve the next request: %v", err)
			}
		})
	}
}
