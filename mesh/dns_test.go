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
		if code, out := httpDo(t, "PUT", base+"/v1/agent/service/register", body); code != 200 {
			t.Fatalf("register: %d %s", code, out)
		}
	}

	// The leader allocates a VIP for the new service.
	var vip string
	waitFor(t, 10*time.Second, "a VIP for orders", func() bool {
		code, out := httpDo(t, "GET", base+"/v1/vmesh/vips", "")
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
	if code, out := httpDo(t, "PUT", base+"/v1/agent/check/pass/orders-2-ttl", ""); code != 200 {
		t.Fatalf("check pass: %d %s", code, out)
	}
	waitFor(t, 5*time.Second, "orders-2 in DNS", func() bool {
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
		if code, out := httpDo(t, "PUT", base+"/v1/agent/service/register", body); code != 200 {
			t.Fatalf("register: %d %s", code, out)
		}
	}
	var vip string
	waitFor(t, 10*time.Second, "a VIP for orders", func() bool {
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

func TestDNSConfig(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.DNSAddr() != "127.0.0.1:8600" || cfg.vipRange().String() != "240.0.0.0/4" || !cfg.DNS.OnlyPassing || cfg.DNS.VIPTTL != 30*time.Second {
		t.Errorf("defaults: dns %s, range %s, %+v", cfg.DNSAddr(), cfg.vipRange(), cfg.DNS)
	}
	dir := t.TempDir()
	writeFile(t, dir, "dns.hcl", `
ports { dns = 8653 }
capture { vip_range = "10.200.0.0/16" }
dns {
  recursors    = ["10.0.0.2", "10.0.0.3:5353"]
  service_ttl  = "5s"
  node_ttl     = "10s"
  vip_ttl      = "1m"
  only_passing = false
}
`)
	cfg, err := parseAgentFlags(t, "-config", dir, "-client", "127.0.0.4", "-data-dir", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DNSAddr() != "127.0.0.4:8653" || cfg.vipRange().String() != "10.200.0.0/16" || cfg.DNS.OnlyPassing ||
		cfg.DNS.ServiceTTL != 5*time.Second || cfg.DNS.NodeTTL != 10*time.Second || cfg.DNS.VIPTTL != time.Minute ||
		!slices.Equal(cfg.DNS.Recursors, []string{"10.0.0.2", "10.0.0.3:5353"}) {
		t.Errorf("from file: dns %s, range %s, %+v", cfg.DNSAddr(), cfg.vipRange(), cfg.DNS)
	}
	cfg, err = parseAgentFlags(t, "-config", dir, "-dns-addr", "127.0.0.1:53", "-data-dir", t.TempDir())
	if err != nil || cfg.DNSAddr() != "127.0.0.1:53" {
		t.Errorf("-dns-addr: %q, %v", cfg.DNSAddr(), err)
	}
	off := DefaultConfig()
	off.Ports.DNS = -1
	if off.DNSAddr() != "" || off.Validate() != nil {
		t.Errorf("ports.dns = -1: addr %q, %v", off.DNSAddr(), off.Validate())
	}

	for _, tt := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"ipv6 range", func(c *Config) { c.Capture.VIPRange = "fd00::/8" }, "capture.vip_range: \"fd00::/8\": VIPs are IPv4"},
		{"loopback range", func(c *Config) { c.Capture.VIPRange = "127.1.0.0/16" }, "overlaps loopback"},
		{"range covering loopback", func(c *Config) { c.Capture.VIPRange = "64.0.0.0/1" }, "overlaps loopback"},
		{"everything", func(c *Config) { c.Capture.VIPRange = "0.0.0.0/0" }, "capture.vip_range"},
		{"not a CIDR", func(c *Config) { c.Capture.VIPRange = "240.0.0.0" }, "capture.vip_range: \"240.0.0.0\" is not a CIDR"},
		{"dns port", func(c *Config) { c.Ports.DNS = 70000 }, "ports.dns: must be between"},
		{"dns address", func(c *Config) { c.Addresses.DNS = "localhost:53" }, "addresses.dns: \"localhost:53\" is not IP:port"},
		{"recursor", func(c *Config) { c.DNS.Recursors = []string{"1.1.1.1", "dns.google"} }, "dns.recursors[1]: \"dns.google\""},
		{"ttl", func(c *Config) { c.DNS.NodeTTL = -time.Second }, "dns.node_ttl: must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}
