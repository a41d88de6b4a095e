package config

import (
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

// telemetry.access_log_dir: from a file or -access-log-dir, the flag
// winning; defaults /var/log/vmesh, or DATA_DIR/access-logs under -dev;
// a relative path, / and the kernel's trees are refused naming the key.
func TestAccessLogDir(t *testing.T) {
	dir := t.TempDir()
	file := testkit.WriteFile(t, dir, "t.hcl", "telemetry {\n  access_log_dir = \"/srv/logs/vmesh/\"\n}\n")
	cfg, err := parseAgentFlags(t, "-dev", "-config", file)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AccessLogDirFor("/tmp/dev"); got != "/srv/logs/vmesh" {
		t.Errorf("from the file: %q", got)
	}
	cfg, err = parseAgentFlags(t, "-dev", "-config", file, "-access-log-dir", "/var/log/mesh")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AccessLogDirFor("/tmp/dev"); got != "/var/log/mesh" {
		t.Errorf("the flag over the file: %q", got)
	}
	cfg, err = parseAgentFlags(t, "-dev")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AccessLogDirFor("/tmp/dev"); got != "/tmp/dev/access-logs" {
		t.Errorf("-dev default: %q", got)
	}
	cfg, err = parseAgentFlags(t, "-data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AccessLogDirFor(dir); got != DefaultAccessLogDir {
		t.Errorf("default: %q", got)
	}
	for body, want := range map[string]string{
		"telemetry {\n  access_log_dir = \"logs\"\n}\n":      `telemetry.access_log_dir: "logs" is not an absolute path`,
		"telemetry {\n  access_log_dir = \"/\"\n}\n":         `telemetry.access_log_dir: "/" would let the cluster's proxy-defaults write any file`,
		"telemetry {\n  access_log_dir = \"/proc/1\"\n}\n":   `telemetry.access_log_dir: "/proc/1" is under /proc`,
		"telemetry {\n  access_log_dirs = \"/var/log\"\n}\n": "access_log_dirs",
	} {
		bad := testkit.WriteFile(t, dir, "bad.hcl", body)
		if _, err := parseAgentFlags(t, "-dev", "-config", bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %s", body, err, want)
		}
	}
	if _, err := parseAgentFlags(t, "-dev", "-access-log-dir", "rel/logs"); err == nil || !strings.Contains(err.Error(), "telemetry.access_log_dir") {
		t.Errorf("-access-log-dir rel/logs: %v", err)
	}
}
