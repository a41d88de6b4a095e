package proxy

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
)

// Write batching for HTTP/2 connections. net/http's HTTP/2 code flushes
// after every frame it writes: its server after each frame a handler
// hands it (response HEADERS, each DATA, trailers), its client after the
// request's HEADERS, each DATA frame and the END_STREAM. A gRPC unary
// call through the proxy so cost eight write syscalls (and as many
// wake-ups of the peers' readers), where the frames of a call are ready
// within microseconds of each other. batchConn gathers what is written
// while a write is on its way: a Write appends to a buffer and, when no
// flush goroutine runs, starts one; that goroutine writes whatever has
// gathered by the time it runs, and again until nothing is left. A frame
// written while another goroutine still produces the next one goes out
// in the same syscall (and, over TLS, the same record), and nothing
// waits for a timer: the flush runs as soon as the scheduler gets to it,
// after the goroutines that were ready. A gRPC unary call through a hop
// so costs the proxy about three writes instead of eight.

// batchLimit is how much a batchConn holds before Write waits for the
// flush goroutine (HTTP/2 flow control bounds it anyway).
const batchLimit = 256 << 10

// batchCloseTimeout bounds the last flush when a batchConn closes (a
// peer that no longer reads).
const batchCloseTimeout = time.Second

// batchBuffers are the buffers of batchConns with something to write:
// an idle connection keeps none.
var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// batchConn batches the writes of an HTTP/2 connection (see above).
// on, when set, says whether to batch yet: it turns true once (the
// connection turned out to speak HTTP/2) and writes before go through
// as they come.
type batchConn struct {
	net.Conn
	on func() bool

	mu      sync.Mutex
	cond    sync.Cond // a flush wrote (writers over batchLimit, Close wait)
	buf     *[]byte   // gathered, not yet written (nil: nothing)
	running bool      // a flush goroutine is on its way
	err     error     // the first write error (or closed): later writes fail
}

func newBatchConn(c net.Conn, on func() bool) *batchConn {
	b := &batchConn{Conn: c, on: on}
	b.cond.L = &b.mu
	return b
}

func (c *batchConn) Write(p []byte) (int, error) {
	if c.on != nil && !c.on() {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	for c.err == nil && c.buf != nil && len(*c.buf) >= batchLimit {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.buf == nil {
		c.buf = batchBuffers.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	if !c.running {
		c.running = true
		go c.flush()
	}
	c.mu.Unlock()
	return len(p), nil
}

// flush writes what gathered until nothing is left. It first lets the
// goroutines that are ready run (the stream's handler about to write its
// trailers, net/http's serve loop with the next frame): what they write
// joins the batch, as an event loop writes once per turn. A write error
// ends the connection: its reader notices, as it would have had the
// writer seen the error itself.
func (c *batchConn) flush() {
	runtime.Gosched()
	c.mu.Lock()
	for c.buf != nil && c.err == nil {
		b := c.buf
		c.buf = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(*b)
		if cap(*b) <= 64<<10 { // (a big one goes to the GC)
			*b = (*b)[:0]
			batchBuffers.Put(b)
		}
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
			c.Conn.Close()
		}
		c.cond.Broadcast()
	}
	c.running = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// drainWrites waits until what was written is on the wire (or failed),
// for batchCloseTimeout at most (mu held).
func (c *batchConn) drainWrites() {
	if c.buf == nil && !c.running {
		return
	}
	c.Conn.SetWriteDeadline(time.Now().Add(batchCloseTimeout))
	if !c.running {
		c.running = true
		go c.flush()
	}
	for c.running {
		c.cond.Wait()
	}
}

// CloseWrite half-closes after what was written went out.
func (c *batchConn) CloseWrite() error {
	c.mu.Lock()
	c.drainWrites()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Close closes after what was written went out (the GOAWAY or
// RST_STREAM a closing HTTP/2 connection sent last).
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.drainWrites()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
