package iptables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Capture applies, removes and shows our iptables state. It holds no
// state of its own: every call reads the kernel (iptables-save) first, so
// it converges from whatever an earlier run, a crash or an admin left.
type Capture struct {
	runner Runner
	links  Links // routes for CheckRoutes; nil skips that check
	force  string
	logger *slog.Logger
}

// Options configure New.
type Options struct {
	// Links lists the host's routes so Apply can refuse a VIP range that
	// overlaps one; nil skips the check.
	Links Links
	// Backend forces "nft" or "legacy"; empty follows `iptables --version`.
	Backend string
	Logger  *slog.Logger
}

// New returns a Capture that runs its commands through r.
func New(r Runner, o Options) *Capture {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Capture{runner: r, links: o.Links, force: o.Backend, logger: o.Logger}
}

var families = [2]string{"IPv4", "IPv6"}

// Check validates d and compares it with the host's routes. Apply calls
// it first; nothing here changes the kernel.
func (c *Capture) Check(d Desired) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if c.links == nil {
		return nil
	}
	routes, err := c.links.Routes()
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	return d.CheckRoutes(routes, VIPLink)
}

// Apply converges the host to d: for each family one iptables-restore
// --noflush transaction that removes our old jumps and stale chains,
// (re)fills our chains and inserts the jumps first. Our state in another
// installed backend (the host switched between nft and legacy) is removed.
func (c *Capture) Apply(ctx context.Context, d Desired) error {
	if err := c.Check(d); err != nil {
		return err
	}
	primary, all, err := Detect(ctx, c.runner, c.force)
	if err != nil {
		return err
	}
	want := [2][]table{build(d, false), build(d, true)}
	for fam := range 2 {
		if primary.Save[fam] == "" {
			if want[fam] != nil {
				c.logger.Warn("ip6tables is not installed; IPv6 is not captured", "backend", primary.String())
			}
			continue
		}
		if err := c.converge(ctx, primary, fam, want[fam]); err != nil {
			return err
		}
	}
	for _, b := range all {
		if b.Mode != primary.Mode {
			if err := c.removeBackend(ctx, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// converge reads the current state and restores want over it; if the
// transaction fails (someone changed the rules between save and restore),
// it reads again and retries once.
func (c *Capture) converge(ctx context.Context, b Backend, fam int, want []table) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var out string
		out, err = c.runner.Run(ctx, "", b.Save[fam])
		if err != nil {
			return fmt.Errorf("reading %s rules: %w", families[fam], err)
		}
		cur := parseSave(out)
		if want == nil && cur.empty() {
			return nil
		}
		script := render(want, cur)
		if _, err = c.runner.Run(ctx, script, b.Restore[fam], "--noflush"); err == nil {
			return nil
		}
		c.logger.Warn("iptables-restore failed; retrying from a fresh save", "family", families[fam], "err", err)
	}
	return fmt.Errorf("applying %s rules: %w", families[fam], err)
}

// Remove deletes exactly what Apply added (jumps, then our chains), in
// every installed backend and family. With nothing there it changes
// nothing. It needs no agent and no config: it works from iptables-save.
func (c *Capture) Remove(ctx context.Context) error {
	_, all, err := Detect(ctx, c.runner, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range all {
		errs = append(errs, c.removeBackend(ctx, b))
	}
	return errors.Join(errs...)
}

func (c *Capture) removeBackend(ctx context.Context, b Backend) error {
	var errs []error
	for fam := range 2 {
		if b.Save[fam] == "" {
			continue
		}
		if err := c.converge(ctx, b, fam, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: removing: %w", b, err))
		}
	}
	return errors.Join(errs...)
}

// Show returns our current rules, per backend and family, as
// iptables-save prints them; empty when there are none.
func (c *Capture) Show(ctx context.Context) (string, error) {
	_, all, err := Detect(ctx, c.runner, "")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, be := range all {
		for fam := range 2 {
			if be.Save[fam] == "" {
				continue
			}
			out, err := c.runner.Run(ctx, "", be.Save[fam])
			if err != nil {
				return "", fmt.Errorf("reading %s rules: %w", families[fam], err)
			}
			if s := parseSave(out).show(); s != "" {
				fmt.Fprintf(&b, "# %s (%s)\n%s", be.Save[fam], families[fam], s)
			}
		}
	}
	return b.String(), nil
}

// Scripts returns what Apply would restore now, per family, without
// changing anything (--dry-run).
func (c *Capture) Scripts(ctx context.Context, d Desired) (v4, v6 string, err error) {
	if err := c.Check(d); err != nil {
		return "", "", err
	}
	primary, _, err := Detect(ctx, c.runner, c.force)
	if err != nil {
		return "", "", err
	}
	var out [2]string
	for fam, v6 := range []bool{false, true} {
		if primary.Save[fam] == "" {
			continue
		}
		save, err := c.runner.Run(ctx, "", primary.Save[fam])
		if err != nil {
			return "", "", fmt.Errorf("reading %s rules: %w", families[fam], err)
		}
		out[fam] = render(build(d, v6), parseSave(save))
	}
	return out[0], out[1], nil
}
