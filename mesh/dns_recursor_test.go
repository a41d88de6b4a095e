//go:build linux

package mesh

import (
	"net"
	"os"
	"testing"

	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/config"
	"golang.org/x/sys/unix"
)

// TestRecursorDialer: no dialer of ours without capture; with capture,
// the recursor sockets carry capture.proxy_mark as configured.
func TestRecursorDialer(t *testing.T) {
	if d := recursorDialer((&Agent{cfg: config.DefaultConfig()}).proxyMark()); d != nil {
		t.Fatalf("capture off: dialer %v; want none", d)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (SO_MARK needs CAP_NET_ADMIN); CI runs it as root")
	}
	cfg := config.DefaultConfig()
	cfg.Capture.Enabled, cfg.Capture.ProxyMark = true, 0x1234
	desired, err := cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	// As prepareCapture leaves it, before startDNS.
	a := &Agent{cfg: cfg, capture: iptables.NewReconciler(nil, nil, desired, nil, nil)}
	d := recursorDialer(a.proxyMark())
	if d == nil {
		t.Fatal("capture on: no dialer")
	}
	c, err := d.Dial("udp", "127.0.0.1:53") // UDP: nothing needs to listen
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var serr error
	rc.Control(func(fd uintptr) { mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if serr != nil || mark != 0x1234 {
		t.Errorf("SO_MARK = %#x, %v; want capture.proxy_mark 0x1234", mark, serr)
	}
}
