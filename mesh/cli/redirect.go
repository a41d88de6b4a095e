package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/config"
)

// redirectCommand is `vmesh redirect apply | remove | show [--dry-run]`.
//
// Unlike every other command it does not talk to the agent's API: it
// changes the kernel (iptables, vmesh0) itself, because it must work when
// the agent is down — `redirect remove` is how capture is undone after a
// crash (and the unit's ExecStopPost). It needs root (CAP_NET_ADMIN).
type redirectCommand struct {
	*Flags
	configs, excludePorts, excludeCIDRs, excludeUIDs, inbound, vips config.StringList
	captureDNS, captureAll, dryRun                                  *bool
	vipRange, backend                                               *string
}

func newRedirect(env *Env) Command {
	c := &redirectCommand{Flags: NewFlags(env, "redirect", "vmesh redirect apply | remove | show [flags]",
		`Changes the kernel directly (needs root), without the agent, so it works
when the agent is down. See docs/capture.md.`)}
	fs := c.FS
	fs.Var(&c.configs, "config", "agent config `file or dir` whose capture { ... } block is used; repeatable")
	fs.Var(&c.excludePorts, "exclude-port", "outbound destination `port` never captured; repeatable or comma-separated")
	fs.Var(&c.excludeCIDRs, "exclude-cidr", "destination `CIDR` never captured; repeatable or comma-separated")
	fs.Var(&c.excludeUIDs, "exclude-uid", "`user` (name or UID) whose traffic is never captured; repeatable")
	fs.Var(&c.inbound, "inbound-port", "local service `port` whose inbound TCP goes to the inbound listener; repeatable")
	fs.Var(&c.vips, "vip", "`IP` to hold on vmesh0 (apply; normally the agent sets VIPs); repeatable")
	c.captureDNS = fs.Bool("capture-dns", false, "send port 53 to the agent's DNS")
	c.captureAll = fs.Bool("capture-all", false, "capture all outbound TCP, not only to VIPs")
	c.vipRange = fs.String("vip-range", "", "VIP `CIDR` (default 240.0.0.0/4)")
	c.backend = fs.String("backend", "", "force iptables `backend` nft or legacy (default: what iptables is)")
	c.dryRun = fs.Bool("dry-run", false, "print what would be done; change nothing")
	return c
}

func (c *redirectCommand) Synopsis() string {
	return "apply, remove or show traffic capture (iptables, vmesh0) without the agent"
}

func (c *redirectCommand) Run(ctx context.Context, args []string) int {
	sub, pos, code, done := c.ParseSub(args)
	if done {
		return code
	}
	if len(pos) > 0 || (sub != "apply" && sub != "remove" && sub != "show") {
		return c.UsageError("want apply, remove or show")
	}
	env := c.env
	fail := func(err error) int {
		fmt.Fprintf(env.Stderr, "vmesh redirect %s: %v\n", sub, err)
		if errors.Is(err, iptables.ErrInvalid) {
			return ExitUsage
		}
		return ExitFailed
	}
	links, err := iptables.NewNetlink()
	if err != nil && !(*c.dryRun && errors.Is(err, iptables.ErrUnsupported)) {
		return fail(err)
	}
	var l iptables.Links
	if links != nil {
		defer links.Close()
		l = links
	}

	switch sub {
	case "show":
		ipt := iptables.New(iptables.ExecRunner{}, iptables.Options{})
		return showCapture(ctx, env, ipt, l, fail)
	case "remove":
		ipt := iptables.New(iptables.ExecRunner{}, iptables.Options{})
		if *c.dryRun {
			fmt.Fprintln(env.Stdout, "# would remove:")
			return showCapture(ctx, env, ipt, l, fail)
		}
		var errs []error
		// No iptables on the host: vmesh cannot have added rules (the
		// unit's ExecStopPost runs this on hosts without capture too).
		if err := ipt.Remove(ctx); !errors.Is(err, iptables.ErrNoIptables) {
			errs = append(errs, err)
		}
		if l != nil {
			errs = append(errs, l.Remove())
		}
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		fmt.Fprintln(env.Stdout, "Removed vmesh capture rules and "+iptables.VIPLink+" (if any).")
		return ExitOK
	}

	// apply
	cfg := config.DefaultConfig()
	if err := cfg.LoadFiles(c.configs); err != nil {
		fmt.Fprintf(env.Stderr, "vmesh redirect apply: %v\n", err)
		return ExitUsage
	}
	cc := &cfg.Capture
	if *c.vipRange != "" {
		cc.VIPRange = *c.vipRange
	}
	if *c.backend != "" {
		cc.Backend = *c.backend
	}
	cc.CaptureDNS = cc.CaptureDNS || *c.captureDNS
	cc.CaptureAll = cc.CaptureAll || *c.captureAll
	var perrs []error
	ports, err := iptables.ParsePorts("-exclude-port", c.excludePorts)
	perrs = append(perrs, err)
	cc.ExcludePorts = append(cc.ExcludePorts, ports...)
	ports, err = iptables.ParsePorts("-inbound-port", c.inbound)
	perrs = append(perrs, err)
	cc.InboundPorts = append(cc.InboundPorts, ports...)
	cc.ExcludeCIDRs = append(cc.ExcludeCIDRs, c.excludeCIDRs...)
	cc.ExcludeUIDs = append(cc.ExcludeUIDs, c.excludeUIDs...)
	var vipAddrs []netip.Addr
	for _, s := range c.vips {
		for _, f := range strings.Split(s, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(f))
			if err != nil {
				perrs = append(perrs, fmt.Errorf("-vip: %q is not an IP address", f))
				continue
			}
			vipAddrs = append(vipAddrs, a)
		}
	}
	d, err := cfg.CaptureDesired()
	perrs = append(perrs, err)
	for _, a := range vipAddrs {
		if !slicesContainsAddr(d.VIPRanges, a) {
			perrs = append(perrs, fmt.Errorf("-vip: %s is outside capture.vip_range", a))
		}
	}
	if err := errors.Join(perrs...); err != nil {
		fmt.Fprintf(env.Stderr, "vmesh redirect apply: invalid settings:\n%v\n", err)
		return ExitUsage
	}
	ipt := iptables.New(iptables.ExecRunner{}, iptables.Options{Links: l, Backend: cc.Backend})
	if *c.dryRun {
		v4, v6, err := ipt.Scripts(ctx, d)
		if errors.Is(err, iptables.ErrInvalid) {
			return fail(err)
		}
		if err != nil {
			// Not root, or no iptables here: show what a host with none of
			// our rules would get.
			fmt.Fprintf(env.Stdout, "# cannot read the current rules (%v);\n# these are the scripts for a host without vmesh rules.\n", err)
			v4, v6 = iptables.Rules(d)
		}
		fmt.Fprintf(env.Stdout, "# iptables-restore --noflush\n%s# ip6tables-restore --noflush\n%s", v4, v6)
		if len(vipAddrs) > 0 {
			fmt.Fprintf(env.Stdout, "# %s addresses: %v\n", iptables.VIPLink, vipAddrs)
		}
		return ExitOK
	}
	if err := ipt.Apply(ctx, d); err != nil {
		return fail(err)
	}
	if len(vipAddrs) > 0 {
		if err := l.SetVIPs(vipAddrs); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintln(env.Stdout, "Applied vmesh capture rules.")
	return ExitOK
}

func slicesContainsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func showCapture(ctx context.Context, env *Env, c *iptables.Capture, l iptables.Links, fail func(error) int) int {
	rules, err := c.Show(ctx)
	if err != nil {
		return fail(err)
	}
	if rules == "" {
		rules = "# no vmesh rules\n"
	}
	fmt.Fprint(env.Stdout, rules)
	if l == nil {
		return ExitOK
	}
	ips, err := l.VIPs()
	if err != nil {
		return fail(err)
	}
	if _, statErr := os.Stat("/sys/class/net/" + iptables.VIPLink); statErr != nil && len(ips) == 0 {
		fmt.Fprintf(env.Stdout, "# no %s\n", iptables.VIPLink)
		return ExitOK
	}
	fmt.Fprintf(env.Stdout, "# %s:", iptables.VIPLink)
	for _, ip := range ips {
		fmt.Fprintf(env.Stdout, " %s", ip)
	}
	fmt.Fprintln(env.Stdout)
	return ExitOK
}
