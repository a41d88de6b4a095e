package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/lab/testkit"
)

// captureNS is a fresh network namespace for an agent with capture on.
type captureNS struct {
	t    *testing.T
	name string
}

func newCaptureNS(t *testing.T, name string) *captureNS {
	t.Helper()
	testkit.RequireRoot(t, "network namespaces, iptables")
	for _, bin := range []string{"iptables", "iptables-save", "ip6tables-save", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (CI installs iptables, iproute2 and curl)", bin)
		}
	}
	return &captureNS{t: t, name: testkit.NetNS(t, name)}
}

func (ns *captureNS) run(argv ...string) (string, error) {
	out, err := testkit.NSCommand(ns.name, argv...).CombinedOutput()
	return string(out), err
}

func (ns *captureNS) must(argv ...string) string {
	ns.t.Helper()
	return testkit.NSRun(ns.t, ns.name, argv...)
}

// saves is the namespace's IPv4 and IPv6 rules, counters ignored.
func (ns *captureNS) saves() string {
	ns.t.Helper()
	return iptables.Normalize(ns.must("iptables-save")) + "# v6\n" + iptables.Normalize(ns.must("ip6tables-save"))
}

// vmesh0 returns vmesh0's addresses, or ok=false when it is absent.
func (ns *captureNS) vmesh0() (addrs string, ok bool) {
	out, err := ns.run("ip", "-o", "-4", "addr", "show", "dev", "vmesh0")
	if err != nil {
		return "", false
	}
	return out, true
}

// agent starts `vmesh agent args...` inside the namespace (ip netns exec
// execs it, so signals reach the agent itself); its banner, which callers
// wait for, comes after Start applied capture.
func (ns *captureNS) agent(args ...string) *proc {
	ns.t.Helper()
	return runProc(ns.t, testkit.NSCommand(ns.name, append([]string{vmeshBin(ns.t), "agent"}, args...)...))
}

// TestCaptureAgentNetns runs the real agent with capture on inside a fresh
// network namespace: rules and vmesh0 are there when Start returns, a
// registered service's VIP appears on vmesh0, drift is repaired, SIGTERM
// leaves the baseline, SIGKILL then 'vmesh redirect remove' does too, and
// ten kill/restart cycles leave one start's rules.
func TestCaptureAgentNetns(t *testing.T) {
	t.Parallel()
	ns := newCaptureNS(t, "vmt-capture")
	// Someone else's rule, which must survive everything.
	ns.must("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
	base := ns.saves()

	dir := t.TempDir()
	cfgFile := testkit.WriteFile(t, dir, "capture.hcl", "capture {\n  enabled = true\n  reconcile_interval = \"1s\"\n}\n")
	svcDir := filepath.Join(dir, "services.d")
	os.Mkdir(svcDir, 0o755)
	args := []string{"-bootstrap", "-data-dir", filepath.Join(dir, "data"), "-node", "n1", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-addr", "127.0.0.1:8500", "-services-dir", svcDir, "-config", cfgFile}
	start := func() *proc {
		t.Helper()
		t0 := time.Now()
		p := ns.agent(args...)
		p.waitHTTP(30 * time.Second)
		t.Logf("agent started with capture in %s", time.Since(t0).Round(time.Millisecond))
		return p
	}

	p := start()
	once := ns.saves()
	v4, _, _ := strings.Cut(once, "# v6\n")
	for _, want := range []string{":VMESH_OUTPUT -\n", ":VMESH_REDIRECT -\n", "-j VMESH_OUTPUT\n", "--dport 9999 -j RETURN\n"} {
		if n := strings.Count(v4, want); n != 1 {
			t.Errorf("%q appears %d times after start, want once:\n%s", want, n, once)
		}
	}
	if _, ok := ns.vmesh0(); !ok {
		t.Fatal("no vmesh0 after start")
	}
	// The banner is printed once the listeners are up, which may be just
	// after the HTTP API first answers.
	testkit.WaitFor(t, 5*time.Second, "the banner's capture line", func() bool { return strings.Contains(p.stdout.String(), "Capture: on") })

	// A service registered through the API gets a VIP, which appears on
	// vmesh0.
	testkit.WaitFor(t, 30*time.Second, "a leader", func() bool {
		out, err := ns.run("curl", "-sf", "http://127.0.0.1:8500/v1/status/leader")
		return err == nil && strings.Contains(out, "127.0.0.1")
	})
	ns.must("curl", "-sf", "-X", "PUT", "--data", `{"Name":"orders","Port":9090}`, "http://127.0.0.1:8500/v1/agent/service/register")
	var vip string
	testkit.WaitFor(t, 15*time.Second, "the orders VIP on vmesh0", func() bool {
		out, _ := ns.vmesh0()
		if i := strings.Index(out, "inet 240."); i >= 0 {
			vip = strings.Fields(out[i:])[1]
			return true
		}
		return false
	})
	t.Logf("orders has VIP %s", vip)
	if got := ns.saves(); got != once {
		t.Errorf("rules changed with the VIPs:\n%s\nwant\n%s", got, once)
	}

	// Drift: an admin flushes our chain, then deletes vmesh0.
	ns.must("iptables", "-t", "nat", "-F", "VMESH_OUTPUT")
	t0 := time.Now()
	testkit.WaitFor(t, 35*time.Second, "the flushed chain to be repaired", func() bool { return ns.saves() == once })
	t.Logf("flushed chain repaired in %s", time.Since(t0).Round(time.Millisecond))
	ns.must("ip", "link", "del", "vmesh0")
	testkit.WaitFor(t, 35*time.Second, "vmesh0 to be repaired", func() bool {
		out, _ := ns.vmesh0()
		return strings.Contains(out, "inet "+vip+" ")
	})
	if !strings.Contains(p.stderr.String(), "repairing") {
		t.Errorf("no repair logged:\n%s", p.stderr)
	}

	// A clean stop leaves the baseline.
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d\n%s", code, p.stderr)
	}
	if got := ns.saves(); got != base {
		t.Fatalf("after SIGTERM:\n%s\nwant the baseline:\n%s", got, base)
	}
	if _, ok := ns.vmesh0(); ok {
		t.Error("vmesh0 still there after SIGTERM")
	}

	// A crash leaves the rules; 'vmesh redirect remove' clears them.
	p = start()
	if got := ns.saves(); got != once {
		t.Errorf("restart:\n%s\nwant\n%s", got, once)
	}
	testkit.WaitFor(t, 15*time.Second, "the VIP back on vmesh0", func() bool {
		out, _ := ns.vmesh0()
		return strings.Contains(out, "inet "+vip+" ")
	})
	p.stop(syscall.SIGKILL)
	if got := ns.saves(); got != once {
		t.Errorf("after SIGKILL the rules should still be there:\n%s", got)
	}
	ns.must(vmeshBin(t), "redirect", "remove")
	if got := ns.saves(); got != base {
		t.Fatalf("after SIGKILL and redirect remove:\n%s\nwant the baseline:\n%s", got, base)
	}
	if _, ok := ns.vmesh0(); ok {
		t.Error("vmesh0 still there after redirect remove")
	}

	// Ten kill/restart cycles: one start's rules, no duplicate.
	t0 = time.Now()
	for range 10 {
		start().stop(syscall.SIGKILL)
	}
	t.Logf("10 kill/restart cycles in %s", time.Since(t0).Round(time.Millisecond))
	if got := ns.saves(); got != once {
		t.Fatalf("after 10 kill/restart cycles:\n%s\nwant one start's:\n%s", got, once)
	}
	p = start()
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	if got := ns.saves(); got != base {
		t.Fatalf("final stop:\n%s\nwant the baseline:\n%s", got, base)
	}

	// Leave removes capture as part of leaving, before the agent stops.
	p = start()
	testkit.WaitFor(t, 30*time.Second, "a leader", func() bool {
		out, err := ns.run("curl", "-sf", "http://127.0.0.1:8500/v1/status/leader")
		return err == nil && strings.Contains(out, "127.0.0.1")
	})
	ns.must(vmeshBin(t), "leave", "-force", "-http-addr", "127.0.0.1:8500")
	if got := ns.saves(); got != base {
		t.Errorf("after leave:\n%s\nwant the baseline:\n%s", got, base)
	}
	if _, ok := ns.vmesh0(); ok {
		t.Error("vmesh0 still there after leave")
	}
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("agent exited %d after leave", code)
	}
}

// A capture block that cannot be applied is a configuration error (exit
// 2), and nothing touches the kernel.
func TestCaptureAgentBadConfigNetns(t *testing.T) {
	t.Parallel()
	ns := newCaptureNS(t, "vmt-capture-bad")
	ns.must("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.must("ip", "addr", "add", "10.77.0.1/16", "dev", "v0")
	ns.must("ip", "link", "set", "v0", "up")
	base := ns.saves()
	dir, svcDir := t.TempDir(), t.TempDir()
	for name, block := range map[string]string{
		"route overlap": "capture {\n  enabled = true\n  vip_range = \"10.77.128.0/17\"\n}\n",
		"bad port":      "capture {\n  enabled = true\n  exclude_ports = [70000]\n}\n",
	} {
		cfgFile := testkit.WriteFile(t, dir, "c.hcl", block)
		p := ns.agent("-bootstrap", "-data-dir", filepath.Join(dir, "data"), "-node", "n1", "-bind", "127.0.0.1",
			"-client", "127.0.0.1", "-services-dir", svcDir, "-config", cfgFile)
		if code := p.wait(30 * time.Second); code != exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, exitUsage, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), "capture.") {
			t.Errorf("%s: the error does not name the key:\n%s", name, p.stderr)
		}
		if got := ns.saves(); got != base {
			t.Errorf("%s: rules changed:\n%s", name, got)
		}
		if _, ok := ns.vmesh0(); ok {
			t.Errorf("%s: vmesh0 created", name)
		}
	}
	// Service users capture could not honour, refused the same way, naming
	// the file and the key.
	cfgFile := testkit.WriteFile(t, dir, "c.hcl", "capture {\n  enabled = true\n  exclude_uids = [\"nobody\"]\n}\n")
	for name, c := range map[string]struct{ files, want string }{
		"unknown user":        {`service { name = "a"  user = "no-such-user-vmesh" }`, `a.hcl:1: service "a": user: "no-such-user-vmesh" is not a user on this host`},
		"one user, two names": {`services = [{ name = "a", user = "daemon" }, { name = "b", user = "1" }]`, `service "b": user: "1" already runs service "a"`},
		"excluded user":       {`service { name = "a"  user = "nobody" }`, `a.hcl: service "a": user: "nobody" (UID 65534) is also in capture.exclude_uids`},
	} {
		svcDir := t.TempDir()
		testkit.WriteFile(t, svcDir, "a.hcl", c.files)
		p := ns.agent("-bootstrap", "-data-dir", filepath.Join(dir, "data"), "-node", "n1", "-bind", "127.0.0.1",
			"-client", "127.0.0.1", "-services-dir", svcDir, "-config", cfgFile)
		if code := p.wait(30 * time.Second); code != exitUsage {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, exitUsage, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), c.want) {
			t.Errorf("%s: the error does not say %q:\n%s", name, c.want, p.stderr)
		}
		if got := ns.saves(); got != base {
			t.Errorf("%s: rules changed:\n%s", name, got)
		}
		if _, ok := ns.vmesh0(); ok {
			t.Errorf("%s: vmesh0 created", name)
		}
	}
}
