package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

// IDs of the fake agent's objects.
const (
	tokA   = "6a1253d2-1785-24fd-91c2-f8e78c745511"
	tokB   = "6a1253d2-ffff-24fd-91c2-f8e78c745511"
	secA   = "45a3bd52-07c7-47a4-52fd-0745e0cfe967"
	polA   = "e359bd81-baca-903e-7e64-1ccd9fdc78f5"
	roleA  = "aa770e5b-8b0b-7fcf-e5a1-8535fcc388b4"
	theTok = "b1ad0c9e-6c4e-4cd0-8f4e-1d4b6f7f1a01" // the token the CLI sends
)

var (
	tokenJSON = `{"AccessorID":"` + tokA + `","SecretID":"` + secA + `","Description":"web token",
		"Policies":[{"ID":"` + polA + `","Name":"web-write"}],"Roles":[{"ID":"` + roleA + `","Name":"web"}],
		"ServiceIdentities":[{"ServiceName":"api"},{"ServiceName":"db","Datacenters":["dc1","dc2"]}],
		"NodeIdentities":[{"NodeName":"n1","Datacenter":"dc1"}],"Local":false,
		"CreateTime":"2026-01-02T03:04:05Z","Hash":"AQI=","CreateIndex":10,"ModifyIndex":12}`
	tokenPretty = `AccessorID:       ` + tokA + `
SecretID:         ` + secA + `
Description:      web token
Local:            false
Create Time:      2026-01-02 03:04:05 +0000 UTC
Policies:
   ` + polA + ` - web-write
Roles:
   ` + roleA + ` - web
Service Identities:
   api (Datacenters: all)
   db (Datacenters: dc1, dc2)
Node Identities:
   n1 (Datacenter: dc1)
`
	tokensJSON = `[` + tokenJSON + `,{"AccessorID":"` + tokB + `","SecretID":"<hidden>","Description":"other",
		"Local":true,"CreateTime":"2026-01-02T03:04:05Z","ExpirationTime":"2026-01-03T03:04:05Z"}]`
	policyJSON = `{"ID":"` + polA + `","Name":"web-write","Description":"web may write",
		"Rules":"service \"web\" { policy = \"write\" }\n","Datacenters":["dc1"],"Hash":"AQI=","CreateIndex":3,"ModifyIndex":3}`
	policyPretty = `ID:           ` + polA + `
Name:         web-write
Description:  web may write
Datacenters:  dc1
Rules:
service "web" { policy = "write" }
`
	roleJSON = `{"ID":"` + roleA + `","Name":"web","Description":"web role",
		"Policies":[{"ID":"` + polA + `","Name":"web-write"}],
		"ServiceIdentities":[{"ServiceName":"api"}],"NodeIdentities":[{"NodeName":"n1","Datacenter":"dc1"}],
		"Hash":"AQI=","CreateIndex":4,"ModifyIndex":4}`
	rolePretty = `ID:           ` + roleA + `
Name:         web
Description:  web role
Policies:
   ` + polA + ` - web-write
Service Identities:
   api (Datacenters: all)
Node Identities:
   n1 (Datacenter: dc1)
`
)

// aclReq is a request the fake agent received.
type aclReq struct {
	Method, Path, Token string
	Body                map[string]any
}

// fakeACLAgent answers canned bodies by "METHOD /escaped/path" and
// records every request with its X-Consul-Token.
type fakeACLAgent struct {
	answers map[string]string
	// status answers a key with this code and the answer as the text.
	status map[string]int
	mu     sync.Mutex
	reqs   []aclReq
}

func (f *fakeACLAgent) start(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := aclReq{Method: r.Method, Path: r.URL.EscapedPath(), Token: r.Header.Get("X-Consul-Token")}
		if len(b) > 0 {
			if err := json.Unmarshal(b, &req.Body); err != nil {
				t.Errorf("%s %s: body %q is not a JSON object: %v", r.Method, r.URL, b, err)
			}
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		f.mu.Unlock()
		key := r.Method + " " + req.Path
		ans, ok := f.answers[key]
		if !ok {
			http.Error(w, "no canned answer for "+key, http.StatusNotFound)
			return
		}
		if code := f.status[key]; code != 0 {
			http.Error(w, ans, code)
			return
		}
		io.WriteString(w, ans)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func (f *fakeACLAgent) requests() []aclReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]aclReq(nil), f.reqs...)
}

// runEnv runs the CLI with env as its whole environment.
func runEnv(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}
	code := Run(context.Background(), append([]string{"vmesh"}, args...), e, nil)
	return code, out.String(), errb.String()
}

// wantReq is a request a command must send: Body lists the fields that
// must be there with these values (nil: no body at all).
type wantReq struct {
	method, path string
	body         string
}

func checkReqs(t *testing.T, got []aclReq, want []wantReq) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("sent %d requests; want %d:\n%+v", len(got), len(want), got)
		return
	}
	for i, w := range want {
		g := got[i]
		if g.Method != w.method || g.Path != w.path {
			t.Errorf("request %d = %s %s; want %s %s", i, g.Method, g.Path, w.method, w.path)
		}
		if g.Token != theTok {
			t.Errorf("request %d (%s %s) X-Consul-Token = %q; want %q", i, g.Method, g.Path, g.Token, theTok)
		}
		if w.body == "" {
			if g.Body != nil && w.method != http.MethodPut {
				t.Errorf("request %d (%s %s) has body %v; want none", i, g.Method, g.Path, g.Body)
			}
			continue
		}
		var wb map[string]any
		if err := json.Unmarshal([]byte(w.body), &wb); err != nil {
			t.Fatalf("bad test body %q: %v", w.body, err)
		}
		for k, v := range wb {
			if gv, ok := g.Body[k]; !ok && v != nil || ok && !reflect.DeepEqual(gv, v) {
				t.Errorf("request %d (%s %s) body %s = %v (present %t); want %v\nbody: %v", i, g.Method, g.Path, k, gv, ok, v, g.Body)
			}
		}
	}
}

// Each acl subcommand sends Consul's method, path and body with the
// token, and prints the agent's answer as Consul's CLI does.
func TestACLCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rulesFile := testkit.WriteFile(t, dir, "web.hcl", "service \"web\" {\n  policy = \"write\"\n}\n")
	answers := map[string]string{
		"PUT /v1/acl/bootstrap":                            tokenJSON,
		"PUT /v1/acl/token":                                tokenJSON,
		"GET /v1/acl/tokens":                               tokensJSON,
		"GET /v1/acl/token/" + tokA:                        tokenJSON,
		"GET /v1/acl/token/self":                           tokenJSON,
		"PUT /v1/acl/token/" + tokA:                        tokenJSON,
		"DELETE /v1/acl/token/" + tokA:                     "true",
		"PUT /v1/acl/token/" + tokA + "/clone":             tokenJSON,
		"PUT /v1/acl/policy":                               policyJSON,
		"GET /v1/acl/policies":                             `[` + policyJSON + `]`,
		"GET /v1/acl/policy/" + polA:                       policyJSON,
		"GET /v1/acl/policy/name/web-write":                policyJSON,
		"GET /v1/acl/policy/name/builtin/global-read-only": policyJSON,
		"PUT /v1/acl/policy/" + polA:                       policyJSON,
		"DELETE /v1/acl/policy/" + polA:                    "true",
		"PUT /v1/acl/role":                                 roleJSON,
		"GET /v1/acl/roles":                                `[` + roleJSON + `]`,
		"GET /v1/acl/role/" + roleA:                        roleJSON,
		"GET /v1/acl/role/name/web":                        roleJSON,
		"PUT /v1/acl/role/" + roleA:                        roleJSON,
		"DELETE /v1/acl/role/" + roleA:                     "true",
	}
	for _, tc := range []struct {
		name string
		args []string
		reqs []wantReq
		out  string // the whole stdout, or with contains a part of it
		part bool
	}{
		{"bootstrap", []string{"bootstrap"}, []wantReq{{"PUT", "/v1/acl/bootstrap", ""}}, tokenPretty, false},
		{"token create", []string{"token", "create", "-description", "web token", "-policy-name", "web-write", "-policy-id", polA,
			"-role-name", "web", "-service-identity", "api", "-service-identity", "db:dc1,dc2", "-node-identity", "n1:dc1",
			"-expires-ttl", "1h", "-accessor", tokA},
			[]wantReq{{"PUT", "/v1/acl/token", `{"Description":"web token","Policies":[{"ID":"","Name":"web-write"},{"ID":"` + polA + `","Name":""}],
				"Roles":[{"ID":"","Name":"web"}],"ServiceIdentities":[{"ServiceName":"api"},{"ServiceName":"db","Datacenters":["dc1","dc2"]}],
				"NodeIdentities":[{"NodeName":"n1","Datacenter":"dc1"}],"ExpirationTTL":3600000000000,"AccessorID":"` + tokA + `","SecretID":"","Local":false}`}},
			tokenPretty, false},
		{"token create local", []string{"token", "create", "-local", "-service-identity", "api"},
			[]wantReq{{"PUT", "/v1/acl/token", `{"Local":true,"ServiceIdentities":[{"ServiceName":"api"}],"Description":"","AccessorID":"","SecretID":""}`}}, tokenPretty, false},
		{"token list", []string{"token", "list"}, []wantReq{{"GET", "/v1/acl/tokens", ""}},
			tokenPretty + "\nAccessorID:       " + tokB + "\nSecretID:         <hidden>\nDescription:      other\nLocal:            true\n" +
				"Create Time:      2026-01-02 03:04:05 +0000 UTC\nExpiration Time:  2026-01-03 03:04:05 +0000 UTC\n", false},
		{"token read", []string{"token", "read", "-id", tokA}, []wantReq{{"GET", "/v1/acl/token/" + tokA, ""}}, tokenPretty, false},
		{"token read -accessor-id", []string{"token", "read", "-accessor-id", tokA}, []wantReq{{"GET", "/v1/acl/token/" + tokA, ""}}, tokenPretty, false},
		{"token read -self", []string{"token", "read", "-self"}, []wantReq{{"GET", "/v1/acl/token/self", ""}}, tokenPretty, false},
		// A prefix is looked up in the list first, as Consul's CLI does.
		{"token read prefix", []string{"token", "read", "-id", "6a1253d2-17"},
			[]wantReq{{"GET", "/v1/acl/tokens", ""}, {"GET", "/v1/acl/token/" + tokA, ""}}, tokenPretty, false},
		{"token read json", []string{"token", "read", "-id", tokA, "-format", "json"}, []wantReq{{"GET", "/v1/acl/token/" + tokA, ""}},
			`    "AccessorID": "` + tokA + `",`, true},
		// Given lists replace, the rest is kept, the secret is not sent back.
		{"token update", []string{"token", "update", "-id", tokA, "-policy-name", "ops", "-description", "new"},
			[]wantReq{{"GET", "/v1/acl/token/" + tokA, ""}, {"PUT", "/v1/acl/token/" + tokA, `{"AccessorID":"` + tokA + `","SecretID":"",
				"Description":"new","Policies":[{"ID":"","Name":"ops"}],"Roles":[{"ID":"` + roleA + `","Name":"web"}],
				"ServiceIdentities":[{"ServiceName":"api"},{"ServiceName":"db","Datacenters":["dc1","dc2"]}],
				"NodeIdentities":[{"NodeName":"n1","Datacenter":"dc1"}],"CreateIndex":10,"ModifyIndex":12}`}}, tokenPretty, false},
		{"token update merge", []string{"token", "update", "-id", tokA, "-merge-policies", "-policy-name", "ops", "-policy-name", "web-write",
			"-service-identity", "web", "-merge-service-identities"},
			[]wantReq{{"GET", "/v1/acl/token/" + tokA, ""}, {"PUT", "/v1/acl/token/" + tokA, `{"Description":"web token",
				"Policies":[{"ID":"` + polA + `","Name":"web-write"},{"ID":"","Name":"ops"}],
				"ServiceIdentities":[{"ServiceName":"api"},{"ServiceName":"db","Datacenters":["dc1","dc2"]},{"ServiceName":"web"}]}`}}, tokenPretty, false},
		{"token delete", []string{"token", "delete", "-id", tokA}, []wantReq{{"DELETE", "/v1/acl/token/" + tokA, ""}},
			`Token "` + tokA + `" deleted successfully` + "\n", false},
		{"token clone", []string{"token", "clone", "-id", tokA, "-description", "copy"},
			[]wantReq{{"PUT", "/v1/acl/token/" + tokA + "/clone", `{"Description":"copy"}`}}, tokenPretty, false},
		{"policy create @file", []string{"policy", "create", "-name", "web-write", "-description", "web may write", "-rules", "@" + rulesFile, "-valid-datacenter", "dc1"},
			[]wantReq{{"PUT", "/v1/acl/policy", `{"Name":"web-write","Description":"web may write","Rules":"service \"web\" {\n  policy = \"write\"\n}\n","Datacenters":["dc1"]}`}},
			policyPretty, false},
		{"policy create literal", []string{"policy", "create", "-name", "ro", "-rules", `service_prefix "" { policy = "read" }`},
			[]wantReq{{"PUT", "/v1/acl/policy", `{"Name":"ro","Rules":"service_prefix \"\" { policy = \"read\" }"}`}}, policyPretty, false},
		{"policy list", []string{"policy", "list"}, []wantReq{{"GET", "/v1/acl/policies", ""}},
			"web-write:\n   ID:           " + polA + "\n   Description:  web may write\n   Datacenters:  dc1\n", false},
		{"policy read -id", []string{"policy", "read", "-id", polA}, []wantReq{{"GET", "/v1/acl/policy/" + polA, ""}}, policyPretty, false},
		{"policy read -name", []string{"policy", "read", "-name", "web-write"}, []wantReq{{"GET", "/v1/acl/policy/name/web-write", ""}}, policyPretty, false},
		// A built-in name keeps its slash, as consul/api sends it.
		{"policy read builtin", []string{"policy", "read", "-name", "builtin/global-read-only"},
			[]wantReq{{"GET", "/v1/acl/policy/name/builtin/global-read-only", ""}}, policyPretty, false},
		{"policy update rename", []string{"policy", "update", "-id", polA, "-name", "web-admin", "-rules", "@" + rulesFile},
			[]wantReq{{"GET", "/v1/acl/policy/" + polA, ""}, {"PUT", "/v1/acl/policy/" + polA, `{"ID":"` + polA + `","Name":"web-admin",
				"Description":"web may write","Rules":"service \"web\" {\n  policy = \"write\"\n}\n","Datacenters":["dc1"]}`}}, policyPretty, false},
		{"policy update by name", []string{"policy", "update", "-name", "web-write", "-description", ""},
			[]wantReq{{"GET", "/v1/acl/policy/name/web-write", ""}, {"PUT", "/v1/acl/policy/" + polA, `{"ID":"` + polA + `","Name":"web-write",
				"Description":"","Rules":"service \"web\" { policy = \"write\" }\n"}`}}, policyPretty, false},
		{"policy delete -id", []string{"policy", "delete", "-id", polA}, []wantReq{{"DELETE", "/v1/acl/policy/" + polA, ""}},
			`Policy "` + polA + `" deleted successfully` + "\n", false},
		{"policy delete -name", []string{"policy", "delete", "-name", "web-write"},
			[]wantReq{{"GET", "/v1/acl/policy/name/web-write", ""}, {"DELETE", "/v1/acl/policy/" + polA, ""}},
			`Policy "` + polA + `" deleted successfully` + "\n", false},
		{"role create", []string{"role", "create", "-name", "web", "-description", "web role", "-policy-name", "web-write", "-service-identity", "api", "-node-identity", "n1:dc1"},
			[]wantReq{{"PUT", "/v1/acl/role", `{"Name":"web","Description":"web role","Policies":[{"ID":"","Name":"web-write"}],
				"ServiceIdentities":[{"ServiceName":"api"}],"NodeIdentities":[{"NodeName":"n1","Datacenter":"dc1"}]}`}}, rolePretty, false},
		{"role list", []string{"role", "list"}, []wantReq{{"GET", "/v1/acl/roles", ""}},
			"web:\n   ID:           " + roleA + "\n   Description:  web role\n   Policies:\n      " + polA + " - web-write\n" +
				"   Service Identities:\n      api (Datacenters: all)\n   Node Identities:\n      n1 (Datacenter: dc1)\n", false},
		{"role read -name", []string{"role", "read", "-name", "web"}, []wantReq{{"GET", "/v1/acl/role/name/web", ""}}, rolePretty, false},
		{"role read -id prefix", []string{"role", "read", "-id", "aa77"},
			[]wantReq{{"GET", "/v1/acl/roles", ""}, {"GET", "/v1/acl/role/" + roleA, ""}}, rolePretty, false},
		// Consul's role update merges: the policy is added, the identity of
		// the same service replaced.
		{"role update merge", []string{"role", "update", "-id", roleA, "-policy-name", "ops", "-service-identity", "api:dc2"},
			[]wantReq{{"GET", "/v1/acl/role/" + roleA, ""}, {"PUT", "/v1/acl/role/" + roleA, `{"ID":"` + roleA + `","Name":"web","Description":"web role",
				"Policies":[{"ID":"` + polA + `","Name":"web-write"},{"ID":"","Name":"ops"}],
				"ServiceIdentities":[{"ServiceName":"api","Datacenters":["dc2"]}],"NodeIdentities":[{"NodeName":"n1","Datacenter":"dc1"}]}`}}, rolePretty, false},
		{"role update no-merge", []string{"role", "update", "-id", roleA, "-name", "web2", "-no-merge", "-policy-id", polA},
			[]wantReq{{"GET", "/v1/acl/role/" + roleA, ""}, {"PUT", "/v1/acl/role/" + roleA, `{"ID":"` + roleA + `","Name":"web2",
				"Policies":[{"ID":"` + polA + `","Name":""}],"ServiceIdentities":null,"NodeIdentities":null}`}}, rolePretty, false},
		{"role delete -name", []string{"role", "delete", "-name", "web"},
			[]wantReq{{"GET", "/v1/acl/role/name/web", ""}, {"DELETE", "/v1/acl/role/" + roleA, ""}},
			`Role "` + roleA + `" deleted successfully` + "\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			agent := &fakeACLAgent{answers: answers}
			addr := agent.start(t)
			args := append([]string{"acl"}, tc.args...)
			code, out, errs := runEnv(t, map[string]string{TokenEnv: theTok}, append(args, "-http-addr", addr)...)
			if code != ExitOK || errs != "" {
				t.Fatalf("vmesh %s = %d, stderr %q; want 0 and nothing on stderr", strings.Join(args, " "), code, errs)
			}
			checkReqs(t, agent.requests(), tc.reqs)
			if tc.part && !strings.Contains(out, tc.out) || !tc.part && out != tc.out {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tc.out)
			}
		})
	}
}

// -format json prints the agent's JSON whole, every field it sent.
func TestACLFormatJSON(t *testing.T) {
	t.Parallel()
	agent := &fakeACLAgent{answers: map[string]string{"GET /v1/acl/policies": `[{"ID":"x","Name":"p","Extra":{"K":1}}]`}}
	addr := agent.start(t)
	code, out, errs := runEnv(t, nil, "acl", "policy", "list", "-format", "json", "-http-addr", addr)
	want := "[\n    {\n        \"ID\": \"x\",\n        \"Name\": \"p\",\n        \"Extra\": {\n            \"K\": 1\n        }\n    }\n]\n"
	if code != ExitOK || out != want {
		t.Errorf("policy list -format json = %d %q (stderr %q); want\n%s", code, out, errs, want)
	}
}

// The agent's refusals print as they came, with exit 1; a 403 without a
// token says how to give one.
func TestACLAgentErrors(t *testing.T) {
	t.Parallel()
	const denied = "Permission denied: token with AccessorID '" + tokA + "' lacks permission 'acl:write'"
	agent := &fakeACLAgent{
		answers: map[string]string{
			"PUT /v1/acl/policy":           denied,
			"GET /v1/acl/token/" + tokA:    "ACL not found",
			"PUT /v1/acl/role":             "Invalid Role: no such policy: ops",
			"GET /v1/acl/tokens":           `[{"AccessorID":"` + tokA + `"},{"AccessorID":"` + tokB + `"}]`,
			"DELETE /v1/acl/token/" + tokB: "true",
		},
		status: map[string]int{"PUT /v1/acl/policy": 403, "GET /v1/acl/token/" + tokA: 403, "PUT /v1/acl/role": 400},
	}
	addr := agent.start(t)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want []string
		not  string
	}{
		{map[string]string{TokenEnv: theTok}, []string{"acl", "policy", "create", "-name", "p"},
			[]string{"vmesh acl policy create: agent answered 403 Forbidden: " + denied + "\n"}, "no ACL token"},
		{nil, []string{"acl", "policy", "create", "-name", "p"},
			[]string{denied, "no ACL token was sent: give one with -token-file FILE, " + TokenFileEnv + " or " + TokenEnv}, ""},
		{nil, []string{"acl", "token", "read", "-id", tokA}, []string{"403 Forbidden: ACL not found"}, ""},
		{nil, []string{"acl", "role", "create", "-name", "r", "-policy-name", "ops"}, []string{"400 Bad Request: Invalid Role: no such policy: ops"}, ""},
		// A prefix must name one object.
		{nil, []string{"acl", "token", "delete", "-id", "6a1253d2"}, []string{`2 token IDs start with "6a1253d2"; give more of the ID`}, ""},
		{nil, []string{"acl", "token", "delete", "-id", "zz"}, []string{`no token ID starts with "zz"`}, ""},
	} {
		code, out, errs := runEnv(t, tc.env, append(tc.args, "-http-addr", addr)...)
		if code != ExitFailed || out != "" {
			t.Errorf("vmesh %v = %d, stdout %q; want exit 1, nothing on stdout", tc.args, code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(errs, w) {
				t.Errorf("vmesh %v: stderr %q lacks %q", tc.args, errs, w)
			}
		}
		if tc.not != "" && strings.Contains(errs, tc.not) {
			t.Errorf("vmesh %v: stderr %q has %q", tc.args, errs, tc.not)
		}
	}
	for _, r := range agent.requests() {
		if r.Method == http.MethodDelete {
			t.Errorf("a token was deleted by an unmatched or ambiguous prefix: %s %s", r.Method, r.Path)
		}
	}
}

// Mistakes in how a command is called exit 2 and send nothing.
func TestACLUsageErrors(t *testing.T) {
	t.Parallel()
	agent := &fakeACLAgent{}
	addr := agent.start(t)
	dir := t.TempDir()
	badRules := testkit.WriteFile(t, dir, "bad.hcl", "service \"web\" {\n  policy = \"writ\"\n}\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"acl"}, "want bootstrap, token, policy or role"},
		{[]string{"acl", "frob"}, `unknown subcommand "frob"`},
		{[]string{"acl", "token"}, "want acl token clone, create, delete, list, read or update"},
		{[]string{"acl", "token", "frob"}, `unknown subcommand "frob"`},
		{[]string{"acl", "token", "read"}, "want -id ID or -self"},
		{[]string{"acl", "token", "read", "-id", tokA, "-self"}, "want -id ID or -self"},
		{[]string{"acl", "token", "update"}, "want -id ID"},
		{[]string{"acl", "token", "delete"}, "want -id ID"},
		{[]string{"acl", "token", "clone"}, "want -id ID"},
		{[]string{"acl", "token", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"acl", "token", "list", "-format", "yaml"}, `-format "yaml": want pretty or json`},
		{[]string{"acl", "token", "create", "-node-identity", "n1"}, `-node-identity "n1": want NODE:DATACENTER`},
		{[]string{"acl", "token", "create", "-service-identity", ":dc1"}, `-service-identity ":dc1": want NAME or NAME:DC1,DC2`},
		{[]string{"acl", "token", "create", "-service-identity", "Web"}, `ServiceName "Web" is invalid`},
		{[]string{"acl", "token", "create", "-secret", "not-a-uuid"}, "SecretID is not a UUID"},
		{[]string{"acl", "token", "create", "-local", "-service-identity", "db:dc1"}, "a local token's service identity cannot list datacenters"},
		{[]string{"acl", "token", "create", "-expires-ttl", "soon"}, `invalid value "soon" for flag -expires-ttl`},
		{[]string{"acl", "policy", "create", "-rules", "operator = \"read\""}, "want -name NAME"},
		{[]string{"acl", "policy", "create", "-name", "p", "-rules", "@" + badRules}, badRules + ": line 2"},
		{[]string{"acl", "policy", "create", "-name", "p", "-rules", "@" + filepath.Join(dir, "missing.hcl")}, "missing.hcl"},
		{[]string{"acl", "policy", "create", "-name", "p", "-rules", `operator = "sudo"`}, "-rules: line 1"},
		{[]string{"acl", "policy", "create", "-name", "bad name"}, `Name "bad name" is invalid`},
		{[]string{"acl", "policy", "read"}, "want -id ID or -name NAME"},
		{[]string{"acl", "policy", "read", "-id", polA, "-name", "p"}, "want -id ID or -name NAME"},
		{[]string{"acl", "policy", "read", "-name", "../../agent/self"}, `-name "../../agent/self" is not a policy name`},
		{[]string{"acl", "policy", "update"}, "want -id ID or -name NAME"},
		{[]string{"acl", "policy", "update", "-name", "p", "-rules", `operator = "sudo"`}, "-rules: line 1"},
		{[]string{"acl", "policy", "delete"}, "want -id ID or -name NAME"},
		{[]string{"acl", "role", "create"}, "want -name NAME"},
		{[]string{"acl", "role", "create", "-name", "r", "-node-identity", "n1:"}, `-node-identity "n1:"`},
		{[]string{"acl", "role", "update"}, "want -id ID or -name NAME"},
		{[]string{"acl", "role", "delete", "-id", roleA, "-name", "web"}, "want -id ID or -name NAME"},
	} {
		code, out, errs := runEnv(t, map[string]string{TokenEnv: theTok}, append(tc.args, "-http-addr", addr)...)
		if code != ExitUsage || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("vmesh %q = %d, stdout %q, stderr %q; want exit 2 saying %q", tc.args, code, out, errs, tc.want)
		}
	}
	if got := agent.requests(); len(got) != 0 {
		t.Errorf("usage errors reached the agent: %+v", got)
	}
}

// Every acl command's help is on stdout with exit 0 and lists its flags.
func TestACLHelp(t *testing.T) {
	t.Parallel()
	for kind, verbs := range aclVerbs {
		for verb := range verbs {
			code, out, errs := runEnv(t, nil, "acl", kind, verb, "-h")
			if code != ExitOK || errs != "" || !strings.Contains(out, "usage: vmesh acl "+kind+" "+verb) ||
				!strings.Contains(out, "-token-file file") || !strings.Contains(out, "-http-addr address") {
				t.Errorf("acl %s %s -h = %d, stdout %q, stderr %q", kind, verb, code, out, errs)
			}
		}
	}
	if code, out, _ := runEnv(t, nil, "acl", "bootstrap", "--help"); code != ExitOK || !strings.Contains(out, "usage: vmesh acl bootstrap") {
		t.Errorf("acl bootstrap --help = %d %q", code, out)
	}
	if code, out, _ := runEnv(t, nil, "acl", "token", "-h"); code != ExitOK || !strings.Contains(out, "vmesh acl token create | list") {
		t.Errorf("acl token -h = %d %q", code, out)
	}
	_, out, _ := runEnv(t, nil, "acl", "policy", "create", "-h")
	for _, want := range []string{"-rules @FILE", "-name name", "-valid-datacenter datacenter", "-format format"} {
		if !strings.Contains(out, want) {
			t.Errorf("acl policy create -h lacks %q:\n%s", want, out)
		}
	}
}

// The token comes from the first source set: -token, -token-file,
// VMESH_HTTP_TOKEN, VMESH_HTTP_TOKEN_FILE, CONSUL_HTTP_TOKEN,
// CONSUL_HTTP_TOKEN_FILE. -token warns that ps shows it; a token file
// others may read warns; a source that cannot be read is a usage error
// naming it.
func TestACLTokenPrecedence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string, mode os.FileMode) string {
		p := testkit.WriteFile(t, dir, name, content)
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flagFile := file("flag", " from-flag-file\n", 0o600)
	vmeshFile := file("vmesh", "from-vmesh-file\n", 0o600)
	consulFile := file("consul", "from-consul-file", 0o600)
	shared := file("shared", "from-shared-file", 0o644)
	empty := file("empty", "\n", 0o600)
	all := map[string]string{TokenEnv: "from-vmesh-env", TokenFileEnv: vmeshFile, ConsulTokenEnv: "from-consul-env", ConsulTokenFileEnv: consulFile}
	without := func(keys ...string) map[string]string {
		m := map[string]string{}
		for k, v := range all {
			m[k] = v
		}
		for _, k := range keys {
			delete(m, k)
		}
		return m
	}
	argvWarning := "warning: -token puts the ACL token in argv, where ps shows it to every user of this host; prefer -token-file FILE or " + TokenEnv
	for _, tc := range []struct {
		name    string
		flags   []string
		env     map[string]string
		want    string // the header; "" none
		warning string
	}{
		{"flag beats all", []string{"-token", "from-flag", "-token-file", flagFile}, all, "from-flag", argvWarning},
		{"file flag beats env", []string{"-token-file", flagFile}, all, "from-flag-file", ""},
		{"VMESH_HTTP_TOKEN", nil, all, "from-vmesh-env", ""},
		{"VMESH_HTTP_TOKEN_FILE", nil, without(TokenEnv), "from-vmesh-file", ""},
		{"CONSUL_HTTP_TOKEN", nil, without(TokenEnv, TokenFileEnv), "from-consul-env", ""},
		{"CONSUL_HTTP_TOKEN_FILE", nil, without(TokenEnv, TokenFileEnv, ConsulTokenEnv), "from-consul-file", ""},
		{"nothing", nil, nil, "", ""},
		{"shared file", []string{"-token-file", shared}, nil, "from-shared-file", "the ACL token file " + shared + " has mode 0644"},
		// A broken source that a better one shadows is never read.
		{"shadowed broken file", nil, map[string]string{TokenEnv: "from-vmesh-env", TokenFileEnv: filepath.Join(dir, "missing")}, "from-vmesh-env", ""},
	} {
		agent := &fakeACLAgent{answers: map[string]string{"GET /v1/acl/token/self": tokenJSON}}
		addr := agent.start(t)
		code, _, errs := runEnv(t, tc.env, append([]string{"acl", "token", "read", "-self", "-http-addr", addr}, tc.flags...)...)
		if code != ExitOK {
			t.Errorf("%s: exit %d, stderr %q", tc.name, code, errs)
			continue
		}
		reqs := agent.requests()
		if len(reqs) != 1 || reqs[0].Token != tc.want {
			t.Errorf("%s: sent %+v; want one request with X-Consul-Token %q", tc.name, reqs, tc.want)
		}
		if tc.warning == "" && errs != "" || !strings.Contains(errs, tc.warning) {
			t.Errorf("%s: stderr %q; want %q", tc.name, errs, tc.warning)
		}
	}
	for _, tc := range []struct {
		flags []string
		env   map[string]string
		want  string
	}{
		{[]string{"-token-file", filepath.Join(dir, "missing")}, all, "-token-file: stat " + filepath.Join(dir, "missing")},
		{[]string{"-token-file", empty}, nil, "-token-file: " + empty + " is empty"},
		{nil, map[string]string{TokenFileEnv: filepath.Join(dir, "missing")}, TokenFileEnv + ": stat"},
		{nil, map[string]string{ConsulTokenFileEnv: empty}, ConsulTokenFileEnv + ": " + empty + " is empty"},
	} {
		agent := &fakeACLAgent{}
		addr := agent.start(t)
		code, _, errs := runEnv(t, tc.env, append([]string{"acl", "token", "read", "-self", "-http-addr", addr}, tc.flags...)...)
		if code != ExitUsage || !strings.Contains(errs, tc.want) || len(agent.requests()) != 0 {
			t.Errorf("%v %v = %d %q, %d requests; want exit 2 saying %q, nothing sent", tc.flags, tc.env, code, errs, len(agent.requests()), tc.want)
		}
	}
}

// Every command that talks to an agent sends the token on every request
// it makes; join takes it as -http-token-file, since its -token-file is
// the join token's.
func TestTokenSentByEveryCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	aclFile := testkit.WriteFile(t, dir, "acl", theTok+"\n")
	joinFile := testkit.WriteFile(t, dir, "join", "vmesh1.join.token\n")
	svcFile := testkit.WriteFile(t, dir, "web.hcl", "service {\n  name = \"web\"\n  port = 80\n}\n")
	for _, p := range []string{aclFile, joinFile} {
		os.Chmod(p, 0o600)
	}
	answers := map[string]string{
		"GET /v1/vmesh/members":               `[]`,
		"PUT /v1/vmesh/leave":                 `{}`,
		"PUT /v1/vmesh/join":                  `{}`,
		"GET /v1/vmesh/tokens":                `[]`,
		"PUT /v1/agent/service/register":      `{}`,
		"GET /v1/agent/services":              `{}`,
		"GET /v1/config/service-defaults":     `[]`,
		"GET /v1/connect/intentions":          `[]`,
		"GET /v1/vmesh/envoy/bootstrap":       `{}`,
		"GET /v1/acl/token/self":              tokenJSON,
		"GET /v1/connect/intentions/exact":    `{"SourceName":"a","DestinationName":"b"}`,
		"DELETE /v1/connect/intentions/exact": `true`,
	}
	for _, args := range [][]string{
		{"members"},
		{"leave"},
		{"token", "list"},
		{"services", "register", svcFile},
		{"services", "list"},
		{"config", "list", "service-defaults"},
		{"intention", "list"},
		{"intention", "delete", "a", "b"},
		{"envoy", "bootstrap"},
		{"acl", "token", "read", "-self"},
		{"join", "10.0.0.1:7400", "-token-file", joinFile, "-http-token-file", aclFile},
	} {
		agent := &fakeACLAgent{answers: answers}
		addr := agent.start(t)
		env := map[string]string{TokenEnv: theTok}
		if args[0] == "join" {
			env = nil
		}
		code, _, errs := runEnv(t, env, append(args, "-http-addr", addr)...)
		if code != ExitOK {
			t.Errorf("vmesh %v = %d %q", args, code, errs)
			continue
		}
		reqs := agent.requests()
		if len(reqs) == 0 {
			t.Errorf("vmesh %v sent nothing", args)
		}
		for _, r := range reqs {
			if r.Token != theTok {
				t.Errorf("vmesh %v: %s %s sent X-Consul-Token %q; want %q", args, r.Method, r.Path, r.Token, theTok)
			}
		}
		if args[0] == "join" && (len(reqs) != 1 || reqs[0].Body["Token"] != "vmesh1.join.token") {
			t.Errorf("join sent %+v; want the join token in the body, the ACL token in the header", reqs)
		}
	}
	// join still refuses its -token, and takes the ACL token's -http-token
	// with the warning.
	agent := &fakeACLAgent{answers: answers}
	addr := agent.start(t)
	if code, _, errs := runEnv(t, nil, "join", "10.0.0.1:7400", "-token", "x", "-http-addr", addr); code != ExitUsage || !strings.Contains(errs, "-token-file") {
		t.Errorf("join -token = %d %q; want it refused", code, errs)
	}
	code, _, errs := runEnv(t, nil, "join", "10.0.0.1:7400", "-token-file", joinFile, "-http-token", theTok, "-http-addr", addr)
	if reqs := agent.requests(); code != ExitOK || len(reqs) != 1 || reqs[0].Token != theTok ||
		!strings.Contains(errs, "-http-token puts the ACL token in argv") || !strings.Contains(errs, "prefer -http-token-file FILE") {
		t.Errorf("join -http-token = %d %q, sent %+v; want the header and the warning", code, errs, reqs)
	}
}
