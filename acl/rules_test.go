package acl

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// sortRules puts rules in a canonical order so HCL and JSON forms compare
// equal whatever order their objects list names in.
func sortRules(rs []Rule) []Rule {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Rule) int {
		return strings.Compare(ruleKey(a), ruleKey(b))
	})
	return rs
}

func ruleKey(r Rule) string {
	p := "exact"
	if r.Prefix {
		p = "prefix"
	}
	return string(r.Resource) + "|" + p + "|" + r.Name + "|" + r.Access.String() + "|" + r.Intentions.String()
}

func TestParseRulesHCLAndJSONAgree(t *testing.T) {
	tests := []struct {
		name, hcl, json string
		want            []Rule
	}{
		{
			name: "service with intentions",
			hcl:  `service "web" { policy = "write" intentions = "read" }`,
			json: `{"service": {"web": {"policy": "write", "intentions": "read"}}}`,
			want: []Rule{{Resource: ResourceService, Name: "web", Access: AccessWrite, Intentions: AccessRead}},
		},
		{
			name: "every block",
			hcl: `
acl = "write"
operator = "read"
mesh = "deny"
peering = "read"
keyring = "write"
agent "a1" { policy = "read" }
agent_prefix "" { policy = "write" }
event "deploy" { policy = "write" }
event_prefix "" { policy = "read" }
key "app/config" { policy = "list" }
key_prefix "app/" { policy = "deny" }
node "n1" { policy = "write" }
node_prefix "" { policy = "read" }
query "q" { policy = "write" }
query_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
session "n1" { policy = "write" }
session_prefix "" { policy = "read" }
`,
			json: `{
  "acl": "write", "operator": "read", "mesh": "deny", "peering": "read", "keyring": "write",
  "agent": {"a1": {"policy": "read"}}, "agent_prefix": {"": {"policy": "write"}},
  "event": {"deploy": {"policy": "write"}}, "event_prefix": {"": {"policy": "read"}},
  "key": {"app/config": {"policy": "list"}}, "key_prefix": {"app/": {"policy": "deny"}},
  "node": {"n1": {"policy": "write"}}, "node_prefix": {"": {"policy": "read"}},
  "query": {"q": {"policy": "write"}}, "query_prefix": {"": {"policy": "read"}},
  "service_prefix": {"": {"policy": "read"}},
  "session": {"n1": {"policy": "write"}}, "session_prefix": {"": {"policy": "read"}}
}`,
			want: []Rule{
				{Resource: ResourceACL, Access: AccessWrite},
				{Resource: ResourceOperator, Access: AccessRead},
				{Resource: ResourceMesh, Access: AccessDeny},
				{Resource: ResourcePeering, Access: AccessRead},
				{Resource: ResourceKeyring, Access: AccessWrite},
				{Resource: ResourceAgent, Name: "a1", Access: AccessRead},
				{Resource: ResourceAgent, Prefix: true, Access: AccessWrite},
				{Resource: ResourceEvent, Name: "deploy", Access: AccessWrite},
				{Resource: ResourceEvent, Prefix: true, Access: AccessRead},
				{Resource: ResourceKey, Name: "app/config", Access: AccessList},
				{Resource: ResourceKey, Name: "app/", Prefix: true, Access: AccessDeny},
				{Resource: ResourceNode, Name: "n1", Access: AccessWrite},
				{Resource: ResourceNode, Prefix: true, Access: AccessRead},
				{Resource: ResourceQuery, Name: "q", Access: AccessWrite},
				{Resource: ResourceQuery, Prefix: true, Access: AccessRead},
				{Resource: ResourceService, Prefix: true, Access: AccessRead},
				{Resource: ResourceSession, Name: "n1", Access: AccessWrite},
				{Resource: ResourceSession, Prefix: true, Access: AccessRead},
			},
		},
		{
			name: "several names in one block",
			hcl: `service "web" { policy = "write" }
service "db" { policy = "read" }`,
			json: `{"service": {"web": {"policy": "write"}, "db": {"policy": "read"}}}`,
			want: []Rule{
				{Resource: ResourceService, Name: "web", Access: AccessWrite},
				{Resource: ResourceService, Name: "db", Access: AccessRead},
			},
		},
		{
			name: "HCL object form and JSON list form",
			hcl:  `service = { web = { policy = "write" } }`,
			json: `{"service": [{"web": {"policy": "write"}}]}`,
			want: []Rule{{Resource: ResourceService, Name: "web", Access: AccessWrite}},
		},
		{
			name: "empty",
			hcl:  " \n# nothing\n",
			json: `{}`,
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fromHCL, err := ParseRules(tt.hcl)
			if err != nil {
				t.Fatalf("HCL: %v", err)
			}
			fromJSON, err := ParseRules(tt.json)
			if err != nil {
				t.Fatalf("JSON: %v", err)
			}
			want := sortRules(tt.want)
			if got := sortRules(fromHCL); !reflect.DeepEqual(got, want) {
				t.Errorf("HCL rules:\n got %v\nwant %v", got, want)
			}
			if got := sortRules(fromJSON); !reflect.DeepEqual(got, want) {
				t.Errorf("JSON rules:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestParseRulesErrors(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string // each must appear in the error
	}{
		{"unknown block", "operator = \"read\"\nservce \"web\" { policy = \"read\" }", []string{"line 2", `unknown rule "servce"`, "service_prefix"}},
		{"bad level", `service "web" { policy = "wirte" }`, []string{"line 1", `service "web": policy: "wirte" is not a level`}},
		{"bad intentions", `service "web" {
  policy = "read"
  intentions = "list"
}`, []string{"line 3", "intentions", `"list" is for key and key_prefix rules only`}},
		{"list outside keys", `node_prefix "" { policy = "list" }`, []string{`node_prefix "": policy: "list" is for key`}},
		{"list on acl", `acl = "list"`, []string{"acl:", `"list" is for key`}},
		{"missing policy", `service "web" { intentions = "read" }`, []string{`service "web": policy is required`}},
		{"unknown field", `key_prefix "a/" {
  policy = "read"
  polcy = "write"
}`, []string{"line 3", `unknown field "polcy"`, `takes "policy"`}},
		{"intentions outside service", `node "n" {
  policy = "read"
  intentions = "read"
}`, []string{`unknown field "intentions"`}},
		{"field twice", `service "web" {
  policy = "read"
  policy = "write"
}`, []string{"line 3", "policy is set twice (first at line 2)"}},
		{"scalar twice", "operator = \"read\"\noperator = \"write\"", []string{"line 2", "operator is set twice (first at line 1)"}},
		{"scalar with a name", `operator "x" { policy = "read" }`, []string{"operator takes a level"}},
		{"scalar not a string", `acl = 1`, []string{"acl: expected a string", "got a number"}},
		{"missing name", `service { policy = "read" }`, []string{`service needs a name`}},
		{"two names", `service "a" "b" { policy = "read" }`, []string{"service takes one name"}},
		{"body not a block", `{"service": {"web": "write"}}`, []string{`service "web": expected a block`, "got a string"}},
		{"policy not a string", `service "web" { policy = ["read"] }`, []string{`service "web": policy: expected a string`, "got a list"}},
		{"HCL syntax", "service \"web\" {\n  policy = \"read\"\n", []string{"line"}},
		{"JSON syntax", "{\n\"acl\": \"read\",\n}", []string{"line 3"}},
		{"JSON null", `{"acl": null}`, []string{"acl: expected a string", "got null"}},
		{"JSON unknown", "{\n  \"keys\": {}\n}", []string{"line 2", `unknown rule "keys"`}},
		{"JSON not an object of names", `{"service": "web"}`, []string{"service needs a name"}},
		{"JSON trailing data", `{"acl": "read"} {}`, []string{"unexpected data after"}},
		{"JSON too deep", `{"service": ` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, []string{"nested deeper"}},
		{"every problem reported", "acl = \"x\"\nfoo = \"read\"", []string{"line 1", "line 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := ParseRules(tt.src)
			if err == nil {
				t.Fatalf("no error; rules %v", rules)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestBuiltinPoliciesParse(t *testing.T) {
	for _, p := range []Policy{ManagementPolicy(), ReadOnlyPolicy()} {
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
	if n := len(ManagementRules()); n != 12 {
		t.Errorf("global-management has %d rules, want 12", n)
	}
	for _, r := range ReadOnlyRules() {
		if r.Access != AccessRead {
			t.Errorf("read-only rule %v grants %s", r, r.Access)
		}
	}
}

func FuzzParseRules(f *testing.F) {
	for _, s := range []string{
		managementRules,
		`service "web" { policy = "write" intentions = "read" }`,
		`{"key_prefix": {"app/": {"policy": "list"}}, "acl": "read"}`,
		`service = { web = { policy = "write" } }`,
		`{"service": [{"web": {"policy": "write"}}]}`,
		`node "a" "b" {}`,
	} {
		f.Add(s)
	}
	known := append(slices.Clone(namedBlocks), scalarBlocks...)
	f.Fuzz(func(t *testing.T, src string) {
		rules, err := ParseRules(src)
		if err != nil {
			return
		}
		for _, r := range rules {
			if !slices.Contains(known, r.Resource) {
				t.Fatalf("rule for unknown resource %q", r.Resource)
			}
			if r.Access == AccessNone || (r.Access == AccessList && r.Resource != ResourceKey) {
				t.Fatalf("rule %+v has an invalid level", r)
			}
			if r.Intentions != AccessNone && r.Resource != ResourceService {
				t.Fatalf("rule %+v has intentions", r)
			}
		}
		// Whatever parses builds an authorizer that answers.
		a := NewAuthorizer("fuzz", DefaultDeny, rules)
		_ = a.ServiceRead("web")
		_ = a.KeyWritePrefix("app/")
		_ = a.IntentionWrite("*")
	})
}
