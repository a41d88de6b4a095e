package dns

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// fakeUpstream is a recursor on loopback that answers every A query with
// 192.0.2.1 (TEST-NET-1: data only, nothing is sent there) and counts
// the queries it got.
type fakeUpstream struct {
	addr    string
	queries atomic.Int32
}

func startFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	pc, ln, err := listenUDPTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		f.queries.Add(1)
		m := new(mdns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		if q.Name == "nx.example." {
			m.SetRcode(r, mdns.RcodeNameError)
		} else if q.Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")})
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return f
}

// deadRecursor is a loopback address where nothing answers DNS.
func deadRecursor(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// dnsCatalog: orders on three nodes (n3's instance critical, n4's
// warning), tags v1/v2, a VIP; billing all critical; big with 60
// instances.
func dnsCatalog(t *testing.T) *discovery.Store {
	t.Helper()
	s := discovery.NewStore()
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	for i, n := range []string{"n1", "n2", "n3", "n4", "Mixed-Case"} {
		must(t, s.EnsureNode(next(), &discovery.Node{Name: n, Address: fmt.Sprintf("10.0.0.%d", i+1)}))
	}
	reg := func(node, id, svc, addr string, port int, tags []string, status string) {
		var checks []*discovery.Check
		if status != "" {
			checks = []*discovery.Check{{CheckID: "c-" + id, Name: "c", Status: status}}
		}
		must(t, s.EnsureService(next(), &discovery.Instance{Node: node, ID: id, Service: svc, Address: addr, Port: port, Tags: tags,
			Weights: discovery.Weights{Passing: 1, Warning: 1}}, checks))
	}
	reg("n1", "o1", "orders", "", 8080, []string{"v1"}, discovery.HealthPassing)
	reg("n2", "o2", "orders", "10.0.1.2", 8081, []string{"v2"}, "")
	reg("n3", "o3", "orders", "", 8082, []string{"v1"}, discovery.HealthCritical)
	reg("n4", "o4", "orders", "", 8083, []string{"v1"}, discovery.HealthWarning)
	reg("n1", "b1", "billing", "", 9000, nil, discovery.HealthCritical)
	for i := range 60 {
		reg("n1", fmt.Sprintf("big%d", i), "big", fmt.Sprintf("10.1.%d.%d", i/200, i%200+1), 7000+i, nil, "")
	}
	must(t, s.VIPApply(next(), discovery.VIPAllocate, "orders", "240.0.0.1"))
	return s
}

func startDNS(t *testing.T, s *discovery.Store, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Datacenter == "" {
		cfg.Datacenter = "dc1"
	}
	cfg.Logger = testkit.Logger(t)
	srv := NewServer(s, cfg)
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func query(t *testing.T, addr, network, name string, qtype uint16, edns uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &mdns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, mdns.TypeToString[qtype], err)
	}
	return r
}

// rrs renders the answer section as sorted "type value ttl" strings.
func rrs(section []mdns.RR) []string {
	var out []string
	for _, rr := range section {
		switch v := rr.(type) {
		case *mdns.A:
			out = append(out, fmt.Sprintf("A %s %s %d", v.Hdr.Name, v.A, v.Hdr.Ttl))
		case *mdns.AAAA:
			out = append(out, fmt.Sprintf("AAAA %s %s %d", v.Hdr.Name, v.AAAA, v.Hdr.Ttl))
		case *mdns.SRV:
			out = append(out, fmt.Sprintf("SRV %s %d %s %d", v.Hdr.Name, v.Port, v.Target, v.Hdr.Ttl))
		case *mdns.SOA:
			out = append(out, "SOA "+v.Hdr.Name)
		case *mdns.OPT:
		default:
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestDNSAnswers(t *testing.T) {
	s := dnsCatalog(t)
	srv := startDNS(t, s, Config{ServiceTTL: 5 * time.Second, NodeTTL: 7 * time.Second, VIPTTL: DefaultVIPTTL, OnlyPassing: true})
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		extra  []string
	}{
		// Passing instances only: n3 (critical) and n4 (warning) are out.
		{"orders.service.consul.", mdns.TypeA, mdns.RcodeSuccess,
			[]string{"A orders.service.consul. 10.0.0.1 5", "A orders.service.consul. 10.0.1.2 5"}, nil},
		{"ORDERS.Service.DC1.consul.", mdns.TypeA, mdns.RcodeSuccess,
			[]string{"A ORDERS.Service.DC1.consul. 10.0.0.1 5", "A ORDERS.Service.DC1.consul. 10.0.1.2 5"}, nil},
		{"orders.service.consul.", mdns.TypeSRV, mdns.RcodeSuccess,
			[]string{"SRV orders.service.consul. 8080 n1.node.dc1.consul. 5", "SRV orders.service.consul. 8081 0a000102.addr.dc1.consul. 5"},
			[]string{"A 0a000102.addr.dc1.consul. 10.0.1.2 5", "A n1.node.dc1.consul. 10.0.0.1 5"}},
		{"v1.orders.service.consul.", mdns.TypeA, mdns.RcodeSuccess, []string{"A v1.orders.service.consul. 10.0.0.1 5"}, nil},
		{"_orders._v2.service.dc1.consul.", mdns.TypeSRV, mdns.RcodeSuccess,
			[]string{"SRV _orders._v2.service.dc1.consul. 8081 0a000102.addr.dc1.consul. 5"}, []string{"A 0a000102.addr.dc1.consul. 10.0.1.2 5"}},
		{"_orders._tcp.service.consul.", mdns.TypeSRV, mdns.RcodeSuccess,
			[]string{"SRV _orders._tcp.service.consul. 8080 n1.node.dc1.consul. 5", "SRV _orders._tcp.service.consul. 8081 0a000102.addr.dc1.consul. 5"},
			[]string{"A 0a000102.addr.dc1.consul. 10.0.1.2 5", "A n1.node.dc1.consul. 10.0.0.1 5"}},
		{"v9.orders.service.consul.", mdns.TypeA, mdns.RcodeSuccess, nil, nil},
		{"orders.service.consul.", mdns.TypeAAAA, mdns.RcodeSuccess, nil, nil},
		{"billing.service.consul.", mdns.TypeA, mdns.RcodeSuccess, nil, nil}, // exists, nobody passing: NODATA
		{"orders.service.dc2.consul.", mdns.TypeA, mdns.RcodeNameError, nil, nil},
		{"nope.service.consul.", mdns.TypeA, mdns.RcodeNameError, nil, nil},
		// VIPs.
		{"orders.mesh.", mdns.TypeA, mdns.RcodeSuccess, []string{"A orders.mesh. 240.0.0.1 30"}, nil},
		{"Orders.Mesh.", mdns.TypeA, mdns.RcodeSuccess, []string{"A Orders.Mesh. 240.0.0.1 30"}, nil},
		{"orders.mesh.", mdns.TypeAAAA, mdns.RcodeSuccess, nil, nil},
		{"orders.virtual.consul.", mdns.TypeA, mdns.RcodeSuccess, []string{"A orders.virtual.consul. 240.0.0.1 30"}, nil},
		{"orders.virtual.dc1.consul.", mdns.TypeA, mdns.RcodeSuccess, []string{"A orders.virtual.dc1.consul. 240.0.0.1 30"}, nil},
		{"billing.mesh.", mdns.TypeA, mdns.RcodeNameError, nil, nil}, // no VIP (yet)
		{"x.orders.mesh.", mdns.TypeA, mdns.RcodeNameError, nil, nil},
		{"mesh.", mdns.TypeA, mdns.RcodeSuccess, nil, nil},
		// Nodes and addresses.
		{"n1.node.consul.", mdns.TypeA, mdns.RcodeSuccess, []string{"A n1.node.consul. 10.0.0.1 7"}, nil},
		{"mixed-case.node.dc1.consul.", mdns.TypeA, mdns.RcodeSuccess, []string{"A mixed-case.node.dc1.consul. 10.0.0.5 7"}, nil},
		{"n9.node.consul.", mdns.TypeA, mdns.RcodeNameError, nil, nil},
		{"0a000102.addr.dc1.consul.", mdns.TypeA, mdns.RcodeSuccess, []string{"A 0a000102.addr.dc1.consul. 10.0.1.2 7"}, nil},
		{"zz.addr.consul.", mdns.TypeA, mdns.RcodeNameError, nil, nil},
		{"what.consul.", mdns.TypeA, mdns.RcodeNameError, nil, nil},
		{"consul.", mdns.TypeSOA, mdns.RcodeSuccess, []string{"SOA consul."}, nil},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name+"/"+mdns.TypeToString[tt.qtype], func(t *testing.T) {
				r := query(t, srv.Addr(), network, tt.name, tt.qtype, 0)
				if r.Rcode != tt.rcode || !r.Authoritative {
					t.Fatalf("rcode %s aa=%v, want %s aa=true\n%v", mdns.RcodeToString[r.Rcode], r.Authoritative, mdns.RcodeToString[tt.rcode], r)
				}
				if got := rrs(r.Answer); !slices.Equal(got, tt.answer) {
					t.Errorf("answer:\n got %q\nwant %q", got, tt.answer)
				}
				if got := rrs(r.Extra); !slices.Equal(got, tt.extra) {
					t.Errorf("extra:\n got %q\nwant %q", got, tt.extra)
				}
				if len(r.Answer) == 0 && tt.qtype != mdns.TypeSOA && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != mdns.TypeSOA) {
					t.Errorf("a negative answer without the zone's SOA: %v", r.Ns)
				}
			})
		}
	}
}

func TestDNSWarningInstancesUnlessOnlyPassing(t *testing.T) {
	srv := startDNS(t, dnsCatalog(t), Config{OnlyPassing: false})
	r := query(t, srv.Addr(), "udp", "v1.orders.service.consul.", mdns.TypeA, 0)
	want := []string{"A v1.orders.service.consul. 10.0.0.1 0", "A v1.orders.service.consul. 10.0.0.4 0"}
	if got := rrs(r.Answer); !slices.Equal(got, want) {
		t.Errorf("answer %q, want %q (warning in, critical out)", got, want)
	}
}

func TestDNSTruncation(t *testing.T) {
	srv := startDNS(t, dnsCatalog(t), Config{})
	for _, tt := range []struct {
		network string
		edns    uint16
		trunc   bool
	}{
		{"udp", 0, true},     // 512 bytes: about 30 A records
		{"udp", 4096, false}, // EDNS0 room for all 60
		{"tcp", 0, false},
	} {
		t.Run(fmt.Sprintf("%s edns=%d", tt.network, tt.edns), func(t *testing.T) {
			r := query(t, srv.Addr(), tt.network, "big.service.consul.", mdns.TypeA, tt.edns)
			if r.Truncated != tt.trunc {
				t.Errorf("TC = %v, want %v", r.Truncated, tt.trunc)
			}
			if tt.trunc && (len(r.Answer) == 0 || len(r.Answer) >= 60) {
				t.Errorf("truncated answer has %d records, want some but not all 60", len(r.Answer))
			}
			if !tt.trunc && len(r.Answer) != 60 {
				t.Errorf("answer has %d records, want all 60", len(r.Answer))
			}
			if tt.trunc {
				r.Compress = true // as it came on the wire
				if n, _ := r.Pack(); len(n) > mdns.MinMsgSize {
					t.Errorf("UDP answer is %d bytes, over 512", len(n))
				}
			}
		})
	}
}

func TestDNSForwarding(t *testing.T) {
	up := startFakeUpstream(t)
	s := dnsCatalog(t)
	t.Run("first recursor dead, second answers", func(t *testing.T) {
		srv := startDNS(t, s, Config{Recursors: []string{deadRecursor(t), up.addr}})
		for _, network := range []string{"udp", "tcp"} {
			before := up.queries.Load()
			r := query(t, srv.Addr(), network, "www.example.com.", mdns.TypeA, 0)
			if r.Rcode != mdns.RcodeSuccess || !slices.Equal(rrs(r.Answer), []string{"A www.example.com. 192.0.2.1 60"}) || !r.RecursionAvailable {
				t.Errorf("%s: forwarded answer %v", network, r)
			}
			if up.queries.Load() != before+1 {
				t.Errorf("%s: upstream got %d queries, want 1", network, up.queries.Load()-before)
			}
			// The upstream's NXDOMAIN comes back as it is.
			if r := query(t, srv.Addr(), network, "nx.example.", mdns.TypeA, 0); r.Rcode != mdns.RcodeNameError {
				t.Errorf("%s: upstream NXDOMAIN came back as %s", network, mdns.RcodeToString[r.Rcode])
			}
		}
		// Our zones are never forwarded.
		before := up.queries.Load()
		query(t, srv.Addr(), "udp", "nope.service.consul.", mdns.TypeA, 0)
		query(t, srv.Addr(), "udp", "nope.mesh.", mdns.TypeA, 0)
		if up.queries.Load() != before {
			t.Error("a name in our zones was forwarded")
		}
	})
	t.Run("every recursor dead: SERVFAIL", func(t *testing.T) {
		srv := startDNS(t, s, Config{Recursors: []string{deadRecursor(t)}})
		if r := query(t, srv.Addr(), "udp", "www.example.com.", mdns.TypeA, 0); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("rcode %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
		}
	})
	t.Run("no recursors: SERVFAIL", func(t *testing.T) {
		srv := startDNS(t, s, Config{})
		if r := query(t, srv.Addr(), "tcp", "www.example.com.", mdns.TypeA, 0); r.Rcode != mdns.RcodeServerFailure || r.RecursionAvailable {
			t.Errorf("rcode %s ra=%v, want SERVFAIL without RA", mdns.RcodeToString[r.Rcode], r.RecursionAvailable)
		}
	})
}

func TestRecursorAddr(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3.4": "1.2.3.4:53", "1.2.3.4:5353": "1.2.3.4:5353", "::1": "[::1]:53", "[::1]:54": "[::1]:54", "[fd00::1]": "[fd00::1]:53",
		"mdns.example": "", "1.2.3.4:x": "", "": "",
	} {
		got, err := RecursorAddr(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("RecursorAddr(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
}

func TestResolvConfRecursors(t *testing.T) {
	p := t.TempDir() + "/resolv.conf"
	if err := writeFile(p, "# comment\nnameserver 127.0.0.53\nnameserver ::1\nsearch example\noptions edns0\n"); err != nil {
		t.Fatal(err)
	}
	got, err := ResolvConfRecursors(p)
	if want := []string{"127.0.0.53:53", "[::1]:53"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ResolvConfRecursors = %q, %v, want %q", got, err, want)
	}
	if _, err := ResolvConfRecursors(p + ".missing"); err == nil || !strings.Contains(err.Error(), "resolv.conf.missing") {
		t.Errorf("missing file: %v", err)
	}
}

func TestDNSServerCloseWithoutStart(t *testing.T) {
	srv := NewServer(discovery.NewStore(), Config{Addr: "127.0.0.1:0"})
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// A taken port fails Start with a clear error and leaves nothing open.
	a := startDNS(t, discovery.NewStore(), Config{})
	b := NewServer(discovery.NewStore(), Config{Addr: a.Addr()})
	if err := b.Start(t.Context()); err == nil || !strings.Contains(err.Error(), a.Addr()) {
		t.Fatalf("Start on a taken address = %v, want an error naming it", err)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
