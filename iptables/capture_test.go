package iptables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func restores(f *Fake) int {
	n := 0
	for _, c := range f.Calls() {
		if strings.Contains(c, "-restore") {
			n++
		}
	}
	return n
}

func TestApplyTwiceRemove(t *testing.T) {
	ctx := context.Background()
	f := NewFake("nft", "legacy")
	for _, fam := range []int{4, 6} {
		if err := f.Restore("nft", fam, foreign); err != nil {
			t.Fatal(err)
		}
	}
	base := f.State()
	c := New(f, Options{})
	d := DefaultDesired()
	d.InboundPorts = []int{8080}
	if err := c.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	once := f.State()
	if n := strings.Count(once, "-j VMESH_OUTPUT"); n != 1 {
		t.Fatalf("%d jumps to VMESH_OUTPUT after one apply:\n%s", n, once)
	}
	if err := c.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := f.State(); got != once {
		t.Fatalf("second apply changed the state:\n%s\nwant\n%s", got, once)
	}
	show, err := c.Show(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(show, "# iptables-nft-save (IPv4)\n*nat\n:VMESH_INBOUND\n") || !strings.Contains(show, "-A PREROUTING -p tcp") {
		t.Errorf("Show:\n%s", show)
	}
	// The first Remove restores both families (inbound capture is IPv4
	// and IPv6); the second finds nothing and restores nothing.
	for _, want := range []int{2, 0} {
		before := restores(f)
		if err := c.Remove(ctx); err != nil {
			t.Fatal(err)
		}
		if got := f.State(); got != base {
			t.Fatalf("after Remove:\n%s\nwant\n%s", got, base)
		}
		if n := restores(f) - before; n != want {
			t.Errorf("Remove ran %d restores, want %d", n, want)
		}
	}
	if show, _ := c.Show(ctx); show != "" {
		t.Errorf("Show after Remove: %q", show)
	}
}

// A host that moved from legacy to nft: Apply on nft removes what an
// earlier run left in legacy, so nothing is captured twice.
func TestApplyRemovesOtherBackend(t *testing.T) {
	ctx := context.Background()
	f := NewFake("legacy", "nft")
	if err := New(f, Options{}).Apply(ctx, DefaultDesired()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.Save("legacy", 4), "VMESH_OUTPUT") {
		t.Fatal("no state in legacy")
	}
	if err := New(f, Options{Backend: "nft"}).Apply(ctx, DefaultDesired()); err != nil {
		t.Fatal(err)
	}
	if s := f.Save("legacy", 4); strings.Contains(s, "VMESH") {
		t.Errorf("legacy still has our state:\n%s", s)
	}
	if s := f.Save("nft", 4); strings.Count(s, "-j VMESH_OUTPUT") != 1 {
		t.Errorf("nft:\n%s", s)
	}
	if _, _, err := New(f, Options{Backend: "nope"}).Scripts(ctx, DefaultDesired()); err == nil {
		t.Error("forcing a missing backend worked")
	}
}

func TestBackendDetection(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		fake *Fake
		want string
		v6   bool
	}{
		{NewFake("nft", "legacy"), "nft", true},
		{NewFake("legacy", "nft"), "legacy", true},
		{NewFake("legacy").WithoutIPv6("legacy"), "legacy", false},
	} {
		b, _, err := Detect(ctx, tc.fake, "")
		if err != nil {
			t.Fatal(err)
		}
		if b.Mode != tc.want || (b.Save[1] != "") != tc.v6 {
			t.Errorf("Detect = %+v, want %s v6=%v", b, tc.want, tc.v6)
		}
	}
	if _, _, err := Detect(ctx, NewFake(), ""); !errors.Is(err, ErrNoIptables) {
		t.Errorf("no binaries: %v", err)
	}
	// Without ip6tables, IPv4 is still captured.
	f := NewFake("nft").WithoutIPv6("nft")
	d := DefaultDesired()
	d.CaptureAll = true
	if err := New(f, Options{}).Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	if f.Save("nft", 6) != "" || f.Save("nft", 4) == "" {
		t.Errorf("state:\n%s", f.State())
	}
}

func TestRestoreRetry(t *testing.T) {
	ctx := context.Background()
	f := NewFake("nft")
	f.FailRestores = 1
	if err := New(f, Options{}).Apply(ctx, DefaultDesired()); err != nil {
		t.Fatalf("one failure is retried: %v", err)
	}
	f.FailRestores = 2
	if err := New(f, Options{}).Apply(ctx, DefaultDesired()); err == nil || !strings.Contains(err.Error(), "applying IPv4 rules") {
		t.Fatalf("two failures: %v", err)
	}
	if n := strings.Count(f.Save("nft", 4), "-j VMESH_OUTPUT"); n != 1 {
		t.Errorf("%d jumps after failed restores", n)
	}
}

// Bad input is refused, naming the field, before any command runs.
func TestValidation(t *testing.T) {
	routes := []Route{
		{Dst: netip.MustParsePrefix("10.0.0.0/24"), Dev: "eth0"},
		{Dst: netip.MustParsePrefix("240.0.0.7/32"), Dev: VIPLink}, // ours: fine
	}
	for _, tc := range []struct {
		name string
		mod  func(*Desired)
		want []string
	}{
		{"port zero", func(d *Desired) { d.OutboundPort = 0 }, []string{"capture.outbound_port: port must be between 1 and 65535, got 0"}},
		{"port big", func(d *Desired) { d.ExcludePorts = []int{80, 70000} }, []string{"capture.exclude_ports[1]: port must be between 1 and 65535, got 70000"}},
		{"same ports", func(d *Desired) { d.InboundPort = d.OutboundPort }, []string{"capture.inbound_port: must differ"}},
		{"inbound ssh", func(d *Desired) { d.InboundPorts = []int{22, 8500, 9000, 9000} }, []string{
			"capture.inbound_ports[0]: port 22 is SSH", "capture.inbound_ports[1]: port 8500 is one of the agent's ports", "capture.inbound_ports[3]: port 9000 is listed twice"}},
		{"host bits", func(d *Desired) { d.ExcludeCIDRs = prefixes("10.1.2.3/8") }, []string{"capture.exclude_cidrs[0]: 10.1.2.3/8 has host bits set (did you mean 10.0.0.0/8?)"}},
		{"exclude vip", func(d *Desired) { d.ExcludeCIDRs = prefixes("0.0.0.0/0") }, []string{"capture.exclude_cidrs[0]: 0.0.0.0/0 overlaps vip_range"}},
		{"vip everything", func(d *Desired) { d.VIPRanges = prefixes("0.0.0.0/0") }, []string{"capture.vip_range[0]: 0.0.0.0/0 is every address"}},
		{"vip loopback", func(d *Desired) { d.VIPRanges = prefixes("127.8.0.0/16") }, []string{"capture.vip_range[0]: 127.8.0.0/16 overlaps loopback"}},
		{"vip route", func(d *Desired) { d.VIPRanges = prefixes("10.0.0.128/25") }, []string{"capture.vip_range[0]: 10.0.0.128/25 overlaps the local route 10.0.0.0/24 dev eth0"}},
		{"mark", func(d *Desired) { d.ProxyMark = 0 }, []string{"capture.proxy_mark: must not be 0"}},
		{"users", func(d *Desired) {
			d.ExcludeUIDs = []uint32{7}
			d.Users = []UserRedirect{{UID: 5, Port: 15101, Service: "a"}, {UID: 5, Port: 15001, Service: "b"}, {UID: 7, Port: 15103}}
		}, []string{`capture.service "b" user: UID 5 already has a redirect port`, `capture.service "b" user port: 15001 is already the outbound or inbound port`, "capture.users[2]: UID 7 is also in exclude_uids"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake("nft")
			d := DefaultDesired()
			tc.mod(&d)
			err := New(f, Options{Links: NewFakeLinks(routes...)}).Apply(context.Background(), d)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Apply = %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("commands ran before validation failed: %v", calls)
			}
		})
	}
}

func TestParse(t *testing.T) {
	if p, err := ParsePorts("exclude_ports", []string{"80,443", " 8080 "}); err != nil || len(p) != 3 || p[2] != 8080 {
		t.Errorf("ParsePorts = %v, %v", p, err)
	}
	if _, err := ParsePorts("exclude_ports", []string{"80,x", "0"}); err == nil || !strings.Contains(err.Error(), `exclude_ports: "x" is not a port`) || !strings.Contains(err.Error(), `"0" is not a port`) {
		t.Errorf("ParsePorts bad = %v", err)
	}
	if p, err := ParseCIDRs("exclude_cidrs", []string{"10.0.0.0/8,192.168.1.1", "fd00::/8"}); err != nil || len(p) != 3 || p[1].Bits() != 32 {
		t.Errorf("ParseCIDRs = %v, %v", p, err)
	}
	if _, err := ParseCIDRs("exclude_cidrs", []string{"10.0.0.1/8", "nope"}); err == nil || !strings.Contains(err.Error(), "did you mean 10.0.0.0/8") || !strings.Contains(err.Error(), `"nope" is not a CIDR`) {
		t.Errorf("ParseCIDRs bad = %v", err)
	}
	lookup := func(s string) (uint32, error) {
		switch s {
		case "root", "0":
			return 0, nil
		case "1000":
			return 1000, nil
		}
		return 0, fmt.Errorf("%q is not a user on this host", s)
	}
	if u, err := ParseUIDs("exclude_uids", []string{"0,1000", "root"}, lookup); err != nil || len(u) != 3 || u[1] != 1000 || u[2] != 0 {
		t.Errorf("ParseUIDs = %v, %v", u, err)
	}
	if _, err := ParseUIDs("exclude_uids", []string{"root", "no-such-user-vmesh"}, lookup); err == nil || !strings.Contains(err.Error(), `exclude_uids: "no-such-user-vmesh"`) {
		t.Errorf("ParseUIDs bad = %v", err)
	}
}

func TestNormalize(t *testing.T) {
	a := "# Generated by iptables-save v1.8.9 on Sun\n*nat\n:OUTPUT ACCEPT [12:720]\n[3:180] -A OUTPUT -j X\nCOMMIT\n# Completed\n"
	b := "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j X\nCOMMIT\n"
	if Normalize(a) != Normalize(b) {
		t.Errorf("%q != %q", Normalize(a), Normalize(b))
	}
}

func TestFakeLinks(t *testing.T) {
	l := NewFakeLinks()
	if l.State() != "no vmesh0" {
		t.Fatal(l.State())
	}
	ips := []netip.Addr{netip.MustParseAddr("240.0.0.2"), netip.MustParseAddr("240.0.0.1"), netip.MustParseAddr("240.0.0.2")}
	if err := l.SetVIPs(ips); err != nil {
		t.Fatal(err)
	}
	if l.State() != "vmesh0 up 240.0.0.1/32 240.0.0.2/32" {
		t.Fatal(l.State())
	}
	if err := l.Remove(); err != nil || l.State() != "no vmesh0" {
		t.Fatal(err, l.State())
	}
}
