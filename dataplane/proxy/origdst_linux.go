package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// soOriginalDst is SO_ORIGINAL_DST (and IP6T_SO_ORIGINAL_DST): netfilter's
// record of where a REDIRECTed connection was going.
const soOriginalDst = 80

// originalDst is where a connection captured by iptables was going; an
// error when it was not redirected (no conntrack entry).
func originalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errors.New("proxy: not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, _ := tc.LocalAddr().(*net.TCPAddr)
	var out netip.AddrPort
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		if local != nil && local.IP.To4() == nil {
			info, err := syscall.GetsockoptIPv6MTUInfo(int(fd), syscall.SOL_IPV6, soOriginalDst)
			if err != nil {
				serr = err
				return
			}
			var pb [2]byte
			binary.NativeEndian.PutUint16(pb[:], info.Addr.Port)
			out = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(pb[:]))
			return
		}
		mreq, err := syscall.GetsockoptIPv6Mreq(int(fd), syscall.SOL_IP, soOriginalDst)
		if err != nil {
			serr = err
			return
		}
		sa := mreq.Multiaddr // a sockaddr_in: family, port, address
		out = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
	})
	if cerr != nil {
		return netip.AddrPort{}, cerr
	}
	return out, serr
}
