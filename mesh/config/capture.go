package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/iptables"
)

// CaptureConfig is the `capture { ... }` block: how traffic is steered
// into the local proxy (iptables/). VIP allocation reads VIPRange too.
type CaptureConfig struct {
	// Enabled: the agent applies capture on start, keeps it in step with
	// the VIPs, and removes it on stop and leave.
	Enabled bool `hcl:"enabled"`
	// ReconcileInterval is how often the agent repairs drift (someone
	// flushed our chains or deleted vmesh0); default 30s.
	ReconcileInterval time.Duration `hcl:"reconcile_interval"`
	// VIPRange is where service VIPs come from (default 240.0.0.0/4).
	VIPRange string `hcl:"vip_range"`
	// CaptureAll sends all outbound TCP, not only to VIPs, to the proxy.
	CaptureAll bool `hcl:"capture_all"`
	// CaptureDNS sends port 53 (IPv4) to the agent's DNS.
	CaptureDNS bool `hcl:"capture_dns"`
	// InboundPorts are local service ports whose inbound TCP goes through
	// the proxy's inbound capture listener (15006), so nobody bypasses
	// mTLS. The agent redirects them only while its proxy serves that
	// listener.
	InboundPorts []int `hcl:"inbound_ports"`
	// InboundMode decides what the inbound capture listener does with a
	// connection that is not mesh mTLS: "strict" (the default) resets it,
	// "permissive" passes it to the app on loopback. Both count it.
	InboundMode string `hcl:"inbound_mode"`
	// DefaultService is the local service this host's captured outbound
	// connections speak for when no service user opened them (its leaf
	// certificate instead of the node's). It must be a service of this
	// host's service files. Unset: the only local service when the host
	// has exactly one and declares no service users.
	DefaultService string   `hcl:"default_service"`
	ExcludePorts   []int    `hcl:"exclude_ports"`
	ExcludeCIDRs   []string `hcl:"exclude_cidrs"`
	// ExcludeUIDs are user names or numbers.
	ExcludeUIDs []string `hcl:"exclude_uids"`
	// ProxyMark is the proxy sockets' SO_MARK (default 0x539).
	ProxyMark int `hcl:"proxy_mark"`
	// DNSPort is where captured DNS goes (default: the agent's DNS port).
	DNSPort int `hcl:"dns_port"`
	// Backend forces "nft" or "legacy"; default: what `iptables` is.
	Backend string `hcl:"backend"`
	// UserPortBase is the first per-user outbound port (default 15100):
	// each Unix user a local service names (`user` in its definition)
	// gets the next free one, and its captured connections leave with
	// that service's identity (xds.Options.UserPorts).
	UserPortBase int `hcl:"user_port_base"`
}

// validateCapture checks the capture block when capture is on; `vmesh
// redirect` checks it always (CaptureDesired).
func (c *Config) validateCapture() []error {
	var errs []error
	if c.Capture.ReconcileInterval < 0 {
		errs = append(errs, fmt.Errorf("capture.reconcile_interval: must not be negative, got %s", c.Capture.ReconcileInterval))
	}
	// The xDS server uses these whether capture is on or not.
	if b := c.Capture.UserPortBase; b < 0 || b > 65535 {
		errs = append(errs, fmt.Errorf("capture.user_port_base: port must be between 1 and 65535, got %d", b))
	}
	switch c.Capture.InboundMode {
	case "", InboundStrict, InboundPermissive:
	default:
		errs = append(errs, fmt.Errorf("capture.inbound_mode: %q is not %q or %q", c.Capture.InboundMode, InboundStrict, InboundPermissive))
	}
	if s := c.Capture.DefaultService; s != "" && (strings.TrimSpace(s) != s || strings.ContainsAny(s, "/ \t\n")) {
		errs = append(errs, fmt.Errorf("capture.default_service: %q is not a service name (no '/' or white space)", s))
	}
	if !c.Capture.Enabled {
		return errs
	}
	if len(c.Capture.InboundPorts) > 0 && !c.Proxy.Enabled {
		// Only the in-process proxy tells the agent that it serves the
		// inbound listener; without it the redirect could go nowhere.
		errs = append(errs, errors.New("capture.inbound_ports: needs the in-process proxy (proxy { enabled = true }): the agent redirects these ports only while its proxy serves the inbound listener"))
	}
	if _, err := c.CaptureDesired(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Values of capture.inbound_mode.
const (
	InboundStrict     = "strict"
	InboundPermissive = "permissive"
)

// HostOptions are what this host says about itself in its xDS (the
// default service and the inbound capture listener, xds.HostOptions).
// The inbound ports are there only when capture is on: without the
// redirect nothing would reach the listener.
func (c *Config) HostOptions() xds.HostOptions {
	h := xds.HostOptions{
		Node:              c.NodeName,
		DefaultService:    c.Capture.DefaultService,
		InboundPort:       iptables.DefaultInboundPort,
		InboundPermissive: c.Capture.InboundMode == InboundPermissive,
	}
	if c.Capture.Enabled {
		h.InboundPorts = slices.Clone(c.Capture.InboundPorts)
	}
	return h
}

// CaptureDesired turns the configuration into the iptables package's
// Desired: the capture block, plus this agent's own ports, which are never
// captured. Errors name the key.
func (c *Config) CaptureDesired() (iptables.Desired, error) {
	d := iptables.DefaultDesired()
	cc := c.Capture
	var errs []error
	if cc.VIPRange != "" {
		p, err := netip.ParsePrefix(cc.VIPRange)
		if err != nil {
			errs = append(errs, fmt.Errorf("capture.vip_range: %q is not a CIDR", cc.VIPRange))
		} else {
			d.VIPRanges = []netip.Prefix{p}
		}
	}
	d.CaptureAll, d.CaptureDNS = cc.CaptureAll, cc.CaptureDNS
	d.InboundPorts = append(d.InboundPorts, cc.InboundPorts...)
	d.ExcludePorts = append(d.ExcludePorts, cc.ExcludePorts...)
	cidrs, err := iptables.ParseCIDRs("capture.exclude_cidrs", cc.ExcludeCIDRs)
	errs = append(errs, err)
	d.ExcludeCIDRs = cidrs
	uids, err := iptables.ParseUIDs("capture.exclude_uids", cc.ExcludeUIDs, discovery.LookupUser)
	errs = append(errs, err)
	d.ExcludeUIDs = uids
	if cc.ProxyMark < 0 || cc.ProxyMark > 0xFFFFFFFF {
		errs = append(errs, fmt.Errorf("capture.proxy_mark: %d is not a 32-bit mark", cc.ProxyMark))
	} else if cc.ProxyMark != 0 {
		d.ProxyMark = uint32(cc.ProxyMark)
	}
	switch {
	case cc.DNSPort != 0:
		d.DNSPort = cc.DNSPort
	case portOf(c.DNSAddr()) > 0:
		d.DNSPort = portOf(c.DNSAddr()) // the agent's own DNS
	}
	switch cc.Backend {
	case "", "nft", "legacy":
	default:
		errs = append(errs, fmt.Errorf("capture.backend: %q is not nft or legacy", cc.Backend))
	}
	d.AgentPorts = append(d.AgentPorts, c.AgentPorts()...)
	// Parse errors and Validate's, all at once.
	return d, errors.Join(append(errs, d.Validate())...)
}

// AgentPorts are this agent's ports as configured, besides the defaults
// (iptables.DefaultAgentPorts): never captured, never a user's port.
func (c *Config) AgentPorts() []int {
	var out []int
	for _, p := range []int{c.Ports.HTTP, c.Ports.Cluster, portOf(c.DNSAddr()), c.Capture.DNSPort,
		portOf(c.Addresses.HTTP), portOf(c.Addresses.XDS), portOf(c.AdminAddr())} {
		if p > 0 {
			out = append(out, p)
		}
	}
	return out
}

// UserPortOptions are the xDS options that decide the per-user ports:
// the agent's xDS server builds the per-user listeners with them, and
// capture computes its owner-match rules with the same, so the two agree.
func (c *Config) UserPortOptions(o xds.Options) xds.Options {
	o.UserPortBase = c.Capture.UserPortBase
	o.ReservedPorts = append(slices.Clone(iptables.DefaultAgentPorts), c.AgentPorts()...)
	return o
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
