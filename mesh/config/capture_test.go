package config

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/dataplane/xds"
)

func TestCaptureConfig(t *testing.T) {
	var f AgentFlags
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	if err := fs.Parse([]string{"-dev", "-capture"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.Build(fs)
	if err != nil || !cfg.Capture.Enabled {
		t.Fatalf("-capture: enabled=%v, %v", cfg.Capture.Enabled, err)
	}
	cfg.Capture.ReconcileInterval = -time.Second
	cfg.Capture.ExcludePorts = []int{0}
	cfg.Capture.UserPortBase = 70000
	err = cfg.Validate()
	for _, want := range []string{"capture.reconcile_interval: must not be negative", "capture.exclude_ports[0]", "capture.user_port_base: port must be between 1 and 65535, got 70000"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}

// capture.user_port_base reaches the xDS options the agent serves with.
func TestCaptureUserPortBaseFile(t *testing.T) {
	cfg := DefaultConfig()
	f := testkit.WriteFile(t, t.TempDir(), "c.hcl", "capture {\n  user_port_base = 16000\n}\n")
	if err := cfg.LoadFiles([]string{f}); err != nil {
		t.Fatal(err)
	}
	o := cfg.UserPortOptions(xds.Options{})
	if o.UserPortBase != 16000 {
		t.Errorf("UserPortBase %d, want 16000", o.UserPortBase)
	}
	for _, p := range []int{7400, 8500, 8600, 15000, 15001, 15006, 15443} {
		if !slices.Contains(o.ReservedPorts, p) {
			t.Errorf("port %d is not reserved from users: %v", p, o.ReservedPorts)
		}
	}
}

// The new capture keys: bad values are named; inbound_ports need the
// in-process proxy; HostOptions carries them to xDS.
func TestCaptureInboundModeAndDefaultService(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Capture.Enabled = true
	cfg.Capture.InboundPorts = []int{8080}
	cfg.Capture.InboundMode = "lenient"
	cfg.Capture.DefaultService = "mono lith"
	cfg.Proxy.Enabled = false
	err := cfg.Validate()
	for _, want := range []string{
		`capture.inbound_mode: "lenient" is not "strict" or "permissive"`,
		`capture.default_service: "mono lith" is not a service name`,
		"capture.inbound_ports: needs the in-process proxy",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}

	cfg = DefaultConfig()
	cfg.NodeName = "n1"
	f := testkit.WriteFile(t, t.TempDir(), "c.hcl", `capture {
  enabled = true
  inbound_ports = [8080]
  inbound_mode = "permissive"
  default_service = "monolith"
}
`)
	if err := cfg.LoadFiles([]string{f}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := cfg.HostOptions()
	if h.Node != "n1" || h.DefaultService != "monolith" || !slices.Equal(h.InboundPorts, []int{8080}) || !h.InboundPermissive || h.InboundPort != 15006 {
		t.Errorf("HostOptions %+v", h)
	}
	cfg.Capture.Enabled = false
	if h := cfg.HostOptions(); len(h.InboundPorts) != 0 || h.DefaultService != "monolith" {
		t.Errorf("capture off: HostOptions %+v; want no inbound ports (nothing redirects), the default service kept", h)
	}
}
