package xds

import (
	"math/rand/v2"
	"slices"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
)

// usersCatalog: node-a runs bob-app (user bob, registered first, two
// instances), alice-app (user alice) and web (no user; an upstream on
// 15100). node-b runs target (tcp) and orders (http), each with a VIP, and
// carol-app whose user is node-b's business.
func usersCatalog() *catalog {
	return threeNodes().
		add(discovery.Instance{Node: "node-a", ID: "bob-1", Service: "bob-app", Port: 7001, User: "bob", CreateIndex: 3}, "").
		add(discovery.Instance{Node: "node-a", ID: "bob-2", Service: "bob-app", Port: 7002, User: "bob", CreateIndex: 9}, "").
		add(discovery.Instance{Node: "node-a", ID: "alice-1", Service: "alice-app", Port: 7003, User: "alice", CreateIndex: 5}, "").
		add(discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 8080, CreateIndex: 4,
			Upstreams: []discovery.Upstream{{DestinationName: "target", LocalBindAddress: "127.0.0.1", LocalBindPort: 15100}}}, "").
		add(discovery.Instance{Node: "node-b", ID: "target-1", Service: "target", Port: 9000}, "").
		add(discovery.Instance{Node: "node-b", ID: "orders-1", Service: "orders", Port: 8080, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-b", ID: "carol-1", Service: "carol-app", Port: 7004, User: "carol", CreateIndex: 1}, "")
}

// userFixtures are the golden fixtures of per-user outbound listeners,
// appended to fixtures() in build_test.go.
func userFixtures() []fixture {
	return []fixture{{
		name:  "per-user-outbound",
		state: usersCatalog().at(30),
		opts: Options{VIPs: map[string]VIP{
			"target": {IP: "240.0.0.30", Ports: []uint32{9000}},
			"orders": {IP: "240.0.0.31", Ports: []uint32{80, 8080}},
		}},
		check: func(t *testing.T, mesh, app *cache.Snapshot) {
			// bob first (registered first); 15100 is web's upstream.
			bob, alice := UserListenerPrefix+"bob", UserListenerPrefix+"alice"
			wantListeners(t, mesh, OutboundListener, InboundListener, bob, alice, upstreamPrefix+"127.0.0.1:15100")
			wantListeners(t, app)
			for _, c := range []struct {
				name, from string
				port       uint32
			}{{OutboundListener, "", 15001}, {bob, "bob-app", 15101}, {alice, "alice-app", 15102}} {
				l := listenerOf(t, mesh, c.name)
				if got := l.GetAddress().GetSocketAddress(); got.GetAddress() != "127.0.0.1" || got.GetPortValue() != c.port {
					t.Errorf("%s listens on %s:%d, want 127.0.0.1:%d", c.name, got.GetAddress(), got.GetPortValue(), c.port)
				}
				if len(l.GetListenerFilters()) != 1 || l.GetListenerFilters()[0].GetName() != "envoy.filters.listener.original_dst" {
					t.Errorf("%s: listener filters %v, want original_dst", c.name, l.GetListenerFilters())
				}
				chains := map[string]string{}
				for _, fc := range l.GetFilterChains() {
					chains[fc.GetName()] = chainCluster(t, fc)
				}
				want := map[string]string{"outbound/target:9000": "target"}
				if c.from != "" {
					want["outbound/target:9000"] = sourcedName(c.from, "target")
				}
				if got := chains["outbound/target:9000"]; got != want["outbound/target:9000"] {
					t.Errorf("%s: target chain goes to %q, want %q", c.name, got, want["outbound/target:9000"])
				}
				if _, ok := chains["outbound/orders:80"]; !ok {
					t.Errorf("%s: no chain for orders' VIP on port 80: %v", c.name, chains)
				}
				if got := l.GetDefaultFilterChain().GetName(); got != "passthrough" {
					t.Errorf("%s: default chain %q, want passthrough", c.name, got)
				}
			}
			wantClientCert(t, mesh, sourcedName("bob-app", "target"), ServiceSecret("bob-app"), "target")
			wantClientCert(t, mesh, sourcedName("alice-app", "target"), ServiceSecret("alice-app"), "target")
			wantClientCert(t, mesh, "target", SecretNodeCert, "")
			// orders is HTTP: each identity has its own route, whose
			// clusters present it.
			wantRoutes(t, mesh, "orders", sourcedName("bob-app", "orders"), sourcedName("alice-app", "orders"))
			wantClientCert(t, mesh, sourcedName("alice-app", "orders"), ServiceSecret("alice-app"), "orders")
		},
	}}
}

func listenerOf(t *testing.T, s *cache.Snapshot, name string) *listener.Listener {
	t.Helper()
	l, ok := s.GetResources(resource.ListenerType)[name].(*listener.Listener)
	if !ok {
		t.Fatalf("no listener %q", name)
	}
	return l
}

// chainCluster is the cluster a tcp_proxy chain sends to, or "http" for
// an HTTP connection manager.
func chainCluster(t *testing.T, fc *listener.FilterChain) string {
	t.Helper()
	for _, f := range fc.GetFilters() {
		switch f.GetName() {
		case "envoy.filters.network.tcp_proxy":
			var p tcp.TcpProxy
			if err := f.GetTypedConfig().UnmarshalTo(&p); err != nil {
				t.Fatal(err)
			}
			return p.GetCluster()
		case "envoy.filters.network.http_connection_manager":
			return "http"
		}
	}
	return ""
}

func up(user, svc string, port int) UserPort { return UserPort{User: user, Service: svc, Port: port} }

func TestUserPorts(t *testing.T) {
	in := func(node, id, svc, user string, idx uint64, ups ...int) *discovery.Instance {
		i := &discovery.Instance{Node: node, ID: id, Service: svc, User: user, CreateIndex: idx}
		for _, p := range ups {
			i.Upstreams = append(i.Upstreams, discovery.Upstream{DestinationName: "x", LocalBindPort: p})
		}
		return i
	}
	stored := func(i *discovery.Instance, port int) *discovery.Instance { i.UserPort = port; return i }
	cases := []struct {
		name  string
		opts  Options
		insts []*discovery.Instance
		want  []UserPort
	}{
		{name: "none", insts: []*discovery.Instance{in("n1", "web-1", "web", "", 1)}},
		{
			name:  "registration order, then name",
			insts: []*discovery.Instance{in("n1", "b", "B-App", "bob", 7), in("n1", "a", "a-app", "alice", 9), in("n1", "c", "c-app", "carol", 7)},
			want:  []UserPort{up("bob", "b-app", 15100), up("carol", "c-app", 15101), up("alice", "a-app", 15102)},
		},
		{
			name:  "other nodes are not ours",
			insts: []*discovery.Instance{in("n2", "b", "b-app", "bob", 1), in("n1", "a", "a-app", "alice", 9)},
			want:  []UserPort{up("alice", "a-app", 15100)},
		},
		{
			name:  "two instances, one user",
			insts: []*discovery.Instance{in("n1", "w1", "web", "www", 5), in("n1", "w2", "web", "www", 2)},
			want:  []UserPort{up("www", "web", 15100)},
		},
		{
			name:  "a user claimed by two services belongs to the first registered",
			insts: []*discovery.Instance{in("n1", "x", "xx", "u", 8), in("n1", "y", "yy", "u", 4)},
			want:  []UserPort{up("u", "yy", 15100)},
		},
		{
			name:  "reserved, upstream and own ports are skipped",
			opts:  Options{UserPortBase: 15440, ReservedPorts: []int{15441}},
			insts: []*discovery.Instance{in("n1", "a", "a", "ua", 1, 15440), in("n1", "b", "b", "ub", 2), in("n1", "c", "c", "uc", 3)},
			want:  []UserPort{up("ua", "a", 15442), up("ub", "b", 15444), up("uc", "c", 15445)}, // 15443: the mesh port
		},
		{
			name:  "stored ports are kept, gaps and all",
			insts: []*discovery.Instance{stored(in("n1", "a", "a", "ua", 1), 15101), stored(in("n1", "b", "b", "ub", 2), 15103)},
			want:  []UserPort{up("ua", "a", 15101), up("ub", "b", 15103)},
		},
		{
			name:  "users without a stored port come after the stored ones",
			insts: []*discovery.Instance{in("n1", "a", "a", "ua", 1), stored(in("n1", "b", "b", "ub", 2), 15100), in("n1", "c", "c", "uc", 3)},
			want:  []UserPort{up("ua", "a", 15101), up("ub", "b", 15100), up("uc", "c", 15102)},
		},
		{
			name:  "of two users storing one port, the first registered keeps it",
			insts: []*discovery.Instance{stored(in("n1", "b", "b", "ub", 2), 15100), stored(in("n1", "a", "a", "ua", 1), 15100)},
			want:  []UserPort{up("ua", "a", 15100), up("ub", "b", 15101)},
		},
		{
			name:  "a user's earliest stored port counts",
			insts: []*discovery.Instance{stored(in("n1", "w2", "web", "www", 5), 15107), stored(in("n1", "w1", "web", "www", 2), 15105)},
			want:  []UserPort{up("www", "web", 15105)},
		},
		{
			name:  "a stored port now reserved or bound by an upstream is not used",
			opts:  Options{ReservedPorts: []int{15100}},
			insts: []*discovery.Instance{stored(in("n1", "a", "a", "ua", 1), 15100), stored(in("n1", "b", "b", "ub", 2), 15101), in("n1", "w", "w", "", 3, 15101)},
			want:  []UserPort{up("ua", "a", 15102), up("ub", "b", 15103)},
		},
		{
			name:  "a second service's stored port does not make it the user's",
			insts: []*discovery.Instance{stored(in("n1", "x", "xx", "u", 8), 15104), in("n1", "y", "yy", "u", 4)},
			want:  []UserPort{up("u", "yy", 15100)},
		},
		{
			name:  "the port range ends",
			opts:  Options{UserPortBase: 65535},
			insts: []*discovery.Instance{in("n1", "a", "a", "ua", 1), in("n1", "b", "b", "ub", 2)},
			want:  []UserPort{up("ua", "a", 65535)},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.opts.UserPorts("n1", c.insts)
			if !slices.Equal(got, c.want) {
				t.Errorf("UserPorts = %v, want %v", got, c.want)
			}
			// Any order of the catalog gives the same ports.
			for range 5 {
				sh := slices.Clone(c.insts)
				rand.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
				if again := c.opts.UserPorts("n1", sh); !slices.Equal(again, got) {
					t.Fatalf("shuffled: %v, want %v", again, got)
				}
			}
		})
	}
	// A user added later does not move the others.
	base := []*discovery.Instance{in("n1", "a", "a", "ua", 1), in("n1", "b", "b", "ub", 5)}
	before := Options{}.UserPorts("n1", base)
	after := Options{}.UserPorts("n1", append(base, in("n1", "c", "c", "aaa-first-by-name", 9)))
	if !slices.Equal(after[:2], before) {
		t.Errorf("adding a user moved the others: %v, then %v", before, after)
	}
}

// TestUserPortsStable: ports assigned at registration stay put when a user
// before them goes (the capture rules and the proxy's listeners update at
// different moments, so a user moving onto a port another user's listener
// still holds could leave with that user's identity), and a freed port is
// given to the next new user.
func TestUserPortsStable(t *testing.T) {
	o := Options{ReservedPorts: []int{15101}}
	ports := &discovery.UserPortAllocator{Policy: o.UserPortPolicy()}
	st := discovery.NewStore()
	if err := st.EnsureNode(1, &discovery.Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	idx := uint64(1)
	register := func(id, svc, user string) {
		t.Helper()
		idx++
		req := &discovery.RegisterServiceRequest{Instance: discovery.Instance{Node: "n1", ID: id, Service: svc, Port: 80, User: user}}
		ports.Lock()
		defer ports.Unlock()
		if err := ports.Assign(st, req); err != nil {
			t.Fatal(err)
		}
		if err := st.EnsureService(idx, &req.Instance, nil); err != nil {
			t.Fatal(err)
		}
	}
	current := func() []UserPort {
		_, insts, err := st.NodeInstances(nil, "n1")
		if err != nil {
			t.Fatal(err)
		}
		return o.UserPorts("n1", insts)
	}
	register("a-1", "a", "alice")
	register("b-1", "b", "bob")
	register("c-1", "c", "carol")
	want := []UserPort{up("alice", "a", 15100), up("bob", "b", 15102), up("carol", "c", 15103)} // 15101 reserved
	if got := current(); !slices.Equal(got, want) {
		t.Fatalf("three users: %v, want %v", got, want)
	}
	idx++
	if err := st.DeleteService(idx, "n1", "a-1"); err != nil {
		t.Fatal(err)
	}
	if got := current(); !slices.Equal(got, want[1:]) {
		t.Errorf("after alice left: %v, want bob and carol where they were: %v", got, want[1:])
	}
	// Re-registering keeps a port; a new user takes the lowest free one.
	register("c-1", "c", "carol")
	register("d-1", "d", "dave")
	want = []UserPort{up("bob", "b", 15102), up("carol", "c", 15103), up("dave", "d", 15100)}
	if got := current(); !slices.Equal(got, want) {
		t.Errorf("carol re-registered, dave added: %v, want %v", got, want)
	}
}
