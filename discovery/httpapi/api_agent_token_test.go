package httpapi

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
)

// fakeTokens records the tokens set through the API.
type fakeTokens struct {
	mu  sync.Mutex
	set map[string]string
}

func (f *fakeTokens) SetToken(_ context.Context, kind, secret string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[kind] = secret
	return nil
}

func (f *fakeTokens) snapshot() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.set)
}

// TestAgentTokenUpdate: consul acl set-agent-token, through consul/api:
// acl:write sets each kind, Consul's older names set the same kinds, a
// token without acl:write changes nothing, and an unknown kind is a 404.
func TestAgentTokenUpdate(t *testing.T) {
	f := newOpsFixture(t)
	ag := f.client(t, f.mgmt).Agent()
	for name, set := range map[string]func(string) error{
		"default":        func(s string) error { _, err := ag.UpdateDefaultACLToken(s, nil); return err },
		"agent":          func(s string) error { _, err := ag.UpdateAgentACLToken(s, nil); return err },
		"agent_recovery": func(s string) error { _, err := ag.UpdateAgentRecoveryACLToken(s, nil); return err },
		"replication":    func(s string) error { _, err := ag.UpdateReplicationACLToken(s, nil); return err },
		"dns":            func(s string) error { _, err := ag.UpdateDNSToken(s, nil); return err },
		"config_file_service_registration": func(s string) error {
			_, err := ag.UpdateConfigFileRegistrationToken(s, nil)
			return err
		},
	} {
		if err := set("secret-" + name); err != nil {
			t.Errorf("setting %s: %v", name, err)
		}
	}
	got := f.tokens.snapshot()
	for _, k := range []string{"default", "agent", "agent_recovery", "replication", "dns", "config_file_service_registration"} {
		if got[k] != "secret-"+k {
			t.Errorf("token %s = %q, want %q", k, got[k], "secret-"+k)
		}
	}
	// An older name sets its kind.
	if code, body := f.putBody(t, f.mgmt, "/v1/agent/token/acl_agent_token", `{"Token":"old-name"}`); code != 200 {
		t.Errorf("acl_agent_token: %d %s", code, body)
	}
	if got := f.tokens.snapshot()["agent"]; got != "old-name" {
		t.Errorf("agent token after acl_agent_token = %q", got)
	}
	if code, body := f.putBody(t, f.mgmt, "/v1/agent/token/bogus", `{"Token":"x"}`); code != 404 || !strings.Contains(body, `Token "bogus" is unknown`) {
		t.Errorf("unknown kind: %d %q; want 404 naming it", code, body)
	}
	// acl:read is not enough: Consul's rule is acl:write.
	reader := f.token(t, `acl = "read"`)
	if code, _ := f.putBody(t, reader, "/v1/agent/token/default", `{"Token":"stolen"}`); code != 403 {
		t.Errorf("acl:read setting the default token: %d, want 403", code)
	}
	if code, _ := f.putBody(t, "", "/v1/agent/token/default", `{"Token":"stolen"}`); code != 403 {
		t.Errorf("anonymous setting the default token: %d, want 403", code)
	}
	if got := f.tokens.snapshot()["default"]; got != "secret-default" {
		t.Errorf("default token after refused calls = %q, want it unchanged", got)
	}
	if code, body := f.putBody(t, f.mgmt, "/v1/agent/token/default", `{"Tokn":"x"}`); code != 400 || !strings.Contains(body, "Tokn") {
		t.Errorf("misspelled field: %d %q; want a 400 naming it", code, body)
	}
}

func (f *opsFixture) putBody(t *testing.T, token, path, body string) (int, string) {
	t.Helper()
	code, _, out := f.do(t, token, "PUT", path, body)
	return code, out
}
