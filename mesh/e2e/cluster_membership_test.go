package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// roleOf is name's role in ms ("" when ms does not list it).
func roleOf(ms []member, name string) string {
	for _, m := range ms {
		if m.Name == name {
			return m.Role
		}
	}
	return ""
}

// leaderNode is the node whose cluster address the others name as leader.
func leaderNode(t *testing.T, nodes []*node) *node {
	t.Helper()
	var l *node
	testkit.WaitFor(t, 20*time.Second, "a leader", func() bool {
		addr := nodes[0].leader()
		for _, n := range nodes {
			if n.clusterAddr() == addr {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// TestServerRejoinsAfterDowntime: a voter (a follower, not the leader) is
// killed with SIGKILL and stays down for a minute, long after the others'
// autopilot removed it from the raft configuration. Restarted on the same
// data dir with no flag beyond its usual ones, it adds itself back with
// its node certificate: a voter again within 10 s, and a write through it
// succeeds.
func TestServerRejoinsAfterDowntime(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.16.0.", 3)
	testkit.WaitFor(t, 20*time.Second, "3 voters", func() bool {
		r := roles(nodes[0].members())
		return r["leader"]+r["voter"] == 3
	})
	leader := leaderNode(t, nodes)
	var down *node
	for _, n := range nodes {
		if n != leader {
			down = n
			break
		}
	}
	down.kill()
	killed := time.Now()
	testkit.WaitFor(t, 60*time.Second, "autopilot removes "+down.name+" from the raft configuration", func() bool {
		ms := leader.members()
		r := roleOf(ms, down.name)
		return ms != nil && r != "leader" && r != "voter" && r != "nonvoter"
	})
	t.Logf("%s removed from raft %s after the kill", down.name, time.Since(killed).Round(time.Second))
	// The downtime itself: the test's point is a long absence, not a wait
	// for something to happen.
	testkit.WaitFor(t, 2*time.Minute, "60 s of downtime", func() bool { return time.Since(killed) >= 60*time.Second })

	down.start()
	restarted := time.Now()
	testkit.WaitFor(t, 10*time.Second, down.name+" a voter again and following the leader", func() bool {
		r := roleOf(leader.members(), down.name)
		return (r == "voter" || r == "leader") && down.leader() != ""
	})
	t.Logf("%s a voter again %s after its restart", down.name, time.Since(restarted).Round(100*time.Millisecond))
	if err := down.register("after-rejoin", "w"); err != nil {
		t.Fatalf("write through the rejoined %s: %v", down.name, err)
	}
	if !leader.instances("w")["after-rejoin"] {
		t.Fatal("the leader's catalog misses the write made through the rejoined server")
	}
}

// TestLeaveRefusedFast: with one of three voters down, a leave by either
// remaining voter would cost the quorum. It is refused at once (409, the
// reason, exit code 1) before anything changes: the leader stays the
// leader and both agents keep running.
func TestLeaveRefusedFast(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.17.0.", 3)
	testkit.WaitFor(t, 20*time.Second, "3 voters", func() bool {
		r := roles(nodes[0].members())
		return r["leader"]+r["voter"] == 3
	})
	leader := leaderNode(t, nodes)
	var rest []*node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	down, follower := rest[0], rest[1]
	down.kill()
	testkit.WaitFor(t, 30*time.Second, "the leader counts "+down.name+" as down", func() bool {
		for _, m := range leader.members() {
			if m.Name == down.name {
				return m.Status == "failed" || m.Role == "none"
			}
		}
		return false
	})
	leaderAddr := leader.clusterAddr()
	for _, n := range []*node{follower, leader} {
		start := time.Now()
		code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+n.httpAddr()+"/v1/vmesh/leave", "")
		took := time.Since(start)
		if code != http.StatusConflict || !strings.Contains(body, "quorum") || !strings.Contains(body, "-force") {
			t.Fatalf("PUT /v1/vmesh/leave on %s = %d %q; want 409 naming the quorum and -force", n.name, code, body)
		}
		if took > time.Second {
			t.Fatalf("the refusal on %s took %s; want under 1 s", n.name, took)
		}
		start = time.Now()
		exit, _, errs := n.cli("leave")
		t.Logf("vmesh leave on %s: exit %d in %s: %s", n.name, exit, time.Since(start).Round(time.Millisecond), strings.TrimSpace(errs))
		if exit != 1 || !strings.Contains(errs, "409") || !strings.Contains(errs, "quorum") {
			t.Fatalf("vmesh leave on %s = exit %d %q; want 1 and a 409 that names the quorum", n.name, exit, errs)
		}
		if n.p.exited() {
			t.Fatalf("%s stopped after a refused leave", n.name)
		}
	}
	for _, n := range []*node{leader, follower} {
		if l := n.leader(); l != leaderAddr {
			t.Fatalf("%s sees leader %q after the refused leaves; want %s unchanged", n.name, l, leaderAddr)
		}
	}
	if err := follower.register("after-refused-leave", "w"); err != nil {
		t.Fatalf("cluster not writable after the refused leaves: %v", err)
	}
}
