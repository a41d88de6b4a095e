package testkit

import (
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaitForReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			time.Sleep(time.Millisecond)
			n.Add(1)
		}
	}()
	WaitFor(t, 5*time.Second, "three ticks", func() bool { return n.Load() == 3 })
	if Eventually(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Eventually reported a condition that never held")
	}
}

func TestFreePortIsBindable(t *testing.T) {
	p := FreePort(t, "127.0.0.1")
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d from FreePort: %v", p, err)
	}
	ln.Close()
}
