package mesh

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/vmesh/vmesh/acl"

	"github.com/vmesh/vmesh/dataplane/proxy"
	discdns "github.com/vmesh/vmesh/discovery/dns"
)

// resolvConf is where the host's own resolvers are read from.
var resolvConf = "/etc/resolv.conf"

// startDNS serves the catalog over DNS. The default address may be taken
// (a Consul agent on the host, a second dev agent): the agent then warns
// and runs without DNS. An address set explicitly must work.
func (a *Agent) startDNS(context.Context) error {
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
	dnsCfg := discdns.Config{
		Addr: addr, Datacenter: a.cfg.Datacenter, Recursors: recursors,
		ServiceTTL: a.cfg.DNS.ServiceTTL, NodeTTL: a.cfg.DNS.NodeTTL, VIPTTL: a.cfg.DNS.VIPTTL,
		OnlyPassing: a.cfg.DNS.OnlyPassing, Dialer: recursorDialer(a.proxyMark()), Logger: a.logger.With("component", "dns"),
		RecursionAllowed: a.cfg.RecursionAllowed(), RateLimit: float64(a.cfg.DNS.RateLimit), RateBurst: a.cfg.DNS.RateLimitBurst,
		Metrics: discdns.NewMetrics(a.metrics),
	}
	if a.acl != nil {
		// DNS answers with the dns token's rights (set through PUT
		// /v1/agent/token/dns), else the default token's
		// (acl.tokens.default, else the anonymous token's), as Consul's.
		dnsCfg.ACL = func() (*acl.Authorizer, error) {
			_, authz, err := a.acl.Resolve(a.life.ctx, a.dnsToken())
			return authz, err
		}
	}
	srv := discdns.NewServer(a.store, dnsCfg)
	if err := srv.Start(a.life.ctx); err != nil {
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

func (a *Agent) closeDNS() error {
	if a.dnsSrv != nil {
		a.dnsSrv.Close()
	}
	return nil
}
