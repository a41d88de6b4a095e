package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh/config"
)

// Checks may not probe the agent's own listeners: registration through
// the API (a service's check, a standalone check) is refused with a 400
// naming the check and the listener; a check elsewhere is accepted; with
// checks { allow_agent_targets = true } the same check registers and
// passes.
func TestChecksRefuseAgentTargets(t *testing.T) {
	a := startAgent(t, testConfig(t))
	base := "http://" + a.HTTPAddr()
	self := base + "/v1/status/leader"
	for _, c := range []struct{ path, body, want string }{
		{"/v1/agent/service/register", fmt.Sprintf(`{"Name":"web","Port":80,"Check":{"CheckID":"peek","HTTP":%q,"Interval":"10s"}}`, self),
			`check "peek": HTTP target ` + self + ` is this agent's HTTP API (` + a.HTTPAddr() + `)`},
		{"/v1/agent/check/register", fmt.Sprintf(`{"Name":"dns-probe","TCP":%q,"Interval":"10s"}`, a.DNSAddr()),
			`check "dns-probe": TCP target ` + a.DNSAddr() + ` is this agent's DNS server`},
		{"/v1/agent/check/register", fmt.Sprintf(`{"Name":"raft","TCP":%q,"Interval":"10s"}`, a.member.Server().Addr()),
			`is this agent's cluster port`},
	} {
		code, body := testkit.HTTPDo(t, http.MethodPut, base+c.path, c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) || !strings.Contains(body, "allow_agent_targets") {
			t.Errorf("PUT %s: %d %q; want 400 containing %q", c.path, code, body, c.want)
		}
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/agent/service/register",
		`{"Name":"web","Port":80,"Check":{"HTTP":"http://127.0.0.1:1/health","Interval":"10s"}}`); code != http.StatusOK {
		t.Errorf("a check of an app: %d %s", code, body)
	}

	cfg := testConfig(t)
	cfg.Checks.AllowAgentTargets = true
	b := startAgent(t, cfg)
	self = "http://" + b.HTTPAddr() + "/v1/status/leader"
	if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+b.HTTPAddr()+"/v1/agent/check/register",
		fmt.Sprintf(`{"Name":"self","HTTP":%q,"Interval":"100ms"}`, self)); code != http.StatusOK {
		t.Fatalf("allow_agent_targets: %d %s", code, body)
	}
	testkit.WaitFor(t, 10*time.Second, "the allowed self check to pass", func() bool {
		var checks map[string]struct{ Status string }
		testkit.GetJSON(t, b.HTTPAddr(), "/v1/agent/checks", &checks)
		return checks["self"].Status == "passing"
	})
}

// A service file whose check targets the agent's listeners fails the
// start as a configuration error naming the file, the check and the
// listener.
func TestChecksRefuseAgentTargetsInFiles(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "web.hcl", `service {
  name = "web"
  port = 80
  check { id = "peek", http = "http://127.0.0.1:15000/config_dump", interval = "10s" }
}
`)
	cfg := testConfig(t)
	cfg.ServicesDir = dir
	a := NewAgent(cfg, testkit.Logger(t), nil)
	err := a.checkServiceFiles(context.Background())
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "web.hcl") ||
		!strings.Contains(err.Error(), `check "peek": HTTP target http://127.0.0.1:15000/config_dump is this agent's admin listener`) {
		t.Errorf("start: %v; want a config error naming the file, the check and the admin listener", err)
	}
}

// checks { output_max_size } caps what a check stores.
func TestChecksOutputMaxSize(t *testing.T) {
	cfg := testConfig(t)
	cfg.Checks.OutputMaxSize = 100
	a := startAgent(t, cfg)
	base := "http://" + a.HTTPAddr()
	if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/agent/check/register", `{"Name":"beat","TTL":"1h"}`); code != http.StatusOK {
		t.Fatalf("register: %d %s", code, body)
	}
	out, _ := json.Marshal(map[string]string{"Status": "warning", "Output": strings.Repeat("o", 5000)})
	if code, body := testkit.HTTPDo(t, http.MethodPut, base+"/v1/agent/check/update/beat", string(out)); code != http.StatusOK {
		t.Fatalf("update: %d %s", code, body)
	}
	var checks map[string]struct{ Status, Output string }
	testkit.WaitFor(t, 10*time.Second, "the warning stored", func() bool {
		testkit.GetJSON(t, a.HTTPAddr(), "/v1/agent/checks", &checks)
		return checks["beat"].Status == "warning"
	})
	if got := checks["beat"].Output; len(got) > 100 || !strings.HasSuffix(got, "(output cut to 100 bytes)") {
		t.Errorf("stored output %q (%d bytes); want at most 100, cut", got, len(got))
	}
}
