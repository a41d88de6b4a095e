package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/raft"
)

// lastLogIndex is Stats.raft.last_log_index of /v1/agent/self, which
// docs/cluster.md tells operators to compare to pick the survivor with the
// newest data.
func (n *node) lastLogIndex() uint64 {
	n.t.Helper()
	var self struct {
		Stats struct{ Raft map[string]string }
	}
	resp, err := http.Get("http://" + n.httpAddr() + "/v1/agent/self")
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&self); err != nil {
		n.t.Fatal(err)
	}
	i, err := strconv.ParseUint(self.Stats.Raft["last_log_index"], 10, 64)
	if err != nil {
		n.t.Fatalf("%s: Stats.raft.last_log_index: %v (stats %v)", n.name, err, self.Stats.Raft)
	}
	return i
}

// TestClusterRecoveryRejoin follows docs/cluster.md "Recovering a
// cluster that lost quorum" with two survivors of five voters: all
// survivors stopped, peers.json on the one with the newest log, then the
// other rejoins through the `left` marker and `vmesh join` with a new
// token. On the way it checks the two traps the procedure warns about:
// with only raft/ deleted, `vmesh join` is refused as "already in a
// cluster"; from an empty data dir under the same name, the name is
// taken.
func TestClusterRecoveryRejoin(t *testing.T) {
	skipShort(t)
	t.Parallel()
	// A short node_ttl, so the lost hosts turn failed within the test.
	cfg := testkit.WriteFile(t, t.TempDir(), "cluster.hcl", "cluster {\n  voters = 5\n  node_ttl = \"3s\"\n}\n")
	nodes := bootCluster(t, "127.8.0.", 5, "-config", cfg)
	testkit.WaitFor(t, 20*time.Second, "five voters", func() bool {
		r := roles(nodes[0].members())
		return r["leader"] == 1 && r["voter"] == 4
	})
	for i := range 10 {
		if err := nodes[i%5].register(fmt.Sprintf("rj-%d", i), "rj"); err != nil {
			t.Fatal(err)
		}
	}
	survivors := []*node{nodes[0], nodes[1]}
	for _, n := range survivors {
		testkit.WaitFor(t, 10*time.Second, n.name+" holds every instance", func() bool { return len(n.instances("rj")) == 10 })
	}
	// Step 1: which survivor has the newest log, read before stopping.
	keep, other := survivors[0], survivors[1]
	if other.lastLogIndex() > keep.lastLogIndex() {
		keep, other = other, keep
	}
	for _, n := range nodes[2:] {
		n.kill() // gone for good: three of five voters
	}
	for _, n := range survivors {
		if code := n.p.stop(syscall.SIGTERM); code != 0 {
			t.Fatalf("stopping %s: exit %d", n.name, code)
		}
	}

	// Steps 2-4: peers.json naming only keep.
	peers := fmt.Sprintf(`[{"id": %q, "address": %q, "non_voter": false}]`, keep.nodeID(), keep.clusterAddr())
	if err := os.WriteFile(raft.PeersFile(keep.dataDir), []byte(peers), 0o600); err != nil {
		t.Fatal(err)
	}
	keep.start()
	testkit.WaitFor(t, 20*time.Second, keep.name+" leads alone", func() bool { return keep.leader() == keep.clusterAddr() })

	// The trap: raft/ deleted, tls/ and node-id kept. The agent opens an
	// empty raft with its old identity and waits; join is refused.
	if err := os.RemoveAll(filepath.Join(other.dataDir, "raft")); err != nil {
		t.Fatal(err)
	}
	other.start()
	code, _, errs := other.cli("join", keep.clusterAddr(), "-token-file", keep.tokenFile("1h"))
	if code == 0 || !strings.Contains(errs, "already in a cluster") {
		t.Fatalf("join with only raft/ deleted: exit %d %q; docs/cluster.md says it is refused as already in a cluster", code, errs)
	}
	t.Logf("only raft/ deleted: %s", strings.TrimSpace(errs))
	other.p.stop(syscall.SIGTERM)
	// The other trap: an empty data dir under the same name.
	wiped := newNode(t, other.name, "127.8.0.9").start()
	code, _, errs = wiped.cli("join", keep.clusterAddr(), "-token-file", keep.tokenFile("1h"))
	if want := "is taken by node " + other.nodeID(); code == 0 || !strings.Contains(errs, want) {
		t.Fatalf("join from an empty data dir named %s: exit %d %q; want it refused, %q", other.name, code, errs, want)
	}
	t.Logf("empty data dir, same name: %s", strings.TrimSpace(errs))
	wiped.p.stop(syscall.SIGTERM)

	// Step 5: the `left` marker, start, join with a new token.
	if err := os.WriteFile(filepath.Join(other.dataDir, "left"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other.start()
	testkit.WaitFor(t, 5*time.Second, other.name+" to say it stays out", func() bool {
		return strings.Contains(other.p.stderr.String(), "this node left its cluster")
	})
	if code, out, errs := other.cli("join", keep.clusterAddr(), "-token-file", keep.tokenFile("1h")); code != 0 {
		t.Fatalf("vmesh join after touching left: exit %d\n%s%s", code, out, errs)
	}
	for _, n := range survivors {
		testkit.WaitFor(t, 20*time.Second, n.name+" follows "+keep.name, func() bool { return n.leader() == keep.clusterAddr() })
	}
	// The lost hosts stay in the catalog, out of raft, until they are
	// reaped (docs/cluster.md says so).
	if ms := keep.members(); roles(ms)["leader"] != 1 || roles(ms)["voter"] != 1 || roles(ms)["none"] != 3 || len(ms) != 5 {
		t.Errorf("members after the rejoin: %+v; want %s leading, %s a voter, the three lost hosts role none", ms, keep.name, other.name)
	}
	if _, err := os.Stat(filepath.Join(other.dataDir, "left")); !os.IsNotExist(err) {
		t.Errorf("the left marker is still there after the join: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, other.name+" holds every instance again", func() bool { return len(other.instances("rj")) == 10 })
	if err := other.register("after-rejoin", "rj"); err != nil {
		t.Fatalf("write through the rejoined node: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "the write on "+keep.name, func() bool { return keep.instances("rj")["after-rejoin"] })
	testkit.WaitFor(t, 15*time.Second, "the lost hosts to turn failed", func() bool {
		failed := 0
		for _, m := range keep.members() {
			if m.Role == "none" && m.Status == "failed" {
				failed++
			}
		}
		return failed == 3
	})
}
