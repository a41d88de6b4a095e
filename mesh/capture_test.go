package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/config"
)

func newTestCapture(t *testing.T) (*captureRunner, *iptables.Fake, *iptables.FakeLinks, *discovery.Store) {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.Capture.Enabled = true
	d, err := cfg.CaptureDesired()
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

// Per-user redirects follow the node's instances: a user a local service
// names gets an owner-match rule to its port (the port the xDS server
// gives it), applied when it appears and removed when it goes; a user the
// host does not know, or one in exclude_uids, gets none.
func TestCaptureUsers(t *testing.T) {
	ctx := context.Background()
	r, f, _, store := newTestCapture(t)
	r.node = "n1"
	cfg := config.DefaultConfig()
	r.ports = cfg.UserPortOptions(xds.Options{})
	uids := map[string]uint32{"alice": 2001, "bob": 2002, "carol": 2003, "backup": 34}
	r.lookup = func(u string) (uint32, error) {
		if uid, ok := uids[u]; ok {
			return uid, nil
		}
		return 0, fmt.Errorf("%q is not a user on this host", u)
	}
	r.desired.ExcludeUIDs = []uint32{34}
	if err := store.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	idx := uint64(1)
	// Registered as the agent registers: the user's port is chosen then
	// (with the policy of the same options) and stored on the instance.
	ports := &discovery.UserPortAllocator{Policy: r.ports.UserPortPolicy()}
	register := func(node, id, svc, user string) {
		t.Helper()
		idx++
		if node != "n1" {
			store.EnsureNode(idx, &discovery.Node{Name: node, Address: "10.0.0.2"})
		}
		req := &discovery.RegisterServiceRequest{Instance: discovery.Instance{Node: node, ID: id, Service: svc, Port: 80, User: user}}
		ports.Lock()
		defer ports.Unlock()
		if err := ports.Assign(store, req); err != nil {
			t.Fatal(err)
		}
		if err := store.EnsureService(idx, &req.Instance, nil); err != nil {
			t.Fatal(err)
		}
	}
	step := func(what string, wantApply bool, wantRules ...string) {
		t.Helper()
		applied, err := r.reconcile(ctx, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if applied != wantApply {
			t.Fatalf("%s: applied = %v, want %v", what, applied, wantApply)
		}
		var got []string
		for _, l := range strings.Split(f.State(), "\n") {
			if strings.Contains(l, "--uid-owner") && strings.Contains(l, "VMESH_REDIRECT") {
				got = append(got, l)
			}
		}
		if strings.Join(got, "\n") != strings.Join(wantRules, "\n") {
			t.Fatalf("%s: user rules\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(wantRules, "\n"))
		}
	}
	rule := func(uid, port int, svc string) string {
		return fmt.Sprintf(`-A VMESH_REDIRECT -p tcp -m owner --uid-owner %d -m comment --comment "vmesh: user of %s" -j REDIRECT --to-ports %d`, uid, svc, port)
	}
	step("no users", true)
	register("n1", "web-1", "web", "")
	register("n2", "far-1", "far", "alice") // another node's user: not ours
	step("no users of ours", false)
	register("n1", "billing-1", "Billing", "alice")
	step("alice", true, rule(2001, 15100, "billing"))
	register("n1", "orders-1", "orders", "bob")
	register("n1", "orders-2", "orders", "bob")
	step("bob after alice", true, rule(2001, 15100, "billing"), rule(2002, 15101, "orders"))
	register("n1", "ghost-1", "ghost", "ghost")     // not on this host
	register("n1", "backup-1", "backups", "backup") // in exclude_uids
	step("unknown and excluded users get no rule", false, rule(2001, 15100, "billing"), rule(2002, 15101, "orders"))
	idx++
	if err := store.DeleteService(idx, "n1", "billing-1"); err != nil {
		t.Fatal(err)
	}
	// bob keeps 15101: a user's port is stored when its instance is
	// registered and never passes to another user while it exists (until
	// this change, bob moved down to 15100, where the proxy could still
	// hold alice's listener when bob's new rule applied). The xDS server
	// reads the same ports from the same catalog.
	step("alice gone", true, rule(2002, 15101, "orders"))
	_, insts, _ := store.NodeInstances(nil, "n1")
	if got := r.ports.UserPorts("n1", insts); len(got) != 3 || got[0] != (xds.UserPort{User: "bob", Service: "orders", Port: 15101}) {
		t.Errorf("the xDS side's ports: %v", got)
	}
	// A new user takes the lowest free port: alice's.
	register("n1", "reports-1", "reports", "carol")
	step("carol", true, rule(2002, 15101, "orders"), rule(2003, 15100, "reports"))
}

// A service file whose user is in exclude_uids is refused before capture
// touches anything, naming the file.
func TestCaptureFileUsers(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.hcl", `service { name = "billing"  user = "nobody"  port = 80 }`)
	cfg := config.DefaultConfig()
	cfg.NodeName, cfg.ServicesDir = "n1", dir
	cfg.Capture.Enabled = true
	d, err := cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: cfg}
	files, err := a.desiredServices()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.checkFileUsers(d, files); err != nil {
		t.Fatalf("a valid user: %v", err)
	}
	cfg.Capture.ExcludeUIDs = []string{"nobody"}
	a = &Agent{cfg: cfg}
	d, err = cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	err = a.checkFileUsers(d, files)
	for _, want := range []string{filepath.Join(dir, "a.hcl"), `service "billing": user: "nobody" (UID 65534) is also in capture.exclude_uids`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one containing %q", err, want)
		}
	}
}
