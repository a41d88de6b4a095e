package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRunner records commands instead of running them.
type fakeRunner struct {
	mu   sync.Mutex
	cmds []string
	fail map[string]error // by command line
}

func (f *fakeRunner) Run(ctx context.Context, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		return "", errors.New("command without a timeout")
	}
	line := shellLine(name, args)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, line)
	return "", f.fail[line]
}

func (f *fakeRunner) lines() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.cmds, "\n")
}

var testConfig = []byte("# default config\ndata_dir = \"/var/lib/vmesh\"\n")

func testLayout() Layout {
	return Layout{ServicesDir: "/etc/vmesh/services.d", DataDir: "/var/lib/vmesh", Config: testConfig}
}

// testInstaller installs into a temp root as if it were /, with commands
// going to a fake runner.
func testInstaller(t *testing.T, systemd bool) (*Installer, *fakeRunner, *bytes.Buffer, map[string]string) {
	t.Helper()
	run := &fakeRunner{}
	out := &bytes.Buffer{}
	groups := map[string]string{}
	users := map[string]bool{}
	in := &Installer{
		Root: t.TempDir(), Systemd: systemd, Runner: run, Out: out,
		UserExists: func(name string) bool { return users[name] },
		SetGroup: func(path, group string) error {
			groups[strings.TrimSuffix(path, ".vmesh-tmp")] = group // files are owned before they are renamed
			return nil
		},
	}
	run.fail = map[string]error{}
	return in, run, out, groups
}

// tree lists the files and dirs under root with their modes.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p == root {
			return nil
		}
		fi, _ := d.Info()
		b.WriteString(strings.TrimPrefix(p, root) + " " + fi.Mode().String() + "\n")
		return nil
	})
	return b.String()
}

func TestInstall(t *testing.T) {
	in, run, out, groups := testInstaller(t, true)
	ctx := context.Background()
	if err := in.Install(ctx, testLayout()); err != nil {
		t.Fatalf("Install: %v\n%s", err, out)
	}
	wantCmds := strings.Join([]string{
		"useradd --system --user-group --no-create-home --home-dir /var/lib/vmesh --shell /usr/sbin/nologin --comment 'vmesh agent' vmesh",
		"systemctl daemon-reload",
		"systemctl enable vmesh.service",
	}, "\n")
	if got := run.lines(); got != wantCmds {
		t.Errorf("commands:\n%s\nwant:\n%s", got, wantCmds)
	}
	wantTree := `/etc drwxr-xr-x
/etc/systemd drwxr-xr-x
/etc/systemd/system drwxr-xr-x
/etc/systemd/system/vmesh.service -rw-r--r--
/etc/vmesh drwxr-xr-x
/etc/vmesh/services.d drwxr-x---
/etc/vmesh/vmesh.hcl -rw-r-----
`
	if got := tree(t, in.Root); got != wantTree {
		t.Errorf("files:\n%s\nwant:\n%s", got, wantTree)
	}
	unit, _ := Unit(UnitOptions{})
	if b, _ := os.ReadFile(filepath.Join(in.Root, UnitPath)); string(b) != unit {
		t.Errorf("unit file differs from Unit():\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(in.Root, "/etc/vmesh/vmesh.hcl")); !bytes.Equal(b, testConfig) {
		t.Errorf("config file = %q", b)
	}
	for _, p := range []string{"/etc/vmesh/services.d", "/etc/vmesh/vmesh.hcl"} {
		if g := groups[filepath.Join(in.Root, p)]; g != "vmesh" {
			t.Errorf("%s: group %q; want vmesh", p, g)
		}
	}
	if !strings.Contains(out.String(), "next: edit") {
		t.Errorf("no next steps in:\n%s", out)
	}

	// Again, after the operator edited the config and the user exists:
	// the config is kept, nothing is rewritten, useradd is skipped.
	conf := filepath.Join(in.Root, "/etc/vmesh/vmesh.hcl")
	os.WriteFile(conf, []byte("bootstrap = true\n"), 0o640)
	in.UserExists = func(string) bool { return true }
	out.Reset()
	run.cmds = nil
	if err := in.Install(ctx, testLayout()); err != nil {
		t.Fatalf("second Install: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(conf); string(b) != "bootstrap = true\n" {
		t.Errorf("install overwrote the operator's config: %q", b)
	}
	for _, want := range []string{"user vmesh exists: not running useradd", "vmesh.hcl exists: not overwriting it", "vmesh.service is up to date"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("second install output lacks %q:\n%s", want, out)
		}
	}
	if got := run.lines(); got != "systemctl daemon-reload\nsystemctl enable vmesh.service" {
		t.Errorf("second install ran:\n%s", got)
	}

	// A changed unit is replaced.
	os.WriteFile(filepath.Join(in.Root, UnitPath), []byte("[Service]\n"), 0o644)
	out.Reset()
	if err := in.Install(ctx, testLayout()); err != nil || !strings.Contains(out.String(), "replaced ") {
		t.Errorf("Install over an old unit: %v\n%s", err, out)
	}

	// A failing command fails the install and names it.
	run.fail["systemctl enable vmesh.service"] = errors.New("exit status 1")
	if err := in.Install(ctx, testLayout()); err == nil || !strings.Contains(err.Error(), "systemctl enable") {
		t.Errorf("Install with a failing systemctl = %v", err)
	}
}

func TestInstallWithoutSystemd(t *testing.T) {
	in, run, out, _ := testInstaller(t, false)
	if err := in.Install(context.Background(), testLayout()); err != nil {
		t.Fatal(err)
	}
	if got := run.lines(); !strings.HasPrefix(got, "useradd ") || strings.Contains(got, "systemctl") {
		t.Errorf("commands without systemd:\n%s", got)
	}
	for _, want := range []string{
		"systemd is not running here (no /run/systemd/system): not running systemctl daemon-reload",
		"not running systemctl enable vmesh.service",
		"run the agent yourself (no systemd here): /usr/local/bin/vmesh agent -config /etc/vmesh/vmesh.hcl",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInstallDryRun(t *testing.T) {
	in, run, out, groups := testInstaller(t, true)
	in.DryRun = true
	if err := in.Install(context.Background(), testLayout()); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, in.Root); got != "" {
		t.Errorf("dry run wrote files:\n%s", got)
	}
	if run.lines() != "" || len(groups) != 0 {
		t.Errorf("dry run ran %q, set groups %v", run.lines(), groups)
	}
	unit, _ := Unit(UnitOptions{})
	for _, want := range []string{
		"nothing is changed",
		"would run: useradd --system",
		"would create directory " + filepath.Join(in.Root, "/etc/vmesh/services.d") + " (mode 0750, root:vmesh)",
		"would write " + filepath.Join(in.Root, "/etc/vmesh/vmesh.hcl") + " (mode 0640, root:vmesh):\n    # default config\n    data_dir = \"/var/lib/vmesh\"\n",
		"would write " + filepath.Join(in.Root, UnitPath) + " (mode 0644, root):\n",
		indent([]byte(unit)),
		"would run: systemctl daemon-reload",
		"would run: systemctl enable vmesh.service",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
}

func TestInstallPrefix(t *testing.T) {
	prefix := t.TempDir()
	out := &bytes.Buffer{}
	in := NewInstaller(prefix, false, out)
	in.Runner = &fakeRunner{} // must stay unused
	if err := in.Install(context.Background(), testLayout()); err != nil {
		t.Fatal(err)
	}
	if got := in.Runner.(*fakeRunner).lines(); got != "" {
		t.Errorf("--prefix ran commands:\n%s", got)
	}
	for _, p := range []string{UnitPath, "/etc/vmesh/vmesh.hcl", "/etc/vmesh/services.d"} {
		if _, err := os.Stat(filepath.Join(prefix, p)); err != nil {
			t.Errorf("--prefix: %v", err)
		}
	}
	for _, want := range []string{"writing files only", "not run (--prefix; a package's scripts should): useradd", "not run (--prefix; a package's scripts should): systemctl enable vmesh.service"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--prefix output lacks %q:\n%s", want, out)
		}
	}

	// uninstall --prefix --purge removes what install wrote, runs nothing.
	out.Reset()
	if err := in.Uninstall(context.Background(), testLayout(), true); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, prefix); got != "/etc drwxr-xr-x\n/etc/systemd drwxr-xr-x\n/etc/systemd/system drwxr-xr-x\n" {
		t.Errorf("left after uninstall --purge --prefix:\n%s\n%s", got, out)
	}
}

func TestUninstall(t *testing.T) {
	ctx := context.Background()
	in, run, out, _ := testInstaller(t, true)
	if err := in.Install(ctx, testLayout()); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(in.Root, "/var/lib/vmesh")
	os.MkdirAll(filepath.Join(data, "raft"), 0o700)
	in.UserExists = func(string) bool { return true }

	// Dry run changes nothing.
	before := tree(t, in.Root)
	in.DryRun = true
	run.cmds = nil
	out.Reset()
	if err := in.Uninstall(ctx, testLayout(), true); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, in.Root); got != before || run.lines() != "" {
		t.Errorf("uninstall --dry-run changed things: ran %q\n%s", run.lines(), got)
	}
	for _, want := range []string{"would run: systemctl disable --now vmesh.service", "would remove " + data, "would run: userdel vmesh"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("uninstall --dry-run output lacks %q:\n%s", want, out)
		}
	}
	in.DryRun = false

	// Without --purge: config, data and user stay.
	out.Reset()
	if err := in.Uninstall(ctx, testLayout(), false); err != nil {
		t.Fatal(err)
	}
	if got := run.lines(); got != "systemctl disable --now vmesh.service\nsystemctl daemon-reload" {
		t.Errorf("uninstall ran:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(in.Root, UnitPath)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unit file still there: %v", err)
	}
	for _, p := range []string{"/etc/vmesh/vmesh.hcl", "/var/lib/vmesh/raft"} {
		if _, err := os.Stat(filepath.Join(in.Root, p)); err != nil {
			t.Errorf("uninstall without --purge removed %s", p)
		}
	}
	if !strings.Contains(out.String(), "--purge removes them") {
		t.Errorf("uninstall does not say what it kept:\n%s", out)
	}

	// Again, with --purge: the unit is gone already, so nothing to stop.
	run.cmds = nil
	out.Reset()
	if err := in.Uninstall(ctx, testLayout(), true); err != nil {
		t.Fatal(err)
	}
	if got := run.lines(); got != "systemctl daemon-reload\nuserdel vmesh" {
		t.Errorf("uninstall --purge ran:\n%s", got)
	}
	if got := tree(t, in.Root); strings.Contains(got, "vmesh") {
		t.Errorf("left after --purge:\n%s", got)
	}
}

func TestRemoveRefusesShortPaths(t *testing.T) {
	in, _, _, _ := testInstaller(t, true)
	l := testLayout()
	l.DataDir = "/var"
	os.MkdirAll(filepath.Join(in.Root, "var"), 0o755)
	if err := in.Uninstall(context.Background(), l, true); err == nil || !strings.Contains(err.Error(), "refusing to remove") {
		t.Errorf("purge of /var = %v; want a refusal", err)
	}
}

func TestExecRunnerTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := (ExecRunner{}).Run(ctx, "sleep", "10"); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("sleep 10 with a 100ms timeout = %v", err)
	}
	out, err := (ExecRunner{}).Run(context.Background(), "sh", "-c", "echo hi; exit 3")
	if err == nil || strings.TrimSpace(out) != "hi" {
		t.Errorf("sh exit 3 = %q, %v", out, err)
	}
}

// deadlineRunner records how long each command was given, and makes a
// command named slow wait for its context, as a hung systemctl would.
type deadlineRunner struct {
	left map[string]time.Duration // by command line; -1: no deadline
	slow string
}

func (d *deadlineRunner) Run(ctx context.Context, name string, args ...string) (string, error) {
	line := shellLine(name, args)
	d.left[line] = -1
	if dl, ok := ctx.Deadline(); ok {
		d.left[line] = time.Until(dl)
	}
	if line == d.slow {
		<-ctx.Done()
		return "", fmt.Errorf("timed out: %w", ctx.Err())
	}
	return "", nil
}

// TestInstallTimeout: each command gets DefaultTimeout (minutes: a slow
// host's daemon-reload takes more than the half minute it once had),
// Timeout overrides it, a negative Timeout bounds nothing but the
// caller's context, and a command that outlasts it fails the install
// with an error that names it and says how to allow more.
func TestInstallTimeout(t *testing.T) {
	in, _, _, _ := testInstaller(t, true)
	run := &deadlineRunner{left: map[string]time.Duration{}}
	in.Runner = run
	if err := in.Install(context.Background(), testLayout()); err != nil {
		t.Fatal(err)
	}
	if DefaultTimeout < 5*time.Minute {
		t.Errorf("DefaultTimeout = %s; a slow host's daemon-reload needs minutes", DefaultTimeout)
	}
	for _, line := range []string{"systemctl daemon-reload", "systemctl enable vmesh.service"} {
		if got := run.left[line]; got <= DefaultTimeout-time.Minute || got > DefaultTimeout {
			t.Errorf("%s given %s; want DefaultTimeout (%s)", line, got, DefaultTimeout)
		}
	}

	in.Timeout = 20 * time.Minute
	if err := in.Install(context.Background(), testLayout()); err != nil {
		t.Fatal(err)
	}
	if got := run.left["systemctl daemon-reload"]; got <= 19*time.Minute || got > 20*time.Minute {
		t.Errorf("daemon-reload with Timeout 20m given %s", got)
	}

	in.Timeout = -1
	if err := in.Install(context.Background(), testLayout()); err != nil {
		t.Fatal(err)
	}
	if got := run.left["systemctl daemon-reload"]; got != -1 {
		t.Errorf("daemon-reload with no timeout given %s; want no deadline", got)
	}
	// Unbounded, the caller's context still stops it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	run.slow = "systemctl daemon-reload"
	if err := in.Install(ctx, testLayout()); err == nil || !strings.Contains(err.Error(), "daemon-reload") {
		t.Errorf("Install with a cancelled context = %v; want daemon-reload's failure", err)
	}

	in.Timeout = 50 * time.Millisecond
	err := in.Install(context.Background(), testLayout())
	if err == nil || !strings.Contains(err.Error(), "systemctl daemon-reload: no answer within 50ms (a longer -timeout allows more)") {
		t.Errorf("Install with a hung daemon-reload = %v; want its timeout named", err)
	}
}
