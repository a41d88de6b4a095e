package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/raft"
)

// TestClusterJoin: bootstrap one agent, join one at start and one through
// `vmesh join`; a write on one follower is read on the other; wrong, expired
// and foreign-CA tokens are refused, each saying which.
func TestClusterJoin(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n1 := newNode(t, "n1", "127.1.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n1.leader() != "" })
	tok := n1.token("1h")
	n2 := newNode(t, "n2", "127.1.0.2").start("-join", n1.clusterAddr(), "-token-file", writeToken(t, tok))
	n3 := newNode(t, "n3", "127.1.0.3").start()
	if code, _, errs := n3.cli("join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h")); code != 0 {
		t.Fatalf("vmesh join: %d %s", code, errs)
	}
	for _, n := range []*node{n1, n2, n3} {
		testkit.WaitFor(t, 20*time.Second, n.name+" knows the leader", func() bool { return n.leader() == n1.clusterAddr() })
	}
	ms := n2.members()
	if r := roles(ms); len(ms) != 3 || r["leader"] != 1 || r["voter"] != 2 {
		t.Fatalf("members = %+v; want a leader and 2 voters", ms)
	}

	var self struct{ Member struct{ Name string } }
	testkit.GetJSON(t, n2.httpAddr(), "/v1/agent/self", &self)
	if self.Member.Name != "n2" {
		t.Errorf("/v1/agent/self on n2 names member %q", self.Member.Name)
	}

	// Write on one follower, read on the other.
	if err := n2.register("web-on-n2", "web"); err != nil {
		t.Fatalf("register on follower n2: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "n3 sees the registration", func() bool { return n3.instances("web")["web-on-n2"] })
	// Read-your-writes on the follower that forwarded.
	if !n2.instances("web")["web-on-n2"] {
		t.Fatal("n2 does not see its own acknowledged write")
	}

	// Refused joins, each saying why, against a fresh unjoined agent. The
	// 1 s token is made first so that it runs out while n4 starts.
	expired, expiresAt := n1.tokenExpiring("1s")
	if expiresAt.IsZero() {
		t.Fatal("vmesh token create -ttl 1s printed no expiry")
	}
	n4 := newNode(t, "n4", "127.1.0.4").start()
	good, err := raft.ParseToken(n1.token("1h"))
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret := raft.Token{ID: good.ID, Secret: "not-the-secret", Fingerprint: good.Fingerprint}.String()
	otherCA, err := raft.NewCA("other.test")
	if err != nil {
		t.Fatal(err)
	}
	wrongCA := raft.Token{ID: good.ID, Secret: good.Secret, Fingerprint: raft.Fingerprint(otherCA.Cert)}.String()
	// The leader refuses a token once the clock is past its expiry second.
	testkit.WaitFor(t, 5*time.Second, "the 1 s token to expire", func() bool { return time.Now().Unix() > expiresAt.Unix() })
	for _, tc := range []struct{ name, token, want string }{
		{"wrong token", wrongSecret, "invalid join token"},
		{"expired token", expired, "expired"},
		{"wrong CA fingerprint", wrongCA, "fingerprint"},
		{"garbage", "hello", "not a vmesh join token"},
	} {
		code, _, errs := n4.cli("join", n1.clusterAddr(), "-token-file", writeToken(t, tc.token))
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: vmesh join = %d %q; want a failure mentioning %q", tc.name, code, errs, tc.want)
		}
	}
	if ms := n1.members(); len(ms) != 3 {
		t.Errorf("after refused joins the cluster has %d members, want 3", len(ms))
	}
	if n4.leader() != "" {
		t.Error("the refused node knows a leader")
	}
	// A restart rejoins with the stored certificate, no token needed.
	n2.kill()
	n2.start()
	testkit.WaitFor(t, 20*time.Second, "restarted n2 back in the cluster", func() bool { return n2.leader() == n1.clusterAddr() })
}

// TestClusterPortRefusesStrangers: plaintext and a certificate of another
// CA are refused on the cluster port; raft needs a node certificate.
func TestClusterPortRefusesStrangers(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n1 := newNode(t, "n1", "127.2.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n1.leader() != "" })

	// Plaintext: the server wants a TLS ClientHello and hangs up.
	c, err := net.DialTimeout("tcp", n1.clusterAddr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	c.Close()
	if strings.Contains(string(buf[:n]), "HTTP/1.1 200") || strings.Contains(string(buf[:n]), "HTTP/1.1 4") {
		t.Fatalf("plaintext client got an HTTP answer: %q", buf[:n])
	}

	// A node certificate from another CA fails the handshake.
	other, err := raft.NewCA("other.test")
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignNodeCert(t, other, "n9")
	for _, alpn := range []string{"vmesh-raft/1", "h2"} {
		conn, err := tls.Dial("tcp", n1.clusterAddr(), &tls.Config{
			Certificates: []tls.Certificate{foreign}, InsecureSkipVerify: true, NextProtos: []string{alpn},
		})
		if err == nil {
			// TLS 1.3: the client learns of a rejected certificate on its
			// first read.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s with a foreign CA's certificate: err = %v; want the handshake refused over the certificate", alpn, err)
		}
	}
	// No certificate at all: fine for a joiner's RPC, but not for raft.
	conn, err := tls.Dial("tcp", n1.clusterAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"vmesh-raft/1"}})
	if err != nil {
		t.Fatalf("TLS without a client certificate: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	conn.Close()
	if err == nil {
		t.Error("a raft connection without a node certificate stayed open")
	}
	// The server proves itself with a node certificate of its own CA.
	conn, err = tls.Dial("tcp", n1.clusterAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	chain := conn.ConnectionState().PeerCertificates
	conn.Close()
	if len(chain) < 2 || len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != "spiffe://vmesh.local/node/n1" {
		t.Fatalf("server certificate URIs = %v; want spiffe://vmesh.local/node/n1", chain[0].URIs)
	}
}

func foreignNodeCert(t *testing.T, ca *raft.CA, name string) tls.Certificate {
	t.Helper()
	key, csr := newTestCSR(t, name)
	cert, err := ca.SignNode(csr, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: cert}
}

// TestClusterLeaderKill: SIGKILL the leader while a client writes 100
// registrations a second through the followers: a new leader within 5 s,
// every acknowledged registration on every node, writes succeed again, and
// the killed node catches up after a restart.
func TestClusterLeaderKill(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.3.0.", 3)
	leaderAddr := nodes[0].leader()
	var leader *node
	var followers []*node
	for _, n := range nodes {
		if n.clusterAddr() == leaderAddr {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}

	var mu sync.Mutex
	acked := map[string]bool{}
	failures := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond) // 100/s
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			n := followers[i%2]
			id := fmt.Sprintf("load-%d", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := n.register(id, "load")
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					acked[id] = true
				} else {
					failures++
				}
			}()
		}
	}()
	acks := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	testkit.WaitFor(t, 20*time.Second, "the load acknowledged through both followers", func() bool { return acks() >= 200 })
	killed := time.Now()
	leader.kill()
	testkit.WaitFor(t, 5*time.Second, "a new leader", func() bool {
		l := followers[0].leader()
		return l != "" && l != leaderAddr && l == followers[1].leader()
	})
	t.Logf("new leader %s after %s", followers[0].leader(), time.Since(killed).Round(time.Millisecond))
	before := acks()
	// Writes must resume within 3 s of the new leader.
	testkit.Eventually(3*time.Second, func() bool { return acks() > before+100 })
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) <= before+100 {
		t.Fatalf("writes did not resume after the failover: %d acknowledged before, %d after", before, len(acked))
	}
	t.Logf("%d registrations acknowledged, %d failed during the failover", len(acked), failures)
	// Replication to the other follower may trail the last acks by a
	// moment; a lost registration never shows up.
	for _, n := range followers {
		missing := ""
		testkit.Eventually(5*time.Second, func() bool {
			got := n.instances("load")
			missing = ""
			for id := range acked {
				if !got[id] {
					missing = id
					break
				}
			}
			return missing == ""
		})
		if missing != "" {
			t.Fatalf("%s lost acknowledged registration %s", n.name, missing)
		}
	}
	leader.start()
	testkit.WaitFor(t, 30*time.Second, "the restarted node catches up", func() bool {
		got := leader.instances("load")
		for id := range acked {
			if !got[id] {
				return false
			}
		}
		return true
	})
}

// TestClusterVotersCap: 7 agents give 3 voters and 4 nonvoters; when a
// voter dies a nonvoter is promoted within 30 s.
func TestClusterVotersCap(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.4.0.", 7, "-log-level", "info")
	var ms []member
	testkit.WaitFor(t, 20*time.Second, "7 members: 3 voters and 4 nonvoters", func() bool {
		ms = nodes[0].members()
		r := roles(ms)
		return len(ms) == 7 && r["leader"]+r["voter"] == 3 && r["nonvoter"] == 4
	})
	var victim *node
	for _, m := range ms {
		if m.Role == "voter" {
			for _, n := range nodes {
				if n.name == m.Name {
					victim = n
				}
			}
		}
	}
	killed := time.Now()
	victim.kill()
	leader := nodes[0]
	testkit.WaitFor(t, 30*time.Second, "3 voters again without the dead one", func() bool {
		ms = leader.members()
		voters := 0
		for _, m := range ms {
			if m.Role == "leader" || m.Role == "voter" {
				if m.Name == victim.name {
					return false
				}
				voters++
			}
		}
		return voters == 3
	})
	t.Logf("a nonvoter was promoted %s after the voter died", time.Since(killed).Round(time.Second))
}

// TestClusterLeave: leaving on a follower and on the leader keeps the
// cluster writable; a leave that would break quorum is refused without
// -force; a left node does not rejoin on restart but can join again.
func TestClusterLeave(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.5.0.", 4)
	n1, n2, n3, n4 := nodes[0], nodes[1], nodes[2], nodes[3]
	testkit.WaitFor(t, 20*time.Second, "3 voters and a nonvoter", func() bool {
		r := roles(n1.members())
		return r["leader"]+r["voter"] == 3 && r["nonvoter"] == 1
	})
	voterOf := func(ms []member, name string) bool {
		for _, m := range ms {
			if m.Name == name {
				return m.Role == "leader" || m.Role == "voter"
			}
		}
		return false
	}
	ms := n1.members()
	follower := n2
	if !voterOf(ms, n2.name) {
		follower = n3
	}
	// A follower leaves; its agent stops.
	if code, _, errs := follower.cli("leave"); code != 0 {
		t.Fatalf("leave on follower %s: %d %s", follower.name, code, errs)
	}
	if code := follower.p.wait(20 * time.Second); code != 0 {
		t.Fatalf("the left agent exited %d", code)
	}
	if err := n1.register("after-follower-leave", "w"); err != nil {
		t.Fatalf("cluster not writable after a follower left: %v", err)
	}
	testkit.WaitFor(t, 30*time.Second, "the nonvoter promoted back to 3 voters", func() bool {
		r := roles(n1.members())
		return len(n1.members()) == 3 && r["leader"]+r["voter"] == 3
	})
	// The leader leaves: it hands over leadership first.
	if code, _, errs := n1.cli("leave"); code != 0 {
		t.Fatalf("leave on the leader: %d %s", code, errs)
	}
	n1.p.wait(20 * time.Second)
	var rest []*node
	for _, n := range []*node{n2, n3, n4} {
		if n != follower {
			rest = append(rest, n)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "a new leader among the rest", func() bool {
		l := rest[0].leader()
		return l != "" && l != n1.clusterAddr()
	})
	if err := rest[0].register("after-leader-leave", "w"); err != nil {
		t.Fatalf("cluster not writable after the leader left: %v", err)
	}
	// Two voters left: one more leave would leave one healthy voter, less
	// than a quorum of two.
	code, _, errs := rest[1].cli("leave")
	if code == 0 || !strings.Contains(errs, "quorum") {
		t.Fatalf("leave of the second of 2 voters = %d %q; want a refusal that names quorum", code, errs)
	}
	if err := rest[0].register("after-refused-leave", "w"); err != nil {
		t.Fatalf("cluster not writable after a refused leave: %v", err)
	}

	// The leader that left restarts: it stays out of the cluster...
	n1.start()
	testkit.WaitFor(t, 10*time.Second, "n1 to say it stays out", func() bool {
		return strings.Contains(n1.p.stderr.String(), "this node left its cluster")
	})
	if l := n1.leader(); l != "" {
		t.Fatalf("a left node rejoined on restart (leader %q)", l)
	}
	for _, m := range rest[0].members() {
		if m.Name == n1.name {
			t.Fatalf("the left node is still a member: %+v", m)
		}
	}
	// ...until it joins again with a new token.
	if code, _, errs := n1.cli("join", rest[0].clusterAddr(), "-token-file", rest[0].tokenFile("1h")); code != 0 {
		t.Fatalf("joining again: %d %s", code, errs)
	}
	testkit.WaitFor(t, 20*time.Second, "n1 back as a member", func() bool {
		for _, m := range rest[0].members() {
			if m.Name == n1.name {
				return n1.leader() != ""
			}
		}
		return false
	})
	if err := n1.register("after-rejoin", "w"); err != nil {
		t.Fatalf("write on the rejoined node: %v", err)
	}
}

// TestClusterNodeLiveness: killing an agent makes its instances critical
// on the other nodes within 15 s.
func TestClusterNodeLiveness(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.6.0.", 3)
	if err := nodes[2].register("api-3", "api"); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].register("api-2", "api"); err != nil {
		t.Fatal(err)
	}
	passing := func(n *node) map[string]bool {
		var entries []struct {
			Service struct{ ID string }
			Checks  []struct{ CheckID, Status string }
		}
		testkit.GetJSON(t, n.httpAddr(), "/v1/health/service/api?passing", &entries)
		out := map[string]bool{}
		for _, e := range entries {
			out[e.Service.ID] = true
		}
		return out
	}
	testkit.WaitFor(t, 15*time.Second, "both instances passing", func() bool { p := passing(nodes[0]); return p["api-2"] && p["api-3"] })
	killed := time.Now()
	nodes[2].kill()
	for _, n := range nodes[:2] {
		testkit.WaitFor(t, 15*time.Second-time.Since(killed), n.name+" sees api-3 critical", func() bool {
			p := passing(n)
			return !p["api-3"] && p["api-2"]
		})
	}
	t.Logf("instances critical %s after the kill", time.Since(killed).Round(time.Millisecond))
	var entries []struct {
		Service struct{ ID string }
		Checks  []struct{ CheckID, Status string }
	}
	testkit.GetJSON(t, nodes[0].httpAddr(), "/v1/health/service/api", &entries)
	for _, e := range entries {
		if e.Service.ID == "api-3" {
			for _, c := range e.Checks {
				if c.CheckID == "serfHealth" && c.Status == "critical" {
					return
				}
			}
			t.Fatalf("api-3's checks = %+v; want the node check critical", e.Checks)
		}
	}
	t.Fatal("api-3 disappeared instead of turning critical")
}

// TestClusterRecovery: a cluster that lost quorum is recovered with a
// peers.json on the survivor, keeping every committed entry.
func TestClusterRecovery(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.7.0.", 3)
	for i := range 20 {
		if err := nodes[i%3].register(fmt.Sprintf("rec-%d", i), "rec"); err != nil {
			t.Fatal(err)
		}
	}
	survivor := nodes[0]
	nodes[1].kill()
	nodes[2].kill()
	// No quorum: writes fail.
	if err := survivor.register("no-quorum", "rec"); err == nil {
		t.Fatal("a write succeeded without quorum")
	}
	survivor.p.stop(15) // SIGTERM
	peers := fmt.Sprintf(`[{"id": %q, "address": %q, "non_voter": false}]`, survivor.nodeID(), survivor.clusterAddr())
	if err := os.WriteFile(raft.PeersFile(survivor.dataDir), []byte(peers), 0o600); err != nil {
		t.Fatal(err)
	}
	survivor.start()
	testkit.WaitFor(t, 20*time.Second, "the survivor leads alone", func() bool { return survivor.leader() == survivor.clusterAddr() })
	got := survivor.instances("rec")
	for i := range 20 {
		if !got[fmt.Sprintf("rec-%d", i)] {
			t.Fatalf("rec-%d lost in recovery; have %v", i, got)
		}
	}
	if err := survivor.register("after-recovery", "rec"); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	if _, err := os.Stat(raft.PeersFile(survivor.dataDir) + ".recovered"); err != nil {
		t.Errorf("peers.json was not marked as applied: %v", err)
	}
}
