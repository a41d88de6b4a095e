package proxy

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func socketMark(t *testing.T, c net.Conn) int {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not a TCP connection", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	if err := rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return mark
}

// TestDialMark: with Config.Mark, every upstream socket (an endpoint, an
// original destination) carries it as SO_MARK; without, none does.
func TestDialMark(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting SO_MARK needs CAP_NET_ADMIN: run as root")
	}
	addr := listen(t, silent(t))
	rt := buildRT(t, dialCluster(time.Second, addr), nil)
	for _, mark := range []int{0x2a5, 0} {
		p := testProxy(t, Config{Mark: mark})
		up, err := p.dial(rt, rt.hosts[0])
		if err != nil {
			t.Fatal(err)
		}
		if got := socketMark(t, up); got != mark {
			t.Errorf("dial with Mark %#x: socket mark %#x", mark, got)
		}
		up.Close()
		od, err := p.dialAddr(rt, addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := socketMark(t, od); got != mark {
			t.Errorf("dialAddr with Mark %#x: socket mark %#x", mark, got)
		}
		od.Close()
	}
}
