package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// storeResolver resolves tokens from the catalog's ACL tables, as a
// server's agent does (mesh's resolver on a server is this one).
type storeResolver struct{ r *acl.Resolver }

func (s storeResolver) Resolve(_ context.Context, secret string) (*acl.Token, *acl.Authorizer, error) {
	return s.r.Resolve(secret)
}

// ttlRecorder is a TTLUpdater that records what it was asked.
type ttlRecorder struct {
	mu      sync.Mutex
	updates []string
}

func (t *ttlRecorder) UpdateTTL(_ context.Context, checkID, status, _ string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.updates = append(t.updates, checkID+"="+status)
	return nil
}

func (t *ttlRecorder) got() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.updates)
}

// bootstrapWriter applies ACL bootstraps to a store, as the FSM would;
// the fixture's tests make no other write.
type bootstrapWriter struct {
	mu  sync.Mutex
	s   *discovery.Store
	idx uint64
}

func (w *bootstrapWriter) Apply(_ context.Context, cmd discovery.Command) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.idx++
	req, ok := cmd.(discovery.ACLBootstrapRequest)
	if !ok {
		return 0, fmt.Errorf("bootstrapWriter: unexpected %T", cmd)
	}
	return w.idx, w.s.ACLBootstrap(w.idx, &req.Token, req.ResetIndex)
}

// aclFixture is the API of agent n1 with ACLs on, default deny, over a
// real catalog and a resolver over that catalog's ACL tables:
//
//	n1: web-n1 (web, check web-ttl), api-n1 (api, check api-ttl), node check mem
//	n2: web-n2 (web), db-1 (db, check db-ttl)
//	intentions: web -> db, api -> web, billing -> db, * -> db
//	config entries: service-defaults web and db
//
// ACL objects are written into the store as the FSM would.
type aclFixture struct {
	s    *discovery.Store
	base string
	mgmt string // the bootstrap (management) token's secret
	ttl  *ttlRecorder
	idx  uint64
	w    *catalogWriter // newOperatorFixture's writer
}

func (f *aclFixture) next() uint64 { f.idx++; return f.idx }

func newACLFixture(t *testing.T) *aclFixture {
	t.Helper()
	f := &aclFixture{s: discovery.NewStore(), ttl: &ttlRecorder{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"n1", "n2"} {
		must(f.s.EnsureNode(f.next(), &discovery.Node{ID: fmt.Sprintf("0000000%d-0000-0000-0000-000000000000", i+1), Name: n,
			Address: fmt.Sprintf("10.0.0.%d", i+1), Datacenter: "dc1"}))
	}
	ttlCheck := func(id string) []*discovery.Check {
		return []*discovery.Check{{CheckID: id, Name: id, Status: discovery.HealthPassing, Type: "ttl"}}
	}
	for _, in := range []struct {
		node, id, svc string
		checks        []*discovery.Check
	}{
		{"n1", "web-n1", "web", ttlCheck("web-ttl")},
		{"n1", "api-n1", "api", ttlCheck("api-ttl")},
		{"n2", "web-n2", "web", nil},
		{"n2", "db-1", "db", ttlCheck("db-ttl")},
	} {
		must(f.s.EnsureService(f.next(), &discovery.Instance{Node: in.node, ID: in.id, Service: in.svc, Port: 80,
			Weights: discovery.Weights{Passing: 1, Warning: 1}}, in.checks))
	}
	must(f.s.EnsureCheck(f.next(), &discovery.Check{Node: "n1", CheckID: "mem", Name: "mem", Status: discovery.HealthPassing, Type: "ttl"}))
	for i, p := range [][2]string{{"web", "db"}, {"api", "web"}, {"billing", "db"}, {"*", "db"}} {
		must(f.s.IntentionApply(f.next(), discovery.IntentionUpsert, &discovery.Intention{
			ID: fmt.Sprintf("ixn-%d", i), SourceName: p[0], DestinationName: p[1], Action: "allow"}))
	}
	for _, name := range []string{"web", "db"} {
		must(f.s.ConfigEntryApply(f.next(), discovery.ConfigEntryUpsert, &discovery.ConfigEntry{
			Kind: discovery.KindServiceDefaults, Name: name, Defaults: &discovery.ServiceDefaults{Protocol: "http"}}))
	}
	f.mgmt = "4d1b8a4e-0000-4000-8000-00000000000a"
	must(f.s.ACLBootstrap(f.next(), &acl.Token{AccessorID: "4d1b8a4e-0000-4000-8000-00000000000b", SecretID: f.mgmt,
		Policies: []acl.Link{{ID: acl.ManagementPolicyID, Name: acl.ManagementPolicyName}}}, 0))

	res, err := acl.NewResolver(acl.ResolverConfig{Store: f.s, Datacenter: "dc1", DefaultPolicy: acl.DefaultDeny})
	must(err)
	a := &API{Store: f.s, Writer: &bootstrapWriter{s: f.s, idx: 1000}, Cluster: fakeCluster{}, TTL: f.ttl,
		NodeName: "n1", NodeID: "00000001-0000-0000-0000-000000000000", Datacenter: "dc1", Version: "test",
		ACL: storeResolver{res},
		Members: func() []Member {
			return []Member{{Name: "n1", Addr: "10.0.0.1", Port: 7400, Role: "leader", Status: 1},
				{Name: "n2", Addr: "10.0.0.2", Port: 7400, Role: "voter", Status: 1}}
		}}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f
}

// token makes a policy of rules and a token holding it; it returns the
// token's secret.
func (f *aclFixture) token(t *testing.T, rules string) string {
	t.Helper()
	n := f.next()
	p := &acl.Policy{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", n), Name: fmt.Sprintf("p%d", n), Rules: rules}
	if err := f.s.ACLPolicySet(n, p); err != nil {
		t.Fatal(err)
	}
	secret := fmt.Sprintf("00000000-0000-4000-9000-%012d", n)
	if err := f.s.ACLTokenSet(f.next(), &acl.Token{AccessorID: fmt.Sprintf("00000000-0000-4000-a000-%012d", n), SecretID: secret,
		Policies: []acl.Link{{ID: p.ID}}}); err != nil {
		t.Fatal(err)
	}
	return secret
}

func (f *aclFixture) client(t *testing.T, token string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: strings.TrimPrefix(f.base, "http://"), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get is a raw GET, for the agent endpoints whose consul/api calls drop
// the response headers.
func (f *aclFixture) get(t *testing.T, token, path string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.base+path, nil)
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func filteredHeader(h http.Header) bool { return h.Get("X-Consul-Results-Filtered-By-ACLs") == "true" }

// view is what one token sees of the fixture through consul/api, each
// list as sorted names and whether its answer said it was filtered.
type view map[string]string

func see(t *testing.T, f *aclFixture, token string) view {
	t.Helper()
	c := f.client(t, token)
	v := view{}
	put := func(what string, names []string, filtered bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		sort.Strings(names)
		v[what] = strings.Join(names, ",")
		if filtered {
			v[what] += " (filtered)"
		}
	}

	svcs, m, err := c.Catalog().Services(nil)
	var names []string
	for n := range svcs {
		names = append(names, n)
	}
	put("catalog services", names, m != nil && m.ResultsFilteredByACLs, err)

	cs, m, err := c.Catalog().Service("web", "", nil)
	names = nil
	for _, s := range cs {
		names = append(names, s.ServiceID)
	}
	put("catalog service web", names, m != nil && m.ResultsFilteredByACLs, err)

	nodes, m, err := c.Catalog().Nodes(nil)
	names = nil
	for _, n := range nodes {
		names = append(names, n.Node)
	}
	put("catalog nodes", names, m != nil && m.ResultsFilteredByACLs, err)

	node, m, err := c.Catalog().Node("n2", nil)
	names = nil
	if node != nil {
		names = append(names, "node")
		for id := range node.Services {
			names = append(names, id)
		}
	}
	put("catalog node n2", names, m != nil && m.ResultsFilteredByACLs, err)

	ns, m, err := c.Catalog().NodeServiceList("n2", nil)
	names = nil
	if ns != nil && ns.Node != nil {
		names = append(names, "node")
		for _, s := range ns.Services {
			names = append(names, s.ID)
		}
	}
	put("catalog node-services n2", names, m != nil && m.ResultsFilteredByACLs, err)

	entries, m, err := c.Health().Service("web", "", false, nil)
	names = nil
	for _, e := range entries {
		names = append(names, e.Service.ID)
	}
	put("health service web", names, m != nil && m.ResultsFilteredByACLs, err)

	for _, q := range []struct {
		what string
		call func() (api.HealthChecks, *api.QueryMeta, error)
	}{
		{"health checks web", func() (api.HealthChecks, *api.QueryMeta, error) { return c.Health().Checks("web", nil) }},
		{"health state any", func() (api.HealthChecks, *api.QueryMeta, error) { return c.Health().State("any", nil) }},
		{"health node n1", func() (api.HealthChecks, *api.QueryMeta, error) { return c.Health().Node("n1", nil) }},
	} {
		checks, m, err := q.call()
		names = nil
		for _, chk := range checks {
			names = append(names, chk.CheckID)
		}
		put(q.what, names, m != nil && m.ResultsFilteredByACLs, err)
	}

	ixns, m, err := c.Connect().Intentions(nil)
	names = nil
	for _, x := range ixns {
		names = append(names, x.SourceName+">"+x.DestinationName)
	}
	put("intentions", names, m != nil && m.ResultsFilteredByACLs, err)

	ces, m, err := c.ConfigEntries().List(api.ServiceDefaults, nil)
	names = nil
	for _, e := range ces {
		names = append(names, e.GetName())
	}
	put("config service-defaults", names, m != nil && m.ResultsFilteredByACLs, err)

	// The agent endpoints: consul/api drops their headers, so raw.
	for _, q := range []struct{ what, path string }{
		{"agent services", "/v1/agent/services"},
		{"agent checks", "/v1/agent/checks"},
		{"agent members", "/v1/agent/members"},
	} {
		code, h, body := f.get(t, token, q.path)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", q.what, code, body)
		}
		names = nil
		switch q.what {
		case "agent members":
			ms, err := c.Agent().Members(false)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				names = append(names, m.Name)
			}
		case "agent services":
			ss, err := c.Agent().Services()
			if err != nil {
				t.Fatal(err)
			}
			for id := range ss {
				names = append(names, id)
			}
		case "agent checks":
			cs, err := c.Agent().Checks()
			if err != nil {
				t.Fatal(err)
			}
			for id := range cs {
				names = append(names, id)
			}
		}
		put(q.what, names, filteredHeader(h), nil)
	}
	return v
}

// everything is what a token that may read it all sees: every list
// whole, no answer marked filtered.
var everything = view{
	"catalog services":         "api,db,web",
	"catalog service web":      "web-n1,web-n2",
	"catalog nodes":            "n1,n2",
	"catalog node n2":          "db-1,node,web-n2",
	"catalog node-services n2": "db-1,node,web-n2",
	"health service web":       "web-n1,web-n2",
	"health checks web":        "web-ttl",
	"health state any":         "api-ttl,db-ttl,mem,web-ttl",
	"health node n1":           "api-ttl,mem,web-ttl",
	"intentions":               "*>db,api>web,billing>db,web>db",
	"config service-defaults":  "db,web",
	"agent services":           "api-n1,web-n1",
	"agent checks":             "api-ttl,mem,web-ttl",
	"agent members":            "n1,n2",
}

func diffViews(t *testing.T, who string, got, want view) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s, %s: %q; want %q", who, k, got[k], w)
		}
	}
}

// TestACLReadsFiltered: with default deny every catalog, health, agent,
// intention and config entry list is filtered by the token's read rights,
// as Consul filters them, and says so in
// X-Consul-Results-Filtered-By-ACLs (consul/api's ResultsFilteredByACLs)
// exactly when it left something out.
func TestACLReadsFiltered(t *testing.T) {
	f := newACLFixture(t)
	readAll := f.token(t, `service_prefix "" { policy = "read" } node_prefix "" { policy = "read" }`)
	webOnly := f.token(t, `service "web" { policy = "read" } node_prefix "" { policy = "read" }`)
	webNoNodes := f.token(t, `service "web" { policy = "read" }`)
	dbN2 := f.token(t, `service "db" { policy = "read" } node "n2" { policy = "read" }`)

	diffViews(t, "management token", see(t, f, f.mgmt), everything)
	diffViews(t, "read-all token", see(t, f, readAll), everything)

	nothing := view{}
	for k := range everything {
		nothing[k] = " (filtered)"
	}
	diffViews(t, "anonymous", see(t, f, ""), nothing)

	diffViews(t, `service "web" read, node_prefix "" read`, see(t, f, webOnly), view{
		"catalog services":         "web (filtered)",
		"catalog service web":      "web-n1,web-n2",
		"catalog nodes":            "n1,n2",
		"catalog node n2":          "node,web-n2 (filtered)",
		"catalog node-services n2": "node,web-n2 (filtered)",
		"health service web":       "web-n1,web-n2",
		"health checks web":        "web-ttl",
		// mem is n1's own check: node:read is enough.
		"health state any": "mem,web-ttl (filtered)",
		"health node n1":   "mem,web-ttl (filtered)",
		// Either end's intention:read shows an intention; * is read by
		// any token with intention:read on some service (Consul's rule).
		"intentions":              "*>db,api>web,web>db (filtered)",
		"config service-defaults": "web (filtered)",
		"agent services":          "web-n1 (filtered)",
		"agent checks":            "mem,web-ttl (filtered)",
		"agent members":           "n1,n2",
	})

	// An instance needs node:read on its node too, as in Consul: the
	// service name alone lists the name and nothing where it runs.
	diffViews(t, `service "web" read only`, see(t, f, webNoNodes), view{
		"catalog services":    "web (filtered)",
		"catalog service web": " (filtered)",
		"catalog nodes":       " (filtered)",
		"health service web":  " (filtered)",
		"health checks web":   " (filtered)",
		"agent services":      "web-n1 (filtered)",
		"agent checks":        "web-ttl (filtered)",
		"agent members":       " (filtered)",
	})

	diffViews(t, `service "db" read, node "n2" read`, see(t, f, dbN2), view{
		"catalog services":         "db (filtered)",
		"catalog service web":      " (filtered)",
		"catalog nodes":            "n2 (filtered)",
		"catalog node n2":          "db-1,node (filtered)",
		"catalog node-services n2": "db-1,node (filtered)",
		"health state any":         "db-ttl (filtered)",
		"health node n1":           " (filtered)",
		"intentions":               "*>db,billing>db,web>db (filtered)",
		"agent members":            "n2 (filtered)",
	})

	// A list that matches nothing is not filtered: the header says
	// something was left out, not that the answer is empty.
	entries, m, err := f.client(t, "").Health().Service("nosuch", "", false, nil)
	if err != nil || len(entries) != 0 || m.ResultsFilteredByACLs {
		t.Errorf("anonymous health of a service that does not exist: %d entries, filtered %v, %v; want none, not filtered", len(entries), m.ResultsFilteredByACLs, err)
	}
	// The index is the catalog's whoever reads: a blocking query of a
	// filtered list waits on the same index as anyone's.
	_, mAnon, err1 := f.client(t, "").Catalog().Services(nil)
	_, mMgmt, err2 := f.client(t, f.mgmt).Catalog().Services(nil)
	if err1 != nil || err2 != nil || mAnon.LastIndex != mMgmt.LastIndex || mAnon.LastIndex == 0 {
		t.Errorf("catalog services index: anonymous %v (%v), management %v (%v); want the same, non-zero", mAnon, err1, mMgmt, err2)
	}
	// An unknown token is refused, not treated as anonymous.
	if _, _, err := f.client(t, "no-such-secret").Catalog().Services(nil); err == nil || !strings.Contains(err.Error(), "ACL not found") {
		t.Errorf("catalog services with an unknown token: %v; want 403 ACL not found", err)
	}
}

// TestACLReadsOneObject: a read of one named thing the token may not read
// is a 403, as in Consul; status and the datacenter list stay open.
func TestACLReadsOneObject(t *testing.T) {
	f := newACLFixture(t)
	web := f.token(t, `service "web" { policy = "read" }`)
	db := f.token(t, `service "db" { policy = "read" }`)
	agentN1 := f.token(t, `agent "n1" { policy = "read" }`)
	agentAll := f.token(t, `agent_prefix "" { policy = "read" }`)
	agentN2 := f.token(t, `agent "n2" { policy = "write" }`)

	for _, c := range []struct {
		who, token string
		ok         bool
	}{
		{"anonymous", "", false}, {"service web read", web, false}, {"agent n2 write", agentN2, false},
		{"agent n1 read", agentN1, true}, {"agent_prefix read", agentAll, true}, {"management", f.mgmt, true},
	} {
		self, err := f.client(t, c.token).Agent().Self()
		if c.ok && (err != nil || self["Config"]["NodeName"] != "n1") {
			t.Errorf("agent self as %s: %v, %v; want n1's", c.who, self["Config"], err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "agent:read")) {
			t.Errorf("agent self as %s: %v; want 403 lacking agent:read", c.who, err)
		}
	}

	if _, _, err := f.client(t, web).Agent().Service("web-n1", nil); err != nil {
		t.Errorf("agent service web-n1 with web read: %v", err)
	}
	if _, _, err := f.client(t, web).Agent().Service("api-n1", nil); err == nil || !strings.Contains(err.Error(), "service:read") {
		t.Errorf("agent service api-n1 with web read: %v; want 403 lacking service:read", err)
	}
	if code, _, body := f.get(t, web, "/v1/agent/service/nosuch"); code != http.StatusNotFound {
		t.Errorf("agent service nosuch: %d %s; want 404", code, body)
	}

	ce := func(token, name string) error {
		_, _, err := f.client(t, token).ConfigEntries().Get(api.ServiceDefaults, name, nil)
		return err
	}
	if err := ce(web, "web"); err != nil {
		t.Errorf("service-defaults web with web read: %v", err)
	}
	for _, name := range []string{"db", "nosuch"} {
		// Refused before the lookup: whether it exists is not told.
		if err := ce(web, name); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("service-defaults %s with web read: %v; want 403", name, err)
		}
	}
	if err := ce("", "web"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("service-defaults web anonymously: %v; want 403", err)
	}

	conn := func(token string) *api.Connect { return f.client(t, token).Connect() }
	if x, _, err := conn(web).IntentionGetExact("api", "web", nil); err != nil || x == nil {
		t.Errorf("intention api>web with web read (its destination): %v, %v", x, err)
	}
	if x, _, err := conn(web).IntentionGetExact("web", "db", nil); err != nil || x == nil {
		t.Errorf("intention web>db with web read (its source): %v, %v", x, err)
	}
	if _, _, err := conn(web).IntentionGetExact("billing", "db", nil); err == nil || !strings.Contains(err.Error(), "intention:read") {
		t.Errorf("intention billing>db with web read: %v; want 403 lacking intention:read", err)
	}
	if code, _, body := f.get(t, web, "/v1/connect/intentions/ixn-2"); code != http.StatusForbidden {
		t.Errorf("intention billing>db by ID with web read: %d %s; want 403", code, body)
	}
	if code, _, body := f.get(t, db, "/v1/connect/intentions/ixn-2"); code != http.StatusOK {
		t.Errorf("intention billing>db by ID with db read: %d %s; want 200", code, body)
	}
	// check needs service:read on the destination; match intention:read
	// on each name asked.
	if ok, _, err := conn(db).IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil); err != nil || !ok {
		t.Errorf("intention check web>db with db read: %v, %v; want allowed", ok, err)
	}
	if _, _, err := conn(web).IntentionCheck(&api.IntentionCheck{Source: "web", Destination: "db"}, nil); err == nil || !strings.Contains(err.Error(), "service:read") {
		t.Errorf("intention check web>db with web read: %v; want 403 lacking service:read on db", err)
	}
	match := func(token string, names ...string) (map[string][]*api.Intention, error) {
		m, _, err := conn(token).IntentionMatch(&api.IntentionMatch{By: api.IntentionMatchDestination, Names: names}, nil)
		return m, err
	}
	if m, err := match(db, "db"); err != nil || len(m["db"]) != 3 {
		t.Errorf("intention match destination db with db read: %v, %v; want its 3", m, err)
	}
	if _, err := match(db, "db", "web"); err == nil || !strings.Contains(err.Error(), "intention:read") {
		t.Errorf("intention match db and web with db read: %v; want 403", err)
	}

	// Open to anyone, as in Consul.
	anon := f.client(t, "")
	if leader, err := anon.Status().Leader(); err != nil || leader == "" {
		t.Errorf("status leader anonymously: %q, %v", leader, err)
	}
	if dcs, err := anon.Catalog().Datacenters(); err != nil || len(dcs) != 1 {
		t.Errorf("datacenters anonymously: %v, %v", dcs, err)
	}
}

// TestACLTTLUpdate: a TTL update needs service:write on the check's
// service, or node:write on this node for a node check, as Consul's agent
// asks; a refused update never reaches the check runner.
func TestACLTTLUpdate(t *testing.T) {
	f := newACLFixture(t)
	webWrite := f.token(t, `service "web" { policy = "write" }`)
	webRead := f.token(t, `service "web" { policy = "read" } node_prefix "" { policy = "read" }`)
	nodeWrite := f.token(t, `node "n1" { policy = "write" }`)

	for _, c := range []struct {
		who, token, check string
		ok                bool
	}{
		{"anonymous", "", "web-ttl", false},
		{"service web read", webRead, "web-ttl", false},
		{"service web write", webWrite, "api-ttl", false},
		{"service web write", webWrite, "mem", false},
		{"node n1 write", nodeWrite, "web-ttl", false},
		{"service web write", webWrite, "web-ttl", true},
		{"node n1 write", nodeWrite, "mem", true},
		{"management", f.mgmt, "api-ttl", true},
		// A check the catalog does not hold needs node:write: nothing
		// else can vouch for it.
		{"service web write", webWrite, "nosuch", false},
	} {
		before := len(f.ttl.got())
		err := f.client(t, c.token).Agent().UpdateTTL(c.check, "from "+c.who, api.HealthWarning)
		recorded := len(f.ttl.got()) > before
		switch {
		case c.ok && (err != nil || !recorded):
			t.Errorf("TTL update of %s as %s: %v (recorded %v); want it done", c.check, c.who, err, recorded)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "403") || recorded):
			t.Errorf("TTL update of %s as %s: %v (recorded %v); want 403, not recorded", c.check, c.who, err, recorded)
		}
	}
	// pass/warn/fail take the same rule.
	if err := f.client(t, webRead).Agent().PassTTL("web-ttl", ""); err == nil || !strings.Contains(err.Error(), "service:write") {
		t.Errorf("PassTTL with web read: %v; want 403 lacking service:write", err)
	}
	if err := f.client(t, webWrite).Agent().FailTTL("web-ttl", "down"); err != nil {
		t.Errorf("FailTTL with web write: %v", err)
	}
	if got, want := f.ttl.got(), []string{"web-ttl=warning", "mem=warning", "api-ttl=warning", "web-ttl=critical"}; !slices.Equal(got, want) {
		t.Errorf("the check runner was asked %v; want %v", got, want)
	}
}

// TestACLBootstrapResetRefused: once bootstrapped, PUT /v1/acl/bootstrap
// is a 403 that names the reset index, as Consul's; sending that index
// back over HTTP does not reset anything. The index is in the 403 anyone
// gets, so a reset by request would hand a management token to whoever
// can reach the API.
func TestACLBootstrapResetRefused(t *testing.T) {
	f := newACLFixture(t)
	bootIdx, err := f.s.ACLBootstrapIndex()
	if err != nil || bootIdx == 0 {
		t.Fatalf("bootstrap index %d, %v", bootIdx, err)
	}
	_, before, _ := f.s.ACLTokens(nil)
	put := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodPut, f.base+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := put("/v1/acl/bootstrap")
	if want := fmt.Sprintf("reset index: %d", bootIdx); code != http.StatusForbidden || !strings.Contains(body, want) {
		t.Errorf("second bootstrap: %d %s; want 403 naming %q", code, body, want)
	}
	code, body = put(fmt.Sprintf("/v1/acl/bootstrap?reset-index=%d", bootIdx))
	if code != http.StatusBadRequest || !strings.Contains(body, "reset-index") {
		t.Errorf("anonymous bootstrap with the reset index: %d %s; want 400 naming reset-index", code, body)
	}
	if _, after, _ := f.s.ACLTokens(nil); len(after) != len(before) {
		t.Errorf("tokens after the refused reset: %d; want %d (no new management token)", len(after), len(before))
	}
}

// TestACLFilterBeforeExpression: the ACL filter runs before ?filter=, as
// in Consul, so the filtered header cannot tell whether a hidden entry
// matches an expression: asking for a hidden node and for no node at all
// get the same answer.
func TestACLFilterBeforeExpression(t *testing.T) {
	f := newACLFixture(t)
	c := f.client(t, f.token(t, `service "web" { policy = "read" } node "n1" { policy = "read" }`))
	for _, q := range []struct {
		what, field string
		call        func(filter string) (int, bool, error)
	}{
		{"catalog service web", "Node", func(filter string) (int, bool, error) {
			out, m, err := c.Catalog().Service("web", "", &api.QueryOptions{Filter: filter})
			return len(out), m != nil && m.ResultsFilteredByACLs, err
		}},
		{"health service web", "Node.Node", func(filter string) (int, bool, error) {
			out, m, err := c.Health().Service("web", "", false, &api.QueryOptions{Filter: filter})
			return len(out), m != nil && m.ResultsFilteredByACLs, err
		}},
		{"catalog nodes", "Node", func(filter string) (int, bool, error) {
			out, m, err := c.Catalog().Nodes(&api.QueryOptions{Filter: filter})
			return len(out), m != nil && m.ResultsFilteredByACLs, err
		}},
		{"health state any", "Node", func(filter string) (int, bool, error) {
			out, m, err := c.Health().State("any", &api.QueryOptions{Filter: filter})
			return len(out), m != nil && m.ResultsFilteredByACLs, err
		}},
	} {
		// n2 exists but is hidden from this token; n3 does not exist.
		n2, f2, err2 := q.call(q.field + ` == "n2"`)
		n3, f3, err3 := q.call(q.field + ` == "n3"`)
		if err2 != nil || err3 != nil || n2 != 0 || n3 != 0 || f2 != f3 || !f2 {
			t.Errorf("%s: hidden node %d entries (filtered %v, %v), missing node %d entries (filtered %v, %v); want both empty and both marked filtered",
				q.what, n2, f2, err2, n3, f3, err3)
		}
	}
	services, m, err := c.Catalog().Services(&api.QueryOptions{Filter: `ServiceName == "db"`})
	if err != nil || len(services) != 0 || !m.ResultsFilteredByACLs {
		t.Errorf("catalog services filtered to the hidden db: %v (filtered %v), %v; want none, marked filtered", services, m.ResultsFilteredByACLs, err)
	}
}
