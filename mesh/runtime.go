package mesh

import (
	"log/slog"
	"runtime/debug"

	"github.com/vmesh/vmesh/mesh/config"
)

// gcSettings are the process-wide collector setters, a variable so a test
// can see what applyRuntime asked for without changing its own process.
var gcSettings = struct {
	setGCPercent   func(int) int
	setMemoryLimit func(int64) int64
}{debug.SetGCPercent, debug.SetMemoryLimit}

// applyRuntime sets the Go collector from the config's runtime block, at
// agent start. GOGC and GOMEMLIMIT, when set in the environment, win (the
// runtime has already applied them), as for any Go program; the config
// value they override is logged. cfg has passed Validate.
func applyRuntime(cfg config.RuntimeConfig, getenv func(string) string, logger *slog.Logger) {
	if cfg.GCPercent != 0 {
		if env := getenv("GOGC"); env != "" {
			logger.Info("GOGC from the environment overrides runtime.gc_percent", "GOGC", env, "gc_percent", cfg.GCPercent)
		} else {
			gcSettings.setGCPercent(cfg.GCPercent)
		}
	}
	if cfg.MemoryLimit != "" {
		n, err := cfg.MemoryLimitBytes()
		switch {
		case err != nil: // Validate refused it already
			logger.Error("runtime.memory_limit", "err", err)
		case getenv("GOMEMLIMIT") != "":
			logger.Info("GOMEMLIMIT from the environment overrides runtime.memory_limit", "GOMEMLIMIT", getenv("GOMEMLIMIT"), "memory_limit", cfg.MemoryLimit)
		default:
			gcSettings.setMemoryLimit(n)
		}
	}
}
