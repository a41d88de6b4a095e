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
