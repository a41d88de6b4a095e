package config

import (
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

func TestTelemetryTracingBlock(t *testing.T) {
	dir := t.TempDir()
	ca := testkit.WriteFile(t, dir, "ca.pem", "not checked here")
	testkit.WriteFile(t, dir, "tracing.hcl", `
telemetry {
  tracing {
    endpoint     = "collector.example:4317"
    protocol     = "grpc"
    sample_ratio = 0.25
    ca_file      = "`+ca+`"
    service_name = "edge"
  }
}
`)
	cfg, err := parseAgentFlags(t, "-config", dir, "-data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.Telemetry.Tracing
	want := TracingConfig{Endpoint: "collector.example:4317", Protocol: "grpc", SampleRatio: 0.25, CAFile: ca, ServiceName: "edge"}
	if got != want {
		t.Errorf("telemetry.tracing = %+v, want %+v", got, want)
	}
	if d := DefaultConfig().Telemetry.Tracing; d.SampleRatio != DefaultSampleRatio || d.Endpoint != "" {
		t.Errorf("default tracing = %+v, want no endpoint and ratio %v", d, DefaultSampleRatio)
	}
}

func TestTelemetryTracingErrors(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`telemetry { tracing { protocol = "thrift" } }`, `telemetry.tracing.protocol: "thrift" is not grpc or http/protobuf`},
		{`telemetry { tracing { sample_ratio = 1.5 } }`, `telemetry.tracing.sample_ratio: must be between 0 and 1, got 1.5`},
		{`telemetry { tracing { endpoint = "ftp://x:1" } }`, `telemetry.tracing.endpoint: "ftp://x:1": the scheme must be http or https`},
		{`telemetry { tracing { endpoint = "collector" } }`, `telemetry.tracing.endpoint: "collector" is neither a URL nor host:port`},
		{`telemetry { tracing { ca_file = "/nonexistent/ca.pem" } }`, `telemetry.tracing.ca_file: stat /nonexistent/ca.pem`},
		{`telemetry { tracing { insecure = true
ca_file = "/etc/hostname" } }`, `telemetry.tracing.ca_file: is set but insecure = true`},
		{`telemetry { tracing { sampler = "always_on" } }`, `unknown key "sampler" in telemetry.tracing`},
		{`telemetry { tracing { sample_ratio = "half" } }`, `telemetry.tracing.sample_ratio`},
	} {
		dir := t.TempDir()
		testkit.WriteFile(t, dir, "t.hcl", c.body)
		_, err := parseAgentFlags(t, "-config", dir, "-data-dir", dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.body, err, c.want)
		}
	}
}

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
