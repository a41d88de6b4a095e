package dns

import (
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeWriter is a client at remote as ServeDNS sees it; it keeps the
// answers written to it.
type fakeWriter struct {
	remote  net.Addr
	answers []*mdns.Msg
}

func (w *fakeWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8600}
}
func (w *fakeWriter) RemoteAddr() net.Addr        { return w.remote }
func (w *fakeWriter) WriteMsg(m *mdns.Msg) error  { w.answers = append(w.answers, m); return nil }
func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *fakeWriter) Close() error                { return nil }
func (w *fakeWriter) TsigStatus() error           { return nil }
func (w *fakeWriter) TsigTimersOnly(bool)         {}
func (w *fakeWriter) Hijack()                     {}

func udpFrom(ip string) net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 5353))
}

func tcpFrom(ip string) net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 5353))
}

// ask sends one A query for name from remote and returns the answer
// (nil: none was written).
func ask(s *Server, remote net.Addr, name string) *mdns.Msg {
	w := &fakeWriter{remote: remote}
	req := new(mdns.Msg)
	req.SetQuestion(name, mdns.TypeA)
	s.ServeDNS(w, req)
	if len(w.answers) == 0 {
		return nil
	}
	return w.answers[0]
}

// hostAddrs is the test host's address besides loopback.
func hostAddrs() ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("192.168.7.7")}, nil
}

// Names outside our zones are forwarded for this host's clients
// (loopback, its own addresses) and for recursor_allowed_cidrs; anyone
// else gets REFUSED without RA, counted, and the recursor hears nothing.
// Our own zones answer everyone.
func TestDNSRecursionPolicy(t *testing.T) {
	up := startFakeUpstream(t)
	reg := prometheus.NewRegistry()
	for _, allowed := range [][]netip.Prefix{nil, {netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")}} {
		s := NewServer(dnsCatalog(t), Config{Datacenter: "dc1", Recursors: []string{up.addr}, RecursionAllowed: allowed,
			LocalAddrs: hostAddrs, Metrics: NewMetrics(reg)})
		for _, c := range []struct {
			from    net.Addr
			forward bool
		}{
			{udpFrom("127.0.0.1"), true},
			{udpFrom("127.9.9.9"), true},
			{tcpFrom("::1"), true},
			{udpFrom("192.168.7.7"), true}, // the host's address: capture_dns
			{udpFrom("::ffff:192.168.7.7"), true},
			{udpFrom("10.1.2.3"), allowed != nil},
			{tcpFrom("fd00::5"), allowed != nil},
			{udpFrom("10.2.0.1"), false},
			{tcpFrom("203.0.113.9"), false},
		} {
			before, refused0 := up.queries.Load(), testutil.ToFloat64(s.cfg.Metrics.recursionRefused)
			m := ask(s, c.from, "www.example.")
			if m == nil {
				t.Fatalf("allowed %v, from %s: no answer", allowed, c.from)
			}
			forwarded := up.queries.Load() > before
			switch {
			case c.forward && (!forwarded || m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1):
				t.Errorf("allowed %v, from %s: %s, forwarded %v; want the recursor's answer", allowed, c.from, mdns.RcodeToString[m.Rcode], forwarded)
			case !c.forward && (forwarded || m.Rcode != mdns.RcodeRefused || m.RecursionAvailable):
				t.Errorf("allowed %v, from %s: %s (RA %v), forwarded %v; want REFUSED without RA, nothing forwarded",
					allowed, c.from, mdns.RcodeToString[m.Rcode], m.RecursionAvailable, forwarded)
			case !c.forward && testutil.ToFloat64(s.cfg.Metrics.recursionRefused) != refused0+1:
				t.Errorf("allowed %v, from %s: the refusal was not counted", allowed, c.from)
			}
			// The mesh's own names answer everyone, RA only where it holds.
			if m := ask(s, c.from, "orders.mesh."); m == nil || m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 1 || m.RecursionAvailable != c.forward {
				t.Errorf("allowed %v, from %s: orders.mesh = %v", allowed, c.from, m)
			}
		}
	}
}

// The bucket: burst at once, then rate per second; IPv6 sources share
// their /64; sources past maxSources share one overflow bucket; a full
// map forgets the sources that have been quiet.
func TestDNSRateLimiter(t *testing.T) {
	l := newLimiter(10, 3)
	t0 := time.Unix(1000, 0)
	a := netip.MustParseAddr("10.0.0.1")
	for i := range 3 {
		if !l.allow(a, t0) {
			t.Fatalf("query %d of the burst refused", i)
		}
	}
	if l.allow(a, t0) {
		t.Fatal("a fourth query at once was allowed (burst 3)")
	}
	if !l.allow(netip.MustParseAddr("10.0.0.2"), t0) {
		t.Fatal("another source was limited by the first one's bucket")
	}
	if !l.allow(a, t0.Add(100*time.Millisecond)) || l.allow(a, t0.Add(100*time.Millisecond)) {
		t.Fatal("100 ms at 10/s should give exactly one more token")
	}
	v6a, v6b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	for range 3 {
		l.allow(v6a, t0)
	}
	if l.allow(v6b, t0) {
		t.Error("two addresses of one /64 have separate buckets")
	}
	if newLimiter(0, 10) != nil || !(*limiter)(nil).allow(a, t0) {
		t.Error("rate 0 must mean no limit")
	}

	l = newLimiter(1, 1)
	for i := range maxSources {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), t0)
	}
	x, y := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !l.allow(x, t0) || l.allow(y, t0) {
		t.Error("past maxSources, new sources should share one overflow bucket")
	}
	if len(l.buckets) != maxSources {
		t.Errorf("%d buckets, want at most %d", len(l.buckets), maxSources)
	}
	if !l.allow(y, t0.Add(2*time.Second)) || len(l.buckets) != 1 {
		t.Errorf("after the others were quiet, a new source gets its own bucket: %d buckets", len(l.buckets))
	}
}

// Over its limit, a source's UDP queries are dropped (no answer to
// reflect) and its TCP queries REFUSED, both counted; this host's own
// sources are never limited.
func TestDNSRateLimitServe(t *testing.T) {
	s := NewServer(dnsCatalog(t), Config{Datacenter: "dc1", RateLimit: 1, RateBurst: 2, LocalAddrs: hostAddrs, Metrics: NewMetrics(nil)})
	for i := range 2 {
		if m := ask(s, udpFrom("10.5.5.5"), "orders.mesh."); m == nil || m.Rcode != mdns.RcodeSuccess {
			t.Fatalf("query %d within the burst: %v", i, m)
		}
	}
	if m := ask(s, udpFrom("10.5.5.5"), "orders.mesh."); m != nil {
		t.Errorf("over the limit over UDP: answered %v, want dropped", m)
	}
	if m := ask(s, tcpFrom("10.5.5.5"), "orders.mesh."); m == nil || m.Rcode != mdns.RcodeRefused {
		t.Errorf("over the limit over TCP: %v, want REFUSED", m)
	}
	if udp, tcp := testutil.ToFloat64(s.cfg.Metrics.rateLimited.WithLabelValues("udp")), testutil.ToFloat64(s.cfg.Metrics.rateLimited.WithLabelValues("tcp")); udp != 1 || tcp != 1 {
		t.Errorf("counted udp %v tcp %v, want 1 and 1", udp, tcp)
	}
	for _, local := range []string{"127.0.0.1", "192.168.7.7"} {
		for i := range 10 {
			if m := ask(s, udpFrom(local), "orders.mesh."); m == nil || m.Rcode != mdns.RcodeSuccess {
				t.Fatalf("%s, query %d: %v; this host's own clients are not limited", local, i, m)
			}
		}
	}
}
