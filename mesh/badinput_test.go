package mesh

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestAPIBadInput: every malformed request is a 400 (or 404 for unknown
// IDs) whose message names the field, and nothing already stored is lost.
func TestAPIBadInput(t *testing.T) {
	a := startAgent(t, testConfig(t))
	base := "http://" + a.HTTPAddr()
	reg := base + "/v1/agent/service/register"

	// Something stored that must survive every bad request.
	if code, body := testkit.HTTPDo(t, http.MethodPut, reg, `{"ID":"keep-1","Name":"keep","Port":80,"Check":{"TTL":"1m"}}`); code != 200 {
		t.Fatalf("good register: %d %s", code, body)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/kv/keep/me", "precious"); code != 200 {
		t.Fatalf("good KV put: %d %s", code, body)
	}
	var before []struct{ ServiceID string }
	idxBefore := testkit.GetJSON(t, a.HTTPAddr(), "/v1/catalog/service/keep", &before)

	cases := []struct {
		name, method, path, body string
		code                     int
		want                     []string // substrings of the message
	}{
		{"malformed JSON", "PUT", "/v1/agent/service/register", `{"Name": "web",`, 400, []string{"Request decode failed"}},
		{"not an object", "PUT", "/v1/agent/service/register", `[1,2]`, 400, []string{"Request decode failed"}},
		{"empty body", "PUT", "/v1/agent/service/register", ``, 400, []string{"empty body"}},
		{"unknown field", "PUT", "/v1/agent/service/register", `{"Name":"web","Bogus":1}`, 400, []string{`"Bogus"`}},
		{"unknown check field", "PUT", "/v1/agent/service/register", `{"Name":"web","Check":{"TTL":"1s","Nope":true}}`, 400, []string{`"Nope"`}},
		{"port wrong type", "PUT", "/v1/agent/service/register", `{"Name":"web","Port":"80"}`, 400, []string{"Port"}},
		{"negative port", "PUT", "/v1/agent/service/register", `{"Name":"web","Port":-1}`, 400, []string{"Port", "-1"}},
		{"port too big", "PUT", "/v1/agent/service/register", `{"Name":"web","Port":65536}`, 400, []string{"Port", "65536"}},
		{"empty name", "PUT", "/v1/agent/service/register", `{"Port":80}`, 400, []string{"Name", "missing service name"}},
		{"check without target", "PUT", "/v1/agent/service/register", `{"Name":"web","Check":{"Interval":"10s"}}`, 400, []string{"Check", "one of HTTP, TCP, GRPC or TTL"}},
		{"check bad interval", "PUT", "/v1/agent/service/register", `{"Name":"web","Check":{"HTTP":"http://127.0.0.1:1/","Interval":"soon"}}`, 400, []string{"Interval", "soon"}},
		{"http check without interval", "PUT", "/v1/agent/service/register", `{"Name":"web","Check":{"HTTP":"http://127.0.0.1:1/"}}`, 400, []string{"Check.Interval"}},
		{"script check", "PUT", "/v1/agent/service/register", `{"Name":"web","Check":{"ScriptArgs":["/bin/true"],"Interval":"1s"}}`, 400, []string{"ScriptArgs", "not supported"}},
		{"duplicate check ID", "PUT", "/v1/agent/service/register", `{"Name":"web","Checks":[{"CheckID":"c","TTL":"1s"},{"CheckID":"c","TTL":"2s"}]}`, 400, []string{"Checks[1].CheckID", "duplicate ID"}},
		{"duplicate service ID", "PUT", "/v1/agent/service/register", `{"ID":"keep-1","Name":"other"}`, 400, []string{"ID", "duplicate ID", `"keep"`}},
		{"several problems", "PUT", "/v1/agent/service/register", `{"Port":70000}`, 400, []string{"Name", "Port"}},
		{"bad check state", "PUT", "/v1/agent/check/update/service:keep-1", `{"Status":"sleepy"}`, 400, []string{"Status", "sleepy"}},
		{"bad health state", "GET", "/v1/health/state/sleepy", ``, 400, []string{"sleepy"}},
		{"bad index", "GET", "/v1/catalog/services?index=abc", ``, 400, []string{"index"}},
		{"bad wait", "GET", "/v1/catalog/services?index=1&wait=forever", ``, 400, []string{"wait"}},
		{"broken filter expression", "GET", "/v1/health/service/keep?filter=Service.Port%20%3D%3D", ``, 400, []string{"filter"}},
		{"filter on an endpoint without it", "GET", "/v1/kv/keep?filter=Key%3D%3D1", ``, 400, []string{"filter"}},
		{"other datacenter", "GET", "/v1/catalog/services?dc=mars", ``, 500, []string{"datacenter"}},
		{"bad cas", "PUT", "/v1/kv/keep/me?cas=abc", `x`, 400, []string{"cas"}},
		{"bad flags", "PUT", "/v1/kv/keep/me?flags=-1", `x`, 400, []string{"flags"}},
		{"KV lock with an unknown session", "PUT", "/v1/kv/keep/me?acquire=abc", `x`, 400, []string{"invalid session", `"abc"`}},
		{"session with a short TTL", "PUT", "/v1/session/create", `{"TTL":"1s"}`, 400, []string{"TTL", "between 10s and 24h0m0s"}},
		{"transaction too large", "PUT", "/v1/txn", `[` + strings.Repeat(`{"KV":{"Verb":"get","Key":"k"}},`, 64) + `{"KV":{"Verb":"get","Key":"k"}}]`, 413, []string{"too many operations"}},
		{"unknown service", "PUT", "/v1/agent/service/deregister/nope", ``, 404, []string{"nope"}},
		{"unknown agent service", "GET", "/v1/agent/service/nope", ``, 404, []string{"nope"}},
		{"unknown check", "PUT", "/v1/agent/check/pass/nope", ``, 404, []string{"nope"}},
		{"check on unknown service", "PUT", "/v1/agent/check/register", `{"Name":"c","ServiceID":"nope","TTL":"1s"}`, 400, []string{"ServiceID", "nope"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := testkit.HTTPDo(t, tc.method, base+tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("%s %s: status %d (%s), want %d", tc.method, tc.path, code, body, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("%s %s: message %q does not mention %q", tc.method, tc.path, body, w)
				}
			}
		})
	}

	// Still serving, nothing lost, and a good request still works.
	var after []struct{ ServiceID string }
	idxAfter := testkit.GetJSON(t, a.HTTPAddr(), "/v1/catalog/service/keep", &after)
	if len(after) != 1 || after[0].ServiceID != "keep-1" || idxAfter != idxBefore {
		t.Fatalf("after bad input: %+v at index %d; want keep-1 unchanged at %d", after, idxAfter, idxBefore)
	}
	if code, body := testkit.HTTPDo(t, http.MethodGet, base+"/v1/kv/keep/me?raw", ""); code != 200 || body != "precious" {
		t.Fatalf("KV after bad input: %d %q", code, body)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, reg, `{"Name":"web","Port":8080}`); code != 200 {
		t.Fatalf("good register after bad input: %d %s", code, body)
	}
}
