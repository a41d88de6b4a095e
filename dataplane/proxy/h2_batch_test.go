package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// recordConn records each Write it gets; gate, when set, holds the first
// one until it is closed (entered is closed once it is held).
type recordConn struct {
	net.Conn
	mu      sync.Mutex
	writes  [][]byte
	gate    chan struct{}
	entered chan struct{}
	err     error
	closed  bool
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	first := len(c.writes) == 0
	c.writes = append(c.writes, bytes.Clone(p))
	err := c.err
	c.mu.Unlock()
	if first && c.gate != nil {
		close(c.entered)
		<-c.gate
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *recordConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}

func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

func (c *recordConn) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

// What is written while a write is on its way goes out in one write,
// in order.
func TestBatchConnGathersWritesWhileOneIsOnItsWay(t *testing.T) {
	rc := &recordConn{gate: make(chan struct{}), entered: make(chan struct{})}
	c := newBatchConn(rc, nil)
	for _, s := range []string{"HEADERS", "DATA", "TRAILERS"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
		if s == "HEADERS" {
			<-rc.entered // the first write is on its way, and held
		}
	}
	close(rc.gate)
	testkit.WaitFor(t, 5*time.Second, "the second write", func() bool { return len(rc.got()) == 2 })
	if got := rc.got(); string(got[0]) != "HEADERS" || string(got[1]) != "DATATRAILERS" {
		t.Fatalf("writes = %q, want HEADERS then DATATRAILERS", got)
	}
}

// Until on says so (the connection turned out to speak HTTP/2), writes
// go through as they come, in the caller.
func TestBatchConnPassesWritesThroughUntilOn(t *testing.T) {
	rc := &recordConn{}
	on := false
	c := newBatchConn(rc, func() bool { return on })
	c.Write([]byte("HTTP/1.1 200 OK\r\n"))
	if got := rc.got(); len(got) != 1 {
		t.Fatalf("a write before on: %d writes at once, want 1", len(got))
	}
	on = true
	c.Write([]byte("frame"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rc.got(); len(got) != 2 || string(got[1]) != "frame" {
		t.Fatalf("writes = %q", got)
	}
}

// A write error ends the connection: the next write fails with it, and
// the connection is closed so its reader notices too.
func TestBatchConnWriteErrorSticksAndCloses(t *testing.T) {
	boom := errors.New("broken pipe")
	rc := &recordConn{err: boom}
	c := newBatchConn(rc, nil)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("the first write (gathered) = %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the write error", func() bool {
		_, err := c.Write([]byte("y"))
		return errors.Is(err, boom)
	})
	rc.mu.Lock()
	closed := rc.closed
	rc.mu.Unlock()
	if !closed {
		t.Error("the connection stayed open after its write failed")
	}
}

// Over a real connection: everything written arrives in order, and
// Close sends what is still gathered before it closes (an HTTP/2
// connection's last GOAWAY); writes after Close fail.
func TestBatchConnDeliversInOrderAndFlushesOnClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(s)
		s.Close()
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newBatchConn(raw, nil)
	var want bytes.Buffer
	for i := range 5000 {
		p := []byte(strconv.Itoa(i) + ",")
		want.Write(p)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	last := bytes.Repeat([]byte("z"), 3*batchLimit) // more than one batch holds
	want.Write(last)
	if _, err := c.Write(last); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the peer read %d bytes, want the %d written, in order", len(b), want.Len())
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a write after Close = %v, want net.ErrClosed", err)
	}
}
