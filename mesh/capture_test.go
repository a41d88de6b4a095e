package mesh

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh/config"
)

// newTestCapture is a reconciler of the default capture config over fake
// iptables and links, with node n1's view of store as its input.
func newTestCapture(t *testing.T, lookup func(string) (uint32, error)) (*iptables.Reconciler, *iptables.Fake, *iptables.FakeLinks, *discovery.Store) {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.Capture.Enabled = true
	d, err := cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	f, links, store := iptables.NewFake("nft"), iptables.NewFakeLinks(), discovery.NewStore()
	c := iptables.New(f, iptables.Options{Links: links, Logger: testkit.Logger(t)})
	r := iptables.NewReconciler(c, links, d, lookup, testkit.Logger(t))
	r.Interval = time.Hour
	return r, f, links, store
}

// viewTargets is what capture steers for node in store's view, read the
// way the agent's xDS server reads it.
func viewTargets(t *testing.T, store *discovery.Store, opts xds.Options, node string) iptables.Targets {
	t.Helper()
	st, err := store.MeshState(nil)
	if err != nil {
		t.Fatal(err)
	}
	return captureTargets(xds.NewView(st, opts), node, false)
}

// The capture loop follows the xDS server's views: a VIP the catalog
// allocates reaches vmesh0 without waiting for the drift timer, a freed
// one leaves it, and the loop stops with its context.
func TestCaptureFollowsViews(t *testing.T) {
	r, _, links, store := newTestCapture(t, discovery.LookupUser)
	r.MinGap = 10 * time.Millisecond
	srv, err := xds.NewServer(xds.Config{Store: store, TCPAddr: "127.0.0.1:0", Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	views := srv.Watch()
	view := <-views
	first := captureTargets(view, "n1", false)
	if _, err := r.Reconcile(ctx, first); err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultConfig()
	cfg.NodeName = "n1"
	a := &Agent{cfg: cfg, capture: r, logger: testkit.Logger(t)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.followViews(ctx, first, view, nil, views)
	}()
	store.VIPApply(5, discovery.VIPAllocate, "db", "240.0.0.9")
	testkit.WaitFor(t, 5*time.Second, "the VIP on vmesh0", func() bool { return links.State() == "vmesh0 up 240.0.0.9/32" })
	store.VIPApply(6, discovery.VIPFree, "db", "")
	testkit.WaitFor(t, 5*time.Second, "the VIP gone from vmesh0", func() bool { return links.State() == "vmesh0 up" })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the capture loop did not stop")
	}
	if n := r.Applies(); n != 3 {
		t.Errorf("%d applies, want 3 (start, add, free)", n)
	}
}

// Per-user redirects follow the node's instances: a user a local service
// names gets an owner-match rule to its port (the port the xDS server
// gives it), applied when it appears and removed when it goes; a user the
// host does not know, or one in exclude_uids, gets none.
func TestCaptureUsers(t *testing.T) {
	ctx := context.Background()
	cfg := config.DefaultConfig()
	opts := cfg.UserPortOptions(xds.Options{})
	uids := map[string]uint32{"alice": 2001, "bob": 2002, "carol": 2003, "backup": 34}
	lookup := func(u string) (uint32, error) {
		if uid, ok := uids[u]; ok {
			return uid, nil
		}
		return 0, fmt.Errorf("%q is not a user on this host", u)
	}
	cfg.Capture.Enabled = true
	cfg.Capture.ExcludeUIDs = []string{"34"}
	d, err := cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	f, links, store := iptables.NewFake("nft"), iptables.NewFakeLinks(), discovery.NewStore()
	r := iptables.NewReconciler(iptables.New(f, iptables.Options{Links: links}), links, d, lookup, testkit.Logger(t))
	if err := store.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	idx := uint64(1)
	// Registered as the agent registers: the user's port is chosen then
	// (with the policy of the same options) and stored on the instance.
	ports := &discovery.UserPortAllocator{Policy: opts.UserPortPolicy()}
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
		applied, err := r.Reconcile(ctx, viewTargets(t, store, opts, "n1"))
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
	if got := opts.UserPorts("n1", insts); len(got) != 3 || got[0] != (xds.UserPort{User: "bob", Service: "orders", Port: 15101}) {
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
	testkit.WriteFile(t, dir, "a.hcl", `service { name = "billing"  user = "nobody"  port = 80 }`)
	cfg := config.DefaultConfig()
	cfg.NodeName, cfg.ServicesDir = "n1", dir
	cfg.Capture.Enabled = true
	d, err := cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: cfg}
	a.xdsOpts = a.xdsOptions()
	files, err := a.desiredServices()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.checkFileUsers(d, files); err != nil {
		t.Fatalf("a valid user: %v", err)
	}
	cfg.Capture.ExcludeUIDs = []string{"nobody"}
	a = &Agent{cfg: cfg}
	a.xdsOpts = a.xdsOptions()
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

// fakeListeners is the in-process proxy as capture sees it: a set of
// bound listener names and a channel closed when it changes.
type fakeListeners struct {
	mu      sync.Mutex
	bound   map[string]net.Addr
	changed chan struct{}
}

func (f *fakeListeners) ListenerAddrs() map[string]net.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.bound)
}

func (f *fakeListeners) ListenersChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeListeners) set(name string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.bound[name] = &net.TCPAddr{Port: 15006}
	} else {
		delete(f.bound, name)
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// inbound_ports are redirected only while the proxy has the inbound
// capture listener bound: the capture loop follows the proxy's
// listeners, not only the catalog's views.
func TestCaptureInboundFollowsTheProxy(t *testing.T) {
	cfg := config.DefaultConfig()
	cfg.NodeName = "n1"
	cfg.Capture.Enabled = true
	cfg.Capture.InboundPorts = []int{8080}
	d, err := cfg.CaptureDesired()
	if err != nil {
		t.Fatal(err)
	}
	f, links, store := iptables.NewFake("nft"), iptables.NewFakeLinks(), discovery.NewStore()
	r := iptables.NewReconciler(iptables.New(f, iptables.Options{Links: links}), links, d, discovery.LookupUser, testkit.Logger(t))
	r.Interval, r.MinGap = time.Hour, time.Millisecond
	srv, err := xds.NewServer(xds.Config{Store: store, TCPAddr: "127.0.0.1:0", Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	px := &fakeListeners{bound: map[string]net.Addr{xds.OutboundListener: &net.TCPAddr{Port: 15001}}, changed: make(chan struct{})}
	a := &Agent{cfg: cfg, capture: r, proxy: px, logger: testkit.Logger(t)}
	views := srv.Watch()
	changed := a.listenersChanged()
	view := <-views
	first := captureTargets(view, "n1", a.inboundServing())
	if _, err := r.Reconcile(ctx, first); err != nil {
		t.Fatal(err)
	}
	redirected := func() bool { return strings.Contains(f.State(), "--dport 8080") }
	if redirected() {
		t.Fatalf("8080 redirected before the proxy serves the inbound listener:\n%s", f.State())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.followViews(ctx, first, view, changed, views)
	}()
	px.set(xds.InboundCaptureListener, true)
	testkit.WaitFor(t, 5*time.Second, "8080 redirected once the listener is bound", redirected)
	px.set(xds.InboundCaptureListener, false)
	testkit.WaitFor(t, 5*time.Second, "8080 direct again once the listener is gone", func() bool { return !redirected() })
	cancel()
	<-done
}

// capture.default_service must name a service of the host's service
// files; the error names the key and what the files define.
func TestCaptureDefaultServiceMustBeAFileService(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "a.hcl", `services = [{ name = "Monolith", port = 8080 }, { name = "admin", port = 9090 }]`)
	cfg := config.DefaultConfig()
	cfg.NodeName, cfg.ServicesDir = "n1", dir
	for _, c := range []struct{ name, want string }{
		{"monolith", ""}, // names are case-insensitive
		{"orders", `capture.default_service: "orders" is not a service registered on this host by its service files (they define: Monolith, admin)`},
	} {
		cfg.Capture.DefaultService = c.name
		a := &Agent{cfg: cfg}
		a.xdsOpts = a.xdsOptions()
		err := a.checkServiceFiles(context.Background())
		var ce *config.Error
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v; want a config error containing %q", c.name, err, c.want)
		}
	}
}
