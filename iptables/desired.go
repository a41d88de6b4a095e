package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Defaults for Desired. The ports are the proxy's default listeners
// (ARCHITECTURE.md), which capture must send traffic to.
const (
	DefaultProxyMark    = 0x539 // SO_MARK of the proxy's own sockets
	DefaultOutboundPort = 15001 // transparent outbound listener
	DefaultInboundPort  = 15006 // transparent inbound listener
	DefaultDNSPort      = 8600  // the agent's DNS
	SSHPort             = 22
)

// DefaultVIPRange is where service VIPs come from (class E, never routed on
// the internet).
var DefaultVIPRange = netip.MustParsePrefix("240.0.0.0/4")

// DefaultAgentPorts are the agent's own ports, never captured in either
// direction: cluster 7400, HTTP 8500, DNS 8600, admin 15000, outbound
// 15001, inbound 15006, mesh gateway/mTLS 15443, and xDS over TCP 15010.
var DefaultAgentPorts = []int{7400, 8500, 8600, 15000, 15001, 15006, 15010, 15443}

// UserRedirect sends one Unix user's captured outbound traffic to its own
// proxy port, so that several services on one VM each leave with their own
// identity.
type UserRedirect struct {
	UID     uint32
	Port    int
	Service string // for comments and errors only
}

// Desired is the capture state to converge to. Field comments give the key
// that errors name (the agent's `capture { ... }` block).
type Desired struct {
	ProxyMark    uint32         // proxy_mark: sockets with this SO_MARK are never captured
	OutboundPort int            // outbound_port
	InboundPort  int            // inbound_port
	DNSPort      int            // dns_port (used with CaptureDNS)
	VIPRanges    []netip.Prefix // vip_range: outbound TCP to these goes to OutboundPort
	CaptureAll   bool           // capture_all: all outbound TCP, but exclusions, goes to OutboundPort
	CaptureDNS   bool           // capture_dns: UDP and TCP port 53 (IPv4) go to DNSPort
	InboundPorts []int          // inbound_ports: local service ports whose inbound TCP goes to InboundPort

	ExcludePorts []int          // exclude_ports: destination ports never captured
	ExcludeCIDRs []netip.Prefix // exclude_cidrs: destinations never captured
	ExcludeUIDs  []uint32       // exclude_uids: users whose traffic is never captured
	AgentPorts   []int          // agent_ports: the agent's own ports, always excluded
	Users        []UserRedirect // per-user outbound redirect ports (service definitions' user)
}

// DefaultDesired captures outbound TCP to the default VIP range only.
func DefaultDesired() Desired {
	return Desired{
		ProxyMark:    DefaultProxyMark,
		OutboundPort: DefaultOutboundPort,
		InboundPort:  DefaultInboundPort,
		DNSPort:      DefaultDNSPort,
		VIPRanges:    []netip.Prefix{DefaultVIPRange},
		AgentPorts:   slices.Clone(DefaultAgentPorts),
	}
}

// Validate reports every problem at once, each naming its field. It looks
// at nothing outside d; CheckRoutes compares d with the host's routes.
func (d *Desired) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("capture.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	port := func(key string, p int) bool {
		if p < 1 || p > 65535 {
			bad(key, "port must be between 1 and 65535, got %d", p)
			return false
		}
		return true
	}
	if d.ProxyMark == 0 {
		bad("proxy_mark", "must not be 0 (0 is every unmarked socket)")
	}
	port("outbound_port", d.OutboundPort)
	port("inbound_port", d.InboundPort)
	if d.CaptureDNS {
		port("dns_port", d.DNSPort)
	}
	if d.OutboundPort == d.InboundPort && d.OutboundPort != 0 {
		bad("inbound_port", "must differ from outbound_port (%d)", d.OutboundPort)
	}
	prefixes := func(key string, ps []netip.Prefix) {
		for i, p := range ps {
			switch {
			case !p.IsValid():
				bad(fmt.Sprintf("%s[%d]", key, i), "not a CIDR")
			case p != p.Masked():
				bad(fmt.Sprintf("%s[%d]", key, i), "%s has host bits set (did you mean %s?)", p, p.Masked())
			}
		}
	}
	prefixes("vip_range", d.VIPRanges)
	prefixes("exclude_cidrs", d.ExcludeCIDRs)
	for i, p := range d.VIPRanges {
		if p.IsValid() && p.Bits() == 0 {
			bad(fmt.Sprintf("vip_range[%d]", i), "%s is every address; use capture_all", p)
		}
		if p.IsValid() && (p.Addr().IsLoopback() || p.Overlaps(netip.MustParsePrefix("127.0.0.0/8"))) {
			bad(fmt.Sprintf("vip_range[%d]", i), "%s overlaps loopback", p)
		}
		for j, x := range d.ExcludeCIDRs {
			if p.IsValid() && x.IsValid() && p.Overlaps(x) {
				bad(fmt.Sprintf("exclude_cidrs[%d]", j), "%s overlaps vip_range %s: VIP traffic must be captured", x, p)
			}
		}
	}
	for i, p := range d.ExcludePorts {
		port(fmt.Sprintf("exclude_ports[%d]", i), p)
	}
	for i, p := range d.AgentPorts {
		port(fmt.Sprintf("agent_ports[%d]", i), p)
	}
	never := map[int]string{SSHPort: "SSH"}
	for _, p := range d.AgentPorts {
		never[p] = "one of the agent's ports"
	}
	for _, p := range d.ExcludePorts {
		never[p] = "in exclude_ports"
	}
	seen := map[int]bool{}
	for i, p := range d.InboundPorts {
		key := fmt.Sprintf("inbound_ports[%d]", i)
		if !port(key, p) {
			continue
		}
		if why, ok := never[p]; ok {
			bad(key, "port %d is %s and is never captured", p, why)
		}
		if seen[p] {
			bad(key, "port %d is listed twice", p)
		}
		seen[p] = true
	}
	for i, uid := range d.ExcludeUIDs {
		if uid == 0xFFFFFFFF {
			bad(fmt.Sprintf("exclude_uids[%d]", i), "%d is not a user ID", uid)
		}
	}
	uids := map[uint32]bool{}
	for i, u := range d.Users {
		key := fmt.Sprintf("users[%d]", i)
		if u.Service != "" {
			key = fmt.Sprintf("service %q user", u.Service)
		}
		if u.UID == 0xFFFFFFFF {
			bad(key, "%d is not a user ID", u.UID)
		}
		if uids[u.UID] {
			bad(key, "UID %d already has a redirect port; one service per user", u.UID)
		}
		uids[u.UID] = true
		if port(key+" port", u.Port) && (u.Port == d.OutboundPort || u.Port == d.InboundPort) {
			bad(key+" port", "%d is already the outbound or inbound port", u.Port)
		}
		if slices.Contains(d.ExcludeUIDs, u.UID) {
			bad(key, "UID %d is also in exclude_uids", u.UID)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
}

// Route is one route of the host, as CheckRoutes needs it.
type Route struct {
	Dst netip.Prefix
	Dev string
}

// CheckRoutes refuses a VIP range that overlaps a route of the host (other
// than a default route and routes on the VIP link itself): VIPs there would
// hide real destinations.
func (d *Desired) CheckRoutes(routes []Route, vipLink string) error {
	var errs []error
	for i, vr := range d.VIPRanges {
		for _, r := range routes {
			if r.Dev == vipLink || !r.Dst.IsValid() || r.Dst.Bits() == 0 {
				continue
			}
			if vr.Overlaps(r.Dst) {
				errs = append(errs, fmt.Errorf("capture.vip_range[%d]: %s overlaps the local route %s dev %s; choose another range", i, vr, r.Dst, r.Dev))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
}

// ParsePorts parses port numbers ("8080", "9000,9001"); errors name field.
func ParsePorts(field string, in []string) ([]int, error) {
	var out []int
	var errs []error
	for _, s := range splitList(in) {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: %q is not a port (1-65535)", field, s))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// ParseCIDRs parses CIDRs; a bare address is taken as a /32 or /128.
func ParseCIDRs(field string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range splitList(in) {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a CIDR", field, s))
			continue
		}
		if p != p.Masked() {
			errs = append(errs, fmt.Errorf("%s: %q has host bits set (did you mean %s?)", field, s, p.Masked()))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// ParseUIDs parses a list of numeric UIDs or user names (comma-separated
// or repeated) with lookup, which resolves one (discovery.LookupUser asks
// the passwd database now, so the rules carry numbers).
func ParseUIDs(field string, in []string, lookup func(string) (uint32, error)) ([]uint32, error) {
	var out []uint32
	var errs []error
	for _, s := range splitList(in) {
		uid, err := lookup(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		out = append(out, uid)
	}
	return out, errors.Join(errs...)
}

// splitList takes repeated flags and comma-separated values alike.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}
