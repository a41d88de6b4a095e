package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad input is refused with the flag or key named, before anything runs.
func TestRedirectBadInput(t *testing.T) {
	code, _, stderr := runCLI(t, "redirect", "apply", "-exclude-port", "70000", "-exclude-cidr", "10.1.1.1/8,nope",
		"-inbound-port", "22", "-vip", "10.9.9.9", "-dry-run")
	if code != ExitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitUsage, stderr)
	}
	for _, want := range []string{
		`-exclude-port: "70000" is not a port`,
		`capture.exclude_cidrs: "10.1.1.1/8" has host bits set (did you mean 10.0.0.0/8?)`,
		`capture.exclude_cidrs: "nope" is not a CIDR`,
		"capture.inbound_ports[0]: port 22 is SSH",
		"-vip: 10.9.9.9 is outside capture.vip_range",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code, _, _ := runCLI(t, "redirect", "frobnicate"); code != ExitUsage {
		t.Errorf("unknown subcommand: exit %d", code)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "c.hcl")
	os.WriteFile(bad, []byte("capture {\n  vip_range = \"127.0.0.0/8\"\n  backend = \"iptables-ng\"\n}\n"), 0o600)
	code, _, stderr = runCLI(t, "redirect", "apply", "-config", bad, "-dry-run")
	if code != ExitUsage || !strings.Contains(stderr, "capture.backend") || !strings.Contains(stderr, "capture.vip_range[0]: 127.0.0.0/8 overlaps loopback") {
		t.Errorf("bad config: exit %d\n%s", code, stderr)
	}
}

func TestRedirectDryRunConfig(t *testing.T) {
	if os.Geteuid() == 0 {
		// As root the dry run reads the host's rules (read-only); keep the
		// host out of it and let mesh/e2e TestRedirectNetns cover root.
		t.Skip("reads the host's iptables as root; mesh/e2e TestRedirectNetns covers root")
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "c.hcl")
	os.WriteFile(f, []byte("ports { http = 8501 }\ncapture {\n  capture_all = true\n  exclude_cidrs = [\"10.0.0.0/8\"]\n  exclude_uids = [\"0\"]\n}\n"), 0o600)
	code, stdout, stderr := runCLI(t, "redirect", "apply", "-config", f, "-capture-dns", "--dry-run")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"vmesh: capture_all", "-d 10.0.0.0/8", "--uid-owner 0", "--dport 8501 ", "vmesh: dns"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, stdout)
		}
	}
}
