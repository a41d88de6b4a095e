package proxy

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkSocket is a net.Dialer Control that sets SO_MARK on a socket
// before it connects (it needs CAP_NET_ADMIN; without it the dial fails
// rather than go out unmarked, which capture would send straight back to
// the proxy). The agent's DNS marks its queries to its recursors with it
// too (mesh/dns.go).
func MarkSocket(mark int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting SO_MARK %#x: %w", mark, serr)
		}
		return nil
	}
}
