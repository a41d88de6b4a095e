package testkit

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips t unless it runs as root, saying why. CI runs as root,
// so there the test runs.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root (%s); CI runs it as root", why)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs iproute2's ip command: %v", err)
	}
}

// NetNS creates the network namespace name (removing a stale one of that
// name first) with its loopback up, and deletes it when the test ends.
// Callers pick names unique to their test so tests can run in parallel.
func NetNS(t testing.TB, name string) string {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	NSRun(t, name, "ip", "link", "set", "lo", "up")
	return name
}

// NSRun runs argv inside namespace ns (the host when ns is "") and fails
// the test on error; it returns the combined output.
func NSRun(t testing.TB, ns string, argv ...string) string {
	t.Helper()
	out, err := NSCommand(ns, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// NSCommand is argv as a command inside namespace ns ("" is the host).
func NSCommand(ns string, argv ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(argv[0], argv[1:]...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
}
