package mesh

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/vmesh/vmesh/dataplane/proxy"
	discdns "github.com/vmesh/vmesh/discovery/dns"
	"github.com/vmesh/vmesh/raft"
)

// DefaultDNSPort is the DNS server's port (Consul's).
const DefaultDNSPort = 8600

// resolvConf is where the host's own resolvers are read from.
var resolvConf = "/etc/resolv.conf"

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
}

func defaultDNSOptions() DNSOptions {
	return DNSOptions{VIPTTL: discdns.DefaultVIPTTL, OnlyPassing: true}
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

// vipRange is where the leader allocates service VIPs.
func (c *Config) vipRange() netip.Prefix {
	if p, err := netip.ParsePrefix(c.Capture.VIPRange); err == nil {
		return p.Masked()
	}
	return raft.DefaultVIPRange
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

// dnsFlags are the agent's DNS flags.
type dnsFlags struct{ addr string }

func (f *dnsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "dns-addr", "", "DNS `address`, UDP and TCP (default CLIENT:8600)")
}

func (f *dnsFlags) apply(set map[string]bool, cfg *Config) {
	if set["dns-addr"] {
		cfg.Addresses.DNS = f.addr
	}
}

// startDNS serves the catalog over DNS. The default address may be taken
// (a Consul agent on the host, a second dev agent): the agent then warns
// and runs without DNS. An address set explicitly must work.
func (a *Agent) startDNS(ctx context.Context) error {
	addr := a.cfg.DNSAddr()
	if addr == "" {
		return nil
	}
	recursors := make([]string, 0, len(a.cfg.DNS.Recursors))
	for _, r := range a.cfg.DNS.Recursors {
		n, _ := discdns.RecursorAddr(r) // Validate checked it
		recursors = append(recursors, n)
	}
	if len(recursors) == 0 {
		var err error
		if recursors, err = discdns.ResolvConfRecursors(resolvConf); err != nil {
			a.logger.Warn("DNS: no recursors; names outside .mesh and .consul will fail", "err", err)
		}
	}
	srv := discdns.NewServer(a.store, discdns.Config{
		Addr: addr, Datacenter: a.cfg.Datacenter, Recursors: recursors,
		ServiceTTL: a.cfg.DNS.ServiceTTL, NodeTTL: a.cfg.DNS.NodeTTL, VIPTTL: a.cfg.DNS.VIPTTL,
		OnlyPassing: a.cfg.DNS.OnlyPassing, Dialer: recursorDialer(a.proxyMark()), Logger: a.logger.With("component", "dns"),
	})
	if err := srv.Start(ctx); err != nil {
		if a.cfg.Addresses.DNS != "" {
			return err
		}
		a.logger.Warn("DNS server not started; set -dns-addr or ports { dns = ... }", "addr", addr, "err", err)
		return nil
	}
	a.dnsSrv = srv
	return nil
}

// recursorTimeout is discovery's bound on one exchange with one
// recursor; miekg/dns takes a Dialer's Timeout as its dial timeout, so a
// dialer of ours carries it (a TCP recursor that never answers the SYN
// would otherwise hold a query for the kernel's connect timeout).
const recursorTimeout = 2 * time.Second

// recursorDialer is the dialer of the DNS server's queries to its
// recursors: nil (miekg/dns's own) without capture (mark 0). With capture
// the sockets carry the capture's proxy mark (Agent.proxyMark), which the
// rules return first: with capture_dns a query to a recursor on port 53
// would otherwise be redirected to this agent's own DNS, and with
// capture_all a TCP query to the proxy. Start prepares capture before it
// starts DNS, so the mark is known by then.
func recursorDialer(mark int) *net.Dialer {
	if mark == 0 {
		return nil
	}
	return &net.Dialer{Timeout: recursorTimeout, Control: proxy.MarkSocket(mark)}
}

// DNSAddr is the DNS server's address (UDP and TCP), or "" when it does
// not run.
func (a *Agent) DNSAddr() string {
	if a.dnsSrv == nil {
		return ""
	}
	return a.dnsSrv.Addr()
}

func (a *Agent) dnsBanner() {
	if a.out == nil {
		return
	}
	switch {
	case a.dnsSrv != nil:
		fmt.Fprintf(a.out, "            DNS: %s (udp, tcp)\n", a.dnsSrv.Addr())
	case a.cfg.DNSAddr() == "":
		fmt.Fprintf(a.out, "            DNS: off\n")
	default:
		fmt.Fprintf(a.out, "            DNS: not listening (%s is taken)\n", a.cfg.DNSAddr())
	}
}

func (a *Agent) closeDNS() {
	if a.dnsSrv != nil {
		a.dnsSrv.Close()
	}
}
