package mesh

import (
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
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
