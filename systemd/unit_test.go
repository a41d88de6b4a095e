package systemd

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestUnitGolden(t *testing.T) {
	got, err := Unit(UnitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "vmesh.service.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./systemd -run TestUnitGolden -update)", err)
	}
	if got != string(want) {
		t.Errorf("Unit() differs from %s (run with -update if the change is meant):\n%s", golden, lineDiff(string(want), got))
	}
	for _, must := range []string{
		"Type=notify\n", "NotifyAccess=main\n", "WatchdogSec=30s\n", "Restart=on-failure\n", "User=vmesh\n",
		"ExecStart=/usr/local/bin/vmesh agent -config /etc/vmesh/vmesh.hcl\n", "ExecReload=/bin/kill -HUP $MAINPID\n",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE\n", "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE\n",
		"ProtectSystem=strict\n", "StateDirectory=vmesh\n", "RuntimeDirectory=vmesh\n", "LogsDirectory=vmesh\n", "ConfigurationDirectory=vmesh\n",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n", "SystemCallFilter=@system-service\n", "UMask=0077\n",
	} {
		if !strings.Contains(got, must) {
			t.Errorf("unit lacks %q", must)
		}
	}
}

func TestUnitOptions(t *testing.T) {
	got, err := Unit(UnitOptions{ExecPath: "/opt/vmesh/bin/vmesh", ConfigPath: "/srv/vmesh.hcl", User: "mesh", Watchdog: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/opt/vmesh/bin/vmesh agent -config /srv/vmesh.hcl\n", "User=mesh\n", "Group=mesh\n", "WatchdogSec=60s\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("unit lacks %q:\n%s", want, got)
		}
	}
	for _, bad := range []UnitOptions{
		{ExecPath: "vmesh"},
		{ExecPath: "/usr/local/bin/my vmesh"},
		{ExecPath: "/usr/local/bin/vmesh;rm"},
		{ConfigPath: "/etc/vmesh/$X.hcl"},
		{User: "root"},
		{User: "a:b"},
		{Watchdog: time.Second},
		{Watchdog: 2500 * time.Millisecond},
	} {
		if _, err := Unit(bad); err == nil {
			t.Errorf("Unit(%+v) = nil error; want one", bad)
		}
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for vmesh\.service: ([0-9.]+)`)

// TestUnitSystemdAnalyze runs systemd's own checks on the unit: verify
// (syntax, known keys and values, executables exist) and the offline
// security review, which must rate it 4.0 or lower.
func TestUnitSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd); CI installs it")
	}
	dir := t.TempDir()
	// verify checks that ExecStart names an executable, so point it at one.
	bin := filepath.Join(dir, "vmesh")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := Unit(UnitOptions{ExecPath: bin})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, UnitName)
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}

	// verify exits 0 even for unknown keys or bad values (it warns and
	// ignores them), so any line naming the unit fails the test too.
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, UnitName) {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}

	out, err = exec.Command(sa, "security", "--offline=true", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in systemd-analyze security output:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: exposure %.1f", score)
	if score > 4.0 {
		t.Errorf("exposure level %.1f; want 4.0 or lower\n%s", score, out)
	}
}

// lineDiff shows the lines that differ, for golden failures.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + ":\n- " + wl + "\n+ " + gl + "\n")
		}
	}
	return b.String()
}
