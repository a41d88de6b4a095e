package e2e

import (
	"bytes"
	"io"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/lab/testkit"
)

func kvGet(c *api.Client, key string) string {
	p, _, err := c.KV().Get(key, &api.QueryOptions{AllowStale: true})
	if err != nil || p == nil {
		return "<none>"
	}
	return string(p.Value)
}

func hasNode(c *api.Client, name string) bool {
	n, _, err := c.Catalog().Node(name, &api.QueryOptions{AllowStale: true})
	return err == nil && n != nil && n.Node != nil
}

// dnsA is the A records name resolves to on n's DNS server.
func dnsA(n *node, name string) []string {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, err := dns.Exchange(m, n.ip+":8600")
	if err != nil {
		return nil
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// TestCatalogRegisterSnapshotRestore: on a three-server cluster, an
// external node registered with consul/api on a follower is served by
// every server's catalog, health and DNS, and a registration on an
// agent's node is refused; a snapshot saved through consul/api and
// restored through another follower brings back the saved KV and
// services on every server, after they were changed, and the cluster
// keeps serving; a bad archive is a 400 that changes nothing.
func TestCatalogRegisterSnapshotRestore(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.30.0.", 3)
	c1, c2, c3 := consulClient(t, nodes[0]), consulClient(t, nodes[1]), consulClient(t, nodes[2])
	all := []*api.Client{c1, c2, c3}
	// A client agent: its replica of the catalog must follow too.
	cl := newClientNode(t, "c1", "127.30.0.11").start("-join", nodes[0].clusterAddr(), "-token-file", nodes[0].tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return cl.leader() != "" })
	ccl := consulClient(t, cl)

	reg := &api.CatalogRegistration{
		Node: "ext-db", Address: "192.0.2.10", NodeMeta: map[string]string{"external-node": "true"},
		Service: &api.AgentService{ID: "pg-1", Service: "pg", Port: 5432},
		Checks: api.HealthChecks{{CheckID: "pg-up", Name: "pg up", Status: api.HealthPassing, ServiceID: "pg-1",
			Output: "accepting connections"}},
	}
	if _, err := c3.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("catalog register on follower n3: %v", err)
	}
	for i, c := range all {
		testkit.WaitFor(t, 10*time.Second, nodes[i].name+" serves pg", func() bool {
			entries, _, err := c.Health().Service("pg", "", true, &api.QueryOptions{AllowStale: true})
			return err == nil && len(entries) == 1 && entries[0].Node.Address == "192.0.2.10" &&
				len(entries[0].Checks) == 1 && entries[0].Checks[0].Output == "accepting connections"
		})
		testkit.WaitFor(t, 10*time.Second, nodes[i].name+" answers pg over DNS", func() bool {
			a := dnsA(nodes[i], "pg.service.consul.")
			return len(a) == 1 && a[0] == "192.0.2.10"
		})
	}
	testkit.WaitFor(t, 10*time.Second, "client c1 serves pg over DNS", func() bool {
		a := dnsA(cl, "pg.service.consul.")
		return len(a) == 1 && a[0] == "192.0.2.10"
	})
	// A client agent reads the raft configuration from the leader.
	testkit.WaitFor(t, 10*time.Second, "client c1 lists the three servers", func() bool {
		conf, err := ccl.Operator().RaftGetConfiguration(nil)
		return err == nil && len(conf.Servers) == 3
	})
	// No agent heartbeats for the external node: the leader's liveness
	// check leaves it alone (a node check would be critical at once).
	checks, _, err := c1.Health().Node("ext-db", nil)
	if err != nil || len(checks) != 1 || checks[0].CheckID != "pg-up" {
		t.Errorf("ext-db's checks = %+v, %v; want only pg-up", checks, err)
	}
	// An agent's node is not the catalog endpoints' to write.
	hijack := *reg
	hijack.Node, hijack.Address = "n2", nodes[1].ip
	if _, err := c1.Catalog().Register(&hijack, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("register on agent n2's node: %v, want a 403", err)
	}
	if _, err := c1.Catalog().Deregister(&api.CatalogDeregistration{Node: "n3"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("deregister agent n3: %v, want a 403", err)
	}
	if !hasNode(c1, "n3") {
		t.Fatal("n3 is gone from the catalog")
	}

	// The state to save: a key, an agent's service, the external node.
	if _, err := c2.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("saved")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].register("web-saved", "web"); err != nil {
		t.Fatal(err)
	}
	// Snapshots need a management token (acl:write), as in Consul: the
	// cluster runs with ACLs on, default allow; bootstrap them.
	boot, _, err := c1.ACL().Bootstrap()
	if err != nil {
		t.Fatalf("ACL bootstrap: %v", err)
	}
	if _, _, err := c2.Snapshot().Save(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("snapshot save with the anonymous token: %v, want a 403", err)
	}
	mgmt := &api.QueryOptions{Token: boot.SecretID}
	wmgmt := &api.WriteOptions{Token: boot.SecretID}
	for i, c := range all {
		testkit.WaitFor(t, 10*time.Second, nodes[i].name+" knows the management token", func() bool {
			_, _, err := c.ACL().TokenReadSelf(&api.QueryOptions{Token: boot.SecretID, AllowStale: true})
			return err == nil
		})
	}
	// A client holds no state to save: ask a server.
	if _, _, err := ccl.Snapshot().Save(mgmt); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("snapshot save on client c1: %v, want a 409", err)
	}
	rc, qm, err := c2.Snapshot().Save(mgmt)
	if err != nil {
		t.Fatalf("snapshot save on follower n2: %v", err)
	}
	archive, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(archive) == 0 || qm.LastIndex == 0 {
		t.Fatalf("snapshot: %d bytes at index %d, %v", len(archive), qm.LastIndex, err)
	}

	// Change everything.
	if _, err := c1.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("changed")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.KV().Put(&api.KVPair{Key: "app/y", Value: []byte("new")}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c2.Agent().ServiceDeregister("web-saved"); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Catalog().Deregister(&api.CatalogDeregistration{Node: "ext-db"}, nil); err != nil {
		t.Fatal(err)
	}
	for i, c := range all {
		testkit.WaitFor(t, 10*time.Second, nodes[i].name+" sees the changes", func() bool {
			return kvGet(c, "app/x") == "changed" && !hasNode(c, "ext-db") && !nodes[i].instances("web")["web-saved"]
		})
	}
	testkit.WaitFor(t, 10*time.Second, "client c1 sees the changes", func() bool {
		return !hasNode(ccl, "ext-db") && !cl.instances("web")["web-saved"]
	})

	// A bad archive: 400, nothing changes.
	bad := bytes.Clone(archive)
	bad[len(bad)/2] ^= 0xff
	if err := c3.Snapshot().Restore(wmgmt, bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("restore of a damaged archive: %v, want a 400", err)
	}
	if err := c3.Snapshot().Restore(wmgmt, strings.NewReader("not a snapshot")); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("restore of junk: %v, want a 400", err)
	}
	if got := kvGet(c1, "app/x"); got != "changed" {
		t.Fatalf("app/x = %q after refused restores", got)
	}

	// Restore through follower n3: the leader takes it on and sends it to
	// the others.
	if err := c3.Snapshot().Restore(nil, bytes.NewReader(archive)); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("restore with the anonymous token: %v, want a 403", err)
	}
	if err := c3.Snapshot().Restore(wmgmt, bytes.NewReader(archive)); err != nil {
		t.Fatalf("restore on follower n3: %v", err)
	}
	for i, c := range all {
		testkit.WaitFor(t, 15*time.Second, nodes[i].name+" has the saved state back", func() bool {
			return kvGet(c, "app/x") == "saved" && kvGet(c, "app/y") == "<none>" && hasNode(c, "ext-db") &&
				nodes[i].instances("web")["web-saved"]
		})
	}
	testkit.WaitFor(t, 15*time.Second, "client c1's replica has the saved services back", func() bool {
		return hasNode(ccl, "ext-db") && cl.instances("web")["web-saved"]
	})
	// The cluster keeps serving: a write through a follower lands on all.
	if _, err := c2.KV().Put(&api.KVPair{Key: "app/after", Value: []byte("ok")}, nil); err != nil {
		t.Fatalf("write after restore: %v", err)
	}
	for i, c := range all {
		testkit.WaitFor(t, 10*time.Second, nodes[i].name+" sees a write after the restore", func() bool {
			return kvGet(c, "app/after") == "ok"
		})
	}
}

// TestOperatorRaftProcesses: consul/api's operator calls against a
// three-server cluster: the raft configuration, a leadership transfer to
// a named server asked of a follower, autopilot's configuration (set
// with a CAS on one server, read on another) and health, and removing a
// peer by ID.
func TestOperatorRaftProcesses(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.31.0.", 3)
	c1, c3 := consulClient(t, nodes[0]), consulClient(t, nodes[2])

	var conf *api.RaftConfiguration
	testkit.WaitFor(t, 20*time.Second, "three voters in the raft configuration", func() bool {
		var err error
		conf, err = c3.Operator().RaftGetConfiguration(nil)
		if err != nil || len(conf.Servers) != 3 {
			return false
		}
		for _, s := range conf.Servers {
			if !s.Voter {
				return false
			}
		}
		return true
	})
	ids := map[string]string{}
	leaders := 0
	for _, s := range conf.Servers {
		ids[s.Node] = s.ID
		if s.Leader {
			leaders++
			if s.Node != "n1" {
				t.Errorf("leader is %s, want n1", s.Node)
			}
		}
		if s.ProtocolVersion != "3" || s.Address == "" {
			t.Errorf("server %+v", s)
		}
		if host, _, _ := net.SplitHostPort(s.Address); !strings.HasPrefix(host, "127.31.0.") {
			t.Errorf("server %s address %q", s.Node, s.Address)
		}
	}
	names := []string{}
	for n := range ids {
		names = append(names, n)
	}
	sort.Strings(names)
	if leaders != 1 || strings.Join(names, ",") != "n1,n2,n3" {
		t.Fatalf("configuration = %+v", conf.Servers)
	}

	// Leadership to n2, asked of follower n3.
	out, err := c3.Operator().RaftLeaderTransfer(ids["n2"], nil)
	if err != nil || !out.Success {
		t.Fatalf("transfer to n2: %+v %v", out, err)
	}
	for _, n := range nodes {
		testkit.WaitFor(t, 15*time.Second, n.name+" sees n2 lead", func() bool { return n.leader() == nodes[1].clusterAddr() })
	}
	if _, err := c3.Operator().RaftLeaderTransfer("no-such-id", nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("transfer to an unknown ID: %v, want a 400", err)
	}

	// Autopilot's configuration: set with a CAS through n3, read on n1.
	ap, err := c1.Operator().AutopilotGetConfiguration(nil)
	if err != nil || !ap.CleanupDeadServers {
		t.Fatalf("autopilot configuration: %+v %v", ap, err)
	}
	ap.LastContactThreshold = api.NewReadableDuration(3 * time.Second)
	ap.ServerStabilizationTime = api.NewReadableDuration(2 * time.Second)
	if ok, err := c3.Operator().AutopilotCASConfiguration(ap, nil); err != nil || !ok {
		t.Fatalf("autopilot CAS: %v %v", ok, err)
	}
	if ok, err := c3.Operator().AutopilotCASConfiguration(ap, nil); err != nil || ok {
		t.Errorf("autopilot CAS at a stale index: %v %v, want false", ok, err)
	}
	testkit.WaitFor(t, 10*time.Second, "n1 reads the new autopilot configuration", func() bool {
		got, err := c1.Operator().AutopilotGetConfiguration(&api.QueryOptions{AllowStale: true})
		return err == nil && got.LastContactThreshold.Duration() == 3*time.Second && got.ServerStabilizationTime.Duration() == 2*time.Second
	})
	testkit.WaitFor(t, 30*time.Second, "autopilot reports a healthy cluster of 3", func() bool {
		h, err := c1.Operator().AutopilotServerHealth(nil)
		return err == nil && h.Healthy && len(h.Servers) == 3 && h.FailureTolerance == 1
	})
	st, err := c1.Operator().AutopilotState(nil)
	if err != nil || st.Leader != ids["n2"] || len(st.Voters) != 3 || st.Servers[ids["n2"]].Status != api.AutopilotServerLeader {
		t.Errorf("autopilot state = %+v, %v", st, err)
	}

	// A check that fails from its first run shows why, in the agent's
	// checks and in health, though its status never changed.
	if err := c1.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "down-1", Name: "down", Port: 9,
		Check: &api.AgentServiceCheck{CheckID: "down-tcp", TCP: "127.31.0.1:9", Interval: "200ms", Timeout: "1s"}}); err != nil {
		t.Fatalf("register a failing check: %v", err)
	}
	testkit.WaitFor(t, 15*time.Second, "the failing check's output in /v1/agent/checks", func() bool {
		checks, err := c1.Agent().Checks()
		return err == nil && checks["down-tcp"] != nil && checks["down-tcp"].Status == api.HealthCritical &&
			strings.Contains(checks["down-tcp"].Output, "refused")
	})
	testkit.WaitFor(t, 10*time.Second, "the failing check's output in /v1/health on another server", func() bool {
		checks, _, err := c3.Health().Checks("down", &api.QueryOptions{AllowStale: true})
		return err == nil && len(checks) == 1 && strings.Contains(checks[0].Output, "refused")
	})

	// Remove n3 by its raft ID, through n1.
	if err := c1.Operator().RaftRemovePeerByID(ids["n3"], nil); err != nil {
		t.Fatalf("remove n3: %v", err)
	}
	testkit.WaitFor(t, 15*time.Second, "n3 out of the raft configuration", func() bool {
		conf, err := c1.Operator().RaftGetConfiguration(nil)
		if err != nil || len(conf.Servers) != 2 {
			return false
		}
		for _, s := range conf.Servers {
			if s.ID == ids["n3"] {
				return false
			}
		}
		return true
	})
	if err := c1.Operator().RaftRemovePeerByID(ids["n3"], nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("removing n3 again: %v, want a 400", err)
	}
}
