package iptables

import (
	"context"
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// states is the table of desired states: each is rendered to a golden
// file, then all are replayed in random order through the fake.
var states = []struct {
	name string
	d    func(*Desired)
}{
	{"default", func(*Desired) {}},
	{"none", func(d *Desired) { d.VIPRanges = nil }},
	{"capture_all_excludes", func(d *Desired) {
		d.CaptureAll = true
		d.ExcludePorts = []int{5432, 443, 5432}
		d.ExcludeCIDRs = prefixes("10.0.0.0/8", "192.168.1.10/32", "fd00::/8")
		d.ExcludeUIDs = []uint32{1001, 0}
	}},
	{"inbound", func(d *Desired) { d.InboundPorts = []int{8080, 9090} }},
	{"inbound_only", func(d *Desired) { d.VIPRanges = nil; d.InboundPorts = []int{8080} }},
	{"dns", func(d *Desired) { d.CaptureDNS = true }},
	{"users", func(d *Desired) {
		d.Users = []UserRedirect{{UID: 2001, Port: 15101, Service: "billing"}, {UID: 2002, Port: 15102, Service: `we"ird name`}}
	}},
	{"ipv6_vips", func(d *Desired) { d.VIPRanges = prefixes("240.0.0.0/4", "fd7a:115c:a1e0::/48") }},
	{"everything", func(d *Desired) {
		d.ProxyMark = 0x1234
		d.OutboundPort, d.InboundPort, d.DNSPort = 16001, 16006, 8653
		d.VIPRanges = prefixes("100.127.0.0/16", "fd7a:115c:a1e0::/48")
		d.CaptureAll, d.CaptureDNS = true, true
		d.InboundPorts = []int{443, 80}
		d.ExcludePorts = []int{3306}
		d.ExcludeCIDRs = prefixes("169.254.169.254/32", "fe80::/10")
		d.ExcludeUIDs = []uint32{999}
		d.Users = []UserRedirect{{UID: 3000, Port: 16101, Service: "orders"}}
	}},
}

func desiredFor(t *testing.T, i int) Desired {
	t.Helper()
	d := DefaultDesired()
	states[i].d(&d)
	if err := d.Validate(); err != nil {
		t.Fatalf("%s: %v", states[i].name, err)
	}
	return d
}

func TestRulesGolden(t *testing.T) {
	for i, st := range states {
		t.Run(st.name, func(t *testing.T) {
			v4, v6 := Rules(desiredFor(t, i))
			got := "# IPv4: iptables-restore --noflush\n" + v4 + "# IPv6: ip6tables-restore --noflush\n" + v6
			golden := filepath.Join("testdata", st.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./iptables -run TestRulesGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("Rules() differs from %s (run with -update if the change is meant):\n--- got\n%s--- want\n%s", golden, got, want)
			}
			for _, s := range []string{v4, v6} {
				checkScript(t, s)
			}
		})
	}
}

// checkScript holds every script to the capture rules: only our chains,
// every rule commented, jumps inserted first, so cleanup can remove
// exactly what we added and nothing of the host's.
func checkScript(t *testing.T, s string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" || line == "COMMIT" || strings.HasPrefix(line, "*") {
			continue
		}
		if strings.HasPrefix(line, ":") && !strings.HasPrefix(line, ":"+ChainPrefix) {
			t.Errorf("declares a chain not ours: %s", line)
		}
		if strings.HasPrefix(line, "-A ") && !strings.HasPrefix(line, "-A "+ChainPrefix) {
			t.Errorf("appends to a chain not ours: %s", line)
		}
		if strings.HasPrefix(line, "-I ") && !strings.Contains(line, " 1 -") {
			t.Errorf("jump not inserted first: %s", line)
		}
		if (strings.HasPrefix(line, "-A ") || strings.HasPrefix(line, "-I ")) && !strings.Contains(line, `--comment "vmesh: `) {
			t.Errorf("rule without our comment: %s", line)
		}
	}
}

// foreign is someone else's state (Docker-like) that must survive
// everything we do, and keep its place after our jumps.
const foreign = `*nat
:DOCKER - [0:0]
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
`

// TestStatesReplay applies the table in random order: each Apply must
// leave exactly what applying that state on a fresh host leaves (with the
// foreign rules kept), whatever came before.
func TestStatesReplay(t *testing.T) {
	ctx := context.Background()
	fresh := func(t *testing.T) *Fake {
		f := NewFake("nft", "legacy")
		for fam := range []int{4, 6} {
			if err := f.Restore("nft", []int{4, 6}[fam], foreign); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}
	want := make([]string, len(states))
	for i := range states {
		f := fresh(t)
		if err := New(f, Options{}).Apply(ctx, desiredFor(t, i)); err != nil {
			t.Fatalf("%s: %v", states[i].name, err)
		}
		want[i] = f.State()
		v4, v6 := Rules(desiredFor(t, i))
		// On a fresh host Apply restores exactly the golden script.
		restores := 0
		for _, c := range f.Calls() {
			if strings.Contains(c, "-restore") {
				restores++
			}
		}
		if n := strings.Count(v4+v6, "COMMIT"); restores != n {
			t.Errorf("%s: %d restores on a fresh host, want %d (one per non-empty family)", states[i].name, restores, n)
		}
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	f := fresh(t)
	c := New(f, Options{})
	for round := range 3 * len(states) {
		i := rng.IntN(len(states))
		if err := c.Apply(ctx, desiredFor(t, i)); err != nil {
			t.Fatalf("round %d %s: %v", round, states[i].name, err)
		}
		if got := f.State(); got != want[i] {
			t.Fatalf("round %d: applying %s did not converge (seed %d):\n--- got\n%s--- want\n%s", round, states[i].name, seed, got, want[i])
		}
		if !strings.Contains(f.Save("nft", 4), "-A DOCKER -i docker0 -j RETURN") {
			t.Fatalf("round %d: foreign rules lost", round)
		}
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if got, base := f.State(), fresh(t).State(); got != base {
		t.Fatalf("Remove left:\n%s\nwant the baseline:\n%s", got, base)
	}
}
