package mesh

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// aclAgent starts an in-process agent with ACLs on and deny by default,
// as a non-dev agent runs, and returns an anonymous consul/api client.
func aclAgent(t *testing.T) (*Agent, *api.Client) {
	t.Helper()
	cfg := testConfig(t)
	cfg.ACL.DefaultPolicy = ""
	a := startAgent(t, cfg)
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

func clientWith(t *testing.T, a *Agent, secret string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr(), Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("%s: %v; want 403", what, err)
	}
}

// TestACLConsulAPI drives the ACL system with the real consul/api client
// (v1.34.5): bootstrap once, policies and tokens created, read, listed,
// updated and deleted, TokenReadSelf; a token whose policy writes only
// service web registers web and nothing else; a deleted token stops at
// once; the anonymous token, with deny by default, may write nothing.
func TestACLConsulAPI(t *testing.T) {
	a, anon := aclAgent(t)
	boot, _, err := anon.ACL().Bootstrap()
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if boot.SecretID == "" || len(boot.Policies) != 1 || boot.Policies[0].Name != "global-management" {
		t.Fatalf("bootstrap token %+v; want a secret and global-management", boot)
	}
	if _, _, err := anon.ACL().Bootstrap(); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("second Bootstrap: %v; want 403", err)
	}
	root := clientWith(t, a, boot.SecretID)

	// Policies.
	pol, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-write", Rules: `service "web" { policy = "write" }`}, nil)
	if err != nil || pol.ID == "" {
		t.Fatalf("PolicyCreate: %+v, %v", pol, err)
	}
	if _, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "broken", Rules: `service "web" { policy = "writ" }`}, nil); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("PolicyCreate with a bad rule: %v; want 400", err)
	}
	if got, _, err := root.ACL().PolicyRead(pol.ID, nil); err != nil || got.Rules != pol.Rules {
		t.Errorf("PolicyRead: %+v, %v", got, err)
	}
	if got, _, err := root.ACL().PolicyReadByName("web-write", nil); err != nil || got.ID != pol.ID {
		t.Errorf("PolicyReadByName: %+v, %v", got, err)
	}
	pol.Description = "writes web"
	if got, _, err := root.ACL().PolicyUpdate(pol, nil); err != nil || got.Description != "writes web" {
		t.Errorf("PolicyUpdate: %+v, %v", got, err)
	}
	extra, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "extra", Rules: `key_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.ACL().PolicyDelete(extra.ID, nil); err != nil {
		t.Errorf("PolicyDelete: %v", err)
	}
	pols, _, err := root.ACL().PolicyList(nil)
	names := map[string]bool{}
	for _, p := range pols {
		names[p.Name] = true
	}
	if err != nil || !names["web-write"] || !names["global-management"] || names["extra"] {
		t.Errorf("PolicyList: %v, %v; want web-write and global-management, not extra", names, err)
	}

	// Tokens.
	webTok, _, err := root.ACL().TokenCreate(&api.ACLToken{Description: "web", Policies: []*api.ACLTokenPolicyLink{{Name: "web-write"}}}, nil)
	if err != nil || webTok.SecretID == "" || len(webTok.Policies) != 1 || webTok.Policies[0].ID != pol.ID {
		t.Fatalf("TokenCreate: %+v, %v", webTok, err)
	}
	if got, _, err := root.ACL().TokenRead(webTok.AccessorID, nil); err != nil || got.SecretID != webTok.SecretID || got.Description != "web" {
		t.Errorf("TokenRead: %+v, %v", got, err)
	}
	webTok.Description = "web service"
	if got, _, err := root.ACL().TokenUpdate(webTok, nil); err != nil || got.Description != "web service" || got.SecretID != webTok.SecretID {
		t.Errorf("TokenUpdate: %+v, %v", got, err)
	}
	toks, _, err := root.ACL().TokenList(nil)
	if err != nil || len(toks) < 3 { // bootstrap, anonymous, web
		t.Errorf("TokenList: %d tokens, %v; want at least 3", len(toks), err)
	}
	web := clientWith(t, a, webTok.SecretID)
	if self, _, err := web.ACL().TokenReadSelf(nil); err != nil || self.AccessorID != webTok.AccessorID {
		t.Errorf("TokenReadSelf: %+v, %v", self, err)
	}
	clone, _, err := root.ACL().TokenClone(webTok.AccessorID, "clone", nil)
	if err != nil || clone.SecretID == webTok.SecretID || clone.Description != "clone" {
		t.Errorf("TokenClone: %+v, %v", clone, err)
	}

	// What the web token may do.
	if err := web.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 80}); err != nil {
		t.Errorf("web token registering web: %v", err)
	}
	wantDenied(t, "web token registering api", web.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "api-1", Name: "api", Port: 81}))
	_, err = web.KV().Put(&api.KVPair{Key: "app/x", Value: []byte("1")}, nil)
	wantDenied(t, "web token writing KV", err)
	_, err = web.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "api", Action: api.IntentionActionAllow}, nil)
	wantDenied(t, "web token writing an intention for api", err)
	resp, err := doToken(a, http.MethodPut, "/v1/vmesh/token", webTok.SecretID)
	if err != nil || resp != http.StatusForbidden {
		t.Errorf("web token minting a join token: %d, %v; want 403", resp, err)
	}

	// The anonymous token, deny by default.
	wantDenied(t, "anonymous service register", anon.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x", Name: "x", Port: 1}))
	_, err = anon.KV().Put(&api.KVPair{Key: "secret/x", Value: []byte("1")}, nil)
	wantDenied(t, "anonymous KV write", err)
	_, err = anon.Connect().IntentionUpsert(&api.Intention{SourceName: "*", DestinationName: "*", Action: api.IntentionActionAllow}, nil)
	wantDenied(t, "anonymous intention * -> *", err)
	for _, ep := range []struct{ method, path string }{
		{http.MethodPut, "/v1/vmesh/token"}, {http.MethodPut, "/v1/vmesh/leave"},
		{http.MethodPut, "/v1/vmesh/ca/rotate"}, {http.MethodPut, "/v1/agent/force-leave/web-07"},
	} {
		if code, err := doToken(a, ep.method, ep.path, ""); err != nil || code != http.StatusForbidden {
			t.Errorf("anonymous %s %s: %d, %v; want 403", ep.method, ep.path, code, err)
		}
		if code, err := doToken(a, ep.method, ep.path, webTok.SecretID); err != nil || code != http.StatusForbidden {
			t.Errorf("web token %s %s: %d, %v; want 403", ep.method, ep.path, code, err)
		}
	}
	// The CA roots are public, as Consul's.
	if code, err := doToken(a, http.MethodGet, "/v1/connect/ca/roots", ""); err != nil || code != http.StatusOK {
		t.Errorf("anonymous GET /v1/connect/ca/roots: %d, %v; want 200", code, err)
	}
	// A management token may remove a node (one the catalog never held:
	// it is only revoked).
	if code, err := doToken(a, http.MethodPut, "/v1/agent/force-leave/web-07", boot.SecretID); err != nil || code != http.StatusOK {
		t.Errorf("management token force-leave: %d, %v; want 200", code, err)
	}
	// Naming the leader (this agent) is Consul's force-leave of a live
	// node: 200, and nothing changes.
	if code, err := doToken(a, http.MethodPut, "/v1/agent/force-leave/"+a.cfg.NodeName, boot.SecretID); err != nil || code != http.StatusOK {
		t.Errorf("force-leave of the leader: %d, %v; want 200", code, err)
	}
	if n, _, err := root.Catalog().Node(a.cfg.NodeName, nil); err != nil || n == nil || n.Node == nil {
		t.Errorf("the leader after a force-leave of itself: %+v, %v; want it still in the catalog", n, err)
	}

	// A deleted token stops at once.
	if _, err := root.ACL().TokenDelete(webTok.AccessorID, nil); err != nil {
		t.Fatalf("TokenDelete: %v", err)
	}
	err = web.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-2", Name: "web", Port: 80})
	if err == nil || !strings.Contains(err.Error(), "ACL not found") {
		t.Errorf("deleted token registering web: %v; want 403 ACL not found", err)
	}

	// consul acl set-agent-token default: requests without a token are
	// that token's from then on; setting it needs acl:write.
	if _, err := anon.Agent().UpdateDefaultACLToken(boot.SecretID, nil); err == nil {
		t.Error("anonymous set the default token")
	}
	if _, err := root.Agent().UpdateDefaultACLToken(boot.SecretID, nil); err != nil {
		t.Fatalf("setting the default token: %v", err)
	}
	if err := anon.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x", Name: "x", Port: 1}); err != nil {
		t.Errorf("a request without a token after the default token was set: %v", err)
	}
}

// doToken sends method path with token and returns the status code.
func doToken(a *Agent, method, path, token string) (int, error) {
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestACLDNS: DNS answers with the anonymous token's rights: nothing under
// deny by default, every service once the anonymous token may read
// services and nodes (what docs/acl.md tells operators to grant).
func TestACLDNS(t *testing.T) {
	a, anon := aclAgent(t)
	boot, _, err := anon.ACL().Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	root := clientWith(t, a, boot.SecretID)
	if err := root.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "orders-1", Name: "orders", Port: 80, Address: "127.0.0.9"}); err != nil {
		t.Fatal(err)
	}
	if r := dnsQuery(t, a.DNSAddr(), "udp", "orders.service.consul.", dns.TypeA); len(r.Answer) != 0 {
		t.Errorf("DNS under deny by default: %v; want no answer", r.Answer)
	}
	if _, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "dns-read", Rules: `service_prefix "" { policy = "read" } node_prefix "" { policy = "read" }`}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := root.ACL().TokenUpdate(&api.ACLToken{AccessorID: "00000000-0000-0000-0000-000000000002", Policies: []*api.ACLTokenPolicyLink{{Name: "dns-read"}}}, nil); err != nil {
		t.Fatalf("giving the anonymous token dns-read: %v", err)
	}
	if r := dnsQuery(t, a.DNSAddr(), "udp", "orders.service.consul.", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("DNS with an anonymous token that reads services: %v; want orders' address", r.Answer)
	}
}

// TestACLBootstrapReset: Consul's reset procedure. A second bootstrap is a
// 403 naming the reset index; with that index in acl-bootstrap-reset in
// the server's data dir, bootstrap works once more; a wrong index does
// not.
func TestACLBootstrapReset(t *testing.T) {
	a, anon := aclAgent(t)
	if _, _, err := anon.ACL().Bootstrap(); err != nil {
		t.Fatal(err)
	}
	_, _, err := anon.ACL().Bootstrap()
	m := regexp.MustCompile(`reset index: (\d+)`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil {
		t.Fatalf("second bootstrap: %v; want a 403 naming the reset index", err)
	}
	reset := filepath.Join(a.cfg.DataDir, "acl-bootstrap-reset")
	if err := os.WriteFile(reset, []byte("999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := anon.ACL().Bootstrap(); err == nil {
		t.Error("bootstrap with a wrong reset index succeeded")
	}
	if err := os.WriteFile(reset, []byte(m[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, _, err := anon.ACL().Bootstrap()
	if err != nil || tok.SecretID == "" {
		t.Fatalf("bootstrap with the reset index in the data dir: %+v, %v", tok, err)
	}
	if self, _, err := clientWith(t, a, tok.SecretID).ACL().TokenReadSelf(nil); err != nil || self.AccessorID != tok.AccessorID {
		t.Errorf("the new management token: %+v, %v", self, err)
	}
}

// TestACLAwaitInitialManagement: while the leader has not yet written the
// configured initial management token, a request with any unknown secret
// waits for the bootstrap (so it is judged as by a bootstrapped ACL
// system: "ACL not found"), and without an initial management token
// nothing waits.
func TestACLAwaitInitialManagement(t *testing.T) {
	store := discovery.NewStore()
	r := &aclResolver{store: store}
	if r.awaitInitialManagement(t.Context()) {
		t.Fatal("awaitInitialManagement without an initial management token = true; want false at once")
	}
	r.initialManagement = "root"
	done := make(chan bool, 1)
	go func() { done <- r.awaitInitialManagement(t.Context()) }()
	tok := acl.Token{AccessorID: "a1", SecretID: "root", Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}}
	if err := store.ACLBootstrap(5, &tok, 0); err != nil {
		t.Fatal(err)
	}
	if !<-done {
		t.Error("awaitInitialManagement for another secret = false after the bootstrap; want true")
	}
}
