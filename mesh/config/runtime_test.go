package config

import (
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

func TestRuntimeBlock(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "runtime.hcl", `
runtime {
  gc_percent   = 50
  memory_limit = "96MiB"
}
`)
	cfg, err := parseAgentFlags(t, "-config", dir, "-data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Runtime, (RuntimeConfig{GCPercent: 50, MemoryLimit: "96MiB"}); got != want {
		t.Errorf("runtime = %+v, want %+v", got, want)
	}
	if n, err := cfg.Runtime.MemoryLimitBytes(); err != nil || n != 96<<20 {
		t.Errorf("MemoryLimitBytes = %d, %v; want %d", n, err, 96<<20)
	}
	if d := DefaultConfig().Runtime; d != (RuntimeConfig{}) {
		t.Errorf("default runtime = %+v, want unset (Go's defaults)", d)
	}
}

func TestRuntimeErrors(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`runtime { gc_percent = 5 }`, `runtime.gc_percent: must be between 10 and 10000`},
		{`runtime { gc_percent = -1 }`, `runtime.gc_percent: must be between 10 and 10000`},
		{`runtime { memory_limit = "lots" }`, `runtime.memory_limit: "lots" is not a size`},
		{`runtime { memory_limit = "64MB" }`, `runtime.memory_limit: "64MB" is not a size`},
		{`runtime { memory_limit = "-5MiB" }`, `runtime.memory_limit: "-5MiB" is not a size`},
		{`runtime { memory_limit = "99999999999TiB" }`, `runtime.memory_limit: "99999999999TiB" is too large`},
		{`runtime { memory_limit = "8MiB" }`, `runtime.memory_limit: "8MiB" is below 16MiB`},
		{`runtime { gogc = 50 }`, `unknown key "gogc" in runtime`},
	} {
		dir := t.TempDir()
		testkit.WriteFile(t, dir, "r.hcl", c.body)
		_, err := parseAgentFlags(t, "-config", dir, "-data-dir", dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.body, err, c.want)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "12B": 12, "4KiB": 4096, "64MiB": 64 << 20, "2GiB": 2 << 30, "1TiB": 1 << 40, " 3 MiB ": 3 << 20} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}
