package iptables

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST
// (linux/netfilter_ipv6/ip6_tables.h) share the number 80.
const soOriginalDst = 80

// OriginalDst returns where a connection accepted on a transparent
// listener was going before REDIRECT rewrote it (conntrack's original
// destination).
func OriginalDst(conn *net.TCPConn) (netip.AddrPort, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	local, _ := conn.LocalAddr().(*net.TCPAddr)
	v6 := local != nil && local.IP.To4() == nil
	var sa unix.RawSockaddrInet6 // big enough for either family
	var out netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		level := unix.SOL_IP
		if v6 {
			level = unix.SOL_IPV6
		}
		size := uint32(unsafe.Sizeof(sa))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)), 0)
		if e != 0 {
			serr = e
			return
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		switch sa.Family {
		case unix.AF_INET:
			sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
			out = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
		case unix.AF_INET6:
			out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
		default:
			serr = fmt.Errorf("unexpected address family %d", sa.Family)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination (was the connection redirected?): %w", err)
	}
	return out, nil
}
