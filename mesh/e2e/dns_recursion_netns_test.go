//go:build linux

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/lab/testkit"
)

// lookupFrom asks addr for name's A records over UDP from src, an
// address of ns.
func lookupFrom(ns *labNode, src, addr, name string) (rcode int, ips []string, err error) {
	resp, err := inNetns(ns, func() (*dns.Msg, error) {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
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

// TestDNSRecursionNetns: n1's agent serves DNS on its bridge address,
// with a recursor in n1; n2, another host on the bridge, has two
// addresses. By default only n1 itself (its loopback and its own
// address) gets names outside the mesh forwarded: n2 gets REFUSED, which
// the agent counts, while the mesh's own names answer n2 too. With
// dns { recursor_allowed_cidrs = ["<n2's first address>/32"] } that
// address gets the recursor's answer and n2's second one still REFUSED.
func TestDNSRecursionNetns(t *testing.T) {
	skipShort(t)
	t.Parallel()
	l := newLab(t, "vmt-cap2-dns", 2)
	n1, n2 := l.nodes[0], l.nodes[1]
	n2b := labSubnet + "3" // n2's second address
	l.ip(n2.name, "addr", "add", n2b+"/24", "dev", "eth0")
	queries := testRecursor(t, n1)
	dnsAddr := n1.ip + ":8600"
	start := func(allowed string) {
		testkit.WriteFile(t, n1.dir, "vmesh.hcl", fmt.Sprintf(`addresses { dns = %q }
dns {
  recursors = [%q]
  %s
}
`, dnsAddr, recursorAddr, allowed))
		n1.args = []string{"-bootstrap", "-node", "n1", "-bind", n1.ip, "-client", "127.0.0.1",
			"-data-dir", filepath.Join(n1.dir, "data"), "-services-dir", filepath.Join(n1.dir, "services.d"),
			"-config", filepath.Join(n1.dir, "vmesh.hcl")}
		n1.start()
		testkit.WaitFor(t, 20*time.Second, "n1 registered", func() bool {
			code, out := n1.api(http.MethodGet, "/v1/catalog/nodes", "")
			return code == http.StatusOK && strings.Contains(out, `"n1"`)
		})
	}
	want := func(ns *labNode, src, name string, wantRcode int, wantIP string) {
		t.Helper()
		rcode, ips, err := lookupFrom(ns, src, dnsAddr, name)
		if err != nil || rcode != wantRcode || (wantIP != "" && (len(ips) != 1 || ips[0] != wantIP)) {
			t.Errorf("%s from %s: %s %v %v; want %s %s", name, src, dns.RcodeToString[rcode], ips, err, dns.RcodeToString[wantRcode], wantIP)
		}
	}
	const refusedMetric = "vmesh_dns_recursion_refused_total"

	start("")
	before := queries.Load()
	want(n2, n2.ip, "outside.example", dns.RcodeRefused, "")
	want(n2, n2b, "outside.example", dns.RcodeRefused, "")
	if n := queries.Load(); n != before {
		t.Errorf("the recursor got %d queries from n2's refused lookups", n-before)
	}
	want(n2, n2.ip, "n1.node.consul", dns.RcodeSuccess, n1.ip) // the mesh's own names answer anyone
	want(n1, n1.ip, "outside.example", dns.RcodeSuccess, "192.0.2.7")
	want(n1, "127.0.0.1", "outside.example", dns.RcodeSuccess, "192.0.2.7")
	code, body := n1.get(http.MethodGet, "http://127.0.0.1:15000/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, refusedMetric+" 2\n") {
		t.Errorf("n1's %s is not 2 after n2's two refused lookups:\n%s", refusedMetric, grepLines(body, "vmesh_dns_"))
	}
	if code := n1.p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, n1.p.stderr)
	}

	start(fmt.Sprintf("recursor_allowed_cidrs = [%q]", n2.ip+"/32"))
	want(n2, n2.ip, "outside.example", dns.RcodeSuccess, "192.0.2.7")
	want(n2, n2b, "outside.example", dns.RcodeRefused, "")
	t.Logf("recursion: refused for n2 by default, allowed for %s/32 once configured, still refused for %s", n2.ip, n2b)
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
