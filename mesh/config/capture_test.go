package config

import (
	"flag"
	"github.com/vmesh/vmesh/lab/testkit"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

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
