package mesh

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/iptables"
)

func newTestCapture(t *testing.T) (*captureRunner, *iptables.Fake, *iptables.FakeLinks, *discovery.Store) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Capture.Enabled = true
	d, err := cfg.captureDesired()
	if err != nil {
		t.Fatal(err)
	}
	f, links, store := iptables.NewFake("nft"), iptables.NewFakeLinks(), discovery.NewStore()
	logger := slog.New(slog.NewTextHandler(tWriter{t}, nil))
	return newCaptureRunner(d, f, links, "", store, time.Hour, logger), f, links, store
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// The reconcile step applies when nothing was applied, when the VIPs
// change and when the kernel drifted, and otherwise only looks.
func TestCaptureReconcile(t *testing.T) {
	ctx := context.Background()
	r, f, links, store := newTestCapture(t)
	step := func(what string, wantApply bool) {
		t.Helper()
		applied, err := r.reconcile(ctx, nil)
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

	if err := store.VIPApply(10, discovery.VIPAllocate, "web", "240.0.0.7"); err != nil {
		t.Fatal(err)
	}
	store.VIPApply(11, discovery.VIPAllocate, "outside", "10.9.9.9") // not in vip_range: not held
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

	if err := r.remove(ctx); err != nil {
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

// A runner that never applied removes nothing (someone else's rules, e.g.
// from 'vmesh redirect apply', stay when an agent without capture stops).
func TestCaptureRemoveOnlyWhatItApplied(t *testing.T) {
	r, f, _, _ := newTestCapture(t)
	d := iptables.DefaultDesired()
	if err := iptables.New(f, iptables.Options{}).Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	before := f.State()
	if err := r.remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.State() != before {
		t.Errorf("remove touched rules it never applied:\n%s", f.State())
	}
}

// The loop wakes on a VIP change (not only on its timer) and stops with
// its context.
func TestCaptureRunWatchesVIPs(t *testing.T) {
	r, _, links, store := newTestCapture(t)
	r.minGap = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := r.reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	store.VIPApply(5, discovery.VIPAllocate, "db", "240.0.0.9")
	waitFor(t, 5*time.Second, "the VIP on vmesh0", func() bool { return links.State() == "vmesh0 up 240.0.0.9/32" })
	store.VIPApply(6, discovery.VIPFree, "db", "")
	waitFor(t, 5*time.Second, "the VIP gone from vmesh0", func() bool { return links.State() == "vmesh0 up" })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applies != 3 {
		t.Errorf("%d applies, want 3 (start, add, free)", r.applies)
	}
}

func TestCaptureConfig(t *testing.T) {
	var f agentFlags
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	if err := fs.Parse([]string{"-dev", "-capture"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.buildConfig(fs)
	if err != nil || !cfg.Capture.Enabled {
		t.Fatalf("-capture: enabled=%v, %v", cfg.Capture.Enabled, err)
	}
	cfg.Capture.ReconcileInterval = -time.Second
	cfg.Capture.ExcludePorts = []int{0}
	err = cfg.Validate()
	for _, want := range []string{"capture.reconcile_interval: must not be negative", "capture.exclude_ports[0]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}
