package proxy_test

import (
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestLeanHTTP1ClientNeverReads: a client that asks for a large
// response and never reads it does not pin the connection past the
// stream idle timeout.
func TestLeanHTTP1ClientNeverReads(t *testing.T) {
	done := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/len", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for i := 0; i < 1024; i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr, _ := leanProxy(t, &leanBackend{addr: ln.Addr().String()}, func(h *hcm.HttpConnectionManager) {
		h.StreamIdleTimeout = durationpb.New(300 * time.Millisecond)
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream response was never cut")
	}
	testkit.WaitFor(t, 5*time.Second, "the proxy to let go of the connection", func() bool {
		buf := make([]byte, 1<<20)
		return !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "proxy.(*h1Conn).serve")
	})
}
