package mesh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/discovery"
)

// loopbackUpstream is a fake recursor on 127.0.0.1: every A query gets
// 192.0.2.7 (TEST-NET-1, never contacted). Tests never send DNS to a
// non-loopback address.
func loopbackUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)}}
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func dnsQuery(t *testing.T, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := (&dns.Client{Net: network, Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", network, name, err)
	}
	return r
}

// answers renders an answer section as sorted strings without TTLs.
func answers(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, "A "+v.A.String())
		case *dns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %s", v.Port, v.Target))
		}
	}
	slices.Sort(out)
	return out
}

// TestAgentDNS: the agent's DNS answers from its catalog, with the VIP the
// raft leader allocated, and forwards the rest; over UDP and TCP.
func TestAgentDNS(t *testing.T) {
	cfg := testConfig(t)
	cfg.DNS.Recursors = []string{loopbackUpstream(t)}
	a := startAgent(t, cfg)
	base := "http://" + a.HTTPAddr()
	addr := a.DNSAddr()
	if addr == "" || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("DNSAddr = %q", addr)
	}
	for _, body := range []string{
		`{"ID":"orders-1","Name":"orders","Port":8080,"Tags":["v1"],"Meta":{"protocol":"http"}}`,
		`{"ID":"orders-2","Name":"orders","Port":8081,"Address":"127.0.0.9","Check":{"CheckID":"orders-2-ttl","TTL":"1h"}}`,
	} {
		if code, out := testkit.HTTPDo(t, "PUT", base+"/v1/agent/service/register", body); code != 200 {
			t.Fatalf("register: %d %s", code, out)
		}
	}

	// The leader allocates a VIP for the new service.
	var vip string
	testkit.WaitFor(t, 10*time.Second, "a VIP for orders", func() bool {
		code, out := testkit.HTTPDo(t, "GET", base+"/v1/vmesh/vips", "")
		var vips []discovery.VIP
		if code != 200 || json.Unmarshal([]byte(out), &vips) != nil {
			t.Fatalf("GET /v1/vmesh/vips: %d %s", code, out)
		}
		for _, v := range vips {
			if v.Service == "orders" {
				vip = v.IP
			}
		}
		return vip != ""
	})
	if !strings.HasPrefix(vip, "240.") {
		t.Fatalf("orders VIP %s, want one from 240.0.0.0/4", vip)
	}

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			tests := []struct {
				name  string
				qtype uint16
				rcode int
				want  []string
			}{
				{"orders.mesh", dns.TypeA, dns.RcodeSuccess, []string{"A " + vip}},
				{"orders.virtual.consul", dns.TypeA, dns.RcodeSuccess, []string{"A " + vip}},
				// orders-2's TTL check is critical: only orders-1, at its
				// node's address.
				{"orders.service.consul", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
				{"orders.service.dc1.consul", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 8080 node-a.node.dc1.consul."}},
				{"v1.orders.service.consul", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
				{"node-a.node.consul", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}},
				{"nope.service.consul", dns.TypeA, dns.RcodeNameError, nil},
				{"nope.mesh", dns.TypeA, dns.RcodeNameError, nil},
				{"www.example.com", dns.TypeA, dns.RcodeSuccess, []string{"A 192.0.2.7"}},
			}
			for _, tt := range tests {
				r := dnsQuery(t, addr, network, tt.name, tt.qtype)
				if r.Rcode != tt.rcode || !slices.Equal(answers(r.Answer), tt.want) {
					t.Errorf("%s %s: %s %q, want %s %q", tt.name, dns.TypeToString[tt.qtype],
						dns.RcodeToString[r.Rcode], answers(r.Answer), dns.RcodeToString[tt.rcode], tt.want)
				}
			}
		})
	}

	// The check passes: orders-2 joins the answers, at its own address.
	if code, out := testkit.HTTPDo(t, "PUT", base+"/v1/agent/check/pass/orders-2-ttl", ""); code != 200 {
		t.Fatalf("check pass: %d %s", code, out)
	}
	testkit.WaitFor(t, 5*time.Second, "orders-2 in DNS", func() bool {
		return len(dnsQuery(t, addr, "udp", "orders.service.consul", dns.TypeA).Answer) == 2
	})
	r := dnsQuery(t, addr, "udp", "orders.service.consul", dns.TypeSRV)
	if got, want := answers(r.Answer), []string{"SRV 8080 node-a.node.dc1.consul.", "SRV 8081 7f000009.addr.dc1.consul."}; !slices.Equal(got, want) {
		t.Errorf("SRV %q, want %q", got, want)
	}
	if got, want := answers(r.Extra), []string{"A 127.0.0.1", "A 127.0.0.9"}; !slices.Equal(got, want) {
		t.Errorf("SRV additional %q, want %q", got, want)
	}

	var banner bytes.Buffer
	a.out = &banner
	a.dnsBanner()
	if want := "            DNS: " + addr + " (udp, tcp)\n"; banner.String() != want {
		t.Errorf("banner %q, want %q", banner.String(), want)
	}

}

// TestAgentDNSDig asks the agent with dig, the operator's tool, over UDP
// and TCP, including a forwarded name.
func TestAgentDNSDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig is not installed (apt-get install dnsutils; CI installs it): skipping")
	}
	cfg := testConfig(t)
	cfg.DNS.Recursors = []string{loopbackUpstream(t)}
	a := startAgent(t, cfg)
	base := "http://" + a.HTTPAddr()
	for _, body := range []string{
		`{"ID":"orders-1","Name":"orders","Port":8080}`,
		`{"ID":"orders-2","Name":"orders","Port":8081,"Address":"127.0.0.9"}`,
	} {
		if code, out := testkit.HTTPDo(t, "PUT", base+"/v1/agent/service/register", body); code != 200 {
			t.Fatalf("register: %d %s", code, out)
		}
	}
	var vip string
	testkit.WaitFor(t, 10*time.Second, "a VIP for orders", func() bool {
		_, v, _ := a.store.ServiceVIP(nil, "orders")
		if v != nil {
			vip = v.IP
		}
		return v != nil
	})
	host, port, _ := net.SplitHostPort(a.DNSAddr())
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"orders.service.consul", "SRV"}, []string{"1 1 8080 node-a.node.dc1.consul.", "1 1 8081 7f000009.addr.dc1.consul."}},
		{[]string{"+tcp", "orders.service.consul", "A"}, []string{"127.0.0.1", "127.0.0.9"}},
		{[]string{"orders.mesh"}, []string{vip}},
		{[]string{"+tcp", "orders.virtual.consul"}, []string{vip}},
		{[]string{"www.example.com"}, []string{"192.0.2.7"}},
	} {
		args := append([]string{"@" + host, "-p", port, "+short", "+time=5", "+tries=1"}, tt.args...)
		out, err := exec.Command(dig, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		slices.Sort(lines)
		if !slices.Equal(lines, tt.want) {
			t.Errorf("dig %s = %q, want %q", strings.Join(tt.args, " "), lines, tt.want)
		}
	}
	// An unknown name in our zones: NXDOMAIN.
	out, err := exec.Command(dig, "@"+host, "-p", port, "+time=5", "+tries=1", "nope.service.consul").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "status: NXDOMAIN") {
		t.Errorf("dig nope.service.consul: %v\n%s", err, out)
	}
}
