package raft

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
)

// joinClient joins the cluster at s as a client and runs its Client.
func joinClient(t *testing.T, s *Server, name string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, _, err := s.CreateToken(ctx, time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	id, err := Join(ctx, JoinParams{Addr: s.Addr(), Token: tok, NodeName: name, NodeID: name + "-id", DataDir: t.TempDir(), Role: RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(ClientConfig{Identity: id, NodeID: name + "-id", Addr: "127.0.0.1:1", Servers: []string{s.Addr()},
		HeartbeatInterval: 100 * time.Millisecond, Logger: testkit.Logger(t).With("client", name)}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(func() { c.Close() })
	if err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientRoleAndWrites: the leader records the role a joiner asked for;
// a client writes its own node and services through the leader and reads
// them back from its replica, and is refused another node's services, a
// raft seat, another node's removal and a change of its own role.
func TestClientRoleAndWrites(t *testing.T) {
	s := clusterLeader(t)
	c := joinClient(t, s, "web-01")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if _, n, _, _ := s.store.Node(nil, "web-01"); NodeRole(n) != RoleClient {
		t.Fatalf("web-01 recorded with role %q; want %q", NodeRole(n), RoleClient)
	}

	// Its own node, claiming to be a server: the role stays the leader's.
	if _, err := c.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "web-01-id", Name: "web-01", Address: "127.0.0.1",
		Meta: map[string]string{RoleMetaKey: RoleServer, "rack": "a"}}}); err != nil {
		t.Fatalf("registering its own node: %v", err)
	}
	_, n, _, _ := c.Replica().Store().Node(nil, "web-01")
	if NodeRole(n) != RoleClient || n.Meta["rack"] != "a" {
		t.Errorf("after its own RegisterNode, the replica has web-01 meta %v; want role client kept and rack a", n.Meta)
	}

	// Its own service: read back from its replica at once.
	idx, err := c.Apply(ctx, registerService("web-01", "web-1", "web"))
	if err != nil {
		t.Fatalf("registering its own service: %v", err)
	}
	if c.Replica().LastIndex() < idx {
		t.Errorf("Apply returned at index %d but the replica is at %d", idx, c.Replica().LastIndex())
	}
	if _, inst, _ := c.Replica().Store().Instance(nil, "web-01", "web-1"); inst == nil {
		t.Error("the client's replica does not hold its own service after Apply returned")
	}

	// Another node's service, another node's removal: refused.
	if _, err := c.Apply(ctx, registerService("n1", "evil", "evil")); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("registering a service on n1 from web-01: %v; want ErrPermissionDenied", err)
	}
	if _, err := c.Apply(ctx, discovery.DeregisterNodeRequest{Node: "n1"}); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("deregistering n1 from web-01: %v; want ErrPermissionDenied", err)
	}
	var leaveResp Empty
	if err := c.leaderCall(ctx, "Leave", &LeaveRequest{NodeID: "n1-id"}, &leaveResp, false); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("Leave naming n1 from web-01: %v; want ErrPermissionDenied", err)
	}

	// A raft seat: refused, naming why.
	var resp AddPeerResponse
	err = c.leaderCall(ctx, "AddPeer", &AddPeerRequest{NodeID: "web-01-id", Addr: "127.0.0.1:1"}, &resp, false)
	if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "client") {
		t.Errorf("AddPeer from a client: %v; want ErrPermissionDenied naming the client role", err)
	}
	if peers, _ := s.Peers(); len(peers) != 1 {
		t.Errorf("raft peers after a client's AddPeer: %v; want the leader alone", peers)
	}

	// The client is kept alive by its heartbeats.
	testkit.WaitFor(t, 10*time.Second, "web-01's liveness check passing", func() bool {
		_, chk, _ := s.store.Check(nil, "web-01", NodeCheckID)
		return chk != nil && chk.Status == discovery.HealthPassing
	})

	// It is Consul's serfHealth; a liveness check an older leader left
	// under vmesh's old ID is removed.
	if _, chk, _ := s.store.Check(nil, "web-01", "serfHealth"); chk == nil || chk.Name != "Serf Health Status" {
		t.Errorf("web-01's liveness check: %+v; want serfHealth named Serf Health Status", chk)
	}
	if _, err := s.applyCmd(ctx, discovery.RegisterCheckRequest{Check: discovery.Check{Node: "web-01", CheckID: discovery.LegacyNodeLivenessCheckID, Status: discovery.HealthCritical}}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the old vmesh:node check removed", func() bool {
		_, chk, _ := s.store.Check(nil, "web-01", discovery.LegacyNodeLivenessCheckID)
		return chk == nil
	})

	// Deregistered: were it to register again it would be a client, not
	// a server.
	if _, err := c.Apply(ctx, discovery.DeregisterNodeRequest{Node: "web-01"}); err != nil {
		t.Fatalf("deregistering itself: %v", err)
	}
	if _, n, _, _ := s.store.Node(nil, "web-01"); n != nil {
		t.Fatalf("web-01 still in the catalog after it deregistered: %+v", n)
	}
	if _, err := c.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "web-01-id", Name: "web-01", Address: "127.0.0.1",
		Meta: map[string]string{RoleMetaKey: RoleServer}}}); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	if _, n, _, _ := s.store.Node(nil, "web-01"); NodeRole(n) != RoleClient {
		t.Errorf("a node that registers itself again is recorded as %q; want %q", NodeRole(n), RoleClient)
	}
	err = c.leaderCall(ctx, "AddPeer", &AddPeerRequest{NodeID: "web-01-id", Addr: "127.0.0.1:1"}, &resp, false)
	if !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("AddPeer after re-registering: %v; want ErrPermissionDenied", err)
	}

	// Leave: the node is gone and its certificate is revoked, so it
	// writes nothing more.
	if err := c.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if _, n, _, _ := s.store.Node(nil, "web-01"); n != nil {
		t.Fatalf("web-01 still in the catalog after it left: %+v", n)
	}
	if rev, _ := s.store.Revocation(nil, "web-01"); rev == nil || rev.Reason != reasonLeft {
		t.Fatalf("web-01's revocation after it left = %+v; want one, reason %q", rev, reasonLeft)
	}
	_, err = c.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "web-01-id", Name: "web-01", Address: "127.0.0.1"}})
	if !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("registering after leaving: %v; want refused as revoked", err)
	}
}

// TestJoinRoleRecorded: a joiner that asks for nothing (an older agent) or
// for a server is recorded as a server; an unknown role is refused.
func TestJoinRoleRecorded(t *testing.T) {
	s := clusterLeader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct{ name, role, want string }{
		{"old", "", RoleServer}, {"srv", RoleServer, RoleServer}, {"bad", "boss", ""},
	} {
		tok, _, err := s.CreateToken(ctx, time.Minute, 1)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Join(ctx, JoinParams{Addr: s.Addr(), Token: tok, NodeName: tc.name, NodeID: tc.name + "-id", DataDir: t.TempDir(), Role: tc.role})
		if tc.want == "" {
			if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), "Role") {
				t.Errorf("join with role %q: %v; want refused naming Role", tc.role, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("join %s: %v", tc.name, err)
		}
		if _, n, _, _ := s.store.Node(nil, tc.name); NodeRole(n) != tc.want {
			t.Errorf("join with role %q recorded %q; want %q", tc.role, NodeRole(n), tc.want)
		}
	}
}

// TestForwardedRegisterNodeRole: a server recorded with no role (before
// roles) that registers itself through the leader is recorded as a
// server, by its raft membership, and can still add itself.
func TestForwardedRegisterNodeRole(t *testing.T) {
	c := newTestCluster(t, 2, StreamConfig{})
	f := c.followers()[0]
	l := c.leader()
	name := f.cluster.cfg.Identity.Name
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, n, _, _ := l.store.Node(nil, name); NodeRole(n) != "" {
		t.Fatalf("%s starts with role %q; want none", name, NodeRole(n))
	}
	if _, err := f.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: f.nodeID, Name: name, Address: "127.0.0.1",
		Meta: map[string]string{RoleMetaKey: RoleClient}}}); err != nil {
		t.Fatal(err)
	}
	if _, n, _, _ := l.store.Node(nil, name); NodeRole(n) != RoleServer {
		t.Errorf("a raft member's forwarded RegisterNode recorded role %q; want %q", NodeRole(n), RoleServer)
	}
	if _, err := f.AddSelf(ctx, l.Addr()); err != nil {
		t.Errorf("AddSelf after registering: %v", err)
	}
}

// TestClientConsistentRead: VerifyLeader on a client returns once its
// replica holds every write the leader acknowledged before the call.
func TestClientConsistentRead(t *testing.T) {
	s := clusterLeader(t)
	c := joinClient(t, s, "web-02")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	idx, err := s.Apply(ctx, registerService("web-02", "w-1", "w"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyLeader(); err != nil {
		t.Fatal(err)
	}
	if c.Replica().LastIndex() < idx {
		t.Errorf("after VerifyLeader the replica is at %d; the leader acknowledged %d", c.Replica().LastIndex(), idx)
	}
}
