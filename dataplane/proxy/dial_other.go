//go:build !linux

package proxy

import (
	"fmt"
	"syscall"
)

// MarkSocket: SO_MARK is Linux's; elsewhere a dialer configured with a
// mark cannot dial, rather than dial unmarked.
func MarkSocket(mark int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, _ syscall.RawConn) error {
		return fmt.Errorf("%w: Config.Mark %#x: SO_MARK is Linux-only", ErrUnsupported, mark)
	}
}
