package xds

import (
	"fmt"
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfig "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"github.com/vmesh/vmesh/discovery"
)

const testTrustDomain = "td.test"

// intention adds an intention to the catalog.
func (c *catalog) intention(src, dst, action string) *catalog {
	c.st.Intentions = append(c.st.Intentions, &discovery.Intention{
		ID: fmt.Sprintf("ixn-%d", len(c.st.Intentions)), SourceName: src, DestinationName: dst, Action: action,
	})
	return c
}

func (c *catalog) trustDomain(td string) *catalog {
	c.st.TrustDomain = td
	return c
}

// intentionsCatalog: node-a runs web (http), db (tcp) and orders (grpc);
// intentions at every precedence level, both actions.
func intentionsCatalog() *catalog {
	A, D := discovery.IntentionActionAllow, discovery.IntentionActionDeny
	return threeNodes().trustDomain(testTrustDomain).
		add(discovery.Instance{Node: "node-a", ID: "web-1", Service: "web", Port: 8080, Meta: httpMeta()}, "").
		add(discovery.Instance{Node: "node-a", ID: "db-1", Service: "db", Port: 5432}, "").
		add(discovery.Instance{Node: "node-a", ID: "orders-1", Service: "orders", Port: 9000, Meta: grpcMeta()}, "").
		add(discovery.Instance{Node: "node-b", ID: "frontend-1", Service: "frontend", Port: 3000, Meta: httpMeta()}, "").
		intention("frontend", "web", A). // 9
		intention("*", "web", D).        // 8: same as default deny
		intention("batch", "db", D).     // 9: carved out of *>db
		intention("*", "db", A).         // 8
		intention("admin", "*", A).      // 6: all three
		intention("legacy", "*", D).     // 6
		intention("*", "*", D)           // 5
}

// intentionFixtures are the golden fixtures of intentions, appended to
// fixtures() in build_test.go.
func intentionFixtures() []fixture {
	check := func(defaultAllow bool) func(t *testing.T, mesh, app *cache.Snapshot) {
		return func(t *testing.T, mesh, app *cache.Snapshot) {
			wantListeners(t, mesh, OutboundListener, InboundListener)
			for _, k := range []string{"web", "db", "orders"} {
				rules := inboundRules(t, mesh, k)
				want := rbacconfig.RBAC_ALLOW
				if defaultAllow {
					want = rbacconfig.RBAC_DENY
				}
				if rules.GetAction() != want {
					t.Errorf("%s: RBAC action %v, want %v", k, rules.GetAction(), want)
				}
			}
			checkRBACDecisions(t, mesh, intentionsCatalog().st.Intentions, testTrustDomain, defaultAllow)
		}
	}
	return []fixture{
		{name: "intentions-default-deny", state: intentionsCatalog().at(20), check: check(false)},
		{name: "intentions-default-allow", state: intentionsCatalog().at(21), opts: Options{IntentionsDefaultAllow: true}, check: check(true)},
	}
}

// inboundChain returns the inbound filter chain of local service k.
func inboundChain(t *testing.T, s *cache.Snapshot, k string) *listener.FilterChain {
	t.Helper()
	l, ok := s.GetResources(resource.ListenerType)[InboundListener].(*listener.Listener)
	if !ok {
		t.Fatalf("no inbound listener")
	}
	for _, fc := range l.GetFilterChains() {
		if fc.GetName() == "inbound/"+k {
			return fc
		}
	}
	t.Fatalf("no inbound filter chain for %s", k)
	return nil
}

// inboundRules digs out the RBAC rules of local service k's chain, and
// checks where they sit: first among the HTTP filters (never a network
// RBAC then) for L7 services, before the TCP proxy otherwise.
func inboundRules(t *testing.T, s *cache.Snapshot, k string) *rbacconfig.RBAC {
	t.Helper()
	fc := inboundChain(t, s, k)
	fs := fc.GetFilters()
	first, err := fs[0].GetTypedConfig().UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	switch m := first.(type) {
	case *rbac.RBAC:
		if len(fs) != 2 || fs[0].GetName() != wellknown.RoleBasedAccessControl || fs[1].GetName() != wellknown.TCPProxy {
			t.Fatalf("%s: filters %v, want network RBAC then tcp_proxy", k, fs)
		}
		return m.GetRules()
	case *hcm.HttpConnectionManager:
		if len(fs) != 1 {
			t.Fatalf("%s: %d filters besides the HTTP connection manager, want none (RBAC is per request)", k, len(fs)-1)
		}
		hf := m.GetHttpFilters()
		if len(hf) != 2 || hf[0].GetName() != wellknown.HTTPRoleBasedAccessControl || hf[1].GetName() != wellknown.Router {
			t.Fatalf("%s: HTTP filters %v, want RBAC then router", k, hf)
		}
		r, err := hf[0].GetTypedConfig().UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		return r.(*httprbac.RBAC).GetRules()
	}
	t.Fatalf("%s: first filter is %T", k, first)
	return nil
}

// An evaluator of the RBAC subset the translation emits, as Envoy runs
// it: the peer's URI SAN against authenticated principal names.
func stringMatches(m *matcher.StringMatcher, s string) bool {
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		if m.GetIgnoreCase() {
			return strings.EqualFold(p.Exact, s)
		}
		return p.Exact == s
	case *matcher.StringMatcher_Prefix:
		if m.GetIgnoreCase() {
			return strings.HasPrefix(strings.ToLower(s), strings.ToLower(p.Prefix))
		}
		return strings.HasPrefix(s, p.Prefix)
	}
	panic(fmt.Sprintf("unexpected matcher %T", m.GetMatchPattern()))
}

func principalMatches(p *rbacconfig.Principal, uri string) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacconfig.Principal_Any:
		return id.Any
	case *rbacconfig.Principal_Authenticated_:
		return stringMatches(id.Authenticated.GetPrincipalName(), uri)
	case *rbacconfig.Principal_AndIds:
		for _, x := range id.AndIds.GetIds() {
			if !principalMatches(x, uri) {
				return false
			}
		}
		return true
	case *rbacconfig.Principal_OrIds:
		for _, x := range id.OrIds.GetIds() {
			if principalMatches(x, uri) {
				return true
			}
		}
		return false
	case *rbacconfig.Principal_NotId:
		return !principalMatches(id.NotId, uri)
	}
	panic(fmt.Sprintf("unexpected principal %T", p.GetIdentifier()))
}

func rbacAllows(r *rbacconfig.RBAC, uri string) bool {
	matched := false
	for _, pol := range r.GetPolicies() {
		perm := false
		for _, pm := range pol.GetPermissions() {
			if pm.GetAny() {
				perm = true
			}
		}
		for _, pr := range pol.GetPrincipals() {
			if perm && principalMatches(pr, uri) {
				matched = true
			}
		}
	}
	if r.GetAction() == rbacconfig.RBAC_DENY {
		return !matched
	}
	return matched
}

// checkRBACDecisions: for every inbound chain of the snapshot, the RBAC
// decides what discovery.IntentionDecision decides, for every source
// named in the intentions (in two spellings), a source none names, and a
// host proxy's identity (which only * intentions and the default reach).
func checkRBACDecisions(t *testing.T, s *cache.Snapshot, ixns []*discovery.Intention, td string, defaultAllow bool) {
	t.Helper()
	l, ok := s.GetResources(resource.ListenerType)[InboundListener].(*listener.Listener)
	if !ok {
		return
	}
	// The store keeps one intention per pair; so does the decision here.
	seen := map[[2]string]bool{}
	var unique []*discovery.Intention
	for _, x := range ixns {
		p := [2]string{strings.ToLower(x.SourceName), strings.ToLower(x.DestinationName)}
		if !seen[p] {
			seen[p] = true
			unique = append(unique, x)
		}
	}
	sources := map[string]bool{"nobody-names-me": true}
	for _, x := range unique {
		if x.SourceName != discovery.IntentionWildcard {
			sources[x.SourceName] = true
			sources[strings.ToUpper(x.SourceName)] = true
		}
	}
	for _, fc := range l.GetFilterChains() {
		k := strings.TrimPrefix(fc.GetName(), "inbound/")
		rules := inboundRules(t, s, k)
		for src := range sources {
			want, by := discovery.IntentionDecision(unique, src, k, defaultAllow)
			if got := rbacAllows(rules, serviceSPIFFE(td, src)); got != want {
				t.Errorf("%s -> %s: RBAC allows %v, intentions say %v (by %+v)", src, k, got, want, by)
			}
		}
		want, _ := discovery.IntentionDecision(unique, "\x00node", k, defaultAllow)
		if got := rbacAllows(rules, spiffePrefix(td)+"proxy/node-b"); got != want {
			t.Errorf("host proxy identity -> %s: RBAC allows %v, intentions say %v", k, got, want)
		}
		if rbacAllows(rules, "spiffe://other.domain/svc/admin") && !defaultAllow {
			t.Errorf("%s: a foreign trust domain's identity is allowed under default deny", k)
		}
	}
}

// TestInboundRBAC is the focused check of the translation: where the
// rules sit, what they decide, and the policies they hold.
func TestInboundRBAC(t *testing.T) {
	for _, defaultAllow := range []bool{false, true} {
		t.Run(fmt.Sprintf("default-allow=%v", defaultAllow), func(t *testing.T) {
			st := intentionsCatalog().at(1)
			v := NewView(st, Options{IntentionsDefaultAllow: defaultAllow})
			snap, err := Build(v, v.NodeInfo(meshNode))
			if err != nil {
				t.Fatal(err)
			}
			if err := Check(snap); err != nil {
				t.Fatal(err)
			}
			checkRBACDecisions(t, snap, st.Intentions, testTrustDomain, defaultAllow)
			// The policies: only intentions that differ from the default,
			// minus the ones a more specific intention overrides.
			want := map[string][]string{
				// admin>* (6) is overridden for web by *>web deny (8).
				"web":    {"intention/9/allow/frontend->web"},
				"db":     {"intention/8/allow/*->db", "intention/6/allow/admin->*"},
				"orders": {"intention/6/allow/admin->*"},
			}
			if defaultAllow {
				want = map[string][]string{
					// *>web deny carves out frontend (allowed at 9) but
					// still covers admin, whose admin>* allow is only 6.
					"web": {"intention/8/deny/*->web", "intention/6/deny/legacy->*", "intention/5/deny/*->*"},
					// legacy>* and *>* are overridden for db by *>db allow.
					"db":     {"intention/9/deny/batch->db"},
					"orders": {"intention/6/deny/legacy->*", "intention/5/deny/*->*"},
				}
			}
			for k, names := range want {
				pols := inboundRules(t, snap, k).GetPolicies()
				for _, n := range names {
					if pols[n] == nil {
						t.Errorf("%s: no policy %q", k, n)
					}
				}
				if len(pols) != len(names) {
					var got []string
					for n := range pols {
						got = append(got, n)
					}
					t.Errorf("%s: policies %v, want %v", k, got, names)
				}
			}
			if defaultAllow {
				// *->* deny for orders carves out admin (admin->* allow, 6).
				p := inboundRules(t, snap, "orders").GetPolicies()["intention/5/deny/*->*"].GetPrincipals()[0]
				if ids := p.GetAndIds().GetIds(); len(ids) != 2 || !principalMatches(ids[1], serviceSPIFFE(testTrustDomain, "web")) ||
					principalMatches(ids[1], serviceSPIFFE(testTrustDomain, "admin")) {
					t.Errorf("orders' *->* deny principal = %v, want the trust domain but not admin", p)
				}
			}
		})
	}
	// No CA yet, no intentions, default deny: every chain denies all.
	st := threeNodes().add(discovery.Instance{Node: "node-a", ID: "db-1", Service: "db", Port: 5432}, "").at(2)
	v := NewView(st, Options{})
	snap, err := Build(v, v.NodeInfo(meshNode))
	if err != nil {
		t.Fatal(err)
	}
	if r := inboundRules(t, snap, "db"); r.GetAction() != rbacconfig.RBAC_ALLOW || len(r.GetPolicies()) != 0 {
		t.Errorf("no intentions, default deny: rules %v, want an empty ALLOW (deny all)", r)
	}
}

// TestIntentionsReachRBAC: a new intention changes the snapshot's
// listeners (and nothing needs to restart).
func TestIntentionsReachRBAC(t *testing.T) {
	base := threeNodes().trustDomain(testTrustDomain).add(discovery.Instance{Node: "node-a", ID: "db-1", Service: "db", Port: 5432}, "")
	before, err := Build(NewView(base.at(1), Options{}), NodeInfo{ID: "node-a", Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	after, err := Build(NewView(base.intention("web", "db", discovery.IntentionActionAllow).at(2), Options{}), NodeInfo{ID: "node-a", Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	uri := serviceSPIFFE(testTrustDomain, "web")
	if rbacAllows(inboundRules(t, before, "db"), uri) || !rbacAllows(inboundRules(t, after, "db"), uri) {
		t.Error("web -> db: want denied before the intention, allowed after")
	}
	if after.GetVersion(resource.ListenerType) != "2" {
		t.Errorf("listener version %q, want 2", after.GetVersion(resource.ListenerType))
	}
}

// wantClientCert checks the client certificate a mesh cluster presents to
// peers' mesh ports, and (edsName != "") that it takes edsName's endpoints.
func wantClientCert(t *testing.T, s *cache.Snapshot, name, secret, edsName string) {
	t.Helper()
	c := clusterOf(t, s, name)
	if got := c.GetEdsClusterConfig().GetServiceName(); got != edsName {
		t.Errorf("cluster %s: EDS service_name %q, want %q", name, got, edsName)
	}
	m := c.GetTransportSocketMatches()
	if len(m) != 1 {
		t.Fatalf("cluster %s: %d transport socket matches, want 1", name, len(m))
	}
	var tc tlsv3.UpstreamTlsContext
	if err := m[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
		t.Fatal(err)
	}
	certs := tc.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if len(certs) != 1 || certs[0].GetName() != secret {
		t.Errorf("cluster %s presents %v, want %s", name, certs, secret)
	}
	if c.GetType() != cluster.Cluster_EDS {
		t.Errorf("cluster %s is %v, want EDS", name, c.GetType())
	}
}
