package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/checks"
	"github.com/vmesh/vmesh/iptables"
)

// checkGuard keeps this agent's health checks off its own listeners
// (checks.Guard), unless checks { allow_agent_targets = true }: at
// registration (the HTTP API, service files) and when a probe dials.
func (a *Agent) checkGuard() *checks.Guard {
	if a.cfg.Checks.AllowAgentTargets {
		return nil
	}
	return &checks.Guard{Listeners: a.agentListeners}
}

// agentListeners are this agent's listeners: as configured, as bound
// once they are (a port 0 picks one), and every listener of the
// in-process proxy (user ports, explicit upstreams) once it runs.
func (a *Agent) agentListeners() []checks.Listener {
	var out []checks.Listener
	add := func(name, addr string) {
		if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Port() != 0 {
			out = append(out, checks.Listener{Addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), Name: name})
		}
	}
	add("HTTP API", a.cfg.HTTPAddr())
	add("HTTP API", a.HTTPAddr())
	add("admin listener", a.cfg.AdminAddr())
	add("admin listener", a.AdminAddr())
	add("xDS listener", a.cfg.Addresses.XDS)
	for _, x := range a.XDSAddrs() {
		if x.Network() == "tcp" {
			add("xDS listener", x.String())
		}
	}
	add("cluster port", a.cfg.ClusterBind())
	if srv := a.member.Server(); srv != nil {
		add("cluster port", srv.Addr())
	}
	add("DNS server", a.cfg.DNSAddr())
	add("DNS server", a.DNSAddr())
	if a.cfg.Proxy.Enabled {
		// Where the proxy's fixed listeners will be, before it runs.
		add("proxy listener "+xds.OutboundListener, net.JoinHostPort(a.cfg.ClientAddr, strconv.Itoa(xds.DefaultOutboundPort)))
		add("proxy listener "+xds.InboundListener, net.JoinHostPort(hostOf(a.cfg.ClusterAddr()), strconv.Itoa(xds.DefaultMeshPort)))
		if a.cfg.Capture.Enabled && len(a.cfg.Capture.InboundPorts) > 0 {
			add("proxy listener "+xds.InboundCaptureListener, net.JoinHostPort("0.0.0.0", strconv.Itoa(iptables.DefaultInboundPort)))
		}
	}
	if a.proxy != nil {
		for name, addr := range a.proxy.ListenerAddrs() {
			add("proxy listener "+name, addr.String())
		}
	}
	return out
}

// scriptChecksRefused is the error of a script or Docker check that the
// agent's config does not enable for where it came from (the API, or a
// service file), or nil.
func (a *Agent) scriptChecksRefused(name string, def discovery.CheckDefinition, fromFile bool) error {
	if k := def.Kind(); k != discovery.CheckScript && k != discovery.CheckDocker {
		return nil
	}
	if a.cfg.EnableScriptChecks || (fromFile && a.cfg.EnableLocalScriptChecks) {
		return nil
	}
	want := "enable_script_checks"
	if fromFile {
		want = "enable_script_checks or enable_local_script_checks"
	}
	return fmt.Errorf("%w: check %q: ScriptArgs: script checks are not supported on this agent: its config does not set %s (they run commands on the host)", discovery.ErrInvalid, name, want)
}

// checkTarget is the API's CheckTarget: a script check only where the
// config enables them from the API, then the guard's listener rule.
func (a *Agent) checkTarget(name string, def discovery.CheckDefinition) error {
	if err := a.scriptChecksRefused(name, def, false); err != nil {
		return err
	}
	return a.guard.CheckTarget(name, def)
}

// checkFileTargets refuses, before anything registers them, the checks
// of service files that target this agent's listeners, and script checks
// that the config does not enable.
func (a *Agent) checkFileTargets(reqs []*discovery.RegisterServiceRequest) error {
	g := a.guard
	var errs []error
	for _, req := range reqs {
		for _, c := range req.Checks {
			err := a.scriptChecksRefused(c.CheckID, c.Definition, true)
			if err == nil {
				err = g.CheckTarget(c.CheckID, c.Definition)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: service %q: %w", strings.TrimPrefix(req.Instance.Source, "file:"), req.Instance.Service, err))
			}
		}
	}
	return errors.Join(errs...)
}
