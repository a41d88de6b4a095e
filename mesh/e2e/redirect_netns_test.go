package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestRedirectNetns runs the real binary inside a fresh network namespace:
// apply, apply again, show, remove, remove again.
func TestRedirectNetns(t *testing.T) {
	t.Parallel()
	testkit.RequireRoot(t, "network namespaces, iptables")
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (CI installs iptables and iproute2)", bin)
		}
	}
	ns := testkit.NetNS(t, "vmt-redirect")
	in := func(argv ...string) (string, error) {
		out, err := testkit.NSCommand(ns, argv...).CombinedOutput()
		return string(out), err
	}
	must := func(argv ...string) string {
		t.Helper()
		return testkit.NSRun(t, ns, argv...)
	}
	must("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
	must("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
	vmesh := vmeshBin(t)
	saves := func() string {
		return iptables.Normalize(must("iptables-save")) + iptables.Normalize(must("ip6tables-save"))
	}
	base := saves()

	// A dry run prints the scripts from the config file and changes nothing.
	cfgFile := filepath.Join(t.TempDir(), "c.hcl")
	os.WriteFile(cfgFile, []byte("ports { http = 8501 }\ncapture {\n  capture_all = true\n  exclude_cidrs = [\"10.0.0.0/8\"]\n}\n"), 0o600)
	dry := must(vmesh, "redirect", "apply", "-config", cfgFile, "-capture-dns", "--dry-run")
	for _, want := range []string{"vmesh: capture_all", "-d 10.0.0.0/8", "--dport 8501 ", "vmesh: dns", "-I OUTPUT 1 "} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run lacks %q:\n%s", want, dry)
		}
	}
	if got := saves(); got != base {
		t.Fatalf("dry run changed the rules:\n%s", got)
	}

	must(vmesh, "redirect", "apply", "-inbound-port", "8080", "-capture-dns", "-vip", "240.0.0.5,240.0.0.6")
	once := saves()
	must(vmesh, "redirect", "apply", "-inbound-port", "8080", "-capture-dns", "-vip", "240.0.0.5,240.0.0.6")
	if got := saves(); got != once {
		t.Fatalf("second apply changed the rules:\n%s\nwant\n%s", got, once)
	}
	if n := strings.Count(once, "-j VMESH_OUTPUT"); n != 1 {
		t.Errorf("%d jumps to VMESH_OUTPUT:\n%s", n, once)
	}
	show := must(vmesh, "redirect", "show")
	if !strings.Contains(show, "-A VMESH_INBOUND") || !strings.Contains(show, "# vmesh0: 240.0.0.5 240.0.0.6") {
		t.Errorf("show:\n%s", show)
	}
	// As after a crash: no agent, remove converges to the baseline.
	must(vmesh, "redirect", "remove")
	if got := saves(); got != base {
		t.Fatalf("after remove:\n%s\nwant the baseline:\n%s", got, base)
	}
	if out, err := in("ip", "link", "show", "vmesh0"); err == nil {
		t.Errorf("vmesh0 still there: %s", out)
	}
	must(vmesh, "redirect", "remove")
	if show := must(vmesh, "redirect", "show"); !strings.Contains(show, "# no vmesh rules") || !strings.Contains(show, "# no vmesh0") {
		t.Errorf("show after remove:\n%s", show)
	}
	// A VIP range over a route of the host is refused, nothing applied.
	must("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	must("ip", "addr", "add", "10.77.0.1/16", "dev", "v0")
	must("ip", "link", "set", "v0", "up")
	out, err := in(vmesh, "redirect", "apply", "-vip-range", "10.77.128.0/17")
	if err == nil || !strings.Contains(out, "capture.vip_range[0]: 10.77.128.0/17 overlaps the local route 10.77.0.0/16 dev v0") {
		t.Errorf("overlap: %v\n%s", err, out)
	}
	if got := saves(); got != base {
		t.Errorf("refused apply changed the rules:\n%s", got)
	}
}
