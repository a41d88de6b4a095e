package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh/config"
)

// fakeAgent answers the join and token endpoints and records what it was
// asked.
type fakeAgent struct {
	mu   sync.Mutex
	reqs []string
}

func (f *fakeAgent) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.RequestURI()+" "+string(b))
		f.mu.Unlock()
		switch {
		case r.URL.Path == "/v1/vmesh/join":
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodPut && r.URL.Path == "/v1/vmesh/token":
			io.WriteString(w, `{"Token":"vmesh1.x.y.z","ID":"abc","Uses":2,"UsesLeft":2,"CreatedAt":"2026-01-01T00:00:00Z","ExpiresAt":"2026-01-01T01:00:00Z"}`)
		case r.URL.Path == "/v1/vmesh/tokens":
			json.NewEncoder(w).Encode([]map[string]any{
				{"ID": "t1", "CreatedAt": "2026-01-01T00:00:00Z", "ExpiresAt": "2999-01-01T00:00:00Z", "Uses": 1, "UsesLeft": 1},
				{"ID": "t2", "CreatedAt": "2026-01-01T00:00:00Z", "ExpiresAt": "2999-01-01T00:00:00Z", "Uses": 1, "UsesLeft": 0},
				{"ID": "t3", "CreatedAt": "2026-01-01T00:00:00Z", "ExpiresAt": "2999-01-01T00:00:00Z", "Uses": 1, "UsesLeft": 1, "Revoked": true},
				{"ID": "t4", "CreatedAt": "2026-01-01T00:00:00Z", "ExpiresAt": "2026-01-01T01:00:00Z", "Uses": 1, "UsesLeft": 1},
			})
		case r.Method == http.MethodDelete && r.URL.Path == "/v1/vmesh/token/nope":
			http.Error(w, "discovery: not found: join token nope", http.StatusNotFound)
		case r.Method == http.MethodDelete:
			io.WriteString(w, `{}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func (f *fakeAgent) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return ""
	}
	return f.reqs[len(f.reqs)-1]
}

// vmesh join takes its token from a file or the environment, never argv.
// Not parallel: it sets VMESH_JOIN_TOKEN.
func TestJoinTokenSources(t *testing.T) {
	agent := &fakeAgent{}
	addr := agent.start(t)
	dir := t.TempDir()
	private := testkit.WriteFile(t, dir, "private", "tok-from-file\n")
	os.Chmod(private, 0o600)
	shared := testkit.WriteFile(t, dir, "shared", "tok-shared")
	os.Chmod(shared, 0o644)

	code, _, errs := runCLI(t, "join", "10.0.0.1:7400", "-token", "secret-on-argv", "-http-addr", addr)
	if code != ExitUsage || !strings.Contains(errs, "-token-file") || !strings.Contains(errs, config.JoinTokenEnv) || strings.Contains(errs, "secret-on-argv") {
		t.Errorf("join -token = %d %q; want exit 2 pointing at -token-file and %s, without echoing the token", code, errs, config.JoinTokenEnv)
	}
	if agent.last() != "" {
		t.Errorf("a refused -token reached the agent: %s", agent.last())
	}
	t.Setenv(config.JoinTokenEnv, "")
	if code, _, errs := runCLI(t, "join", "10.0.0.1:7400", "-http-addr", addr); code != ExitUsage || !strings.Contains(errs, "want a join token in -token-file FILE or "+config.JoinTokenEnv) {
		t.Errorf("join without a token = %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, "join", "10.0.0.1:7400", "-token-file", dir+"/nope", "-http-addr", addr); code != ExitUsage || !strings.Contains(errs, "-token-file:") {
		t.Errorf("join with a missing file = %d %q", code, errs)
	}
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
		warn      bool
	}{
		{"file", "", []string{"-token-file", private}, `"Token":"tok-from-file"`, false},
		{"group-readable file", "", []string{"-token-file", shared}, `"Token":"tok-shared"`, true},
		{"environment", "tok-from-env", nil, `"Token":"tok-from-env"`, false},
		{"file wins over the environment", "tok-from-env", []string{"-token-file", private}, `"Token":"tok-from-file"`, false},
	} {
		t.Setenv(config.JoinTokenEnv, tc.env)
		code, out, errs := runCLI(t, append([]string{"join", "10.0.0.1:7400", "-http-addr", addr}, tc.args...)...)
		if code != ExitOK || !strings.Contains(out, "Joined") || !strings.Contains(agent.last(), tc.want) {
			t.Errorf("%s: join = %d %q %q, agent got %q; want %s", tc.name, code, out, errs, agent.last(), tc.want)
		}
		if got := strings.Contains(errs, "warning") && strings.Contains(errs, "0644"); got != tc.warn {
			t.Errorf("%s: stderr %q; want a mode warning: %v", tc.name, errs, tc.warn)
		}
	}
}

func TestTokenCommands(t *testing.T) {
	t.Parallel()
	agent := &fakeAgent{}
	addr := agent.start(t)

	code, out, errs := runCLI(t, "token", "create", "-uses", "2", "-ttl", "30m", "-http-addr", addr)
	if code != ExitOK || out != "vmesh1.x.y.z\n" || !strings.Contains(errs, "token abc admits 2 join(s), expires at 2026-01-01T01:00:00Z") {
		t.Errorf("token create = %d %q %q", code, out, errs)
	}
	if got := agent.last(); !strings.HasPrefix(got, "PUT /v1/vmesh/token?ttl=30m0s&uses=2 ") {
		t.Errorf("token create asked %q", got)
	}
	if code, _, _ := runCLI(t, "token", "create", "-http-addr", addr); code != ExitOK || !strings.HasPrefix(agent.last(), "PUT /v1/vmesh/token?ttl=1h0m0s&uses=1 ") {
		t.Errorf("token create defaults asked %q; want one use for 1h", agent.last())
	}

	code, out, _ = runCLI(t, "token", "list", "-http-addr", addr)
	if code != ExitOK {
		t.Fatalf("token list = %d", code)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) == 5 {
			rows[f[0]] = f[3] + " " + f[4]
		}
	}
	for id, want := range map[string]string{"t1": "1/1 valid", "t2": "0/1 used", "t3": "1/1 revoked", "t4": "1/1 expired"} {
		if rows[id] != want {
			t.Errorf("token list shows %s as %q, want %q:\n%s", id, rows[id], want, out)
		}
	}
	if strings.Contains(strings.ToLower(out), "secret") || strings.Contains(out, "vmesh1.") {
		t.Errorf("token list shows a secret:\n%s", out)
	}

	if code, out, _ := runCLI(t, "token", "revoke", "abc", "-http-addr", addr); code != ExitOK || !strings.Contains(out, "Revoked join token abc") ||
		!strings.HasPrefix(agent.last(), "DELETE /v1/vmesh/token/abc ") {
		t.Errorf("token revoke = %d %q, agent got %q", code, out, agent.last())
	}
	if code, _, errs := runCLI(t, "token", "revoke", "nope", "-http-addr", addr); code != ExitFailed || !strings.Contains(errs, "404") {
		t.Errorf("token revoke nope = %d %q; want exit 1 with the 404", code, errs)
	}
	for _, args := range [][]string{{"token"}, {"token", "frob"}, {"token", "revoke"}, {"token", "list", "x"}} {
		if code, _, _ := runCLI(t, append(args, "-http-addr", addr)...); code != ExitUsage {
			t.Errorf("vmesh %v = %d; want a usage error", args, code)
		}
	}
}
