package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/lab/testkit"
)

// consulClient is consul/api pointed at n's HTTP API.
func consulClient(t *testing.T, n *node) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: n.httpAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nodeCheck is node's serfHealth status as c reads it ("" when none).
func nodeCheck(c *api.Client, node string) string {
	checks, _, err := c.Health().Node(node, nil)
	if err != nil {
		return ""
	}
	for _, chk := range checks {
		if chk.CheckID == "serfHealth" {
			return chk.Status
		}
	}
	return ""
}

func nodeCheckPassing(c *api.Client, node string) bool {
	return nodeCheck(c, node) == api.HealthPassing
}

// TestSessionsAcrossClients: consul/api's Lock from two client agents,
// whose replicas hold neither KV nor sessions: everything goes through
// the leader. SIGKILL the holder's host: its node check turns critical,
// its session ends, and the other client gets the lock. A transaction
// through a client is all or nothing.
func TestSessionsAcrossClients(t *testing.T) {
	skipShort(t)
	t.Parallel()
	// A short node_ttl, so the killed host's check fails within the test.
	cfg := testkit.WriteFile(t, t.TempDir(), "cluster.hcl", "cluster {\n  node_ttl = \"3s\"\n}\n")
	server := newNode(t, "n1", "127.24.0.1", "-config", cfg).start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return server.leader() != "" })
	var clients []*node
	for i, name := range []string{"c1", "c2"} {
		c := newClientNode(t, name, fmt.Sprintf("127.24.0.%d", 11+i), "-config", cfg).
			start("-join", server.clusterAddr(), "-token-file", server.tokenFile("1h"))
		clients = append(clients, c)
	}
	c1, c2 := consulClient(t, clients[0]), consulClient(t, clients[1])
	for _, name := range []string{"c1", "c2"} {
		testkit.WaitFor(t, 20*time.Second, name+"'s node check passing", func() bool { return nodeCheckPassing(c2, name) })
	}

	// c1 holds the lock on a session of its own node (serfHealth by
	// default); c2 waits.
	opts := func(name string) *api.LockOptions {
		return &api.LockOptions{Key: "e2e/leader", Value: []byte(name),
			SessionOpts: &api.SessionEntry{Name: name, LockDelay: time.Millisecond}}
	}
	l1, _ := c1.LockOpts(opts("c1"))
	l2, _ := c2.LockOpts(opts("c2"))
	if _, err := l1.Lock(nil); err != nil {
		t.Fatalf("c1's Lock: %v", err)
	}
	pair, _, err := c2.KV().Get("e2e/leader", nil)
	if err != nil || pair == nil || string(pair.Value) != "c1" || pair.Session == "" {
		t.Fatalf("the lock read on c2 = %+v, %v; want c1's", pair, err)
	}
	holder := pair.Session
	if s, _, err := c2.Session().Info(holder, nil); err != nil || s == nil || s.Node != "c1" {
		t.Fatalf("c1's session read on c2 = %+v, %v", s, err)
	}
	won := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		ch, err := l2.Lock(stop)
		if err == nil && ch == nil {
			err = errStopped
		}
		won <- err
	}()

	killed := time.Now()
	clients[0].kill()
	select {
	case err := <-won:
		if err != nil {
			t.Fatalf("c2's Lock: %v", err)
		}
		t.Logf("c2 got the lock %s after c1 was killed", time.Since(killed).Round(time.Millisecond))
	case <-time.After(40 * time.Second):
		t.Fatal("c2 did not get the lock after c1's host was killed")
	}
	if s, _, err := c2.Session().Info(holder, nil); err != nil || s != nil {
		t.Errorf("c1's session after its host died = %+v, %v; want gone", s, err)
	}
	if st := nodeCheck(c2, "c1"); st != api.HealthCritical {
		t.Errorf("c1's serfHealth = %q; want critical", st)
	}
	onC2, _, err := c2.Session().Node("c2", nil)
	if err != nil || len(onC2) != 1 {
		t.Errorf("c2's sessions read on c2 = %+v, %v; want its lock's", onC2, err)
	}

	// A transaction through a client: a stale index rolls it all back.
	ok, resp, _, err := c2.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "e2e/a", Value: []byte("1")}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: "e2e/leader", Index: 1}},
	}, nil)
	if err != nil || ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 {
		t.Fatalf("failing Txn through c2 = %v, %+v, %v; want op 1's error", ok, resp, err)
	}
	if a, _, _ := c2.KV().Get("e2e/a", nil); a != nil {
		t.Errorf("e2e/a = %+v after a rolled-back txn", a)
	}
	ok, resp, _, err = c2.Txn().Txn(api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "e2e/a", Value: []byte("1")}},
		{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: "e2e/leader", Session: onC2[0].ID}},
	}, nil)
	if err != nil || !ok || len(resp.Results) != 2 {
		t.Fatalf("Txn through c2 = %v, %+v, %v", ok, resp, err)
	}
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// errStopped is a Lock that returned without the lock or an error.
var errStopped = errorString("stopped without the lock")

type errorString string

func (e errorString) Error() string { return string(e) }

// TestSessionTTLAcrossLeaderChange: a session's TTL is the leader's to
// track. The leader dies; the new one rebuilds the timers from raft: a
// session nobody renews ends (its lock released) and one renewed through
// a follower stays.
func TestSessionTTLAcrossLeaderChange(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.25.0.", 3)
	testkit.WaitFor(t, 30*time.Second, "three raft members", func() bool {
		r := roles(nodes[0].members())
		return r["leader"] == 1 && r["leader"]+r["voter"] == 3
	})
	var leader *node
	var rest []*node
	for _, n := range nodes {
		if n.leader() == n.clusterAddr() {
			leader = n
		} else {
			rest = append(rest, n)
		}
	}
	if leader == nil {
		t.Fatal("no node says it leads")
	}
	c := consulClient(t, rest[0])
	for _, n := range nodes {
		testkit.WaitFor(t, 20*time.Second, n.name+"'s node check passing", func() bool { return nodeCheckPassing(c, n.name) })
	}
	// Both sessions on a surviving node, so its node check keeps them.
	sessions := c.Session()
	idle, _, err := sessions.Create(&api.SessionEntry{Name: "idle", Node: rest[1].name, TTL: "10s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kept, _, err := sessions.Create(&api.SessionEntry{Name: "kept", Node: rest[1].name, TTL: "10s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := c.KV().Acquire(&api.KVPair{Key: "ttl/lock", Value: []byte("idle"), Session: idle}, nil); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	stop := make(chan struct{})
	renewed := make(chan error, 1)
	go func() { renewed <- sessions.RenewPeriodic("10s", kept, nil, stop) }()

	leader.kill()
	var newLeader string
	testkit.WaitFor(t, 30*time.Second, "a new leader", func() bool {
		newLeader = rest[0].leader()
		return newLeader != "" && newLeader != leader.clusterAddr()
	})
	elected := time.Now()
	// The new leader gives every session its full 20 s (TTL x 2) from the
	// moment it took over.
	testkit.WaitFor(t, 60*time.Second, "the idle session ended by the new leader", func() bool {
		s, _, err := sessions.Info(idle, nil)
		return err == nil && s == nil
	})
	t.Logf("the idle session ended %s after the new leader was seen", time.Since(elected).Round(time.Millisecond))
	if pair, _, err := c.KV().Get("ttl/lock", nil); err != nil || pair == nil || pair.Session != "" {
		t.Errorf("the idle session's lock = %+v, %v; want released", pair, err)
	}
	if s, _, err := sessions.Info(kept, nil); err != nil || s == nil {
		t.Errorf("the renewed session = %+v, %v; want alive", s, err)
	}
	close(stop)
	if err := <-renewed; err != nil && !strings.Contains(err.Error(), "context") {
		t.Errorf("RenewPeriodic: %v", err)
	}
}
