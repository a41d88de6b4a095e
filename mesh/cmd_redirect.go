package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/vmesh/vmesh/iptables"
)

// runRedirect is `vmesh redirect apply | remove | show [--dry-run]`.
//
// Unlike every other command it does not talk to the agent's API: it
// changes the kernel (iptables, vmesh0) itself, because it must work when
// the agent is down — `redirect remove` is how capture is undone after a
// crash (and the unit's ExecStopPost). It needs root (CAP_NET_ADMIN).
func runRedirect(ctx context.Context, env *cliEnv, args []string) int {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	fs := newFlagSet("redirect "+sub, env)
	var (
		configs                                                stringList
		excludePorts, excludeCIDRs, excludeUIDs, inbound, vips stringList
	)
	fs.Var(&configs, "config", "agent config `file or dir` whose capture { ... } block is used; repeatable")
	fs.Var(&excludePorts, "exclude-port", "outbound destination `port` never captured; repeatable or comma-separated")
	fs.Var(&excludeCIDRs, "exclude-cidr", "destination `CIDR` never captured; repeatable or comma-separated")
	fs.Var(&excludeUIDs, "exclude-uid", "`user` (name or UID) whose traffic is never captured; repeatable")
	fs.Var(&inbound, "inbound-port", "local service `port` whose inbound TCP goes to the inbound listener; repeatable")
	fs.Var(&vips, "vip", "`IP` to hold on vmesh0 (apply; normally the agent sets VIPs); repeatable")
	captureDNS := fs.Bool("capture-dns", false, "send port 53 to the agent's DNS")
	captureAll := fs.Bool("capture-all", false, "capture all outbound TCP, not only to VIPs")
	vipRange := fs.String("vip-range", "", "VIP `CIDR` (default 240.0.0.0/4)")
	backend := fs.String("backend", "", "force iptables `backend` nft or legacy (default: what iptables is)")
	dryRun := fs.Bool("dry-run", false, "print what would be done; change nothing")
	fs.Usage = func() {
		fmt.Fprintln(env.stderr, "Usage: vmesh redirect apply | remove | show [flags]\n\n"+
			"Changes the kernel directly (needs root), without the agent, so it works\n"+
			"when the agent is down. See docs/capture.md.\n\nFlags:")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 || (sub != "apply" && sub != "remove" && sub != "show") {
		fs.Usage()
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "vmesh redirect %s: %v\n", sub, err)
		if errors.Is(err, iptables.ErrInvalid) {
			return exitUsage
		}
		return exitFailed
	}
	links, err := iptables.NewNetlink()
	if err != nil && !(*dryRun && errors.Is(err, iptables.ErrUnsupported)) {
		return fail(err)
	}
	var l iptables.Links
	if links != nil {
		defer links.Close()
		l = links
	}

	switch sub {
	case "show":
		c := iptables.New(iptables.ExecRunner{}, iptables.Options{})
		return showCapture(ctx, env, c, l, fail)
	case "remove":
		c := iptables.New(iptables.ExecRunner{}, iptables.Options{})
		if *dryRun {
			fmt.Fprintln(env.stdout, "# would remove:")
			return showCapture(ctx, env, c, l, fail)
		}
		var errs []error
		// No iptables on the host: vmesh cannot have added rules (the
		// unit's ExecStopPost runs this on hosts without capture too).
		if err := c.Remove(ctx); !errors.Is(err, iptables.ErrNoIptables) {
			errs = append(errs, err)
		}
		if l != nil {
			errs = append(errs, l.Remove())
		}
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
		fmt.Fprintln(env.stdout, "Removed vmesh capture rules and "+iptables.VIPLink+" (if any).")
		return exitOK
	}

	// apply
	cfg := DefaultConfig()
	if err := loadConfigFiles(&cfg, configs); err != nil {
		fmt.Fprintf(env.stderr, "vmesh redirect apply: %v\n", err)
		return exitUsage
	}
	cc := &cfg.Capture
	if *vipRange != "" {
		cc.VIPRange = *vipRange
	}
	if *backend != "" {
		cc.Backend = *backend
	}
	cc.CaptureDNS = cc.CaptureDNS || *captureDNS
	cc.CaptureAll = cc.CaptureAll || *captureAll
	var perrs []error
	ports, err := iptables.ParsePorts("-exclude-port", excludePorts)
	perrs = append(perrs, err)
	cc.ExcludePorts = append(cc.ExcludePorts, ports...)
	ports, err = iptables.ParsePorts("-inbound-port", inbound)
	perrs = append(perrs, err)
	cc.InboundPorts = append(cc.InboundPorts, ports...)
	cc.ExcludeCIDRs = append(cc.ExcludeCIDRs, excludeCIDRs...)
	cc.ExcludeUIDs = append(cc.ExcludeUIDs, excludeUIDs...)
	var vipAddrs []netip.Addr
	for _, s := range vips {
		for _, f := range strings.Split(s, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(f))
			if err != nil {
				perrs = append(perrs, fmt.Errorf("-vip: %q is not an IP address", f))
				continue
			}
			vipAddrs = append(vipAddrs, a)
		}
	}
	d, err := cfg.captureDesired()
	perrs = append(perrs, err)
	for _, a := range vipAddrs {
		if !slicesContainsAddr(d.VIPRanges, a) {
			perrs = append(perrs, fmt.Errorf("-vip: %s is outside capture.vip_range", a))
		}
	}
	if err := errors.Join(perrs...); err != nil {
		fmt.Fprintf(env.stderr, "vmesh redirect apply: invalid settings:\n%v\n", err)
		return exitUsage
	}
	c := iptables.New(iptables.ExecRunner{}, iptables.Options{Links: l, Backend: cc.Backend})
	if *dryRun {
		v4, v6, err := c.Scripts(ctx, d)
		if errors.Is(err, iptables.ErrInvalid) {
			return fail(err)
		}
		if err != nil {
			// Not root, or no iptables here: show what a host with none of
			// our rules would get.
			fmt.Fprintf(env.stdout, "# cannot read the current rules (%v);\n# these are the scripts for a host without vmesh rules.\n", err)
			v4, v6 = iptables.Rules(d)
		}
		fmt.Fprintf(env.stdout, "# iptables-restore --noflush\n%s# ip6tables-restore --noflush\n%s", v4, v6)
		if len(vipAddrs) > 0 {
			fmt.Fprintf(env.stdout, "# %s addresses: %v\n", iptables.VIPLink, vipAddrs)
		}
		return exitOK
	}
	if err := c.Apply(ctx, d); err != nil {
		return fail(err)
	}
	if len(vipAddrs) > 0 {
		if err := l.SetVIPs(vipAddrs); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintln(env.stdout, "Applied vmesh capture rules.")
	return exitOK
}

func slicesContainsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func showCapture(ctx context.Context, env *cliEnv, c *iptables.Capture, l iptables.Links, fail func(error) int) int {
	rules, err := c.Show(ctx)
	if err != nil {
		return fail(err)
	}
	if rules == "" {
		rules = "# no vmesh rules\n"
	}
	fmt.Fprint(env.stdout, rules)
	if l == nil {
		return exitOK
	}
	ips, err := l.VIPs()
	if err != nil {
		return fail(err)
	}
	if _, statErr := os.Stat("/sys/class/net/" + iptables.VIPLink); statErr != nil && len(ips) == 0 {
		fmt.Fprintf(env.stdout, "# no %s\n", iptables.VIPLink)
		return exitOK
	}
	fmt.Fprintf(env.stdout, "# %s:", iptables.VIPLink)
	for _, ip := range ips {
		fmt.Fprintf(env.stdout, " %s", ip)
	}
	fmt.Fprintln(env.stdout)
	return exitOK
}
