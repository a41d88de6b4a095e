package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/lab/testkit"
)

// getJSON GETs url into out; an error (not a test failure) when it does
// not answer 200.
func getJSON(url string, out any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// clusterMember is /v1/vmesh/members with the node's role.
type clusterMember struct {
	Name, Role, NodeRole, Status string
}

func clusterMembers(n *node) []clusterMember {
	var ms []clusterMember
	if err := getJSON("http://"+n.httpAddr()+"/v1/vmesh/members", &ms); err != nil {
		return nil
	}
	return ms
}

// agentMembers is /v1/agent/members' tags by node name.
func agentMembers(n *node) map[string]map[string]string {
	var ms []struct {
		Name string
		Tags map[string]string
	}
	if err := getJSON("http://"+n.httpAddr()+"/v1/agent/members", &ms); err != nil {
		return nil
	}
	out := map[string]map[string]string{}
	for _, m := range ms {
		out[m.Name] = m.Tags
	}
	return out
}

// TestServersAndClients: three servers and five clients, as real
// processes. A client holds no raft and no CA key; a registration on one
// client reaches every client; a client keeps serving its replica while
// every server is down, and catches up when they return.
func TestServersAndClients(t *testing.T) {
	t.Parallel()
	servers := bootCluster(t, "127.18.0.", 3)
	testkit.WaitFor(t, 30*time.Second, "three raft members", func() bool {
		r := roles(servers[0].members())
		return r["leader"] == 1 && r["leader"]+r["voter"] == 3
	})
	var clients []*node
	for i := 1; i <= 5; i++ {
		c := newClientNode(t, fmt.Sprintf("c%d", i), fmt.Sprintf("127.18.0.%d", 10+i)).
			start("-join", servers[0].clusterAddr(), "-token-file", servers[0].tokenFile("1h"))
		clients = append(clients, c)
	}
	for _, c := range clients {
		testkit.WaitFor(t, 20*time.Second, c.name+" knows the leader", func() bool { return c.leader() != "" })
	}

	// Roles: the leader lists three raft servers and five clients; a
	// client's /v1/agent/members tags them as Consul does.
	testkit.WaitFor(t, 20*time.Second, "3 servers and 5 clients, all alive", func() bool {
		ms := clusterMembers(servers[0])
		byRole := map[string]int{}
		for _, m := range ms {
			if m.Status != "alive" {
				return false
			}
			if m.NodeRole == "client" && m.Role != "none" {
				t.Fatalf("client %s has raft role %q", m.Name, m.Role)
			}
			byRole[m.NodeRole]++
		}
		return byRole["server"] == 3 && byRole["client"] == 5
	})
	if r := roles(servers[0].members()); r["leader"]+r["voter"]+r["nonvoter"] != 3 {
		t.Errorf("raft members: %v; want the three servers only", r)
	}
	tags := agentMembers(clients[0])
	if tags["n1"]["role"] != "consul" || tags["c3"]["role"] != "node" || tags["c3"]["vmesh_role"] != "client" {
		t.Errorf("/v1/agent/members tags on c1: n1 %v, c3 %v; want role consul for a server, node (vmesh_role client) for a client", tags["n1"], tags["c3"])
	}
	var self struct {
		Config struct{ Server bool }
		Stats  struct{ Raft map[string]string }
	}
	if err := getJSON("http://"+clients[0].httpAddr()+"/v1/agent/self", &self); err != nil || self.Config.Server || self.Stats.Raft["state"] != "client" || self.Stats.Raft["last_contact"] == "" {
		t.Errorf("/v1/agent/self on c1: %+v, %v; want Server false, state client and its last contact", self, err)
	}

	// A registration on one client reaches every client.
	if err := clients[0].register("web-c1", "web"); err != nil {
		t.Fatalf("registering on c1: %v", err)
	}
	for _, c := range clients {
		testkit.WaitFor(t, 10*time.Second, c.name+" sees web-c1", func() bool { return c.instances("web")["web-c1"] })
	}
	// And its DNS, from the replica: web's A record is c1's address.
	for _, c := range clients {
		testkit.WaitFor(t, 10*time.Second, c.name+" answers web.service.consul with c1's address", func() bool {
			m := new(dns.Msg)
			m.SetQuestion("web.service.consul.", dns.TypeA)
			r, err := dns.Exchange(m, c.ip+":8600")
			if err != nil || len(r.Answer) != 1 {
				return false
			}
			a, ok := r.Answer[0].(*dns.A)
			return ok && a.A.String() == clients[0].ip
		})
	}
	var consistent []struct{ ServiceID string }
	if err := getJSON("http://"+clients[1].httpAddr()+"/v1/catalog/service/web?consistent", &consistent); err != nil || len(consistent) != 1 {
		t.Errorf("?consistent read on c2: %v, %v; want web-c1", consistent, err)
	}

	// KV lives on the servers: a client writes it through the leader and
	// reads it from a server, blocking queries included.
	kvURL := func(c *node, key string) string { return "http://" + c.httpAddr() + "/v1/kv/" + key }
	req, _ := http.NewRequest(http.MethodPut, kvURL(clients[0], "app/color"), bytes.NewReader([]byte("blue")))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("KV put on c1: %v %v", resp, err)
	}
	var kvs []struct {
		Key   string
		Value []byte
	}
	if err := getJSON(kvURL(clients[1], "app/color"), &kvs); err != nil || len(kvs) != 1 || string(kvs[0].Value) != "blue" {
		t.Errorf("KV get on c2: %+v, %v; want app/color = blue", kvs, err)
	}
	var keys []string
	if err := getJSON(kvURL(clients[2], "app/?keys"), &keys); err != nil || len(keys) != 1 || keys[0] != "app/color" {
		t.Errorf("KV keys on c3: %v, %v; want [app/color]", keys, err)
	}
	if resp, err := http.Get(kvURL(clients[1], "app/missing")); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("KV get of a missing key on c2: %v %v; want 404", resp, err)
	}

	// No client holds raft or any private key but its own node key.
	for _, c := range clients {
		if _, err := os.Stat(filepath.Join(c.dataDir, "raft")); !os.IsNotExist(err) {
			t.Errorf("%s's data dir has a raft directory (%v)", c.name, err)
		}
		filepath.WalkDir(c.dataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, []byte("PRIVATE KEY")) && filepath.Base(path) != "node-key.pem" {
				t.Errorf("%s holds a private key in %s", c.name, path)
			}
			return nil
		})
	}

	// Every server down: a client still answers from its replica.
	for _, s := range servers {
		s.kill()
	}
	for _, c := range clients[1:3] {
		if !c.instances("web")["web-c1"] {
			t.Errorf("%s with every server down: ?stale catalog read lost web-c1", c.name)
		}
		var health []json.RawMessage
		if err := getJSON("http://"+c.httpAddr()+"/v1/health/service/web?stale", &health); err != nil || len(health) != 1 {
			t.Errorf("%s with every server down: /v1/health/service/web?stale = %d entries, %v", c.name, len(health), err)
		}
		if err := getJSON("http://"+c.httpAddr()+"/v1/agent/self", &self); err != nil {
			t.Errorf("%s with every server down: /v1/agent/self: %v", c.name, err)
		}
	}

	// And it says how stale it may be: the replica's last contact grows.
	testkit.WaitFor(t, 15*time.Second, "c2's vmesh_replica_last_contact_seconds past 1 s", func() bool {
		resp, err := http.Get("http://" + clients[1].ip + ":15000/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "vmesh_replica_last_contact_seconds "); ok {
				f, err := strconv.ParseFloat(v, 64)
				return err == nil && f >= 1
			}
		}
		return false
	})

	// The servers return; a registration made after reaches every client.
	for _, s := range servers {
		s.start()
	}
	testkit.WaitFor(t, 30*time.Second, "a leader again", func() bool { return servers[0].leader() != "" })
	// A blocking query on a client's replica wakes on the write (a
	// default read, as Consul's, wants a known leader).
	testkit.WaitFor(t, 30*time.Second, "c3 knows the leader again", func() bool { return clients[2].leader() != "" })
	resp, err := http.Get("http://" + clients[2].httpAddr() + "/v1/catalog/service/web")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before := resp.Header.Get("X-Consul-Index")
	if before == "" || before == "0" {
		t.Fatalf("c3's catalog read has X-Consul-Index %q; want the replica's index", before)
	}
	woke := make(chan string, 1)
	go func() {
		var list []struct{ ServiceID string }
		resp, err := http.Get("http://" + clients[2].httpAddr() + "/v1/catalog/service/web?wait=60s&index=" + before)
		if err != nil {
			woke <- err.Error()
			return
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&list)
		woke <- fmt.Sprintf("index %s, %d instances", resp.Header.Get("X-Consul-Index"), len(list))
	}()
	testkit.WaitFor(t, 30*time.Second, "registering on c4 once a leader is back", func() bool { return clients[3].register("web-c4", "web") == nil })
	select {
	case got := <-woke:
		if got == "index "+before+", 1 instances" || !bytes.Contains([]byte(got), []byte("2 instances")) {
			t.Errorf("blocking query on c3 from index %s woke with %s; want a higher index and 2 instances", before, got)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("blocking query on c3 from index %s did not wake on a registration on c4", before)
	}
	for _, c := range clients {
		testkit.WaitFor(t, 20*time.Second, c.name+" sees web-c4", func() bool { return c.instances("web")["web-c4"] })
	}

	// A client restarted with no -join comes back as a client, from the
	// servers it remembers, and still holds no raft.
	clients[1].kill()
	clients[1].start()
	testkit.WaitFor(t, 20*time.Second, "c2 back and current", func() bool {
		return clients[1].leader() != "" && clients[1].instances("web")["web-c4"]
	})
	if err := clients[1].register("web-c2", "web"); err != nil {
		t.Errorf("registering on c2 after its restart: %v", err)
	}
	if _, err := os.Stat(filepath.Join(clients[1].dataDir, "raft")); !os.IsNotExist(err) {
		t.Errorf("c2 restarted with a raft directory (%v)", err)
	}

	// A client that leaves takes its node out of the catalog and stops.
	code, _, errs := clients[4].cli("leave")
	if code != 0 {
		t.Fatalf("vmesh leave on c5: %d %s", code, errs)
	}
	testkit.WaitFor(t, 10*time.Second, "c5 out of the catalog", func() bool {
		var nodes []struct{ Node string }
		if getJSON("http://"+clients[0].httpAddr()+"/v1/catalog/nodes", &nodes) != nil {
			return false
		}
		for _, n := range nodes {
			if n.Node == "c5" {
				return false
			}
		}
		return true
	})
	if resp, err := http.Get("http://" + clients[0].httpAddr() + "/v1/status/leader"); err == nil {
		resp.Body.Close()
	} else {
		t.Errorf("c1 stopped answering after c5 left: %v", err)
	}
}
