package proxy_test

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestConnectionLimits: with at most 60 downstream connections, 40 per
// listener, a client that opens 50 connections to listener a gets 40
// served and 10 closed at once, counted against a's own limit; meanwhile
// listener b serves 20 more, and the 61st connection is refused by the
// global limit. Closing connections makes room again.
func TestConnectionLimits(t *testing.T) {
	backend := echoServer(t)
	cp := startControlPlane(t)
	cp.set(t, "1", []types.Resource{
		tcpListener(t, "a", "127.0.0.1:0", "echo"),
		tcpListener(t, "b", "127.0.0.1:0", "echo"),
	}, []types.Resource{staticCluster("echo", net.JoinHostPort("127.0.0.1", itoa(backend)))})
	reg := prometheus.NewRegistry()
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond,
		Logger: testkit.Discard(), Metrics: proxy.NewMetrics(reg), MaxConnections: 60, MaxListenerConnections: 40})
	testkit.WaitFor(t, 5*time.Second, "both listeners bound", func() bool { return len(p.ListenerAddrs()) == 2 })
	addrs := p.ListenerAddrs()
	for name, a := range addrs {
		testkit.WaitFor(t, 5*time.Second, "an echo through "+name, func() bool {
			return echoOnce(func() (net.Conn, error) { return net.DialTimeout("tcp", a.String(), time.Second) }, "ready") == nil
		})
	}

	// open dials listener name and checks the connection is served (an
	// echo), keeping it open.
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	open := func(name string) error {
		c, err := net.DialTimeout("tcp", addrs[name].String(), time.Second)
		if err != nil {
			return err
		}
		if err := echoOnce(func() (net.Conn, error) { return keepOpen{c}, nil }, "x"); err != nil {
			c.Close()
			return err
		}
		held = append(held, c)
		return nil
	}
	refused := func(name, limit string) float64 {
		return proxy.CounterValue(t, reg, "vmesh_connections_refused_total", map[string]string{"listener": name, "limit": limit})
	}

	for i := range 40 {
		if err := open("a"); err != nil {
			t.Fatalf("connection %d to a: %v", i+1, err)
		}
	}
	for i := range 10 {
		if err := open("a"); err == nil {
			t.Fatalf("connection %d to a was served past its limit of 40", 41+i)
		}
	}
	// The client sees the reset before the proxy's accept loop has
	// counted it: wait for the count.
	testkit.WaitFor(t, 5*time.Second, "10 connections to a counted as refused by its limit", func() bool { return refused("a", "listener") == 10 })
	for i := range 20 {
		if err := open("b"); err != nil {
			t.Fatalf("connection %d to b while a is at its limit: %v", i+1, err)
		}
	}
	if err := open("b"); err == nil {
		t.Fatal("the 61st connection was served past the global limit of 60")
	}
	testkit.WaitFor(t, 5*time.Second, "1 connection to b counted as refused by the global limit", func() bool { return refused("b", "global") == 1 })

	// Five of a's close: b gets room.
	for _, c := range held[:5] {
		c.Close()
	}
	held = held[5:]
	testkit.WaitFor(t, 5*time.Second, "a connection to b served once a's closed", func() bool { return open("b") == nil })
}

// keepOpen leaves its connection open when echoOnce closes it.
type keepOpen struct{ net.Conn }

func (keepOpen) Close() error { return nil }

func itoa(n int) string { return strconv.Itoa(n) }

// TestConnectionDescriptors: what a held, plaintext TCP connection
// through the proxy costs in file descriptors stays within the budget the
// default limit is computed with (proxy.FdsPerConnection): here the client
// and the backend are in this process too, two more each.
func TestConnectionDescriptors(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd to count descriptors")
	}
	// An echo that copies through a buffer (io.Copy would splice, holding
	// a pipe of its own).
	backend := serveTCP(t, func(c net.Conn) {
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}).Port
	cp := startControlPlane(t)
	cp.set(t, "1", []types.Resource{tcpListener(t, "a", "127.0.0.1:0", "echo")},
		[]types.Resource{staticCluster("echo", net.JoinHostPort("127.0.0.1", itoa(backend)))})
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard()})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { return len(p.ListenerAddrs()) == 1 })
	addr := p.ListenerAddrs()["a"].String()
	testkit.WaitFor(t, 5*time.Second, "an echo", func() bool {
		return echoOnce(func() (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }, "ready") == nil
	})
	fds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	const n = 200
	before := fds()
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// An echo each: both directions are being copied.
		if err := echoOnce(func() (net.Conn, error) { return keepOpen{c}, nil }, "x"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	per := float64(fds()-before) / n
	t.Logf("%.2f descriptors per held connection (client and backend included)", per)
	if per > float64(proxy.FdsPerConnection+2) {
		t.Errorf("%.2f descriptors per connection; the default limit budgets %d for the proxy (+2 for the client and backend here)", per, proxy.FdsPerConnection)
	}
}
