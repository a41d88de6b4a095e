package config

import (
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestConfigCheckUpdateInterval: Consul's check_update_interval, default
// 5m, 0 allowed (every output change written), a negative one refused
// naming the key.
func TestConfigCheckUpdateInterval(t *testing.T) {
	dir := t.TempDir()
	set := testkit.WriteFile(t, dir, "set.hcl", "check_update_interval = \"30s\"\n")
	zero := testkit.WriteFile(t, dir, "zero.hcl", "check_update_interval = \"0s\"\n")
	bad := testkit.WriteFile(t, dir, "bad.hcl", "check_update_interval = \"-1s\"\n")
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"-dev"}, 5 * time.Minute},
		{[]string{"-dev", "-config", set}, 30 * time.Second},
		{[]string{"-dev", "-config", zero}, 0},
	} {
		cfg, err := parseAgentFlags(t, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if cfg.CheckUpdateInterval != tc.want {
			t.Errorf("%v: %v, want %v", tc.args, cfg.CheckUpdateInterval, tc.want)
		}
	}
	if _, err := parseAgentFlags(t, "-dev", "-config", bad); err == nil || !strings.Contains(err.Error(), "check_update_interval") {
		t.Errorf("negative interval: %v, want an error naming the key", err)
	}
}
