package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/lab/testkit"
)

// The consul CLI (v1.22) sends, for the commands below, exactly these
// consul/api calls; these tests make them against real agents (the CLI
// itself is not built here: docs/consul-compatibility.md says why).

// TestConsulCLIIntentionsAndConfig: `consul intention create/get/check/
// delete` (the legacy ID API) and `consul config write/read/delete` of a
// service-intentions entry show one set of intentions, with stable IDs,
// on a server and on a client agent.
func TestConsulCLIIntentionsAndConfig(t *testing.T) {
	skipShort(t)
	t.Parallel()
	srv := newNode(t, "n1", "127.33.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return srv.leader() != "" })
	cl := newClientNode(t, "c1", "127.33.0.2").start("-join", srv.clusterAddr(), "-token-file", srv.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return cl.leader() != "" })
	s, c := consulClient(t, srv), consulClient(t, cl)

	// consul intention create web db (through the client agent).
	//lint:ignore SA1019 the legacy create is what `consul intention create` sends.
	id, _, err := c.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", SourceType: api.IntentionSourceConsul, Action: api.IntentionActionAllow}, nil)
	if err != nil {
		t.Fatalf("IntentionCreate via the client agent: %v", err)
	}
	//lint:ignore SA1019 `consul intention get ID`.
	got, _, err := s.Connect().IntentionGet(id, nil)
	if err != nil || got == nil || got.SourceName != "web" || got.Action != api.IntentionActionAllow {
		t.Fatalf("IntentionGet(%s) on the server = %+v, %v", id, got, err)
	}

	// consul config read -kind service-intentions -name db
	e, _, err := s.ConfigEntries().Get(api.ServiceIntentions, "db", nil)
	if err != nil {
		t.Fatalf("config read service-intentions/db: %v", err)
	}
	if si := e.(*api.ServiceIntentionsConfigEntry); len(si.Sources) != 1 || si.Sources[0].LegacyID != id {
		t.Fatalf("service-intentions/db = %+v, want web with LegacyID %s", si, id)
	}
	// consul config write (a file of kind service-intentions), on the client.
	if ok, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "db",
		Sources: []*api.SourceIntention{{Name: "web", Action: api.IntentionActionDeny}, {Name: "api", Action: api.IntentionActionAllow}}}, nil); err != nil || !ok {
		t.Fatalf("config write service-intentions via the client = %v, %v", ok, err)
	}
	testkit.WaitFor(t, 10*time.Second, "the server sees the entry's intentions", func() bool {
		x, _, err := s.Connect().IntentionGetExact("web", "db", nil)
		return err == nil && x != nil && x.Action == api.IntentionActionDeny
	})
	if x, _, _ := s.Connect().IntentionGetExact("web", "db", nil); x.ID != id {
		t.Errorf("web => db changed ID from %s to %s when rewritten by the entry", id, x.ID)
	}
	// consul intention check
	for _, tc := range []struct {
		src  string
		want bool
	}{{"api", true}, {"web", false}} {
		allowed, _, err := c.Connect().IntentionCheck(&api.IntentionCheck{Source: tc.src, Destination: "db"}, nil)
		if err != nil || allowed != tc.want {
			t.Errorf("intention check %s db = %v, %v; want %v", tc.src, allowed, err, tc.want)
		}
	}
	// consul intention create -replace (update by ID), then delete by ID.
	//lint:ignore SA1019 `consul intention create -replace`.
	if _, err := s.Connect().IntentionUpdate(&api.Intention{ID: id, SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow}, nil); err != nil {
		t.Fatalf("IntentionUpdate: %v", err)
	}
	//lint:ignore SA1019 `consul intention delete ID`.
	if _, err := c.Connect().IntentionDelete(id, nil); err != nil {
		t.Fatalf("IntentionDelete: %v", err)
	}
	e, _, err = s.ConfigEntries().Get(api.ServiceIntentions, "db", nil)
	if err != nil || len(e.(*api.ServiceIntentionsConfigEntry).Sources) != 1 || e.(*api.ServiceIntentionsConfigEntry).Sources[0].Name != "api" {
		t.Errorf("service-intentions/db after deleting web's = %+v, %v; want api only", e, err)
	}
	// vmesh config write of the same kind: a file in Consul's HCL.
	file := testkit.WriteFile(t, t.TempDir(), "db-intentions.hcl", `Kind = "service-intentions"
Name = "db"
Sources = [
  { Name = "api", Action = "deny" },
  { name = "batch", action = "allow", description = "nightly export" },
]
`)
	if code, out, errs := cl.cli("config", "write", file); code != 0 || !strings.Contains(out, "service-intentions/db") {
		t.Fatalf("vmesh config write %s = %d %q %q", file, code, out, errs)
	}
	testkit.WaitFor(t, 10*time.Second, "the server sees the file's intentions", func() bool {
		all, _, err := s.Connect().Intentions(nil)
		got := map[string]string{}
		for _, x := range all {
			got[x.SourceName+">"+x.DestinationName] = string(x.Action) + "/" + x.Description
		}
		return err == nil && len(got) == 2 && got["api>db"] == "deny/" && got["batch>db"] == "allow/nightly export"
	})
	// consul config delete
	if _, err := s.ConfigEntries().Delete(api.ServiceIntentions, "db", nil); err != nil {
		t.Fatal(err)
	}
	if all, _, _ := s.Connect().Intentions(nil); len(all) != 0 {
		t.Errorf("intentions after config delete: %+v", all)
	}

	// consul maint on the client agent: its check goes through the
	// leader like any of its writes, and the server sees the node down.
	if err := c.Agent().EnableNodeMaintenance("disk swap"); err != nil {
		t.Fatalf("node maintenance on the client: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "the server sees c1 in maintenance", func() bool {
		hc, _, err := s.Health().Node("c1", nil)
		if err != nil {
			return false
		}
		for _, x := range hc {
			if x.CheckID == "_node_maintenance" && x.Status == api.HealthCritical && x.Notes == "disk swap" {
				return true
			}
		}
		return false
	})

	// consul members: Consul's role tags, seen from the client.
	ms, err := c.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, m := range ms {
		roles[m.Name] = m.Tags["role"] + "/" + m.Tags["vsn"] + "/" + m.Tags["dc"]
	}
	if roles["n1"] != "consul/2/dc1" || roles["c1"] != "node/2/dc1" {
		t.Errorf("members' role/vsn/dc tags = %v; want n1 consul, c1 node", roles)
	}
}

// TestConsulCLIAgentOps: `consul services register` with a sidecar as
// the CLI fills it in, `consul maint` (kept across an agent restart),
// `consul monitor` and `consul reload`, against a real agent.
func TestConsulCLIAgentOps(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svcDir := t.TempDir()
	testkit.WriteFile(t, svcDir, "web.hcl", "service {\n  name = \"web\"\n  id = \"web-1\"\n  port = 8080\n}\n")
	n := newNode(t, "n1", "127.34.0.1")
	n.start("-bootstrap", "-services-dir", svcDir)
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n.leader() != "" })
	c := consulClient(t, n)
	testkit.WaitFor(t, 10*time.Second, "web-1 from its file", func() bool {
		svcs, err := c.Agent().Services()
		return err == nil && svcs["web-1"] != nil
	})

	// consul services register, a sidecar as the CLI sends it.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "api", ID: "api-1", Port: 9090,
		Weights: &api.AgentWeights{Passing: 1, Warning: 1},
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{
			Weights: &api.AgentWeights{Passing: 1, Warning: 1}, Check: &api.AgentServiceCheck{}, Checks: api.AgentServiceChecks{},
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{{DestinationType: "service", DestinationName: "web", LocalBindPort: 19101, LocalBindAddress: "127.34.0.1"}}},
		}}}); err != nil {
		t.Fatalf("services register with the CLI's sidecar: %v", err)
	}

	// consul maint -enable -service web-1, and for the node.
	if err := c.Agent().EnableServiceMaintenance("web-1", "deploying"); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().EnableNodeMaintenance(""); err != nil {
		t.Fatal(err)
	}
	inMaint := func() bool {
		checks, err := c.Agent().Checks()
		if err != nil {
			return false
		}
		sm, nm := checks["_service_maintenance:web-1"], checks["_node_maintenance"]
		return sm != nil && sm.Status == api.HealthCritical && sm.Notes == "deploying" && nm != nil && nm.Status == api.HealthCritical
	}
	testkit.WaitFor(t, 5*time.Second, "both maintenance checks", inMaint)
	if es, _, err := c.Health().Service("web", "", true, nil); err != nil || len(es) != 0 {
		t.Errorf("healthy web in maintenance = %d, %v; want none", len(es), err)
	}

	// A restart (which re-registers web-1 from its file) keeps both.
	if code := n.p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM exit code %d", code)
	}
	n.start("-bootstrap", "-services-dir", svcDir)
	testkit.WaitFor(t, 15*time.Second, "n1 leads again", func() bool { return n.leader() != "" })
	testkit.WaitFor(t, 10*time.Second, "maintenance after the restart", inMaint)
	if err := c.Agent().DisableServiceMaintenance("web-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().DisableNodeMaintenance(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "web healthy after maintenance", func() bool {
		es, _, err := c.Health().Service("web", "", true, nil)
		return err == nil && len(es) == 1
	})

	// consul monitor, while consul reload picks up a new service file.
	stop := make(chan struct{})
	defer close(stop)
	lines, err := c.Agent().MonitorJSON("debug", stop, nil)
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	testkit.WriteFile(t, svcDir, "extra.hcl", "service {\n  name = \"extra\"\n  id = \"extra-1\"\n  port = 7070\n}\n")
	if err := c.Agent().Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if svcs, _ := c.Agent().Services(); svcs["extra-1"] == nil {
		t.Errorf("extra-1 not registered once reload answered: %v", svcs)
	}
	deadline := time.After(20 * time.Second)
	for seen := false; !seen; {
		select {
		case l := <-lines:
			seen = strings.Contains(l, `"registered service from file"`) && strings.Contains(l, `"extra-1"`)
		case <-deadline:
			t.Fatal("monitor showed no line for extra-1's registration")
		}
	}
	// A bad file: reload fails naming it, and the agent keeps serving.
	testkit.WriteFile(t, svcDir, "extra.hcl", "service {\n  name = \"extra\"\n  port = \"seventy\"\n}\n")
	if err := c.Agent().Reload(); err == nil || !strings.Contains(err.Error(), "extra.hcl") {
		t.Errorf("reload with a bad file = %v, want an error naming extra.hcl", err)
	}
	if svcs, err := c.Agent().Services(); err != nil || svcs["extra-1"] == nil {
		t.Errorf("after a failed reload: %v, %v; want extra-1 kept", svcs, err)
	}
}

// TestConsulCLIRulesEnforced: with ACLs on (default deny), the consul
// CLI's new requests ask Consul's rules of a real agent: intentions
// write on the destination for the legacy create and service-intentions
// entries, agent:read for monitor, agent:write for reload, node:write
// for node maintenance.
func TestConsulCLIRulesEnforced(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const root = "3a7e1c52-5b5f-4a51-9d3e-4b1ad4a0e035"
	cfg := testkit.WriteFile(t, t.TempDir(), "acl.hcl", fmt.Sprintf("acl { tokens { initial_management = %q } }\n", root))
	n := newNode(t, "n1", "127.35.0.1", "-config", cfg)
	n.env = []string{keepACLDefaults}
	n.start("-bootstrap")
	testkit.WaitFor(t, 20*time.Second, "n1 leads and has bootstrapped ACLs", func() bool {
		code, _ := aclCall(t, n, http.MethodGet, "/v1/acl/token/self", root, "")
		return n.leader() != "" && code == http.StatusOK
	})
	mgmt, err := api.NewClient(&api.Config{Address: n.httpAddr(), Token: root})
	if err != nil {
		t.Fatal(err)
	}
	policies := 0
	token := func(rules string) *api.Client {
		t.Helper()
		policies++
		p, _, err := mgmt.ACL().PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("p%d", policies), Rules: rules}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := mgmt.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := api.NewClient(&api.Config{Address: n.httpAddr(), Token: tok.SecretID})
		return c
	}
	anon := consulClient(t, n)
	dbIxn := token(`service "db" { policy = "read" intentions = "write" }`)
	agentRead := token(`agent "n1" { policy = "read" }`)
	agentWrite := token(`agent "n1" { policy = "write" }`)
	nodeWrite := token(`node "n1" { policy = "write" }`)
	forbidden := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("%s = %v, want a 403", what, err)
		}
	}
	entry := func(name string) *api.ServiceIntentionsConfigEntry {
		return &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: name, Sources: []*api.SourceIntention{{Name: "web", Action: "allow"}}}
	}

	//lint:ignore SA1019 the legacy create is what `consul intention create` sends.
	_, _, err = anon.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", Action: "allow"}, nil)
	forbidden("anonymous intention create", err)
	//lint:ignore SA1019 as above.
	if _, _, err := dbIxn.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "db", Action: "allow"}, nil); err != nil {
		t.Errorf("intention create with intentions write on db: %v", err)
	}
	//lint:ignore SA1019 as above.
	_, _, err = dbIxn.Connect().IntentionCreate(&api.Intention{SourceName: "web", DestinationName: "cache", Action: "allow"}, nil)
	forbidden("intention create onto cache", err)
	if _, _, err := dbIxn.ConfigEntries().Set(entry("db"), nil); err != nil {
		t.Errorf("config write service-intentions/db: %v", err)
	}
	_, _, err = dbIxn.ConfigEntries().Set(entry("cache"), nil)
	forbidden("config write service-intentions/cache", err)

	stop := make(chan struct{})
	defer close(stop)
	_, err = anon.Agent().Monitor("info", stop, nil)
	forbidden("anonymous monitor", err)
	if _, err := agentRead.Agent().Monitor("info", stop, nil); err != nil {
		t.Errorf("monitor with agent:read: %v", err)
	}
	forbidden("reload with agent:read", agentRead.Agent().Reload())
	if err := agentWrite.Agent().Reload(); err != nil {
		t.Errorf("reload with agent:write: %v", err)
	}
	forbidden("anonymous node maintenance", anon.Agent().EnableNodeMaintenance("x"))
	forbidden("node maintenance with agent:write", agentWrite.Agent().EnableNodeMaintenance("x"))
	if err := nodeWrite.Agent().EnableNodeMaintenance("x"); err != nil {
		t.Errorf("node maintenance with node:write: %v", err)
	}
}
