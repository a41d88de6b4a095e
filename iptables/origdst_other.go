//go:build !linux

package iptables

import (
	"net"
	"net/netip"
)

// OriginalDst needs Linux's conntrack.
func OriginalDst(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrUnsupported }
