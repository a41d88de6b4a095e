package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/systemd"
)

// TestDefaultAgentConfig: the config install writes loads and validates
// as it is, and points at the installed layout.
func TestDefaultAgentConfig(t *testing.T) {
	path := testkit.WriteFile(t, t.TempDir(), "vmesh.hcl", defaultAgentConfig)
	cfg := config.DefaultConfig()
	if err := cfg.LoadFiles([]string{path}); err != nil {
		t.Fatalf("the default config does not load: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the default config is invalid: %v", err)
	}
	if cfg.DataDir != config.DefaultDataDir || cfg.ServicesDir != config.DefaultServicesDir || cfg.Bootstrap || cfg.Join != "" {
		t.Errorf("default config: data_dir %q, services_dir %q, bootstrap %v, join %q", cfg.DataDir, cfg.ServicesDir, cfg.Bootstrap, cfg.Join)
	}
	// Uncommenting the bootstrap line must give a valid bootstrap config.
	path = testkit.WriteFile(t, t.TempDir(), "vmesh.hcl", strings.Replace(defaultAgentConfig, "# bootstrap = true", "bootstrap = true", 1))
	cfg = config.DefaultConfig()
	if err := cfg.LoadFiles([]string{path}); err != nil || !cfg.Bootstrap {
		t.Errorf("with bootstrap uncommented: %v, bootstrap %v", err, cfg.Bootstrap)
	}
}

// TestInstallCommand runs `vmesh install` and `vmesh uninstall` under
// --prefix (never on this host's /: tests may run as root).
func TestInstallCommand(t *testing.T) {
	prefix := t.TempDir()

	// --dry-run --prefix: prints everything, writes nothing.
	code, out, errs := runCLI(t, "install", "--dry-run", "--prefix", prefix)
	if code != ExitOK {
		t.Fatalf("install --dry-run = %d\n%s%s", code, out, errs)
	}
	unit, err := systemd.Unit(systemd.UnitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nothing is changed", "ExecStart=/usr/local/bin/vmesh agent -config /etc/vmesh/vmesh.hcl", "bootstrap = true", "not run (--prefix"} {
		if !strings.Contains(out, want) {
			t.Errorf("install --dry-run output lacks %q:\n%s", want, out)
		}
	}
	if ents, _ := os.ReadDir(prefix); len(ents) != 0 {
		t.Fatalf("install --dry-run wrote %v", ents)
	}

	// Flags after an argument are still flags (parseArgs); a stray
	// argument is a usage error.
	if code, _, errs := runCLI(t, "install", "now", "--prefix", prefix); code != ExitUsage || !strings.Contains(errs, `unexpected argument "now"`) {
		t.Errorf("install now = %d %q; want a usage error", code, errs)
	}
	if code, _, errs := runCLI(t, "install", "--prefix", prefix, "--bin", "vmesh"); code != ExitUsage || !strings.Contains(errs, "must be absolute") {
		t.Errorf("install --bin vmesh = %d %q; want a usage error", code, errs)
	}

	code, out, errs = runCLI(t, "install", "--prefix", prefix)
	if code != ExitOK {
		t.Fatalf("install --prefix = %d\n%s%s", code, out, errs)
	}
	if b, err := os.ReadFile(filepath.Join(prefix, systemd.UnitPath)); err != nil || string(b) != unit {
		t.Errorf("installed unit: %v\n%s", err, b)
	}
	conf := filepath.Join(prefix, config.DefaultConfigFile)
	if b, err := os.ReadFile(conf); err != nil || string(b) != defaultAgentConfig {
		t.Errorf("installed config: %v\n%s", err, b)
	}
	if fi, err := os.Stat(filepath.Join(prefix, config.DefaultServicesDir)); err != nil || !fi.IsDir() {
		t.Errorf("services dir: %v", err)
	}

	// The operator's config survives a second install.
	os.WriteFile(conf, []byte("bootstrap = true\n"), 0o640)
	if code, out, _ := runCLI(t, "install", "--prefix", prefix); code != ExitOK || !strings.Contains(out, "exists: not overwriting it") {
		t.Errorf("second install = %d\n%s", code, out)
	}
	if b, _ := os.ReadFile(conf); string(b) != "bootstrap = true\n" {
		t.Errorf("install overwrote the config: %q", b)
	}

	// uninstall keeps config; --purge removes it.
	if code, out, errs := runCLI(t, "uninstall", "--prefix", prefix); code != ExitOK || !strings.Contains(out, "--purge removes them") {
		t.Errorf("uninstall = %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("uninstall without --purge removed the config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(prefix, systemd.UnitPath)); err == nil {
		t.Error("uninstall left the unit")
	}
	if code, out, errs := runCLI(t, "uninstall", "--purge", "--prefix", prefix); code != ExitOK {
		t.Errorf("uninstall --purge = %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(prefix, "etc/vmesh")); err == nil {
		t.Error("uninstall --purge left /etc/vmesh")
	}
}

// TestInstallTimeoutFlag: -timeout takes a duration (0: no limit) and a
// negative one is a usage error naming the flag, for install and uninstall.
func TestInstallTimeoutFlag(t *testing.T) {
	prefix := t.TempDir()
	for _, cmd := range []string{"install", "uninstall"} {
		if code, out, errs := runCLI(t, cmd, "--dry-run", "--prefix", prefix, "--timeout", "0"); code != ExitOK {
			t.Errorf("%s --timeout 0 = %d\n%s%s", cmd, code, out, errs)
		}
		if code, out, errs := runCLI(t, cmd, "--dry-run", "--prefix", prefix, "--timeout", "20m"); code != ExitOK {
			t.Errorf("%s --timeout 20m = %d\n%s%s", cmd, code, out, errs)
		}
		if code, _, errs := runCLI(t, cmd, "--dry-run", "--prefix", prefix, "--timeout", "-1s"); code != ExitUsage || !strings.Contains(errs, "-timeout: must be 0 (no limit) or more") {
			t.Errorf("%s --timeout -1s = %d %q; want a usage error naming -timeout", cmd, code, errs)
		}
	}
}
