//go:build unix

package proxy

import (
	"crypto/tls"
	"net"
	"syscall"
)

// connAlive peeks at an idle upstream connection without blocking: an
// end of stream or unsolicited bytes (a TLS close_notify among them)
// mean the upstream closed it or broke the protocol.
func connAlive(c net.Conn) bool {
	if rc, ok := c.(*releaseConn); ok {
		c = rc.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true // nothing to peek with: the exchange finds out
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	p := peeker{}
	if err := raw.Read(p.peek); err != nil {
		return false
	}
	return p.alive
}

type peeker struct {
	b     [1]byte
	alive bool
}

func (p *peeker) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	// Nothing to read is the one healthy answer (n == 0 with no error
	// is the end of the stream).
	p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true
}
