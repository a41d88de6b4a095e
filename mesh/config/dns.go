package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	discdns "github.com/vmesh/vmesh/discovery/dns"
	"github.com/vmesh/vmesh/iptables"
)

// DefaultDNSPort is the DNS server's port (Consul's).
const DefaultDNSPort = 8600

// DNSOptions is the `dns { ... }` block.
type DNSOptions struct {
	// Recursors get every name outside .mesh and .consul (IP or IP:port).
	// Empty: the name servers of /etc/resolv.conf, read at start.
	Recursors []string `hcl:"recursors"`
	// TTLs of instance, node and VIP answers (Consul's are 0; a VIP never
	// moves while its service exists, so it may be cached).
	ServiceTTL time.Duration `hcl:"service_ttl"`
	NodeTTL    time.Duration `hcl:"node_ttl"`
	VIPTTL     time.Duration `hcl:"vip_ttl"`
	// OnlyPassing: answer passing instances only (default); false adds
	// warning ones, as Consul's DNS does by default.
	OnlyPassing bool `hcl:"only_passing"`
	// RecursorAllowedCIDRs are the networks whose clients may have names
	// outside .mesh and .consul forwarded to the recursors, besides this
	// host's own addresses; everyone else gets REFUSED for them.
	RecursorAllowedCIDRs []string `hcl:"recursor_allowed_cidrs"`
	// RateLimit is how many queries per second each client address off
	// this host may send (0: no limit; default 500), RateLimitBurst how
	// many at once (default twice RateLimit). Over it, UDP queries are
	// dropped and TCP ones REFUSED.
	RateLimit      int `hcl:"rate_limit"`
	RateLimitBurst int `hcl:"rate_limit_burst"`
}

func defaultDNSOptions() DNSOptions {
	return DNSOptions{VIPTTL: discdns.DefaultVIPTTL, OnlyPassing: true, RateLimit: discdns.DefaultRateLimit}
}

// RecursionAllowed parses dns.recursor_allowed_cidrs (Validate reports
// what does not parse; it is left out here).
func (c *Config) RecursionAllowed() []netip.Prefix {
	ps, _ := parseRecursorCIDRs(c.DNS.RecursorAllowedCIDRs)
	return ps
}

// parseRecursorCIDRs reads CIDRs (a bare address is one host), each
// error naming its index.
func parseRecursorCIDRs(in []string) ([]netip.Prefix, []error) {
	var out []netip.Prefix
	var errs []error
	for i, s := range in {
		key := fmt.Sprintf("dns.recursor_allowed_cidrs[%d]", i)
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %q is not a CIDR (like 10.0.0.0/8) or an IP address", key, s))
		case p != p.Masked():
			errs = append(errs, fmt.Errorf("%s: %q has host bits set (did you mean %s?)", key, s, p.Masked()))
		case p.Bits() == 0:
			errs = append(errs, fmt.Errorf("%s: %q is every address: the agent would be an open resolver", key, s))
		default:
			out = append(out, p)
		}
	}
	return out, errs
}

// DNSAddr is where the DNS server listens, or "" when it is off
// (ports { dns = -1 } and no addresses.dns).
func (c *Config) DNSAddr() string {
	if c.Addresses.DNS != "" {
		return c.Addresses.DNS
	}
	if c.Ports.DNS < 0 {
		return ""
	}
	return net.JoinHostPort(c.ClientAddr, strconv.Itoa(c.Ports.DNS))
}

// VIPRange is where the leader allocates service VIPs.
func (c *Config) VIPRange() netip.Prefix {
	if p, err := netip.ParsePrefix(c.Capture.VIPRange); err == nil {
		return p.Masked()
	}
	// iptables captures the same default, so the two cannot disagree.
	return iptables.DefaultVIPRange
}

var loopback4 = netip.MustParsePrefix("127.0.0.0/8")

// validateDNS reports problems with the DNS settings and the VIP range
// (which DNS answers and which is allocated whether capture is on or not).
func (c *Config) validateDNS() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Ports.DNS < -1 || c.Ports.DNS > 65535 {
		bad("ports.dns", "must be between 0 and 65535 (or -1: off), got %d", c.Ports.DNS)
	}
	if c.Addresses.DNS != "" {
		if _, err := netip.ParseAddrPort(c.Addresses.DNS); err != nil {
			bad("addresses.dns", "%q is not IP:port", c.Addresses.DNS)
		}
	}
	for i, r := range c.DNS.Recursors {
		if _, err := discdns.RecursorAddr(r); err != nil {
			bad(fmt.Sprintf("dns.recursors[%d]", i), "%q is not an IP or IP:port", r)
		}
	}
	_, cidrErrs := parseRecursorCIDRs(c.DNS.RecursorAllowedCIDRs)
	errs = append(errs, cidrErrs...)
	if c.DNS.RateLimit < 0 {
		bad("dns.rate_limit", "must not be negative (0: no limit), got %d", c.DNS.RateLimit)
	}
	if c.DNS.RateLimitBurst < 0 {
		bad("dns.rate_limit_burst", "must not be negative (0: twice dns.rate_limit), got %d", c.DNS.RateLimitBurst)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"dns.service_ttl", c.DNS.ServiceTTL}, {"dns.node_ttl", c.DNS.NodeTTL}, {"dns.vip_ttl", c.DNS.VIPTTL}} {
		if d.v < 0 {
			bad(d.key, "must not be negative, got %s", d.v)
		}
	}
	if r := c.Capture.VIPRange; r != "" {
		p, err := netip.ParsePrefix(r)
		switch {
		case err != nil:
			if !c.Capture.Enabled { // else validateCapture says so
				bad("capture.vip_range", "%q is not a CIDR", r)
			}
		case !p.Addr().Is4():
			bad("capture.vip_range", "%q: VIPs are IPv4; give an IPv4 CIDR", r)
		case p.Overlaps(loopback4):
			bad("capture.vip_range", "%q overlaps loopback 127.0.0.0/8", r)
		case p.Bits() == 0:
			bad("capture.vip_range", "%q would take over every address", r)
		}
	}
	return errs
}
