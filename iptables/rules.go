package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Our chains. Everything we add is in these, or is a jump to one of them
// from a built-in chain; every rule carries a "vmesh..." comment.
const (
	ChainPrefix     = "VMESH_"
	chainOutput     = "VMESH_OUTPUT"     // from OUTPUT: exclusions, then what to capture
	chainRedirect   = "VMESH_REDIRECT"   // captured outbound TCP: per-user port, else the outbound port
	chainPrerouting = "VMESH_PREROUTING" // from PREROUTING: inbound service ports
	chainInbound    = "VMESH_INBOUND"    // captured inbound TCP: the inbound port
	// VIPLink is the dummy interface that holds the service VIPs.
	VIPLink = "vmesh0"
)

// table is one table's worth of our state: the chains we own, their rules
// ("-A CHAIN ..."), and the jumps from built-in chains ("CHAIN spec"),
// inserted first.
type table struct {
	name   string
	chains []string
	rules  []string
	jumps  []string
}

// Rules renders the iptables-restore scripts (for `iptables-restore
// --noflush` and `ip6tables-restore --noflush`) that create d on a host
// with none of our state. An empty script means the family needs nothing.
// Apply renders the same rules, preceded by the cleanup of whatever of
// ours is already there. d must be valid (Validate).
func Rules(d Desired) (v4, v6 string) {
	return render(build(d, false), nil), render(build(d, true), nil)
}

func comment(s string) string {
	return `-m comment --comment "vmesh: ` + s + `"`
}

// safeComment keeps a service name from breaking out of the quotes.
func safeComment(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 128 && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return b.String()
}

func family(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

func sortedUnique(in []int) []int {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// build computes the nat table for one family. The order of the rules in
// VMESH_OUTPUT is the policy: first everything that is never captured
// (the proxy's mark, SSH, the agent's ports, excluded users, CIDRs and
// ports), then DNS, then VIPs, then loopback (VIP traffic leaves through
// lo, so VIPs come first), then everything else if capture_all.
func build(d Desired, v6 bool) []table {
	nat := table{name: "nat"}
	add := func(chain, spec string) { nat.rules = append(nat.rules, "-A "+chain+" "+spec) }

	vips := family(d.VIPRanges, v6)
	dns := d.CaptureDNS && !v6 // the agent's DNS listens on IPv4 loopback
	if len(vips) > 0 || d.CaptureAll || dns {
		nat.chains = append(nat.chains, chainOutput, chainRedirect)
		o := chainOutput
		add(o, fmt.Sprintf("-m mark --mark %#x %s -j RETURN", d.ProxyMark, comment("proxy mark")))
		add(o, fmt.Sprintf("-p tcp -m tcp --dport %d %s -j RETURN", SSHPort, comment("ssh")))
		add(o, fmt.Sprintf("-p tcp -m tcp --sport %d %s -j RETURN", SSHPort, comment("ssh")))
		for _, p := range sortedUnique(d.AgentPorts) {
			add(o, fmt.Sprintf("-p tcp -m tcp --dport %d %s -j RETURN", p, comment("agent port")))
		}
		uids := slices.Clone(d.ExcludeUIDs)
		slices.Sort(uids)
		for _, u := range slices.Compact(uids) {
			add(o, fmt.Sprintf("-m owner --uid-owner %d %s -j RETURN", u, comment("exclude_uids")))
		}
		for _, p := range family(d.ExcludeCIDRs, v6) {
			add(o, fmt.Sprintf("-d %s %s -j RETURN", p, comment("exclude_cidrs")))
		}
		for _, p := range sortedUnique(d.ExcludePorts) {
			add(o, fmt.Sprintf("-p tcp -m tcp --dport %d %s -j RETURN", p, comment("exclude_ports")))
		}
		if dns {
			for _, proto := range []string{"udp", "tcp"} {
				add(o, fmt.Sprintf("-p %s -m %s --dport 53 %s -j REDIRECT --to-ports %d", proto, proto, comment("dns"), d.DNSPort))
			}
		}
		for _, p := range vips {
			add(o, fmt.Sprintf("-d %s -p tcp %s -j %s", p, comment("vip"), chainRedirect))
		}
		add(o, fmt.Sprintf("-o lo %s -j RETURN", comment("loopback")))
		if d.CaptureAll {
			add(o, fmt.Sprintf("-p tcp %s -j %s", comment("capture_all"), chainRedirect))
		}
		for _, u := range d.Users {
			name := "user"
			if u.Service != "" {
				name = "user of " + safeComment(u.Service)
			}
			add(chainRedirect, fmt.Sprintf("-p tcp -m owner --uid-owner %d %s -j REDIRECT --to-ports %d", u.UID, comment(name), u.Port))
		}
		add(chainRedirect, fmt.Sprintf("-p tcp %s -j REDIRECT --to-ports %d", comment("outbound"), d.OutboundPort))
		nat.jumps = append(nat.jumps, "OUTPUT "+comment("capture outbound")+" -j "+chainOutput)
	}
	if ports := sortedUnique(d.InboundPorts); len(ports) > 0 {
		nat.chains = append(nat.chains, chainPrerouting, chainInbound)
		add(chainPrerouting, fmt.Sprintf("-p tcp -m tcp --dport %d %s -j RETURN", SSHPort, comment("ssh")))
		// Connections made on this host (the proxy's own to the app,
		// an app's to itself) arrive on lo and are never captured
		// inbound: the loop guard. Their first packet passed the nat
		// table in OUTPUT already, so nat PREROUTING would not see them
		// anyway; this rule says so instead of leaving it to conntrack.
		add(chainPrerouting, fmt.Sprintf("-i lo %s -j RETURN", comment("loopback")))
		for _, p := range ports {
			add(chainPrerouting, fmt.Sprintf("-p tcp -m tcp --dport %d %s -j %s", p, comment("inbound_ports"), chainInbound))
		}
		add(chainInbound, fmt.Sprintf("-p tcp %s -j REDIRECT --to-ports %d", comment("inbound"), d.InboundPort))
		nat.jumps = append(nat.jumps, "PREROUTING -p tcp "+comment("capture inbound")+" -j "+chainPrerouting)
	}
	if len(nat.chains) == 0 {
		return nil
	}
	return []table{nat}
}

// render writes one iptables-restore --noflush transaction that takes the
// host from cur (nil: none of our state) to want: declaring a chain
// creates it or flushes it; our old jumps are deleted by their exact text
// from iptables-save; chains we no longer want are deleted; the jumps are
// inserted first. Either all of it happens or none.
func render(want []table, cur *saved) string {
	var names []string
	byName := map[string]table{}
	for _, t := range want {
		names = append(names, t.name)
		byName[t.name] = t
	}
	if cur != nil {
		for _, t := range cur.tables {
			if (len(t.ours) > 0 || len(t.jumps) > 0) && !slices.Contains(names, t.name) {
				names = append(names, t.name)
			}
		}
	}
	var b strings.Builder
	for _, name := range names {
		w := byName[name]
		var have savedTable
		if cur != nil {
			if t := cur.table(name); t != nil {
				have = *t
			}
		}
		fmt.Fprintf(&b, "*%s\n", name)
		var stale []string
		for _, c := range w.chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		for _, c := range have.ours {
			if !slices.Contains(w.chains, c) {
				stale = append(stale, c)
				fmt.Fprintf(&b, ":%s - [0:0]\n", c) // flushes it
			}
		}
		for _, c := range w.chains {
			if slices.Contains(have.ours, c) {
				fmt.Fprintf(&b, "-F %s\n", c)
			}
		}
		for _, j := range have.jumps {
			fmt.Fprintf(&b, "-D %s\n", strings.TrimPrefix(j, "-A "))
		}
		for _, r := range w.rules {
			b.WriteString(r + "\n")
		}
		for _, c := range stale {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		// Insert in reverse so that the first jump listed ends up first.
		for i := len(w.jumps) - 1; i >= 0; i-- {
			chain, spec, _ := strings.Cut(w.jumps[i], " ")
			fmt.Fprintf(&b, "-I %s 1 %s\n", chain, spec)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}
