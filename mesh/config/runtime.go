package config

import (
	"fmt"
	"strconv"
	"strings"
)

// RuntimeConfig is the `runtime` block: the Go garbage collector's two
// settings for the agent's process (docs/configuration.md). The GOGC and
// GOMEMLIMIT environment variables, when set, win over it, as they do for
// every Go program.
type RuntimeConfig struct {
	// GCPercent is GOGC: how far the heap may grow over the live data
	// before a collection, in percent. 0 (unset) keeps Go's default,
	// 100. Lower trades GC CPU for a smaller heap under load.
	GCPercent int `hcl:"gc_percent"`
	// MemoryLimit is GOMEMLIMIT: a soft limit on the memory the Go
	// runtime holds ("512MiB", "1GiB", a number of bytes), past which
	// the GC runs harder instead of growing. "" (unset): no limit.
	MemoryLimit string `hcl:"memory_limit"`
}

// Bounds of runtime.gc_percent and runtime.memory_limit: below them the
// collector would run most of the time.
const (
	MinGCPercent   = 10
	MaxGCPercent   = 10000
	MinMemoryLimit = 16 << 20
)

// MemoryLimitBytes is runtime.memory_limit in bytes; 0 when unset.
func (r RuntimeConfig) MemoryLimitBytes() (int64, error) {
	if r.MemoryLimit == "" {
		return 0, nil
	}
	return ParseByteSize(r.MemoryLimit)
}

// ParseByteSize reads a size as GOMEMLIMIT does: a whole number of bytes
// with an optional unit B, KiB, MiB, GiB or TiB.
func ParseByteSize(s string) (int64, error) {
	num, unit := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, unit = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (a whole number of bytes, or with B, KiB, MiB, GiB or TiB)", s)
	}
	if n > (1<<63-1)/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}

func (c *Config) validateRuntime() []error {
	var errs []error
	r := c.Runtime
	if r.GCPercent != 0 && (r.GCPercent < MinGCPercent || r.GCPercent > MaxGCPercent) {
		errs = append(errs, fmt.Errorf("runtime.gc_percent: must be between %d and %d (or unset for Go's default), got %d",
			MinGCPercent, MaxGCPercent, r.GCPercent))
	}
	if n, err := r.MemoryLimitBytes(); err != nil {
		errs = append(errs, fmt.Errorf("runtime.memory_limit: %v", err))
	} else if r.MemoryLimit != "" && n < MinMemoryLimit {
		errs = append(errs, fmt.Errorf("runtime.memory_limit: %q is below %dMiB, where the collector would run most of the time",
			r.MemoryLimit, MinMemoryLimit>>20))
	}
	return errs
}
