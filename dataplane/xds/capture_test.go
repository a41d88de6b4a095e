package xds

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// Capture reads a node's targets off the view: every service VIP, sorted
// and once, and only that node's service users with their stored ports.
func TestViewCapture(t *testing.T) {
	st := newTestStore(t)
	st.write(t, func(idx uint64) error { return st.EnsureNode(idx, node("node-b", "127.0.0.2")) })
	st.register(t, discovery.Instance{ID: "web-1", Service: "web", Port: 8080, User: "alice", UserPort: 15100})
	st.register(t, discovery.Instance{ID: "api-1", Node: "node-b", Service: "api", Port: 9090, User: "bob", UserPort: 15100})
	st.write(t, func(idx uint64) error { return st.VIPApply(idx, discovery.VIPAllocate, "web", "240.0.0.9") })
	st.write(t, func(idx uint64) error { return st.VIPApply(idx, discovery.VIPAllocate, "api", "240.0.0.2") })

	ms, err := st.MeshState(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := NewView(ms, Options{}).Capture("node-a")
	want := []netip.Addr{netip.MustParseAddr("240.0.0.2"), netip.MustParseAddr("240.0.0.9")}
	if !slices.Equal(got.VIPs, want) {
		t.Errorf("VIPs = %v, want %v", got.VIPs, want)
	}
	if len(got.Users) != 1 || got.Users[0] != (UserPort{User: "alice", Service: "web", Port: 15100}) {
		t.Errorf("Users = %+v, want only alice on 15100 (bob is node-b's)", got.Users)
	}
	if got.Index != ms.Index {
		t.Errorf("Index = %d, want the view's %d", got.Index, ms.Index)
	}
}

// Watch hands out the current view at once, then the newest view after a
// catalog change; a reader that does not keep up skips to the newest.
func TestServerWatch(t *testing.T) {
	st := newTestStore(t)
	srv, _ := startServer(t, st.Store)
	ch := srv.Watch()
	first := <-ch
	st.write(t, func(idx uint64) error { return st.VIPApply(idx, discovery.VIPAllocate, "db", "240.0.0.5") })
	idx := st.write(t, func(idx uint64) error { return st.VIPApply(idx, discovery.VIPAllocate, "db2", "240.0.0.6") })
	deadline := time.After(10 * time.Second)
	for {
		select {
		case v := <-ch:
			if v.Index < first.Index {
				t.Fatalf("view went back from %d to %d", first.Index, v.Index)
			}
			if v.Index == idx {
				if n := len(v.Capture("node-a").VIPs); n != 2 {
					t.Fatalf("newest view has %d VIPs, want 2", n)
				}
				return
			}
		case <-deadline:
			t.Fatalf("no view at index %d", idx)
		}
	}
}
