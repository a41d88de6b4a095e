//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
)

// originalDst needs netfilter (Linux); elsewhere a connection's original
// destination is its local address.
func originalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("proxy: SO_ORIGINAL_DST needs Linux")
}
