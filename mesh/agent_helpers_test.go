package mesh

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/vmesh/vmesh/mesh/config"
)

// testConfig is a single-node bootstrap config on loopback with an
// ephemeral HTTP port and a data dir that the test owns.
func testConfig(t testing.TB) config.Config {
	cfg := config.DefaultConfig()
	cfg.NodeName = "node-a"
	cfg.DataDir = t.TempDir()
	cfg.Bootstrap = true
	cfg.BindAddr = "127.0.0.1"
	cfg.ClientAddr = "127.0.0.1"
	cfg.Addresses.HTTP = "127.0.0.1:0"
	// An ephemeral DNS port (UDP and TCP); Agent.DNSAddr tells which.
	cfg.Addresses.DNS = "127.0.0.1:0"
	cfg.Ports.Cluster = 0 // an ephemeral cluster port: tests run side by side
	cfg.ServicesDir = ""
	cfg.LogLevel = "warn"
	// In-process test agents share 127.0.0.1: only a test that needs the
	// proxy turns it on (its listeners would collide otherwise).
	cfg.Proxy.Enabled = false
	// ACLs are on, as on every non-dev agent, but allow what no rule
	// covers: tests of other features need no tokens, and every request
	// still goes through token resolution. The ACL tests deny by default.
	cfg.ACL.DefaultPolicy = "allow"
	return cfg
}

// startAgent starts an in-process agent and waits until it has a leader
// and has registered its node.
func startAgent(t testing.TB, cfg config.Config) *Agent {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	logger := testkit.Logger(t, lvl)
	a := NewAgent(cfg, logger, io.Discard)
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("starting agent: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("closing agent: %v", err)
		}
	})
	testkit.WaitFor(t, 10*time.Second, "node registered", func() bool {
		_, n, _, err := a.store.Node(nil, cfg.NodeName)
		return err == nil && n != nil
	})
	return a
}
