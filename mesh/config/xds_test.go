package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestXDSConfig(t *testing.T) {
	cfg, err := parseAgentFlags(t, "-client", "127.0.0.5", "-data-dir", "/var/lib/vmesh")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AdminAddr(); got != "127.0.0.5:15000" {
		t.Errorf("default admin address = %s, want CLIENT:15000", got)
	}
	if cfg.Addresses.XDS != "" {
		t.Errorf("xDS over TCP is on by default: %q", cfg.Addresses.XDS)
	}
	cfg, err = parseAgentFlags(t, "--xds-addr", "127.0.0.1:18000", "--admin-addr", "127.0.0.1:0", "-data-dir", "/d")
	if err != nil || cfg.Addresses.XDS != "127.0.0.1:18000" || cfg.AdminAddr() != "127.0.0.1:0" {
		t.Fatalf("flags: %+v, %v", cfg.Addresses, err)
	}
	_, err = parseAgentFlags(t, "--xds-addr", "localhost:18000", "--admin-addr", "15000", "-data-dir", "/d")
	if err == nil || !strings.Contains(err.Error(), "addresses.xds") || !strings.Contains(err.Error(), "addresses.admin") {
		t.Fatalf("bad addresses: %v, want both named", err)
	}

	// The socket lives in systemd's runtime dir when there is one, else in
	// the data dir; a path too long for a socket moves to the temp dir,
	// the same one each time.
	t.Setenv("RUNTIME_DIRECTORY", "")
	c := Config{DataDir: t.TempDir()}
	if p, cleanup, err := c.XDSSocketPath(); err != nil || p != filepath.Join(c.DataDir, "xds.sock") || cleanup != "" {
		t.Errorf("socket = %s (cleanup %q), %v; want it in the data dir", p, cleanup, err)
	}
	run := t.TempDir()
	t.Setenv("RUNTIME_DIRECTORY", run)
	if p, _, _ := c.XDSSocketPath(); p != filepath.Join(run, "xds.sock") {
		t.Errorf("socket = %s, want it in $RUNTIME_DIRECTORY", p)
	}
	t.Setenv("RUNTIME_DIRECTORY", "")
	c.DataDir = filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	p1, cleanup, err := c.XDSSocketPath()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(cleanup)
	p2, _, _ := c.XDSSocketPath()
	if len(p1) > maxSocketPath || p1 != p2 || cleanup == "" {
		t.Errorf("long data dir: socket %s then %s (cleanup %q)", p1, p2, cleanup)
	}
}
