package mesh

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/mesh/cli"
	"github.com/vmesh/vmesh/mesh/config"
)

// inboundRBAC waits on an ADS stream (node-a's proxy) for an inbound
// listener whose chain for service satisfies ok, ACKing what comes before.
func inboundRBAC(t *testing.T, s discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient,
	service string, ok func(*rbacconfig.RBAC) bool) *rbacconfig.RBAC {
	t.Helper()
	deadline := time.After(2 * time.Second)
	var last *rbacconfig.RBAC
	for {
		type recv struct {
			resp *discoverygrpc.DiscoveryResponse
			err  error
		}
		ch := make(chan recv, 1)
		go func() {
			resp, err := s.Recv()
			ch <- recv{resp, err}
		}()
		var resp *discoverygrpc.DiscoveryResponse
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatal(r.err)
			}
			resp = r.resp
		case <-deadline:
			t.Fatalf("inbound RBAC for %s did not match within 2s; last %v", service, last)
		}
		// ACK, or the server sends nothing newer.
		s.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce})
		for _, a := range resp.GetResources() {
			var l listener.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			for _, fc := range l.GetFilterChains() {
				if l.GetName() != "vmesh/inbound" || fc.GetName() != "inbound/"+service {
					continue
				}
				var r rbac.RBAC
				if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&r); err != nil {
					t.Fatal(err)
				}
				last = r.GetRules()
				if ok(last) {
					return last
				}
			}
		}
	}
}

// TestIntentionsAgent drives intentions through a running agent (raft
// included) with the real consul/api client, and sees them reach this
// host's proxy as inbound RBAC over xDS.
func TestIntentionsAgent(t *testing.T) {
	a := startAgent(t, testConfig(t)) // intentions_default unset: deny
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	c := client.Connect()
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "db-1", Name: "db", Port: 5432}); err != nil {
		t.Fatal(err)
	}
	ads := adsStream(t, "unix://"+a.XDSAddrs()[0].String())
	if err := ads.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "node-a"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	// Default deny, no intentions: the chain allows no one.
	inboundRBAC(t, ads, "db", func(r *rbacconfig.RBAC) bool {
		return r.GetAction() == rbacconfig.RBAC_ALLOW && len(r.GetPolicies()) == 0
	})

	if allowed, _, err := c.IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil); err != nil || allowed {
		t.Fatalf("IntentionCheck before any intention = %v, %v; want denied (default deny)", allowed, err)
	}
	list, meta, err := c.Intentions(nil)
	if err != nil || len(list) != 0 {
		t.Fatalf("Intentions = %v, %v", list, err)
	}
	// A blocking list wakes up on the write.
	woke := make(chan []*api.Intention, 1)
	go func() {
		l, _, err := c.Intentions(&api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		woke <- l
	}()
	start := time.Now()
	if _, err := c.IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionAllow, Description: "web reads db"}, nil); err != nil {
		t.Fatalf("IntentionUpsert: %v", err)
	}
	select {
	case l := <-woke:
		if len(l) != 1 || l[0].SourceName != "web" {
			t.Errorf("blocking Intentions woke with %v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking Intentions did not wake up")
	}
	got, _, err := c.IntentionGetExact("web", "db", nil)
	if err != nil || got == nil || got.Action != api.IntentionActionAllow || got.Description != "web reads db" || got.Precedence != 9 {
		t.Fatalf("IntentionGetExact = %+v, %v", got, err)
	}
	if allowed, _, err := c.IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil); err != nil || !allowed {
		t.Errorf("IntentionCheck(web -> db) = %v, %v; want allowed", allowed, err)
	}
	// The proxy's RBAC follows: web's identity, in this cluster's trust
	// domain, is allowed.
	want := "spiffe://" + testConfig(t).Cluster.TrustDomain + "/svc/web"
	inboundRBAC(t, ads, "db", func(r *rbacconfig.RBAC) bool {
		for _, p := range r.GetPolicies() {
			if p.GetPrincipals()[0].GetAuthenticated().GetPrincipalName().GetExact() == want {
				return true
			}
		}
		return false
	})
	t.Logf("intention written to inbound RBAC in %v", time.Since(start))

	// Deleting it restores the default.
	if _, err := c.IntentionDeleteExact("web", "db", nil); err != nil {
		t.Fatal(err)
	}
	inboundRBAC(t, ads, "db", func(r *rbacconfig.RBAC) bool { return len(r.GetPolicies()) == 0 })
	if missing, _, err := c.IntentionGetExact("web", "db", nil); err != nil || missing != nil {
		t.Errorf("IntentionGetExact after delete = %+v, %v; want nil", missing, err)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+a.HTTPAddr()+"/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","Permissions":[{"Action":"deny"}]}`); code != 400 || !strings.Contains(body, "Permissions") {
		t.Errorf("Permissions: %d %q, want a 400 naming it", code, body)
	}
}

// TestCLIIntention: vmesh intention create, get, list, check and delete
// against a running agent; a -dev-like agent (default allow) answers
// check differently.
func TestCLIIntention(t *testing.T) {
	a := startAgent(t, testConfig(t))
	t.Setenv("VMESH_HTTP_ADDR", a.HTTPAddr())
	if code, out, errs := runCLI(t, "intention", "create", "-deny", "*", "db"); code != 0 || !strings.Contains(out, "Intention written: * => db (deny)") {
		t.Fatalf("create -deny = %d\n%s%s", code, out, errs)
	}
	// Flags after the arguments; the default action is allow.
	if code, out, errs := runCLI(t, "intention", "create", "web", "db", "-description", "reads", "-meta", "ticket=42"); code != 0 || !strings.Contains(out, "(allow)") {
		t.Fatalf("create = %d\n%s%s", code, out, errs)
	}
	// create replaces: web -> cache allow, then deny.
	runCLI(t, "intention", "create", "-allow", "web", "cache")
	if code, out, errs := runCLI(t, "intention", "create", "--deny", "web", "cache"); code != 0 {
		t.Fatalf("create (replace) = %d\n%s%s", code, out, errs)
	}
	code, out, errs := runCLI(t, "intention", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.Contains(lines[0], "Source") ||
		!strings.Contains(lines[1], "web") || !strings.Contains(lines[1], "deny") || !strings.Contains(lines[1], "cache") ||
		!strings.Contains(lines[2], "allow") || !strings.Contains(lines[3], "*") {
		t.Fatalf("list = %d\n%s%s", code, out, errs)
	}
	if code, out, _ := runCLI(t, "intention", "get", "web", "db"); code != 0 || !strings.Contains(out, `"Description": "reads"`) || !strings.Contains(out, `"ticket": "42"`) {
		t.Errorf("get = %d\n%s", code, out)
	}
	for _, tc := range []struct {
		src, dst string
		code     int
		out      string
	}{
		{"web", "db", 0, "Allowed"},
		{"api", "db", 2, "Denied"},    // *>db deny
		{"web", "cache", 2, "Denied"}, // replaced by deny
		{"api", "cache", 2, "Denied"}, // the default
	} {
		if code, out, errs := runCLI(t, "intention", "check", tc.src, tc.dst); code != tc.code || strings.TrimSpace(out) != tc.out {
			t.Errorf("check %s %s = %d %q %q, want %d %s", tc.src, tc.dst, code, out, errs, tc.code, tc.out)
		}
	}
	if code, out, errs := runCLI(t, "intention", "delete", "web", "cache"); code != 0 || !strings.Contains(out, "Intention deleted: web => cache") {
		t.Errorf("delete = %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCLI(t, "intention", "delete", "web", "cache"); code != cli.ExitFailed || !strings.Contains(errs, "no intention web => cache") {
		t.Errorf("delete of a missing intention = %d %q", code, errs)
	}
	for _, args := range [][]string{
		{"create", "-allow", "-deny", "a", "b"},
		{"create", "web*", "db"},
		{"create", "-meta", "novalue", "a", "b"},
		{"check", "web"},
		{"list", "extra"},
		{"frob"},
	} {
		if code, _, errs := runCLI(t, append([]string{"intention"}, args...)...); code != cli.ExitUsage || errs == "" {
			t.Errorf("intention %v = %d %q, want a usage error", args, code, errs)
		}
	}

	// An agent whose default is allow: what no intention matches passes.
	cfg := testConfig(t)
	cfg.NodeName, cfg.IntentionsDefault = "node-b", config.IntentionsAllow
	b := startAgent(t, cfg)
	if code, out, errs := runCLI(t, "intention", "check", "--http-addr", b.HTTPAddr(), "api", "cache"); code != 0 || strings.TrimSpace(out) != "Allowed" {
		t.Errorf("check on a default-allow agent = %d %q %q", code, out, errs)
	}
}
