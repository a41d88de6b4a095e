//go:build linux

package e2e

import (
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/lab/testkit"
)

// recursorAddr is where the test's upstream resolver listens in the
// namespace: port 53, which capture_dns redirects unless the socket is
// marked, on a loopback address other than the agent's.
const recursorAddr = "127.0.0.53:53"

// testRecursor is a DNS server in ns answering `outside.example.` A
// 192.0.2.7 (NXDOMAIN for anything else) over UDP and TCP; it counts the
// queries it got.
func testRecursor(t *testing.T, ns *labNode) *atomic.Int64 {
	t.Helper()
	var queries atomic.Int64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		if len(req.Question) == 1 && strings.EqualFold(req.Question[0].Name, "outside.example.") && req.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.ParseIP("192.0.2.7"),
			})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, err := inNetns(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp", recursorAddr) })
	if err != nil {
		t.Fatalf("recursor: listening on udp %s: %v", recursorAddr, err)
	}
	ln, err := inNetns(ns, func() (net.Listener, error) { return net.Listen("tcp", recursorAddr) })
	if err != nil {
		pc.Close()
		t.Fatalf("recursor: listening on tcp %s: %v", recursorAddr, err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started, done := make(chan struct{}), make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			defer close(done)
			srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return &queries
}

// lookupA asks addr (in ns) for name's A records over network.
func lookupA(ns *labNode, network, addr, name string) (rcode int, ips []string, err error) {
	resp, err := inNetns(ns, func() (*dns.Msg, error) {
		c := &dns.Client{Net: network, Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		r, _, err := c.Exchange(m, addr)
		return r, err
	})
	if err != nil {
		return 0, nil, err
	}
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	return resp.Rcode, ips, nil
}

// TestDNSCaptureForwardNetns: with capture_dns on, the agent's own
// queries to a recursor on port 53 carry the capture's proxy mark, so
// they reach the recursor instead of being redirected back to the agent
// (which answered SERVFAIL). An agent and a recursor share a fresh
// network namespace; a client there asks port 53 of an address nobody
// listens on, which capture hands to the agent: a name outside the
// mesh comes back with the recursor's answer, and `orders.mesh` with the
// VIP.
func TestDNSCaptureForwardNetns(t *testing.T) {
	t.Parallel()
	ns := &labNode{captureNS: newCaptureNS(t, "vmt-dns-capture")}
	queries := testRecursor(t, ns)

	dir := t.TempDir()
	cfgFile := testkit.WriteFile(t, dir, "vmesh.hcl", `capture {
  enabled = true
  capture_dns = true
}
dns { recursors = ["`+recursorAddr+`"] }
`)
	svcDir := filepath.Join(dir, "services.d")
	p := ns.agent("-bootstrap", "-data-dir", filepath.Join(dir, "data"), "-node", "n1", "-bind", "127.0.0.1",
		"-client", "127.0.0.1", "-http-addr", "127.0.0.1:8500", "-services-dir", svcDir, "-config", cfgFile)
	p.waitHTTP(30 * time.Second)

	// The client's port 53 goes to the agent by capture: nothing listens
	// on 127.0.0.1:53.
	const client = "127.0.0.1:53"
	marked0 := ns.natPackets("VMESH_OUTPUT", "mark match 0x539", "vmesh: proxy mark", "RETURN")
	captured0 := ns.natPackets("VMESH_OUTPUT", "vmesh: dns", "redir ports 8600")
	for _, network := range []string{"udp", "tcp"} {
		rcode, ips, err := lookupA(ns, network, client, "outside.example")
		if err != nil || rcode != dns.RcodeSuccess || len(ips) != 1 || ips[0] != "192.0.2.7" {
			t.Fatalf("outside.example over %s via %s: rcode %s, %v, %v; want the recursor's 192.0.2.7",
				network, client, dns.RcodeToString[rcode], ips, err)
		}
	}
	if n := queries.Load(); n < 2 {
		t.Errorf("the recursor got %d queries, want the agent's 2", n)
	}
	if got := ns.natPackets("VMESH_OUTPUT", "vmesh: dns", "redir ports 8600"); got < captured0+2 {
		t.Errorf("the capture_dns rule counted %d packets, %d before: the client's queries did not go through it", got, captured0)
	}
	if got := ns.natPackets("VMESH_OUTPUT", "mark match 0x539", "vmesh: proxy mark", "RETURN"); got < marked0+2 {
		t.Errorf("the proxy mark rule counted %d packets, %d before: the agent's queries to the recursor were not marked", got, marked0)
	}

	// Mesh names still come from the agent itself.
	testkit.WaitFor(t, 30*time.Second, "a leader", func() bool {
		code, out := ns.api(http.MethodGet, "/v1/status/leader", "")
		return code == http.StatusOK && strings.Contains(out, "127.0.0.1")
	})
	ns.mustAPI(http.MethodPut, "/v1/agent/service/register", `{"Name":"orders","Port":9090}`)
	vips := netip.MustParsePrefix("240.0.0.0/4")
	before := queries.Load()
	var ips []string
	testkit.WaitFor(t, 15*time.Second, "orders.mesh to answer its VIP", func() bool {
		rcode, got, err := lookupA(ns, "udp", client, "orders.mesh")
		ips = got
		return err == nil && rcode == dns.RcodeSuccess && len(got) == 1
	})
	if ip, err := netip.ParseAddr(ips[0]); err != nil || !vips.Contains(ip) {
		t.Errorf("orders.mesh = %v; want a VIP in %s", ips, vips)
	}
	if n := queries.Load(); n != before {
		t.Errorf("orders.mesh reached the recursor (%d queries, %d before)", n, before)
	}
	t.Logf("through capture: outside.example = 192.0.2.7 (recursor), orders.mesh = %s (VIP)", ips[0])

	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("SIGTERM: exit %d\n%s", code, p.stderr)
	}
}
