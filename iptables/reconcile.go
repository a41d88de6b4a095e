package iptables

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
)

// Targets is what the mesh asks capture to steer, as the agent reads it
// off the same view its proxy is configured from: the services' virtual
// IPs and this host's service users with their outbound ports.
type Targets struct {
	VIPs  []netip.Addr
	Users []UserTarget
	// Inbound says the proxy serves the transparent inbound listener
	// (InboundPort). Only then are the configured inbound_ports
	// redirected to it: until then, and whenever it stops serving,
	// their connections go to the app directly, since a redirect to a
	// port nobody listens on would take the service off the network.
	Inbound bool
}

// UserTarget is one service user of this host: its connections are
// redirected to Port, where the proxy speaks with Service's identity.
type UserTarget struct {
	User    string // a name or a UID, as the service definition says it
	Service string
	Port    int
}

// State is the kernel state capture must hold for some Targets: the rules
// (Desired, with one redirect per service user) and the VIPs on vmesh0.
type State struct {
	Desired Desired
	VIPs    []netip.Addr
	// Skipped names each user that gets no redirect, and why; its
	// connections keep the host proxy's identity.
	Skipped map[string]string
	// Outside are VIPs outside the configured ranges: no rule captures
	// them, so vmesh0 does not hold them.
	Outside []netip.Addr
}

// StateFor computes the kernel state for t from the configured base (its
// Users are replaced, and its InboundPorts kept only when t.Inbound). It
// is pure but for lookup, which maps a user to a
// UID (the host's user database). A user lookup cannot resolve, a second
// name for a UID already redirected, or a UID in ExcludeUIDs gets no
// redirect and is named in Skipped.
func StateFor(base Desired, t Targets, lookup func(string) (uint32, error)) State {
	s := State{Desired: base, Skipped: map[string]string{}}
	s.Desired.Users = nil
	if !t.Inbound {
		s.Desired.InboundPorts = nil
	}
	for _, a := range t.VIPs {
		if slices.ContainsFunc(base.VIPRanges, func(p netip.Prefix) bool { return p.Contains(a) }) {
			s.VIPs = append(s.VIPs, a)
		} else {
			s.Outside = append(s.Outside, a)
		}
	}
	slices.SortFunc(s.VIPs, netip.Addr.Compare)
	s.VIPs = slices.Compact(s.VIPs)
	seen := map[uint32]string{}
	for _, u := range t.Users {
		uid, err := lookup(u.User)
		switch {
		case err != nil:
			s.Skipped[u.User] = fmt.Sprintf("service %q: %v", u.Service, err)
		case seen[uid] != "":
			s.Skipped[u.User] = fmt.Sprintf("service %q: UID %d already belongs to user %q", u.Service, uid, seen[uid])
		case slices.Contains(base.ExcludeUIDs, uid):
			s.Skipped[u.User] = fmt.Sprintf("service %q: UID %d is in capture.exclude_uids", u.Service, uid)
		default:
			seen[uid] = u.User
			s.Desired.Users = append(s.Desired.Users, UserRedirect{UID: uid, Port: u.Port, Service: u.Service})
		}
	}
	return s
}

// Reconciler keeps the kernel's capture state (our rules and vmesh0's
// addresses) equal to StateFor(base, targets): it applies when the targets
// change, repairs drift it finds on a timer, and removes everything on
// Remove. It is safe for concurrent use.
type Reconciler struct {
	c      *Capture
	links  Links
	base   Desired
	lookup func(string) (uint32, error)
	logger *slog.Logger
	// Interval is how often Run checks for drift; MinGap rate-limits
	// applies, so a burst of changes is applied together.
	Interval, MinGap time.Duration

	mu      sync.Mutex
	applied bool              // we touched the kernel: Remove must undo it
	stopped bool              // removed: never apply again
	rules   string            // Show() right after our last apply
	vips    []netip.Addr      // what we last set on vmesh0
	users   []UserRedirect    // the Users we last applied
	inbound []int             // the InboundPorts we last applied
	skipped map[string]string // user -> why it has no redirect (logged once)
	applies int               // how many times we applied
}

// Default timings of a Reconciler.
const (
	DefaultReconcileInterval = 30 * time.Second
	DefaultReconcileMinGap   = time.Second
)

// NewReconciler returns a reconciler of base (validated by the caller)
// through c and links. lookup maps a user (a name or a UID) to its UID,
// as ParseUIDs' lookup does.
func NewReconciler(c *Capture, links Links, base Desired, lookup func(string) (uint32, error), logger *slog.Logger) *Reconciler {
	return &Reconciler{
		c: c, links: links, base: base, lookup: lookup, logger: logger,
		Interval: DefaultReconcileInterval, MinGap: DefaultReconcileMinGap,
		skipped: map[string]string{},
	}
}

// Base is the configured state the reconciler starts from.
func (r *Reconciler) Base() Desired { return r.base }

// Status is what was last applied: how many VIPs and service users.
func (r *Reconciler) Status() (vips, users int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.vips), len(r.users)
}

// Applies counts the applies so far (tests, metrics).
func (r *Reconciler) Applies() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applies
}

// Reconcile compares the kernel with what it last applied and with the
// state t asks for, and applies when anything differs (or nothing was
// applied yet). It reports whether it applied.
func (r *Reconciler) Reconcile(ctx context.Context, t Targets) (bool, error) {
	want := StateFor(r.base, t, r.lookup)
	for _, a := range want.Outside {
		r.logger.Debug("VIP outside capture.vip_range; not held on "+VIPLink, "vip", a)
	}
	if err := want.Desired.Validate(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for u, why := range want.Skipped {
		if r.skipped[u] != why {
			r.logger.Warn("no per-user capture for this user; its connections keep the host's identity", "user", u, "why", why)
		}
	}
	r.skipped = want.Skipped
	if r.stopped {
		return false, nil
	}
	users := want.Desired.Users
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
		inboundOK := slices.Equal(want.Desired.InboundPorts, r.inbound)
		if rulesOK && linkOK && usersOK && inboundOK && slices.Equal(want.VIPs, r.vips) {
			return false, nil
		}
		switch {
		case !rulesOK:
			r.logger.Warn("capture rules changed behind our back; repairing",
				"rules_expected", strings.Count(r.rules, "\n"), "rules_found", strings.Count(rules, "\n"))
		case !linkOK:
			r.logger.Warn(VIPLink+" changed behind our back; repairing", "expected", r.vips, "found", have)
		case !usersOK:
			r.logger.Info("service users changed", "users", userList(users))
		case !inboundOK && len(want.Desired.InboundPorts) == 0:
			r.logger.Warn("the proxy's inbound listener is not serving; inbound_ports go to the apps directly until it is", "inbound_ports", r.base.InboundPorts)
		case !inboundOK:
			r.logger.Info("the proxy's inbound listener serves; capturing inbound_ports", "inbound_ports", want.Desired.InboundPorts)
		default:
			r.logger.Info("VIPs changed", "vips", len(want.VIPs))
		}
	}
	// From here the kernel may hold something of ours: Remove must undo.
	r.applied = true
	if err := r.c.Apply(ctx, want.Desired); err != nil {
		return true, err
	}
	r.users, r.inbound = users, want.Desired.InboundPorts
	if err := r.links.SetVIPs(want.VIPs); err != nil {
		return true, err
	}
	r.vips = want.VIPs
	r.applies++
	var err error
	if r.rules, err = r.c.Show(ctx); err != nil {
		return true, err
	}
	return true, nil
}

// Run reconciles with the newest targets from updates, and with the last
// ones every Interval (drift), at most once per MinGap, until ctx ends.
// first is the state the caller already reconciled.
func (r *Reconciler) Run(ctx context.Context, first Targets, updates <-chan Targets) {
	cur := first
	for {
		start := time.Now()
		timer := time.NewTimer(r.Interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case cur = <-updates:
		case <-timer.C:
		}
		timer.Stop()
		if _, err := r.Reconcile(ctx, cur); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.logger.Warn("capture: reconciling; will retry", "err", err)
			// Retry soon rather than after a whole interval.
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(r.Interval, 5*time.Second)):
			}
			continue
		}
		if gap := r.MinGap - time.Since(start); gap > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap):
			}
		}
	}
}

// Remove deletes our rules and vmesh0 if we applied them, and stops
// further applies.
func (r *Reconciler) Remove(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if !r.applied {
		return nil
	}
	err := errors.Join(r.c.Remove(ctx), r.links.Remove())
	if err == nil {
		r.applied, r.rules, r.vips = false, "", nil
		r.logger.Info("removed capture rules and " + VIPLink)
	}
	return err
}

// userList renders redirects for the log: "orders=1001:15100".
func userList(us []UserRedirect) string {
	var b strings.Builder
	for i, u := range us {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d:%d", u.Service, u.UID, u.Port)
	}
	return b.String()
}
