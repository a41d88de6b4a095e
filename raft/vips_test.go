package raft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

func TestNextVIP(t *testing.T) {
	addrs := func(ss ...string) map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		for _, s := range ss {
			m[netip.MustParseAddr(s)] = true
		}
		return m
	}
	tests := []struct {
		name   string
		prefix string
		used   map[netip.Addr]bool
		from   string
		want   string // "" for an error
		err    error
	}{
		{"default range starts after the network address", "240.0.0.0/4", nil, "", "240.0.0.1", nil},
		{"lowest free", "240.0.0.0/4", addrs("240.0.0.1", "240.0.0.3"), "", "240.0.0.2", nil},
		{"from a cursor", "240.0.0.0/4", addrs("240.0.0.1"), "240.0.1.0", "240.0.1.0", nil},
		{"unmasked prefix", "10.99.3.7/24", nil, "", "10.99.3.1", nil},
		{"carries across octets", "10.0.0.0/16", nil, "10.0.0.255", "10.0.0.255", nil},
		{"/30 has two usable", "10.0.0.0/30", addrs("10.0.0.1"), "", "10.0.0.2", nil},
		{"/30 exhausted (no broadcast)", "10.0.0.0/30", addrs("10.0.0.1", "10.0.0.2"), "", "", ErrVIPRangeExhausted},
		{"/31 uses both", "10.0.0.0/31", addrs("10.0.0.0"), "", "10.0.0.1", nil},
		{"/32 is one address", "10.0.0.9/32", nil, "", "10.0.0.9", nil},
		{"/32 taken", "10.0.0.9/32", addrs("10.0.0.9"), "", "", ErrVIPRangeExhausted},
		{"top of the IPv4 space", "255.255.255.252/30", addrs("255.255.255.253"), "", "255.255.255.254", nil},
		{"IPv6 refused", "fd00::/64", nil, "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var from netip.Addr
			if tt.from != "" {
				from = netip.MustParseAddr(tt.from)
			}
			got, err := nextVIP(netip.MustParsePrefix(tt.prefix), tt.used, from)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("nextVIP = %s, want an error", got)
				}
				if tt.err != nil && !errors.Is(err, tt.err) {
					t.Fatalf("nextVIP error %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("nextVIP = %s, %v, want %s", got, err, tt.want)
			}
		})
	}
}

func registerSvc(t *testing.T, s *Server, node, id, service string) {
	t.Helper()
	if _, err := s.Apply(context.Background(), discovery.RegisterServiceRequest{
		Instance: discovery.Instance{Node: node, ID: id, Service: service, Port: 8080}}); err != nil {
		t.Fatal(err)
	}
}

func vipMap(t *testing.T, st *discovery.Store) map[string]string {
	t.Helper()
	_, vips, err := st.VIPs(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, v := range vips {
		m[v.Service] = v.IP
	}
	return m
}

// TestVIPAllocation: the leader gives each service one VIP, lowest first;
// case-insensitive names share one; a VIP stays with its service through
// deregistration, a restart from the log and a restore from a snapshot,
// and is never handed to another service.
func TestVIPAllocation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := netip.MustParsePrefix("240.0.0.0/4")
	store := discovery.NewStore()
	s := openServer(t, dir, store, serverOpts{trailingLogs: 1})
	defer func() { s.Close() }()
	hurryElection(t, s)
	waitLeader(t, s)
	if _, err := s.Apply(ctx, nodeCmd("n1")); err != nil {
		t.Fatal(err)
	}
	registerSvc(t, s, "n1", "web1", "web")
	registerSvc(t, s, "n1", "web2", "WEB")
	registerSvc(t, s, "n1", "db1", "db")
	if n, err := s.allocateVIPs(ctx, nil, p); err != nil || n != 2 {
		t.Fatalf("allocateVIPs = %d, %v, want 2 new", n, err)
	}
	want := map[string]string{"db": "240.0.0.1", "web": "240.0.0.2"}
	if got := vipMap(t, store); !reflect.DeepEqual(got, want) {
		t.Fatalf("VIPs = %v, want %v", got, want)
	}
	if n, err := s.allocateVIPs(ctx, nil, p); err != nil || n != 0 {
		t.Fatalf("second allocateVIPs = %d, %v, want nothing new", n, err)
	}

	// db goes away: its VIP is kept, and the next service gets a new one.
	if _, err := s.Apply(ctx, discovery.DeregisterServiceRequest{Node: "n1", ServiceID: "db1"}); err != nil {
		t.Fatal(err)
	}
	registerSvc(t, s, "n1", "api1", "api")
	if _, err := s.allocateVIPs(ctx, nil, p); err != nil {
		t.Fatal(err)
	}
	want["api"] = "240.0.0.3"
	if got := vipMap(t, store); !reflect.DeepEqual(got, want) {
		t.Fatalf("VIPs after db left = %v, want %v", got, want)
	}

	// Restart from the log, then from a snapshot (TrailingLogs 1 drops the
	// log it covers): the same VIPs.
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart snapshot=%v", snapshot), func(t *testing.T) {
			if snapshot {
				if _, err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			store = discovery.NewStore()
			s = openServer(t, dir, store, serverOpts{trailingLogs: 1})
			hurryElection(t, s)
			waitLeader(t, s)
			if got := vipMap(t, store); !reflect.DeepEqual(got, want) {
				t.Fatalf("VIPs after restart = %v, want %v", got, want)
			}
			if n, err := s.allocateVIPs(ctx, nil, p); err != nil || n != 0 {
				t.Fatalf("allocateVIPs after restart = %d, %v, want nothing new", n, err)
			}
		})
	}

	// The FSM refuses a second service on an address and a second address
	// for a service, whoever sends it.
	for _, req := range []discovery.VIPRequest{
		{Op: discovery.VIPAllocate, Service: "other", IP: "240.0.0.1"},
		{Op: discovery.VIPAllocate, Service: "Web", IP: "240.0.0.9"},
	} {
		if _, err := s.Apply(ctx, req); !errors.Is(err, discovery.ErrVIPTaken) {
			t.Errorf("Apply(%+v) = %v, want ErrVIPTaken", req, err)
		}
	}
}

func TestVIPRangeExhausted(t *testing.T) {
	ctx := context.Background()
	store := discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	if _, err := s.Apply(ctx, nodeCmd("n1")); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"a", "b", "c"} {
		registerSvc(t, s, "n1", svc+"1", svc)
	}
	n, err := s.allocateVIPs(ctx, nil, netip.MustParsePrefix("10.0.0.0/30"))
	if n != 2 || !errors.Is(err, ErrVIPRangeExhausted) {
		t.Fatalf("allocateVIPs = %d, %v, want 2 and ErrVIPRangeExhausted", n, err)
	}
	want := map[string]string{"a": "10.0.0.1", "b": "10.0.0.2"}
	if got := vipMap(t, store); !reflect.DeepEqual(got, want) {
		t.Fatalf("VIPs = %v, want %v", got, want)
	}
}

// TestVIPLoop: the loop allocates as services appear, without a nudge.
func TestVIPLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	store := discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	wait := s.startVIPs(ctx)
	defer func() { cancel(); wait() }()
	if _, err := s.Apply(ctx, nodeCmd("n1")); err != nil {
		t.Fatal(err)
	}
	for i, svc := range []string{"orders", "billing"} {
		registerSvc(t, s, "n1", svc+"1", svc)
		deadline := time.Now().Add(5 * time.Second)
		for len(vipMap(t, store)) != i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("no VIP for %s: %v", svc, vipMap(t, store))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	want := map[string]string{"orders": "240.0.0.1", "billing": "240.0.0.2"}
	if got := vipMap(t, store); !reflect.DeepEqual(got, want) {
		t.Fatalf("VIPs = %v, want %v", got, want)
	}
}

func TestFSMVIPSnapshotRoundTrip(t *testing.T) {
	src := discovery.NewStore()
	f := &fsm{store: src, logger: testkit.Logger(t)}
	for i, req := range []discovery.VIPRequest{
		{Op: discovery.VIPAllocate, Service: "web", IP: "240.0.0.1"},
		{Op: discovery.VIPAllocate, Service: "db", IP: "240.0.0.2"},
		{Op: discovery.VIPAllocate, Service: "gone", IP: "240.0.0.3"},
		{Op: discovery.VIPFree, Service: "gone"},
	} {
		if resp := f.Apply(commandLog(t, uint64(i+1), req)); resp != nil {
			t.Fatalf("Apply(%+v) = %v", req, resp)
		}
	}
	dst := &fsm{store: discovery.NewStore(), logger: testkit.Logger(t)}
	if err := dst.Restore(io.NopCloser(bytes.NewReader(persist(t, src)))); err != nil {
		t.Fatal(err)
	}
	want, got := records(t, src), records(t, dst.store)
	n := 0
	for _, r := range want {
		if r.Type == discovery.RecordVIP {
			n++
		}
	}
	if n != 2 || !reflect.DeepEqual(got, want) {
		t.Fatalf("restored records (%d VIPs in source):\n got %+v\nwant %+v", n, got, want)
	}
	gi, gv, _ := dst.store.VIPs(nil)
	wi, wv, _ := src.VIPs(nil)
	if gi != 4 || gi != wi || !reflect.DeepEqual(gv, wv) {
		t.Errorf("restored VIPs %d %+v, source %d %+v", gi, gv, wi, wv)
	}
	// The restored unique index still guards addresses.
	if err := dst.store.VIPApply(5, discovery.VIPAllocate, "new", "240.0.0.2"); !errors.Is(err, discovery.ErrVIPTaken) {
		t.Errorf("allocating a restored address again = %v, want ErrVIPTaken", err)
	}
}
