package iptables

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"github.com/vmesh/vmesh/lab/testkit"
	"golang.org/x/sys/unix"
)

// These tests run as root in a fresh network namespace each, against the
// real iptables (nft and legacy, whichever are installed) and rtnetlink.
// Nothing here touches the host's namespace: commands run through
// `ip netns exec`, netlink through a handle opened in the namespace, and
// sockets are made by a thread that entered it.

// newNetns makes a namespace with lo up, deleted when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	testkit.RequireRoot(t, "network namespaces and iptables")
	b := make([]byte, 4)
	rand.Read(b)
	return testkit.NetNS(t, "vmesh-test-"+hex.EncodeToString(b))
}

func nsRun(t *testing.T, ns string, argv ...string) string {
	t.Helper()
	out, err := ExecRunner{Prefix: []string{"ip", "netns", "exec", ns}}.Run(context.Background(), "", argv[0], argv[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// forBackends runs fn once per installed iptables backend.
func forBackends(t *testing.T, fn func(t *testing.T, mode string)) {
	for _, mode := range []string{"nft", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			testkit.RequireRoot(t, "network namespaces and iptables")
			for _, bin := range []string{"iptables-" + mode + "-restore", "ip6tables-" + mode + "-restore"} {
				if _, err := exec.LookPath(bin); err != nil {
					t.Skipf("%s is not installed (CI installs the iptables package, which has both backends)", bin)
				}
			}
			fn(t, mode)
		})
	}
}

// inNetns runs fn on a thread inside the namespace; sockets fn makes stay
// there after the thread returns to the host's namespace.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with the goroutine rather
			// than run other code in the test namespace.
			panic(fmt.Sprintf("returning to the host namespace: %v", err))
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

type nsState struct {
	t    *testing.T
	ns   string
	mode string
}

func (s nsState) save() string {
	return Normalize(nsRun(s.t, s.ns, "iptables-"+s.mode+"-save")) + "# v6\n" + Normalize(nsRun(s.t, s.ns, "ip6tables-"+s.mode+"-save"))
}

func TestNetnsApplyRemove(t *testing.T) {
	forBackends(t, func(t *testing.T, mode string) {
		ctx := context.Background()
		ns := newNetns(t)
		st := nsState{t, ns, mode}
		// Someone else's rules, which must survive and stay after ours.
		for _, p := range []string{"iptables-" + mode, "ip6tables-" + mode} {
			nsRun(t, ns, p, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
			nsRun(t, ns, p, "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
		}
		base := st.save()
		links, err := NewNetlinkAt("/run/netns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		defer links.Close()
		c := New(ExecRunner{Prefix: []string{"ip", "netns", "exec", ns}}, Options{Backend: mode, Links: links})
		d1 := DefaultDesired()
		d1.InboundPorts = []int{8080}
		d1.CaptureDNS = true
		d2 := DefaultDesired()
		d2.CaptureAll = true
		d2.ExcludeCIDRs = prefixes("10.0.0.0/8")
		d2.ExcludeUIDs = []uint32{1000}

		t0 := time.Now()
		if err := c.Apply(ctx, d1); err != nil {
			t.Fatal(err)
		}
		t.Logf("first apply: %s", time.Since(t0))
		once := st.save()
		for _, want := range []string{":VMESH_OUTPUT -\n", ":VMESH_REDIRECT -\n", ":VMESH_PREROUTING -\n", ":VMESH_INBOUND -\n", "-j VMESH_OUTPUT\n", "-j VMESH_PREROUTING\n"} {
			v4, _, _ := strings.Cut(once, "# v6\n")
			if n := strings.Count(v4, want); n != 1 {
				t.Errorf("%q appears %d times, want once:\n%s", want, n, once)
			}
		}
		// The jumps are first, the foreign rules after them.
		for _, chain := range []string{"OUTPUT", "PREROUTING"} {
			i := strings.Index(once, "-A "+chain+" ")
			if i < 0 || !strings.HasPrefix(once[i:], "-A "+chain+" -p tcp -m comment --comment \"vmesh") && !strings.HasPrefix(once[i:], "-A "+chain+" -m comment --comment \"vmesh") {
				t.Errorf("first rule of %s is not our jump:\n%s", chain, once)
			}
		}
		if !strings.Contains(once, "--dport 9999 -j RETURN") {
			t.Errorf("foreign rule lost:\n%s", once)
		}
		if err := c.Apply(ctx, d1); err != nil {
			t.Fatal(err)
		}
		if got := st.save(); got != once {
			t.Fatalf("second apply changed the rules:\n%s\nwant\n%s", got, once)
		}
		if err := c.Apply(ctx, d2); err != nil {
			t.Fatal(err)
		}
		two := st.save()
		if strings.Contains(two, "VMESH_INBOUND") || !strings.Contains(two, "vmesh: capture_all") || strings.Count(two, "-j VMESH_OUTPUT\n") != 2 {
			t.Errorf("apply d2 did not converge:\n%s", two)
		}
		if err := c.Apply(ctx, d1); err != nil {
			t.Fatal(err)
		}
		if got := st.save(); got != once {
			t.Fatalf("back to d1:\n%s\nwant\n%s", got, once)
		}
		show, err := c.Show(ctx)
		if err != nil || !strings.Contains(show, "-A VMESH_INBOUND") {
			t.Errorf("Show = %q, %v", show, err)
		}
		t0 = time.Now()
		if err := c.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("remove: %s", time.Since(t0))
		if got := st.save(); got != base {
			t.Fatalf("after Remove:\n%s\nwant the baseline:\n%s", got, base)
		}
		if err := c.Remove(ctx); err != nil {
			t.Fatal("Remove with nothing there:", err)
		}
		for range 10 {
			if err := c.Apply(ctx, d1); err != nil {
				t.Fatal(err)
			}
			if err := c.Remove(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if got := st.save(); got != base {
			t.Fatalf("after 10 apply/remove:\n%s\nwant the baseline:\n%s", got, base)
		}
		for range 10 {
			if err := c.Apply(ctx, d1); err != nil {
				t.Fatal(err)
			}
		}
		if got := st.save(); got != once {
			t.Fatalf("after 10 applies:\n%s\nwant one apply's:\n%s", got, once)
		}
		if err := c.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if got := st.save(); got != base {
			t.Fatalf("final remove:\n%s", got)
		}
	})
}

// serve answers every connection with reply(conn) until the listener closes.
func serve(wg *sync.WaitGroup, ln net.Listener, reply func(*net.TCPConn) string) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, reply(c.(*net.TCPConn)))
			c.Close()
		}
	}()
}

func ask(d *net.Dialer, addr string) (string, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestNetnsRedirect(t *testing.T) {
	forBackends(t, func(t *testing.T, mode string) {
		ctx := context.Background()
		ns := newNetns(t)
		links, err := NewNetlinkAt("/run/netns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		defer links.Close()
		vip, vip2 := netip.MustParseAddr("240.0.0.10"), netip.MustParseAddr("240.0.0.11")
		if err := links.SetVIPs([]netip.Addr{vip, netip.MustParseAddr("240.0.0.99")}); err != nil {
			t.Fatal(err)
		}
		if err := links.SetVIPs([]netip.Addr{vip2, vip}); err != nil { // reconciles: drops .99, adds .11
			t.Fatal(err)
		}
		if got, err := links.VIPs(); err != nil || fmt.Sprint(got) != "[240.0.0.10 240.0.0.11]" {
			t.Fatalf("VIPs = %v, %v", got, err)
		}
		if out := nsRun(t, ns, "ip", "-o", "link", "show", VIPLink); !strings.Contains(out, ",UP") {
			t.Errorf("vmesh0 not up: %s", out)
		}

		c := New(ExecRunner{Prefix: []string{"ip", "netns", "exec", ns}}, Options{Backend: mode, Links: links})
		d := DefaultDesired()
		d.CaptureDNS = true
		d.DNSPort = 8600
		if err := c.Apply(ctx, d); err != nil {
			t.Fatal(err)
		}

		var wg sync.WaitGroup
		var lns []net.Listener
		var dns net.PacketConn
		plain := &net.Dialer{Timeout: 3 * time.Second}
		marked := &net.Dialer{Timeout: 3 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, DefaultProxyMark) })
			if err != nil {
				return err
			}
			return serr
		}}
		type result struct {
			what, got string
			err       error
		}
		var results []result
		inNetns(t, ns, func() {
			listen := func(addr string, reply func(*net.TCPConn) string) {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				lns = append(lns, ln)
				serve(&wg, ln, reply)
			}
			listen(fmt.Sprintf("127.0.0.1:%d", DefaultOutboundPort), func(c *net.TCPConn) string {
				dst, err := OriginalDst(c)
				if err != nil {
					return "error " + err.Error()
				}
				return "proxy " + dst.String()
			})
			listen("0.0.0.0:22", func(*net.TCPConn) string { return "ssh" })
			listen("0.0.0.0:80", func(*net.TCPConn) string { return "direct" })
			if dns, err = net.ListenPacket("udp", "127.0.0.1:8600"); err != nil {
				t.Fatal(err)
			}
			// Sockets are made here, in the namespace; the answers are
			// read here too, which is fine: the listeners run elsewhere.
			for _, q := range []struct {
				what string
				d    *net.Dialer
				addr string
			}{
				{"vip", plain, "240.0.0.10:80"},
				{"vip2", plain, "240.0.0.11:9090"},
				{"ssh via vip", plain, "240.0.0.10:22"},
				{"ssh", plain, "127.0.0.1:22"},
				{"marked", marked, "240.0.0.10:80"},
				{"loopback", plain, "127.0.0.1:80"},
			} {
				got, err := ask(q.d, q.addr)
				results = append(results, result{q.what, got, err})
			}
		})
		want := map[string]string{
			"vip": "proxy 240.0.0.10:80", "vip2": "proxy 240.0.0.11:9090",
			"ssh via vip": "ssh", "ssh": "ssh", "marked": "direct", "loopback": "direct",
		}
		for _, r := range results {
			if r.err != nil || r.got != want[r.what] {
				t.Errorf("%s: got %q, %v; want %q", r.what, r.got, r.err, want[r.what])
			}
		}

		// DNS capture: a query to any resolver's port 53 reaches the agent.
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			n, from, err := dns.ReadFrom(buf)
			if err == nil {
				dns.WriteTo(append([]byte("agent:"), buf[:n]...), from)
			}
		}()
		var answer string
		inNetns(t, ns, func() {
			u, err := net.Dial("udp", "127.0.0.53:53")
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			u.SetDeadline(time.Now().Add(3 * time.Second))
			u.Write([]byte("q"))
			buf := make([]byte, 512)
			n, err := u.Read(buf)
			if err != nil {
				t.Errorf("DNS: %v", err)
			}
			answer = string(buf[:n])
		})
		if answer != "agent:q" {
			t.Errorf("DNS answer %q, want from the agent", answer)
		}

		for _, ln := range lns {
			ln.Close()
		}
		dns.Close()
		wg.Wait()

		if err := c.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if err := links.Remove(); err != nil {
			t.Fatal(err)
		}
		if got, err := links.VIPs(); err != nil || len(got) != 0 {
			t.Errorf("after Remove: VIPs %v, %v", got, err)
		}
		if _, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "show", VIPLink).CombinedOutput(); err == nil {
			t.Error("vmesh0 still there")
		}
		if err := links.Remove(); err != nil {
			t.Errorf("second Remove: %v", err)
		}
	})
}

// A VIP range over a route of the namespace is refused before any rule.
func TestNetnsRouteOverlap(t *testing.T) {
	ns := newNetns(t)
	nsRun(t, ns, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	nsRun(t, ns, "ip", "addr", "add", "10.200.0.1/24", "dev", "v0")
	nsRun(t, ns, "ip", "link", "set", "v0", "up")
	links, err := NewNetlinkAt("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer links.Close()
	d := DefaultDesired()
	d.VIPRanges = prefixes("10.200.0.0/16")
	f := NewFake("nft")
	err = New(f, Options{Links: links}).Apply(context.Background(), d)
	if err == nil || !strings.Contains(err.Error(), "capture.vip_range[0]: 10.200.0.0/16 overlaps the local route 10.200.0.0/24 dev v0") {
		t.Fatalf("Apply = %v", err)
	}
	if len(f.Calls()) != 0 {
		t.Errorf("ran %v", f.Calls())
	}
}

// Inbound capture across a veth pair between two fresh namespaces: a
// client in B calling A's service port lands on A's inbound listener, which
// sees the original destination; A's port 22 and local callers are direct.
func TestNetnsInbound(t *testing.T) {
	forBackends(t, func(t *testing.T, mode string) {
		a, b := newNetns(t), newNetns(t)
		nsRun(t, a, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
		nsRun(t, a, "ip", "addr", "add", "10.250.0.1/24", "dev", "va")
		nsRun(t, a, "ip", "link", "set", "va", "up")
		nsRun(t, b, "ip", "addr", "add", "10.250.0.2/24", "dev", "vb")
		nsRun(t, b, "ip", "link", "set", "vb", "up")
		c := New(ExecRunner{Prefix: []string{"ip", "netns", "exec", a}}, Options{Backend: mode})
		d := DefaultDesired()
		d.VIPRanges = nil
		d.InboundPorts = []int{8080}
		if err := c.Apply(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var lns []net.Listener
		answers := map[string]string{}
		inNetns(t, a, func() {
			for port, reply := range map[int]func(*net.TCPConn) string{
				DefaultInboundPort: func(c *net.TCPConn) string {
					dst, err := OriginalDst(c)
					if err != nil {
						return "error " + err.Error()
					}
					return "inbound " + dst.String()
				},
				8080: func(*net.TCPConn) string { return "app" },
				22:   func(*net.TCPConn) string { return "ssh" },
			} {
				ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
				if err != nil {
					t.Fatal(err)
				}
				lns = append(lns, ln)
				serve(&wg, ln, reply)
			}
			got, err := ask(&net.Dialer{Timeout: 3 * time.Second}, "127.0.0.1:8080")
			answers["local"] = fmt.Sprint(got, err)
		})
		inNetns(t, b, func() {
			for _, addr := range []string{"10.250.0.1:8080", "10.250.0.1:22"} {
				got, err := ask(&net.Dialer{Timeout: 3 * time.Second}, addr)
				answers[addr] = fmt.Sprint(got, err)
			}
		})
		for _, ln := range lns {
			ln.Close()
		}
		wg.Wait()
		want := map[string]string{"local": "app<nil>", "10.250.0.1:8080": "inbound 10.250.0.1:8080<nil>", "10.250.0.1:22": "ssh<nil>"}
		for k, w := range want {
			if answers[k] != w {
				t.Errorf("%s: got %q, want %q", k, answers[k], w)
			}
		}
		if err := c.Remove(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
