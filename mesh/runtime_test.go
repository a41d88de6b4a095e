package mesh

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh/cli"
	"github.com/vmesh/vmesh/mesh/config"
)

// runtime { gc_percent, memory_limit } reach the collector, unless GOGC
// or GOMEMLIMIT is in the environment; unset, nothing is changed.
func TestApplyRuntime(t *testing.T) {
	var gotPercent, gotLimit []int64
	saved := gcSettings
	t.Cleanup(func() { gcSettings = saved })
	gcSettings.setGCPercent = func(p int) int { gotPercent = append(gotPercent, int64(p)); return 100 }
	gcSettings.setMemoryLimit = func(n int64) int64 { gotLimit = append(gotLimit, n); return 0 }
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	logger := testkit.Logger(t)

	applyRuntime(config.RuntimeConfig{}, getenv, logger)
	if len(gotPercent)+len(gotLimit) != 0 {
		t.Fatalf("unset runtime block changed the collector: percent %v, limit %v", gotPercent, gotLimit)
	}
	applyRuntime(config.RuntimeConfig{GCPercent: 50, MemoryLimit: "96MiB"}, getenv, logger)
	if len(gotPercent) != 1 || gotPercent[0] != 50 || len(gotLimit) != 1 || gotLimit[0] != 96<<20 {
		t.Fatalf("applied percent %v, limit %v; want [50] and [%d]", gotPercent, gotLimit, 96<<20)
	}
	env["GOGC"], env["GOMEMLIMIT"] = "200", "1GiB"
	applyRuntime(config.RuntimeConfig{GCPercent: 30, MemoryLimit: "64MiB"}, getenv, logger)
	if len(gotPercent) != 1 || len(gotLimit) != 1 {
		t.Fatalf("the environment did not win: percent %v, limit %v", gotPercent, gotLimit)
	}
}

// `vmesh agent` applies the runtime block before it starts the agent, and
// refuses a bad one naming the key.
func TestAgentCommandRuntime(t *testing.T) {
	saved := gcSettings
	t.Cleanup(func() { gcSettings = saved })
	var gotPercent, gotLimit int64
	gcSettings.setGCPercent = func(p int) int { gotPercent = int64(p); return 100 }
	gcSettings.setMemoryLimit = func(n int64) int64 { gotLimit = n; return 0 }

	dir := t.TempDir()
	testkit.WriteFile(t, dir, "bad.hcl", `runtime { memory_limit = "lots" }`)
	var out, errOut strings.Builder
	env := &cli.Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	if code := run(t.Context(), []string{"vmesh", "agent", "-config", filepath.Join(dir, "bad.hcl"), "-data-dir", t.TempDir()}, env); code != cli.ExitUsage {
		t.Errorf("bad runtime block: exit %d, want %d", code, cli.ExitUsage)
	}
	if !strings.Contains(errOut.String(), `runtime.memory_limit: "lots" is not a size`) {
		t.Errorf("stderr %q does not name runtime.memory_limit", errOut.String())
	}
	if gotPercent != 0 || gotLimit != 0 {
		t.Errorf("a refused config reached the collector: %d, %d", gotPercent, gotLimit)
	}

	// A good block is applied even when the agent then fails to start:
	// here its HTTP address is taken.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	testkit.WriteFile(t, dir, "good.hcl", `runtime {
  gc_percent   = 50
  memory_limit = "96MiB"
}`)
	errOut.Reset()
	code := run(t.Context(), []string{"vmesh", "agent", "-config", filepath.Join(dir, "good.hcl"), "-data-dir", t.TempDir(),
		"-bind", "127.0.0.1", "-http-addr", ln.Addr().String(), "-log-level", "error"}, env)
	if code == cli.ExitOK || code == cli.ExitUsage {
		t.Errorf("exit %d with the HTTP address taken, want a start failure; stderr %s", code, errOut.String())
	}
	if gotPercent != 50 || gotLimit != 96<<20 {
		t.Errorf("collector got percent %d, limit %d; want 50 and %d", gotPercent, gotLimit, 96<<20)
	}
}
