package acl

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// ask dispatches "resource:access" to the Authorizer method of that
// permission, so tables can list questions as text.
func ask(a *Authorizer, perm, name string) error {
	switch perm {
	case "acl:read":
		return a.ACLRead()
	case "acl:write":
		return a.ACLWrite()
	case "snapshot":
		return a.Snapshot()
	case "agent:read":
		return a.AgentRead(name)
	case "agent:write":
		return a.AgentWrite(name)
	case "event:read":
		return a.EventRead(name)
	case "event:write":
		return a.EventWrite(name)
	case "intention:read":
		return a.IntentionRead(name)
	case "intention:write":
		return a.IntentionWrite(name)
	case "key:read":
		return a.KeyRead(name)
	case "key:list":
		return a.KeyList(name)
	case "key:write":
		return a.KeyWrite(name)
	case "key:writeprefix":
		return a.KeyWritePrefix(name)
	case "keyring:read":
		return a.KeyringRead()
	case "keyring:write":
		return a.KeyringWrite()
	case "mesh:read":
		return a.MeshRead()
	case "mesh:write":
		return a.MeshWrite()
	case "node:read":
		return a.NodeRead(name)
	case "node:readall":
		return a.NodeReadAll()
	case "node:write":
		return a.NodeWrite(name)
	case "operator:read":
		return a.OperatorRead()
	case "operator:write":
		return a.OperatorWrite()
	case "peering:read":
		return a.PeeringRead()
	case "peering:write":
		return a.PeeringWrite()
	case "query:read":
		return a.QueryRead(name)
	case "query:write":
		return a.QueryWrite(name)
	case "service:read":
		return a.ServiceRead(name)
	case "service:readall":
		return a.ServiceReadAll()
	case "service:write":
		return a.ServiceWrite(name)
	case "service:writeany":
		return a.ServiceWriteAny()
	case "session:read":
		return a.SessionRead(name)
	case "session:write":
		return a.SessionWrite(name)
	}
	panic("unknown permission " + perm)
}

// every question ask knows, each with a name where it takes one.
var everyPermission = []struct{ perm, name string }{
	{"acl:read", ""}, {"acl:write", ""}, {"snapshot", ""},
	{"agent:read", "n1"}, {"agent:write", "n1"},
	{"event:read", "e"}, {"event:write", "e"},
	{"intention:read", "web"}, {"intention:write", "web"}, {"intention:read", "*"}, {"intention:write", "*"},
	{"key:read", "a/b"}, {"key:list", "a/"}, {"key:write", "a/b"}, {"key:writeprefix", "a/"}, {"key:writeprefix", ""},
	{"keyring:read", ""}, {"keyring:write", ""},
	{"mesh:read", ""}, {"mesh:write", ""},
	{"node:read", "n1"}, {"node:readall", ""}, {"node:write", "n1"},
	{"operator:read", ""}, {"operator:write", ""},
	{"peering:read", ""}, {"peering:write", ""},
	{"query:read", "q"}, {"query:write", "q"},
	{"service:read", "web"}, {"service:readall", ""}, {"service:write", "web"}, {"service:writeany", ""},
	{"session:read", "n1"}, {"session:write", "n1"},
}

type question struct {
	perm, name string
	allow      bool
}

func (q question) String() string {
	verdict := "deny"
	if q.allow {
		verdict = "allow"
	}
	return fmt.Sprintf("%s %q => %s", q.perm, q.name, verdict)
}

// mustRules parses each policy text and concatenates the rules, as the
// resolver does for a token's policies.
func mustRules(t *testing.T, policies ...string) []Rule {
	t.Helper()
	var all []Rule
	for _, p := range policies {
		rs, err := ParseRules(p)
		if err != nil {
			t.Fatalf("parsing %q: %v", p, err)
		}
		all = append(all, rs...)
	}
	return all
}

func expect(t *testing.T, a *Authorizer, qs []question) {
	t.Helper()
	for _, q := range qs {
		err := ask(a, q.perm, q.name)
		if (err == nil) != q.allow {
			t.Errorf("%v: got %v", q, err)
		}
		if err != nil && !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("%v: error %v is not ErrPermissionDenied", q, err)
		}
	}
}

func TestAuthorizerPrecedence(t *testing.T) {
	tests := []struct {
		name     string
		policies []string
		def      DefaultPolicy
		qs       []question
	}{
		{
			name: "exact beats prefix",
			policies: []string{`
service_prefix "" { policy = "write" }
service "db" { policy = "deny" }
service_prefix "db" { policy = "write" }`},
			def: DefaultDeny,
			qs: []question{
				{"service:write", "web", true},
				{"service:read", "db", false},
				{"service:write", "db-replica", true}, // exact "db" covers only "db"
			},
		},
		{
			name: "exact read beats a longer-reaching prefix write",
			policies: []string{`
service_prefix "we" { policy = "write" }
service "web" { policy = "read" }`},
			def: DefaultDeny,
			qs: []question{
				{"service:read", "web", true},
				{"service:write", "web", false},
				{"service:write", "west", true},
			},
		},
		{
			name: "longest prefix wins",
			policies: []string{`
key_prefix "" { policy = "read" }
key_prefix "app/" { policy = "write" }
key_prefix "app/secret/" { policy = "deny" }`},
			def: DefaultDeny,
			qs: []question{
				{"key:read", "other", true},
				{"key:write", "other", false},
				{"key:write", "app/x", true},
				{"key:read", "app/secret/pw", false},
				{"key:write", "app/secret", true}, // "app/secret" lacks the slash
				{"key:read", "ap", true},
			},
		},
		{
			name:     "deny beats write on the same name across policies",
			policies: []string{`service "web" { policy = "write" }`, `service "web" { policy = "deny" }`},
			def:      DefaultAllow,
			qs: []question{
				{"service:read", "web", false},
				{"service:write", "web", false},
				{"service:write", "api", true}, // default allow
			},
		},
		{
			name:     "write beats read across policies",
			policies: []string{`node_prefix "" { policy = "read" }`, `node_prefix "" { policy = "write" }`},
			def:      DefaultDeny,
			qs:       []question{{"node:write", "n1", true}},
		},
		{
			name:     "duplicates in one policy merge like two policies",
			policies: []string{`key "k" { policy = "deny" }` + "\n" + `key "k" { policy = "write" }`},
			def:      DefaultAllow,
			qs:       []question{{"key:read", "k", false}},
		},
		{
			name:     "exact and prefix on the same name do not merge",
			policies: []string{`service "web" { policy = "read" }`, `service_prefix "web" { policy = "deny" }`},
			def:      DefaultDeny,
			qs: []question{
				{"service:read", "web", true},
				{"service:read", "web2", false},
			},
		},
		{
			name:     "list grants read and list, not write",
			policies: []string{`key_prefix "a/" { policy = "list" }`},
			def:      DefaultDeny,
			qs: []question{
				{"key:list", "a/", true},
				{"key:read", "a/b", true},
				{"key:write", "a/b", false},
			},
		},
		{
			name:     "read does not grant list",
			policies: []string{`key_prefix "a/" { policy = "read" }`},
			def:      DefaultAllow,
			qs: []question{
				{"key:list", "a/", false},
				{"key:read", "a/b", true},
			},
		},
		{
			name: "every named resource",
			policies: []string{`
agent "n1" { policy = "write" }
event_prefix "" { policy = "read" }
node "n1" { policy = "read" }
query_prefix "q" { policy = "write" }
session "n1" { policy = "deny" }`},
			def: DefaultAllow,
			qs: []question{
				{"agent:write", "n1", true},
				{"event:write", "e", false},
				{"event:read", "e", true},
				{"node:write", "n1", false},
				{"query:write", "q", true},
				{"session:read", "n1", false},
				{"session:write", "n2", true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, NewAuthorizer("tok", tt.def, mustRules(t, tt.policies...)), tt.qs)
		})
	}
}

func TestAuthorizerIntentions(t *testing.T) {
	tests := []struct {
		name     string
		policies []string
		qs       []question
	}{
		{
			name:     "service write gives intentions read, not write",
			policies: []string{`service "web" { policy = "write" }`},
			qs:       []question{{"intention:read", "web", true}, {"intention:write", "web", false}},
		},
		{
			name:     "service read gives intentions read",
			policies: []string{`service_prefix "" { policy = "read" }`},
			qs:       []question{{"intention:read", "any", true}, {"intention:write", "any", false}},
		},
		{
			name:     "service deny denies intentions",
			policies: []string{`service "web" { policy = "deny" }`},
			qs:       []question{{"intention:read", "web", false}},
		},
		{
			name:     "explicit intentions write",
			policies: []string{`service "web" { policy = "read" intentions = "write" }`},
			qs:       []question{{"intention:write", "web", true}, {"service:write", "web", false}},
		},
		{
			name:     "explicit intentions deny with service write",
			policies: []string{`service "web" { policy = "write" intentions = "deny" }`},
			qs:       []question{{"intention:read", "web", false}, {"service:write", "web", true}},
		},
		{
			name: "merged before deriving: read+intentions write and write give intentions write",
			policies: []string{
				`service "web" { policy = "write" }`,
				`service "web" { policy = "read" intentions = "write" }`,
			},
			qs: []question{{"intention:write", "web", true}, {"service:write", "web", true}},
		},
		{
			name:     "wildcard read needs intentions read on some service",
			policies: []string{`service "web" { policy = "read" }`},
			qs:       []question{{"intention:read", "*", true}, {"intention:write", "*", false}},
		},
		{
			name:     "wildcard write needs intentions write on every service",
			policies: []string{`service_prefix "" { policy = "write" intentions = "write" }`, `service "db" { policy = "read" }`},
			qs:       []question{{"intention:write", "*", false}, {"intention:write", "web", true}},
		},
		{
			name:     "wildcard write with a catch-all grant",
			policies: []string{`service_prefix "" { policy = "read" intentions = "write" }`},
			qs:       []question{{"intention:write", "*", true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, NewAuthorizer("tok", DefaultDeny, mustRules(t, tt.policies...)), tt.qs)
		})
	}
}

func TestAuthorizerKeyWritePrefix(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		def    DefaultPolicy
		prefix string
		allow  bool
	}{
		{"write on the prefix, nothing under it", `key_prefix "app/" { policy = "write" }`, DefaultDeny, "app/", true},
		{"write above the prefix", `key_prefix "" { policy = "write" }`, DefaultDeny, "app/", true},
		{"read on the prefix", `key_prefix "app/" { policy = "read" }`, DefaultAllow, "app/", false},
		{"exact deny under it", `key_prefix "app/" { policy = "write" }` + "\n" + `key "app/locked" { policy = "deny" }`, DefaultDeny, "app/", false},
		{"prefix read under it", `key_prefix "" { policy = "write" }` + "\n" + `key_prefix "app/ro/" { policy = "read" }`, DefaultDeny, "app/", false},
		{"lesser rule outside the prefix", `key_prefix "app/" { policy = "write" }` + "\n" + `key "other" { policy = "deny" }`, DefaultDeny, "app/", true},
		{"no prefix rule: default allow", `key "app/x" { policy = "write" }`, DefaultAllow, "app/", true},
		{"no prefix rule: default deny", `key "app/x" { policy = "write" }`, DefaultDeny, "app/", false},
		{"no prefix rule, deny under it, default allow", `key "app/x" { policy = "read" }`, DefaultAllow, "app/", false},
		{"an exact rule on the prefix itself is not a prefix rule", `key "app/" { policy = "write" }`, DefaultDeny, "app/", false},
		{"the whole store", `key_prefix "" { policy = "write" }` + "\n" + `key "x" { policy = "read" }`, DefaultDeny, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAuthorizer("tok", tt.def, mustRules(t, tt.policy))
			expect(t, a, []question{{"key:writeprefix", tt.prefix, tt.allow}})
		})
	}
}

func TestAuthorizerMeshAndPeeringFallBackToOperator(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		def    DefaultPolicy
		qs     []question
	}{
		{"operator write", `operator = "write"`, DefaultDeny, []question{
			{"mesh:write", "", true}, {"peering:write", "", true}, {"keyring:read", "", false},
		}},
		{"operator read", `operator = "read"`, DefaultDeny, []question{
			{"mesh:read", "", true}, {"mesh:write", "", false}, {"peering:read", "", true}, {"peering:write", "", false},
		}},
		{"mesh rule beats operator", `operator = "write"` + "\n" + `mesh = "deny"`, DefaultAllow, []question{
			{"mesh:read", "", false}, {"operator:write", "", true}, {"peering:write", "", true},
		}},
		{"operator deny denies mesh under default allow", `operator = "deny"`, DefaultAllow, []question{
			{"mesh:read", "", false}, {"peering:read", "", false},
		}},
		{"neither: default", `peering = "read"`, DefaultAllow, []question{
			{"mesh:write", "", true}, {"peering:write", "", false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, NewAuthorizer("tok", tt.def, mustRules(t, tt.policy)), tt.qs)
		})
	}
}

func TestAuthorizerAnyAndAll(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		def    DefaultPolicy
		qs     []question
	}{
		{"one service write", `service "web" { policy = "write" }`, DefaultDeny, []question{
			{"service:writeany", "", true}, {"service:readall", "", false},
		}},
		{"catch-all read", `service_prefix "" { policy = "read" }`, DefaultDeny, []question{
			{"service:readall", "", true}, {"service:writeany", "", false},
		}},
		{"catch-all read with one deny", `service_prefix "" { policy = "read" }` + "\n" + `service "secret" { policy = "deny" }`, DefaultAllow, []question{
			{"service:readall", "", false},
		}},
		{"no rules: default allow", ``, DefaultAllow, []question{
			{"service:readall", "", true}, {"service:writeany", "", true}, {"node:readall", "", true},
		}},
		{"catch-all deny with one write", `service_prefix "" { policy = "deny" }` + "\n" + `service "web" { policy = "write" }`, DefaultAllow, []question{
			{"service:writeany", "", true},
		}},
		{"catch-all deny alone", `service_prefix "" { policy = "deny" }`, DefaultAllow, []question{
			{"service:writeany", "", false},
		}},
		{"node read all", `node_prefix "" { policy = "read" }`, DefaultDeny, []question{{"node:readall", "", true}}},
		{"node read all with a deny", `node_prefix "" { policy = "read" }` + "\n" + `node_prefix "x" { policy = "deny" }`, DefaultDeny, []question{{"node:readall", "", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect(t, NewAuthorizer("tok", tt.def, mustRules(t, tt.policy)), tt.qs)
		})
	}
}

func TestAuthorizerDefaultPolicy(t *testing.T) {
	deny := NewAuthorizer("tok", DefaultDeny, nil)
	allow := NewAuthorizer("tok", DefaultAllow, nil)
	for _, p := range everyPermission {
		if err := ask(deny, p.perm, p.name); err == nil {
			t.Errorf("default deny allowed %s %q", p.perm, p.name)
		}
		// Default allow never grants ACL management or snapshots.
		wantAllow := p.perm != "acl:read" && p.perm != "acl:write" && p.perm != "snapshot"
		if err := ask(allow, p.perm, p.name); (err == nil) != wantAllow {
			t.Errorf("default allow: %s %q: got %v, want allowed=%v", p.perm, p.name, err, wantAllow)
		}
	}
	// A rule still decides over default allow.
	expect(t, NewAuthorizer("tok", DefaultAllow, mustRules(t, `acl = "read"`, `service "web" { policy = "read" }`)), []question{
		{"acl:read", "", true}, {"acl:write", "", false}, {"snapshot", "", false},
		{"service:write", "web", false}, {"service:write", "api", true},
	})
}

func TestAuthorizerManagementAndReadOnly(t *testing.T) {
	mgmt := NewAuthorizer("root", DefaultDeny, ManagementRules())
	all := ManageAll("")
	ro := NewAuthorizer("ro", DefaultDeny, ReadOnlyRules())
	for _, p := range everyPermission {
		if err := ask(mgmt, p.perm, p.name); err != nil {
			t.Errorf("global-management: %s %q: %v", p.perm, p.name, err)
		}
		if err := ask(all, p.perm, p.name); err != nil {
			t.Errorf("ManageAll: %s %q: %v", p.perm, p.name, err)
		}
		// key_prefix "" read does not grant key:list, in Consul either.
		read := strings.HasSuffix(p.perm, ":read") || p.perm == "node:readall" || p.perm == "service:readall"
		if err := ask(ro, p.perm, p.name); (err == nil) != read {
			t.Errorf("global-read-only: %s %q: got %v, want allowed=%v", p.perm, p.name, err, read)
		}
	}
}

func TestPermissionDeniedMessage(t *testing.T) {
	a := NewAuthorizer("6a1253d2-1785-24fd-91c2-f8e78c745511", DefaultDeny, nil)
	tests := []struct {
		err  error
		want string
	}{
		{a.ServiceWrite("api"), `Permission denied: token with AccessorID '6a1253d2-1785-24fd-91c2-f8e78c745511' lacks permission 'service:write' on "api"`},
		{a.OperatorRead(), `Permission denied: token with AccessorID '6a1253d2-1785-24fd-91c2-f8e78c745511' lacks permission 'operator:read'`},
		{a.KeyList("app/"), `Permission denied: token with AccessorID '6a1253d2-1785-24fd-91c2-f8e78c745511' lacks permission 'key:list' on "app/"`},
		{a.Snapshot(), `Permission denied: token with AccessorID '6a1253d2-1785-24fd-91c2-f8e78c745511' lacks permission 'acl:write'`},
		{a.IntentionWrite("web"), `Permission denied: token with AccessorID '6a1253d2-1785-24fd-91c2-f8e78c745511' lacks permission 'intention:write' on "web"`},
		{NewAuthorizer("", DefaultDeny, nil).NodeRead("n1"), `Permission denied: provided token lacks permission 'node:read' on "n1"`},
	}
	for _, tt := range tests {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("got %v\nwant %s", tt.err, tt.want)
		}
		var pd *PermissionDeniedError
		if !errors.As(tt.err, &pd) || !errors.Is(tt.err, ErrPermissionDenied) {
			t.Errorf("%v is not a *PermissionDeniedError matching ErrPermissionDenied", tt.err)
		}
	}
	if a.AccessorID() != "6a1253d2-1785-24fd-91c2-f8e78c745511" {
		t.Errorf("AccessorID() = %q", a.AccessorID())
	}
}

func TestParseDefaultPolicy(t *testing.T) {
	for _, s := range []string{"allow", "deny"} {
		if p, err := ParseDefaultPolicy(s); err != nil || string(p) != s {
			t.Errorf("ParseDefaultPolicy(%q) = %q, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "Allow", "manage"} {
		if _, err := ParseDefaultPolicy(s); err == nil {
			t.Errorf("ParseDefaultPolicy(%q) accepted", s)
		}
	}
}
