package config

import (
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

func TestConfigIntentionsDefault(t *testing.T) {
	dir := t.TempDir()
	deny := testkit.WriteFile(t, dir, "deny.hcl", "intentions_default = \"deny\"\n")
	allow := testkit.WriteFile(t, dir, "allow.hcl", "intentions_default = \"allow\"\n")
	bad := testkit.WriteFile(t, dir, "bad.hcl", "intentions_default = \"maybe\"\n")
	for _, tc := range []struct {
		name      string
		args      []string
		wantAllow bool
	}{
		{"production default", []string{"-data-dir", dir}, false},
		{"dev default", []string{"-dev"}, true},
		{"dev, a file says deny", []string{"-dev", "-config", deny}, false},
		{"production, a file says allow", []string{"-data-dir", dir, "-config", allow}, true},
	} {
		cfg, err := parseAgentFlags(t, tc.args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := cfg.IntentionsDefaultAllow(); got != tc.wantAllow {
			t.Errorf("%s: default allow = %v (%q), want %v", tc.name, got, cfg.IntentionsDefault, tc.wantAllow)
		}
	}
	_, err := parseAgentFlags(t, "-dev", "-config", bad)
	if err == nil || !strings.Contains(err.Error(), "intentions_default") || !strings.Contains(err.Error(), `"maybe"`) {
		t.Errorf("bad intentions_default: %v, want an error naming the key", err)
	}
}
