package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/config"
)

// Capture in the agent (`capture { enabled = true }` or -capture): Start
// applies the rules and sets vmesh0 to the current VIPs before it returns
// (so before READY=1); a loop re-applies when the VIP set changes and
// repairs drift every reconcile_interval; Close and leave remove both.
// The rules come from the same builder as `vmesh redirect apply -config`
// (config.Config.CaptureDesired).

// DefaultCaptureReconcile is how often the agent checks that its rules and
// vmesh0 are still what it applied.
const DefaultCaptureReconcile = 30 * time.Second

// captureMinGap rate-limits applies: VIP changes that come in a burst are
// applied together, at most once per gap.
const captureMinGap = time.Second

// captureRunner keeps the kernel's capture state (our iptables rules and
// vmesh0's addresses) equal to the configuration and the catalog's VIPs
// and service users.
type captureRunner struct {
	c     *iptables.Capture
	links iptables.Links
	// desired is the configuration's; Users come from the catalog on each
	// reconcile (userRedirects).
	desired  iptables.Desired
	store    *discovery.Store
	interval time.Duration
	minGap   time.Duration
	logger   *slog.Logger
	// node, ports and lookup decide the per-user redirects: the users that
	// node's instances name, on the ports the agent's xDS server gives
	// them (the same xds.Options), as UIDs (lookup: discovery.LookupUser).
	node   string
	ports  xds.Options
	lookup func(string) (uint32, error)

	mu      sync.Mutex
	applied bool                    // we touched the kernel: Close and leave must remove
	stopped bool                    // removed (stop or leave): never apply again
	rules   string                  // Show() right after our last apply
	vips    []netip.Addr            // what we last set on vmesh0
	users   []iptables.UserRedirect // the Users we last applied
	skipped map[string]string       // user -> why it has no redirect (logged once)
	applies int                     // how many times we applied (tests)
}

func newCaptureRunner(d iptables.Desired, r iptables.Runner, links iptables.Links, backend string, store *discovery.Store, interval time.Duration, logger *slog.Logger) *captureRunner {
	if interval <= 0 {
		interval = DefaultCaptureReconcile
	}
	return &captureRunner{
		c:       iptables.New(r, iptables.Options{Links: links, Backend: backend, Logger: logger}),
		links:   links,
		desired: d, store: store, interval: interval, minGap: captureMinGap, logger: logger,
		lookup: discovery.LookupUser, skipped: map[string]string{},
	}
}

// prepareCapture builds the desired state and checks it against the
// host's routes. It changes nothing: a bad capture block fails the start
// as a configuration error before the kernel is touched. The service
// files' users are checked too (checkServiceFiles read them).
func (a *Agent) prepareCapture(context.Context) error {
	files := a.startFiles
	if !a.cfg.Capture.Enabled {
		return nil
	}
	d, err := a.cfg.CaptureDesired()
	if err != nil {
		return &config.Error{Err: err}
	}
	nl, err := iptables.NewNetlink()
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if err := a.checkFileUsers(d, files); err != nil {
		nl.Close()
		return &config.Error{Err: err}
	}
	r := newCaptureRunner(d, iptables.ExecRunner{}, nl, a.cfg.Capture.Backend, a.store, a.cfg.Capture.ReconcileInterval,
		a.logger.With("component", "capture"))
	r.node, r.ports = a.cfg.NodeName, a.xdsOptions()
	if err := r.c.Check(d); err != nil {
		nl.Close()
		if errors.Is(err, iptables.ErrInvalid) {
			return &config.Error{Err: err}
		}
		return fmt.Errorf("capture: %w", err)
	}
	a.capture, a.captureLinks = r, nl
	return nil
}

// startCapture applies the rules and the current VIPs once, then keeps
// them in step; it is the last part to start, so READY=1 (sent after
// Start) comes after capture, and the proxy it steers traffic to runs.
func (a *Agent) startCapture(ctx context.Context) error {
	if a.capture == nil {
		return nil
	}
	if _, err := a.capture.reconcile(ctx, nil); err != nil {
		return fmt.Errorf("applying capture: %w", err)
	}
	a.stopCaptureLoop = a.life.goLoop("capture", func(ctx context.Context) error {
		a.capture.run(ctx)
		return nil
	})
	return nil
}

// removeCapture undoes capture (stop, leave); later reconciles do nothing.
func (a *Agent) removeCapture(ctx context.Context) {
	if a.capture == nil {
		return
	}
	if err := a.capture.remove(ctx); err != nil {
		a.logger.Error("removing capture; run 'vmesh redirect remove' as root", "err", err)
	}
}

// stopCapture ends the reconcile loop and removes the rules and VIPs:
// the first thing a stop does, so no traffic is steered into a proxy
// that is going away.
func (a *Agent) stopCapture() error {
	if a.capture == nil {
		return nil
	}
	if a.stopCaptureLoop != nil {
		a.stopCaptureLoop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a.removeCapture(ctx)
	return nil
}

// closeCaptureLinks closes the netlink handle prepareCapture opened.
func (a *Agent) closeCaptureLinks() error {
	if a.captureLinks != nil {
		a.captureLinks.Close()
	}
	return nil
}

func (a *Agent) captureBanner() {
	if a.out == nil {
		return
	}
	if a.capture == nil {
		fmt.Fprintf(a.out, "        Capture: off\n")
		return
	}
	a.capture.mu.Lock()
	n, users := len(a.capture.vips), len(a.capture.users)
	a.capture.mu.Unlock()
	fmt.Fprintf(a.out, "        Capture: on (%s, %d VIPs on %s, %d service users)\n", a.capture.desired.VIPRanges, n, iptables.VIPLink, users)
}

// checkFileUsers refuses, before anything touches the kernel, a service
// file whose user capture could not redirect: one in exclude_uids (whose
// traffic is never captured), or whose port would clash. The files' own
// checks (the user exists, one service per user) ran when they were read.
func (a *Agent) checkFileUsers(d iptables.Desired, reqs []*discovery.RegisterServiceRequest) error {
	var insts []*discovery.Instance
	where := map[string]string{}
	for _, req := range reqs {
		if req.Instance.User != "" {
			in := req.Instance
			insts = append(insts, &in)
			if _, ok := where[in.User]; !ok {
				where[in.User] = strings.TrimPrefix(in.Source, "file:")
			}
		}
	}
	var errs []error
	for _, u := range a.xdsOptions().UserPorts(a.cfg.NodeName, insts) {
		uid, err := discovery.LookupUser(u.User)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: service %q: user: %w", where[u.User], u.Service, err))
			continue
		}
		if slices.Contains(d.ExcludeUIDs, uid) {
			errs = append(errs, fmt.Errorf("%s: service %q: user: %q (UID %d) is also in capture.exclude_uids, whose traffic is never captured",
				where[u.User], u.Service, u.User, uid))
			continue
		}
		d.Users = append(d.Users, iptables.UserRedirect{UID: uid, Port: u.Port, Service: u.Service})
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return d.Validate()
}

// userRedirects are the per-user rules for the users this node's
// instances name: each user's UID and its port (xds.Options.UserPorts, as
// the xDS server computes them). A user this host does not know, a second
// name for a UID already redirected, or a UID in exclude_uids gets no rule
// (its traffic keeps the host proxy's identity); each is logged once.
// ws, when not nil, watches the node's instances.
func (r *captureRunner) userRedirects(ws memdb.WatchSet) ([]iptables.UserRedirect, error) {
	if r.node == "" {
		return nil, nil
	}
	_, insts, err := r.store.NodeInstances(ws, r.node)
	if err != nil {
		return nil, fmt.Errorf("reading this node's instances: %w", err)
	}
	var out []iptables.UserRedirect
	seen := map[uint32]string{}
	skipped := map[string]string{}
	for _, u := range r.ports.UserPorts(r.node, insts) {
		uid, err := r.lookup(u.User)
		switch {
		case err != nil:
			skipped[u.User] = fmt.Sprintf("service %q: %v", u.Service, err)
		case seen[uid] != "":
			skipped[u.User] = fmt.Sprintf("service %q: UID %d already belongs to user %q", u.Service, uid, seen[uid])
		case slices.Contains(r.desired.ExcludeUIDs, uid):
			skipped[u.User] = fmt.Sprintf("service %q: UID %d is in capture.exclude_uids", u.Service, uid)
		default:
			seen[uid] = u.User
			out = append(out, iptables.UserRedirect{UID: uid, Port: u.Port, Service: u.Service})
		}
	}
	r.mu.Lock()
	for u, why := range skipped {
		if r.skipped[u] != why {
			r.logger.Warn("no per-user capture for this user; its connections keep the host's identity", "user", u, "why", why)
		}
	}
	r.skipped = skipped
	r.mu.Unlock()
	return out, nil
}

// wantVIPs is the catalog's VIPs inside the configured range, sorted. A
// VIP outside it (the range changed) is not held: no rule captures it.
func (r *captureRunner) wantVIPs(ws memdb.WatchSet) ([]netip.Addr, error) {
	_, vips, err := r.store.VIPs(ws)
	if err != nil {
		return nil, fmt.Errorf("reading VIPs: %w", err)
	}
	var out []netip.Addr
	for _, v := range vips {
		a, err := netip.ParseAddr(v.IP)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(r.desired.VIPRanges, func(p netip.Prefix) bool { return p.Contains(a) }) {
			out = append(out, a)
		} else {
			r.logger.Debug("VIP outside capture.vip_range; not held on "+iptables.VIPLink, "service", v.Service, "vip", a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// reconcile compares the kernel with what it last applied and the VIPs
// the catalog holds now, and applies when anything differs (or nothing was
// applied yet). It reports whether it applied. ws, when not nil, watches
// the VIPs.
func (r *captureRunner) reconcile(ctx context.Context, ws memdb.WatchSet) (bool, error) {
	want, err := r.wantVIPs(ws)
	if err != nil {
		return false, err
	}
	users, err := r.userRedirects(ws)
	if err != nil {
		return false, err
	}
	d := r.desired
	d.Users = users
	if err := d.Validate(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false, nil
	}
	if r.applied {
		rules, err := r.c.Show(ctx)
		if err != nil {
			return false, err
		}
		have, err := r.links.VIPs()
		if err != nil {
			return false, err
		}
		rulesOK, linkOK := rules == r.rules, slices.Equal(have, r.vips)
		usersOK := slices.Equal(users, r.users)
		if rulesOK && linkOK && usersOK && slices.Equal(want, r.vips) {
			return false, nil
		}
		switch {
		case !rulesOK:
			r.logger.Warn("capture rules changed behind our back; repairing",
				"rules_expected", lineCount(r.rules), "rules_found", lineCount(rules))
		case !linkOK:
			r.logger.Warn(iptables.VIPLink+" changed behind our back; repairing", "expected", r.vips, "found", have)
		case !usersOK:
			r.logger.Info("service users changed", "users", userList(users))
		default:
			r.logger.Info("VIPs changed", "vips", len(want))
		}
	}
	// From here the kernel may hold something of ours: Close must remove.
	r.applied = true
	if err := r.c.Apply(ctx, d); err != nil {
		return true, err
	}
	r.users = users
	if err := r.links.SetVIPs(want); err != nil {
		return true, err
	}
	r.vips = want
	r.applies++
	if r.rules, err = r.c.Show(ctx); err != nil {
		return true, err
	}
	return true, nil
}

// run reconciles when the VIPs change and every interval, at most once per
// minGap, until ctx ends. Its first pass, right after Start applied, only
// compares (and catches a VIP that changed in between).
func (r *captureRunner) run(ctx context.Context) {
	for {
		start := time.Now()
		ws := memdb.NewWatchSet()
		wait := r.interval
		if _, err := r.reconcile(ctx, ws); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.logger.Warn("capture: reconciling; will retry", "err", err)
			wait = min(wait, 5*time.Second)
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		ws.WatchCtx(wctx) // a VIP changed, or wait passed
		cancel()
		if gap := r.minGap - time.Since(start); gap > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(gap):
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// remove deletes our rules and vmesh0 if we applied them, and stops
// further applies.
func (r *captureRunner) remove(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if !r.applied {
		return nil
	}
	err := errors.Join(r.c.Remove(ctx), r.links.Remove())
	if err == nil {
		r.applied, r.rules, r.vips = false, "", nil
		r.logger.Info("removed capture rules and " + iptables.VIPLink)
	}
	return err
}

// userList renders redirects for the log: "orders=1001:15100".
func userList(us []iptables.UserRedirect) string {
	var b strings.Builder
	for i, u := range us {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d:%d", u.Service, u.UID, u.Port)
	}
	return b.String()
}

func lineCount(s string) int {
	return strings.Count(s, "\n")
}

// proxyMark is the SO_MARK the in-process proxy sets on the sockets it
// dials when this agent applies capture: the rules return marked traffic
// first, which keeps the proxy's own connections (to peers, to local
// apps, passed-through original destinations) out of capture without a
// special UID. 0 (no mark) without capture: setting one needs
// CAP_NET_ADMIN, which an agent without capture may lack.
func (a *Agent) proxyMark() int {
	if a.capture == nil {
		return 0
	}
	return int(a.capture.desired.ProxyMark)
}
