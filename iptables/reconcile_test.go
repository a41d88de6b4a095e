package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

func newTestReconciler(t *testing.T, lookup func(string) (uint32, error)) (*Reconciler, *Fake, *FakeLinks) {
	t.Helper()
	d := DefaultDesired()
	if lookup == nil {
		lookup = func(u string) (uint32, error) { return 0, fmt.Errorf("%q is not a user on this host", u) }
	}
	f, links := NewFake("nft"), NewFakeLinks()
	c := New(f, Options{Links: links, Logger: testkit.Logger(t)})
	r := NewReconciler(c, links, d, lookup, testkit.Logger(t))
	r.Interval = time.Hour
	return r, f, links
}

func vips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, v := range s {
		out = append(out, netip.MustParseAddr(v))
	}
	return out
}

// StateFor keeps the VIPs inside the configured ranges (sorted, once) and
// gives each resolvable, distinct, non-excluded user a redirect.
func TestStateFor(t *testing.T) {
	base := DefaultDesired()
	base.ExcludeUIDs = []uint32{34}
	uids := map[string]uint32{"alice": 2001, "bob": 2002, "backup": 34, "2001": 2001}
	lookup := func(u string) (uint32, error) {
		if uid, ok := uids[u]; ok {
			return uid, nil
		}
		return 0, fmt.Errorf("%q is not a user on this host", u)
	}
	got := StateFor(base, Targets{
		VIPs: vips("240.0.0.9", "10.9.9.9", "240.0.0.2", "240.0.0.9"),
		Users: []UserTarget{
			{User: "alice", Service: "billing", Port: 15100},
			{User: "bob", Service: "orders", Port: 15101},
			{User: "ghost", Service: "ghost", Port: 15102},
			{User: "backup", Service: "backups", Port: 15103},
			{User: "2001", Service: "dup", Port: 15104},
		},
	}, lookup)
	if fmt.Sprint(got.VIPs) != "[240.0.0.2 240.0.0.9]" || fmt.Sprint(got.Outside) != "[10.9.9.9]" {
		t.Errorf("VIPs %v outside %v", got.VIPs, got.Outside)
	}
	want := []UserRedirect{{UID: 2001, Port: 15100, Service: "billing"}, {UID: 2002, Port: 15101, Service: "orders"}}
	if fmt.Sprint(got.Desired.Users) != fmt.Sprint(want) {
		t.Errorf("users %v, want %v", got.Desired.Users, want)
	}
	for u, why := range map[string]string{"ghost": "not a user", "backup": "exclude_uids", "2001": `already belongs to user "alice"`} {
		if !strings.Contains(got.Skipped[u], why) {
			t.Errorf("skipped[%s] = %q, want it to say %q", u, got.Skipped[u], why)
		}
	}
	if len(base.Users) != 0 {
		t.Error("StateFor changed its base")
	}
}

// Reconcile applies when nothing was applied, when the VIPs change and
// when the kernel drifted, and otherwise only looks.
func TestReconcile(t *testing.T) {
	ctx := context.Background()
	r, f, links := newTestReconciler(t, nil)
	var cur Targets
	step := func(what string, wantApply bool) {
		t.Helper()
		applied, err := r.Reconcile(ctx, cur)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if applied != wantApply {
			t.Fatalf("%s: applied = %v, want %v", what, applied, wantApply)
		}
	}
	step("first", true)
	once := f.State()
	if strings.Count(once, "-j VMESH_OUTPUT\n") != 1 || links.State() != "vmesh0 up" {
		t.Fatalf("after first apply:\n%s\n%s", once, links.State())
	}
	step("nothing changed", false)

	cur.VIPs = vips("240.0.0.7", "10.9.9.9") // 10.9.9.9 is not in vip_range: not held
	step("VIP added", true)
	if links.State() != "vmesh0 up 240.0.0.7/32" {
		t.Errorf("links: %s", links.State())
	}
	if f.State() != once {
		t.Errorf("rules changed with the VIPs:\n%s", f.State())
	}
	step("nothing changed again", false)

	// Drift: someone flushes our chain, then deletes vmesh0.
	if err := f.Restore("nft", 4, "*nat\n-F VMESH_OUTPUT\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	step("chain flushed", true)
	if f.State() != once {
		t.Errorf("not repaired:\n%s\nwant\n%s", f.State(), once)
	}
	links.Remove()
	step("vmesh0 deleted", true)
	if links.State() != "vmesh0 up 240.0.0.7/32" {
		t.Errorf("links not repaired: %s", links.State())
	}
	step("converged", false)

	if err := r.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	ours := func() bool { return strings.Contains(strings.ToLower(f.State()), "vmesh") }
	if ours() || links.State() != "no vmesh0" {
		t.Errorf("after remove:\n%s\n%s", f.State(), links.State())
	}
	step("after remove", false) // stopped: never applies again
	if ours() {
		t.Errorf("re-applied after remove:\n%s", f.State())
	}
}

// A reconciler that never applied removes nothing (someone else's rules,
// e.g. from 'vmesh redirect apply', stay when an agent without capture
// stops).
func TestReconcilerRemovesOnlyWhatItApplied(t *testing.T) {
	r, f, _ := newTestReconciler(t, nil)
	if err := New(f, Options{}).Apply(context.Background(), DefaultDesired()); err != nil {
		t.Fatal(err)
	}
	before := f.State()
	if err := r.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.State() != before {
		t.Errorf("remove touched rules it never applied:\n%s", f.State())
	}
}

// Run applies each update (not only on its timer) and stops with its
// context.
func TestReconcilerRunFollowsUpdates(t *testing.T) {
	r, _, links := newTestReconciler(t, nil)
	r.MinGap = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := r.Reconcile(ctx, Targets{}); err != nil {
		t.Fatal(err)
	}
	updates := make(chan Targets, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, Targets{}, updates)
	}()
	updates <- Targets{VIPs: vips("240.0.0.9")}
	testkit.WaitFor(t, 5*time.Second, "the VIP on vmesh0", func() bool { return links.State() == "vmesh0 up 240.0.0.9/32" })
	updates <- Targets{}
	testkit.WaitFor(t, 5*time.Second, "the VIP gone from vmesh0", func() bool { return links.State() == "vmesh0 up" })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
	if n := r.Applies(); n != 3 {
		t.Errorf("%d applies, want 3 (start, add, free)", n)
	}
}

// Inbound ports are redirected only while the proxy serves the inbound
// listener (Targets.Inbound): before, and after it stops, their
// connections go to the app directly instead of to a port nobody
// listens on.
func TestReconcileInboundFollowsTheListener(t *testing.T) {
	ctx := context.Background()
	f, links := NewFake("nft"), NewFakeLinks()
	base := DefaultDesired()
	base.InboundPorts = []int{8080}
	r := NewReconciler(New(f, Options{Links: links, Logger: testkit.Logger(t)}), links, base, nil, testkit.Logger(t))
	redirected := func() bool { return strings.Contains(f.State(), "--dport 8080") }
	steps := []struct {
		inbound, wantApply, wantRedirect bool
	}{
		{false, true, false}, // first apply, listener not up yet
		{false, false, false},
		{true, true, true}, // the proxy serves 15006
		{true, false, true},
		{false, true, false}, // it stopped serving
	}
	for i, s := range steps {
		applied, err := r.Reconcile(ctx, Targets{Inbound: s.inbound})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if applied != s.wantApply || redirected() != s.wantRedirect {
			t.Fatalf("step %d (inbound %v): applied %v, redirected %v; want %v, %v\n%s",
				i, s.inbound, applied, redirected(), s.wantApply, s.wantRedirect, f.State())
		}
	}
	if got := StateFor(base, Targets{}, nil).Desired.InboundPorts; got != nil || len(base.InboundPorts) != 1 {
		t.Errorf("StateFor without the listener: inbound ports %v (base %v); want none, base untouched", got, base.InboundPorts)
	}
}
