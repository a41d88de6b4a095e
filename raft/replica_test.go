package raft

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// ---- a cluster of real servers on loopback, with real certificates ----

type testCluster struct {
	t       testing.TB
	ca      *CA
	servers []*Server
}

func testIdentity(t testing.TB, ca *CA, name string) *Identity {
	t.Helper()
	key, csr, err := newNodeKey(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, err := newIdentity(ca.Cert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// newTestCluster starts n servers: the first bootstraps and stores the CA,
// the others are recorded in the catalog, as a join does, and add
// themselves with AddSelf.
func newTestCluster(t testing.TB, n int, sc StreamConfig) *testCluster {
	t.Helper()
	ca, err := NewCA(idTestTD)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ca: ca}
	for i := range n {
		name := fmt.Sprintf("server-%d", i+1)
		cc := &ClusterConfig{Identity: testIdentity(t, ca, name), Bind: "127.0.0.1:0"}
		if i == 0 {
			cc.LocalCA = ca
		}
		s, err := Open(Config{
			NodeID: name + "-id", Addr: "127.0.0.1:0", DataDir: t.TempDir(), Bootstrap: i == 0,
			Cluster: cc, Stream: sc, Logger: testkit.Logger(t).With("node", name),
		}, discovery.NewStore())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		c.servers = append(c.servers, s)
		if i == 0 {
			if tt, ok := t.(*testing.T); ok {
				hurryElection(tt, s)
			}
			c.waitLeader(s)
			// The CA is in raft once the leader loop stored it.
			testkit.WaitFor(t, 10*time.Second, "the CA in raft", func() bool {
				_, root, _ := s.store.CA(nil)
				return root != nil
			})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// As a join records it: the leader admits to raft only a node the
		// catalog knows under the name its certificate carries.
		if _, err := c.servers[0].Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: name + "-id", Name: name, Address: "127.0.0.1"}}); err != nil {
			cancel()
			t.Fatal(err)
		}
		_, err = s.AddSelf(ctx, c.servers[0].Addr())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.waitLeader(s)
	}
	return c
}

func (c *testCluster) waitLeader(s *Server) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.WaitLeader(ctx); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testCluster) leader() *Server {
	c.t.Helper()
	var l *Server
	testkit.WaitFor(c.t, 20*time.Second, "a leader", func() bool {
		for _, s := range c.servers {
			select {
			case <-s.done:
				continue
			default:
			}
			if s.IsLeader() {
				l = s
				return true
			}
		}
		return false
	})
	return l
}

func (c *testCluster) followers() []*Server {
	l := c.leader()
	var out []*Server
	for _, s := range c.servers {
		if s != l {
			out = append(out, s)
		}
	}
	return out
}

func (c *testCluster) apply(cmd discovery.Command) uint64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idx, err := c.leader().Apply(ctx, cmd)
	if err != nil {
		c.t.Fatalf("applying %T: %v", cmd, err)
	}
	return idx
}

// startReplica runs a replica of a client node against addrs until the
// test ends.
func (c *testCluster) startReplica(t testing.TB, name string, addrs ...string) (*Replica, func()) {
	t.Helper()
	r, err := NewReplica(ReplicaConfig{
		Identity: testIdentity(t, c.ca, name), Servers: addrs, MaxBackoff: 500 * time.Millisecond,
		Logger: testkit.Logger(t).With("replica", name),
	}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	return r, runReplica(t, r)
}

// runReplica runs r until the returned stop is called (or the test ends).
func runReplica(t testing.TB, r *Replica) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitIndex(t testing.TB, r *Replica, idx uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitIndex(ctx, idx); err != nil {
		t.Fatal(err)
	}
}

// replicaView is what a replica must hold: the server's catalog through
// discovery.ReplicaRecord.
func replicaView(t testing.TB, s *discovery.Store) []record {
	t.Helper()
	var out []record
	for _, r := range records(t, s) {
		if rec, ok := discovery.ReplicaRecord(r.Type, r.Rec); ok {
			out = append(out, record{r.Type, rec})
		}
	}
	return out
}

// sameView waits until the replica holds the server's replicated view:
// the leader keeps writing (node liveness checks), so the two are compared
// once they settle at the same index.
func sameView(t testing.TB, server *Server, r *Replica) {
	t.Helper()
	var want, got []record
	if !testkit.Eventually(20*time.Second, func() bool {
		want, got = replicaView(t, server.store), records(t, r.Store())
		return reflect.DeepEqual(want, got)
	}) {
		t.Fatalf("replica differs from the server's replicated view:\nserver:  %s\nreplica: %s", dumpRecords(want), dumpRecords(got))
	}
}

func dumpRecords(rs []record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n  %d %+v", r.Type, r.Rec)
	}
	return b.String()
}

func registerNode(name string) discovery.Command {
	return discovery.RegisterNodeRequest{Node: discovery.Node{ID: name + "-id", Name: name, Address: "10.0.0.1"}}
}

func registerService(node, id, service string) discovery.Command {
	return discovery.RegisterServiceRequest{
		Instance: discovery.Instance{Node: node, ID: id, Service: service, Port: 8080},
		Checks:   []*discovery.Check{{Node: node, CheckID: "chk-" + id, Name: "up", Status: discovery.HealthPassing}},
	}
}

// ---- tests ----

// A replica loads the state, follows changes at the same indexes, serves a
// blocking read that wakes on a change, and never holds KV, join tokens or
// the CA key.
func TestReplicaFollowsAndFilters(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{})
	c.apply(registerNode("web-host"))
	c.apply(registerService("web-host", "web-1", "web"))
	c.apply(kvCmd("app/secret", "hunter2"))
	if _, _, err := c.leader().CreateToken(context.Background(), time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	last := c.apply(discovery.IntentionRequest{Op: discovery.IntentionUpsert, Intention: discovery.Intention{
		ID: "ixn-1", SourceName: "web", DestinationName: "db", Action: discovery.IntentionActionAllow}})

	f := c.followers()[0]
	r, _ := c.startReplica(t, "client-1", f.Addr())
	waitIndex(t, r, last)
	if err := f.waitApplied(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	sameView(t, f, r)
	if r.Snapshots() != 1 {
		t.Fatalf("snapshots loaded = %d, want 1", r.Snapshots())
	}

	// A blocking read on the replica wakes on a registration made on the
	// leader, with the leader's index.
	idx, _, err := r.Store().ServiceNodes(nil, "api", nil)
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan uint64, 1)
	go func() {
		var got uint64
		r.Store().Blocking(context.Background(), idx, func(ws memdb.WatchSet) (uint64, error) {
			i, _, err := r.Store().ServiceNodes(ws, "api", nil)
			got = i
			return i, err
		})
		woke <- got
	}()
	c.apply(registerNode("api-host"))
	regIdx := c.apply(registerService("api-host", "api-1", "api"))
	select {
	case got := <-woke:
		if got < regIdx-1 || got == idx {
			t.Fatalf("blocking read woke at index %d, want the registration's (%d)", got, regIdx)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a blocking read on the replica did not wake on a registration")
	}
	waitIndex(t, r, regIdx)
	_, inst, err := r.Store().Instance(nil, "api-host", "api-1")
	if err != nil || inst == nil {
		t.Fatalf("replica: instance api-1 = %v, %v", inst, err)
	}
	_, lead, _ := c.leader().store.Instance(nil, "api-host", "api-1")
	if inst.ModifyIndex != regIdx || lead.ModifyIndex != regIdx {
		t.Fatalf("ModifyIndex: replica %d, leader %d, want the raft index %d", inst.ModifyIndex, lead.ModifyIndex, regIdx)
	}

	// Secrets and KV written while the replica follows never reach it.
	c.apply(kvCmd("app/other", "x"))
	if _, _, err := c.leader().CreateToken(context.Background(), time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	end := c.apply(registerNode("late-host"))
	waitIndex(t, r, end)
	if _, kv, _ := r.Store().KVList(nil, ""); len(kv) != 0 {
		t.Fatalf("replica holds KV entries: %v", kv)
	}
	if toks, _ := r.Store().Tokens(); len(toks) != 0 {
		t.Fatalf("replica holds join tokens: %v", toks)
	}
	_, root, _ := r.Store().CA(nil)
	_, srvRoot, _ := c.leader().store.CA(nil)
	if root == nil || len(root.SealedKeys) != 0 || len(root.LegacyKeyPEM) != 0 || root.Fingerprint != srvRoot.Fingerprint || len(root.CertPEM) == 0 {
		t.Fatalf("replica CA = %+v; want the cluster's certificate without its key", root)
	}
	if len(srvRoot.SealedKeys) == 0 {
		t.Fatal("the server's CA has no key: the test checks nothing")
	}
	if err := f.waitApplied(context.Background(), end); err != nil {
		t.Fatal(err)
	}
	sameView(t, f, r)
	if r.LastContact().IsZero() {
		t.Fatal("LastContact is zero after a stream")
	}
}

// A replica cut off and reconnected resumes from its index: no snapshot
// while the history covers it, one when it does not.
func TestReplicaResume(t *testing.T) {
	for _, tc := range []struct {
		name          string
		history       int
		wantSnapshots uint64
	}{
		{"history covers the gap", 1024, 1},
		{"history too short", 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 1, StreamConfig{History: tc.history})
			s := c.servers[0]
			c.apply(registerNode("n1"))
			idx := c.apply(registerService("n1", "a", "svc-a"))
			r, stop := c.startReplica(t, "client-1", s.Addr())
			waitIndex(t, r, idx)
			stop()

			// Changes while it is away: more than the short history holds.
			for i := range 10 {
				idx = c.apply(registerService("n1", fmt.Sprintf("b%d", i), "svc-b"))
			}
			idx = c.apply(discovery.DeregisterServiceRequest{Node: "n1", ServiceID: "a"})

			runReplica(t, r)
			waitIndex(t, r, idx)
			sameView(t, s, r)
			if got := r.Snapshots(); got != tc.wantSnapshots {
				t.Fatalf("replica loaded %d snapshots, want %d", got, tc.wantSnapshots)
			}
			st := s.StreamStats()
			if st.Snapshots != tc.wantSnapshots || st.Snapshots+st.Resumes != 2 {
				t.Fatalf("server stream stats %+v, want %d snapshots of 2 subscriptions", st, tc.wantSnapshots)
			}
		})
	}
}

// The replica fails over when the server it follows stops, and resumes on
// another server without a snapshot.
func TestReplicaFailover(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{})
	c.apply(registerNode("n1"))
	idx := c.apply(registerService("n1", "a", "svc-a"))
	fs := c.followers()
	r, _ := c.startReplica(t, "client-1", fs[0].Addr(), fs[1].Addr(), c.leader().Addr())
	waitIndex(t, r, idx)
	if r.Server() != fs[0].Addr() {
		t.Fatalf("replica follows %q, want the first server %q", r.Server(), fs[0].Addr())
	}
	if err := fs[0].Close(); err != nil {
		t.Fatal(err)
	}
	idx = c.apply(registerService("n1", "b", "svc-b"))
	waitIndex(t, r, idx)
	if got := r.Server(); got == fs[0].Addr() || got == "" {
		t.Fatalf("replica follows %q after its server stopped", got)
	}
	if r.Snapshots() != 1 {
		t.Fatalf("replica loaded %d snapshots; a failover within the history needs none", r.Snapshots())
	}
	if err := fs[1].waitApplied(context.Background(), idx); err != nil {
		t.Fatal(err)
	}
	sameView(t, fs[1], r)
}

// A subscriber that stops reading is dropped once it falls behind the
// history; the leader's applies go on meanwhile, and a reading replica
// ends up with everything.
func TestReplicaSlowSubscriberDropped(t *testing.T) {
	c := newTestCluster(t, 1, StreamConfig{History: 32})
	s := c.servers[0]
	c.apply(registerNode("n1"))

	// A subscriber that never reads, with the smallest flow-control window.
	id := testIdentity(t, c.ca, "stuck")
	cc, err := grpc.NewClient(s.Addr(),
		grpc.WithTransportCredentials(credentials.NewTLS(id.clientTLS(alpnRPC))),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := cc.NewStream(context.Background(), &replicaStreamDesc, "/"+rpcService+"/Subscribe")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&SubscribeRequest{}); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	testkit.WaitFor(t, 10*time.Second, "the stuck subscriber registered", func() bool { return s.StreamStats().Subscribers == 1 })

	r, _ := c.startReplica(t, "client-1", s.Addr())
	// Each command is ~4 KiB, so the stuck stream's window fills at once.
	meta := map[string]string{"pad": strings.Repeat("x", 4096)}
	var idx uint64
	for i := range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		idx, err = s.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{
			ID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("node-%d", i), Address: "10.0.0.2", Meta: meta}})
		cancel()
		if err != nil {
			t.Fatalf("apply %d stalled or failed with a stuck subscriber: %v", i, err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the stuck subscriber dropped", func() bool { return s.StreamStats().Dropped >= 1 })

	// The stuck client, reading at last, finds its stream ended by the
	// server with ResourceExhausted after what was buffered.
	for {
		var ev SubscribeEvent
		err := stream.RecvMsg(&ev)
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stuck stream ended with %v, want ResourceExhausted", err)
		}
		break
	}
	waitIndex(t, r, idx)
	sameView(t, s, r)
}

// A replica that started on the only server it knew (a client's join
// address) moves, resuming without a snapshot, to the first server of the
// list once ServerList names more; a Client rotates that list per node.
func TestReplicaMovesWhenMoreServersAreKnown(t *testing.T) {
	c := newTestCluster(t, 3, StreamConfig{KeepAlive: 100 * time.Millisecond})
	idx := c.apply(registerNode("n1"))
	first := c.servers[0].Addr()
	var list atomic.Pointer[[]string]
	one := []string{first}
	list.Store(&one)
	r, err := NewReplica(ReplicaConfig{
		Identity: testIdentity(t, c.ca, "client-1"), Servers: one,
		ServerList: func() []string { return *list.Load() },
		Logger:     testkit.Logger(t),
	}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	runReplica(t, r)
	waitIndex(t, r, idx)
	if r.Server() != first {
		t.Fatalf("replica follows %q, want the only server %q", r.Server(), first)
	}
	more := []string{c.servers[2].Addr(), first, c.servers[1].Addr()}
	list.Store(&more)
	testkit.WaitFor(t, 10*time.Second, "the replica on the first server of the longer list", func() bool { return r.Server() == more[0] })
	idx = c.apply(registerService("n1", "a", "svc-a"))
	waitIndex(t, r, idx)
	if r.Snapshots() != 1 {
		t.Fatalf("replica loaded %d snapshots; moving within the history needs none", r.Snapshots())
	}
	sameView(t, c.servers[2], r)
}

// Clients spread their replica streams: each rotates the sorted server
// list by an offset of its own node ID.
func TestClientReplicaServersRotate(t *testing.T) {
	servers := []string{"10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400"}
	firsts := map[string]int{}
	for i := range 60 {
		c := &Client{cfg: ClientConfig{NodeID: fmt.Sprintf("node-%d", i)}}
		s := slices.Clone(servers)
		c.servers.Store(&s)
		got := c.replicaServers()
		again := c.replicaServers()
		if !slices.Equal(got, again) || len(got) != 3 {
			t.Fatalf("replicaServers for %s: %v, then %v; want one rotation of the 3 servers", c.cfg.NodeID, got, again)
		}
		sorted := slices.Clone(got)
		slices.Sort(sorted)
		if !slices.Equal(sorted, servers) {
			t.Fatalf("replicaServers for %s = %v: not a rotation of %v", c.cfg.NodeID, got, servers)
		}
		firsts[got[0]]++
	}
	for _, s := range servers {
		if firsts[s] < 5 {
			t.Errorf("60 clients start on %v; want each server first for several", firsts)
		}
	}
}
