package mesh

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/cli"
)

// Bad input is refused with the flag or key named, before anything runs.
func TestRedirectBadInput(t *testing.T) {
	code, _, stderr := runCLI(t, "redirect", "apply", "-exclude-port", "70000", "-exclude-cidr", "10.1.1.1/8,nope",
		"-inbound-port", "22", "-vip", "10.9.9.9", "-dry-run")
	if code != cli.ExitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, cli.ExitUsage, stderr)
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
	if code, _, _ := runCLI(t, "redirect", "frobnicate"); code != cli.ExitUsage {
		t.Errorf("unknown subcommand: exit %d", code)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "c.hcl")
	os.WriteFile(bad, []byte("capture {\n  vip_range = \"127.0.0.0/8\"\n  backend = \"iptables-ng\"\n}\n"), 0o600)
	code, _, stderr = runCLI(t, "redirect", "apply", "-config", bad, "-dry-run")
	if code != cli.ExitUsage || !strings.Contains(stderr, "capture.backend") || !strings.Contains(stderr, "capture.vip_range[0]: 127.0.0.0/8 overlaps loopback") {
		t.Errorf("bad config: exit %d\n%s", code, stderr)
	}
}

func TestRedirectDryRunConfig(t *testing.T) {
	if os.Geteuid() == 0 {
		// As root the dry run reads the host's rules (read-only); keep the
		// host out of it and let TestRedirectNetns cover root.
		t.Skip("reads the host's iptables as root; TestRedirectNetns covers root")
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "c.hcl")
	os.WriteFile(f, []byte("ports { http = 8501 }\ncapture {\n  capture_all = true\n  exclude_cidrs = [\"10.0.0.0/8\"]\n  exclude_uids = [\"0\"]\n}\n"), 0o600)
	code, stdout, stderr := runCLI(t, "redirect", "apply", "-config", f, "-capture-dns", "--dry-run")
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"vmesh: capture_all", "-d 10.0.0.0/8", "--uid-owner 0", "--dport 8501 ", "vmesh: dns"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, stdout)
		}
	}
}

// TestRedirectNetns runs the real binary inside a fresh network namespace:
// apply, apply again, show, remove, remove again.
func TestRedirectNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, iptables); CI runs it as root")
	}
	for _, bin := range []string{"ip", "iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (CI installs iptables and iproute2)", bin)
		}
	}
	b := make([]byte, 4)
	rand.Read(b)
	ns := "vmesh-test-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := func(argv ...string) (string, error) {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
		return string(out), err
	}
	must := func(argv ...string) string {
		t.Helper()
		out, err := in(argv...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
		return out
	}
	must("ip", "link", "set", "lo", "up")
	must("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
	must("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
	saves := func() string {
		return iptables.Normalize(must("iptables-save")) + iptables.Normalize(must("ip6tables-save"))
	}
	base := saves()

	// A dry run prints the scripts from the config file and changes nothing.
	cfgFile := filepath.Join(t.TempDir(), "c.hcl")
	os.WriteFile(cfgFile, []byte("ports { http = 8501 }\ncapture {\n  capture_all = true\n  exclude_cidrs = [\"10.0.0.0/8\"]\n}\n"), 0o600)
	dry := must(vmeshBin, "redirect", "apply", "-config", cfgFile, "-capture-dns", "--dry-run")
	for _, want := range []string{"vmesh: capture_all", "-d 10.0.0.0/8", "--dport 8501 ", "vmesh: dns", "-I OUTPUT 1 "} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run lacks %q:\n%s", want, dry)
		}
	}
	if got := saves(); got != base {
		t.Fatalf("dry run changed the rules:\n%s", got)
	}

	must(vmeshBin, "redirect", "apply", "-inbound-port", "8080", "-capture-dns", "-vip", "240.0.0.5,240.0.0.6")
	once := saves()
	must(vmeshBin, "redirect", "apply", "-inbound-port", "8080", "-capture-dns", "-vip", "240.0.0.5,240.0.0.6")
	if got := saves(); got != once {
		t.Fatalf("second apply changed the rules:\n%s\nwant\n%s", got, once)
	}
	if n := strings.Count(once, "-j VMESH_OUTPUT"); n != 1 {
		t.Errorf("%d jumps to VMESH_OUTPUT:\n%s", n, once)
	}
	show := must(vmeshBin, "redirect", "show")
	if !strings.Contains(show, "-A VMESH_INBOUND") || !strings.Contains(show, "# vmesh0: 240.0.0.5 240.0.0.6") {
		t.Errorf("show:\n%s", show)
	}
	// As after a crash: no agent, remove converges to the baseline.
	must(vmeshBin, "redirect", "remove")
	if got := saves(); got != base {
		t.Fatalf("after remove:\n%s\nwant the baseline:\n%s", got, base)
	}
	if out, err := in("ip", "link", "show", "vmesh0"); err == nil {
		t.Errorf("vmesh0 still there: %s", out)
	}
	must(vmeshBin, "redirect", "remove")
	if show := must(vmeshBin, "redirect", "show"); !strings.Contains(show, "# no vmesh rules") || !strings.Contains(show, "# no vmesh0") {
		t.Errorf("show after remove:\n%s", show)
	}
	// A VIP range over a route of the host is refused, nothing applied.
	must("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	must("ip", "addr", "add", "10.77.0.1/16", "dev", "v0")
	must("ip", "link", "set", "v0", "up")
	out, err := in(vmeshBin, "redirect", "apply", "-vip-range", "10.77.128.0/17")
	if err == nil || !strings.Contains(out, "capture.vip_range[0]: 10.77.128.0/17 overlaps the local route 10.77.0.0/16 dev v0") {
		t.Errorf("overlap: %v\n%s", err, out)
	}
	if got := saves(); got != base {
		t.Errorf("refused apply changed the rules:\n%s", got)
	}
}
