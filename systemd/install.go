package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Layout is what install puts on a host.
type Layout struct {
	Unit UnitOptions
	// ServicesDir holds service definition files.
	ServicesDir string
	// DataDir is the agent's data dir; only uninstall --purge touches it
	// (systemd creates it from StateDirectory=).
	DataDir string
	// Config is the default agent config, written to Unit.ConfigPath only
	// when that file does not exist.
	Config []byte
}

// DefaultTimeout bounds each command install and uninstall run (useradd,
// systemctl daemon-reload, enable, disable --now) unless
// Installer.Timeout says otherwise. It is generous: on a slow host (an
// emulated VM) 'systemctl daemon-reload' alone takes over half a minute,
// and 'disable --now' waits for the agent's shutdown.
const DefaultTimeout = 5 * time.Minute

// Runner runs one command and returns its combined output. The installer
// bounds each call with a context deadline.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) (string, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run runs name with args until it exits or ctx ends.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	// A child that leaves a grandchild holding the pipes must not hang us.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out: %w", ctx.Err())
	}
	return string(out), err
}

// Installer writes the unit, the config directory and the default config,
// creates the system user, and has systemd load and enable the unit; or
// reverses that. Every step prints what it does (or, with DryRun, what it
// would do).
type Installer struct {
	// Root is where files go: "/" or the --prefix directory.
	Root string
	// DryRun prints every file it would write and every command it would
	// run, and changes nothing.
	DryRun bool
	// NoCommands writes files only (--prefix: packaging, tests) and lists
	// the commands a package's scripts must run instead.
	NoCommands bool
	// Systemd reports whether systemd runs here; without it the systemctl
	// commands are printed, not run.
	Systemd bool
	Runner  Runner
	// UserExists reports whether a user exists on this host.
	UserExists func(name string) bool
	// SetGroup gives path to group (files install writes are root-owned
	// and readable by the agent's group). Nil: ownership is left alone.
	SetGroup func(path, group string) error
	// Timeout bounds each command: 0 means DefaultTimeout, a negative
	// value no bound but ctx (the caller's interrupt).
	Timeout time.Duration
	Out     io.Writer
}

// NewInstaller returns an installer for this host. prefix "" means the
// real root: commands run (unless dryRun) and files get the agent's group.
func NewInstaller(prefix string, dryRun bool, out io.Writer) *Installer {
	in := &Installer{
		Root: "/", DryRun: dryRun, Systemd: SystemdRunning(), Runner: ExecRunner{},
		UserExists: userExists, SetGroup: setGroup, Out: out,
	}
	if prefix != "" {
		in.Root, in.NoCommands, in.SetGroup = prefix, true, nil
	}
	return in
}

// SystemdRunning reports whether systemd is the init system here, the
// test sd_booted(3) uses.
func SystemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func userExists(name string) bool {
	_, err := user.Lookup(name)
	return err == nil
}

func setGroup(path, group string) error {
	g, err := user.LookupGroup(group)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return err
	}
	return os.Chown(path, 0, gid)
}

// Install puts vmesh on this host (see Installer).
func (in *Installer) Install(ctx context.Context, l Layout) error {
	unit, err := Unit(l.Unit)
	if err != nil {
		return err
	}
	o := l.Unit.withDefaults()
	if err := in.checkHost(); err != nil {
		return err
	}
	in.header("install")
	if _, err := os.Stat(in.path(o.ExecPath)); err != nil {
		in.say("note: %s does not exist yet: the unit runs it, so put the vmesh binary there (install -m 0755 vmesh %s)", in.path(o.ExecPath), in.path(o.ExecPath))
	}
	if in.UserExists != nil && !in.NoCommands && in.UserExists(o.User) {
		in.say("user %s exists: not running useradd", o.User)
	} else if err := in.run(ctx, false, "useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", l.DataDir, "--shell", "/usr/sbin/nologin", "--comment", "vmesh agent", o.User); err != nil {
		return err
	}
	configDir := filepath.Dir(o.ConfigPath)
	if err := in.mkdir(configDir, 0o755, ""); err != nil {
		return err
	}
	if err := in.mkdir(l.ServicesDir, 0o750, o.User); err != nil {
		return err
	}
	if err := in.write(o.ConfigPath, l.Config, 0o640, o.User, true); err != nil {
		return err
	}
	if err := in.write(UnitPath, []byte(unit), 0o644, "", false); err != nil {
		return err
	}
	if err := in.run(ctx, true, "systemctl", "daemon-reload"); err != nil {
		return err
	}
	if err := in.run(ctx, true, "systemctl", "enable", UnitName); err != nil {
		return err
	}
	next := fmt.Sprintf("next: edit %s (bootstrap = true on the first host; join and token on the others)", in.path(o.ConfigPath))
	switch {
	case in.NoCommands:
		in.say("%s", next)
	case in.Systemd:
		in.say("%s, then: systemctl start vmesh", next)
	default:
		in.say("%s, then run the agent yourself (no systemd here): %s agent -config %s", next, o.ExecPath, o.ConfigPath)
	}
	return nil
}

// Uninstall stops and disables the unit and removes it. It keeps the
// config and data directories and the user unless purge is set.
func (in *Installer) Uninstall(ctx context.Context, l Layout, purge bool) error {
	o := l.Unit.withDefaults()
	if err := in.checkHost(); err != nil {
		return err
	}
	in.header("uninstall")
	if _, err := os.Stat(in.path(UnitPath)); err == nil {
		if err := in.run(ctx, true, "systemctl", "disable", "--now", UnitName); err != nil {
			return err
		}
	} else {
		in.say("%s does not exist: not running systemctl disable --now %s", in.path(UnitPath), UnitName)
	}
	if err := in.remove(UnitPath); err != nil {
		return err
	}
	if err := in.run(ctx, true, "systemctl", "daemon-reload"); err != nil {
		return err
	}
	configDir := filepath.Dir(o.ConfigPath)
	if !purge {
		in.say("kept %s and %s, and the user %s (--purge removes them)", in.path(configDir), in.path(l.DataDir), o.User)
		return nil
	}
	in.say("purging: this deletes the node's raft data; a node still in a cluster should 'vmesh leave' first")
	for _, dir := range []string{l.ServicesDir, configDir, l.DataDir} {
		if err := in.remove(dir); err != nil {
			return err
		}
	}
	if in.UserExists != nil && !in.NoCommands && !in.UserExists(o.User) {
		in.say("user %s does not exist: not running userdel", o.User)
		return nil
	}
	return in.run(ctx, false, "userdel", o.User)
}

func (in *Installer) checkHost() error {
	if in.DryRun || in.NoCommands {
		return nil
	}
	return checkHost()
}

func (in *Installer) header(what string) {
	switch {
	case in.DryRun && in.NoCommands:
		in.say("vmesh %s --dry-run --prefix %s: nothing is changed; this would be done:", what, in.Root)
	case in.DryRun:
		in.say("vmesh %s --dry-run: nothing is changed; this would be done:", what)
	case in.NoCommands:
		in.say("vmesh %s --prefix %s: writing files only; no command runs", what, in.Root)
	}
}

func (in *Installer) say(format string, args ...any) {
	fmt.Fprintf(in.Out, format+"\n", args...)
}

// path maps a host path into Root.
func (in *Installer) path(p string) string {
	return filepath.Join(in.Root, p)
}

// run runs a command bounded by in.Timeout, or says why it does not.
func (in *Installer) run(ctx context.Context, needsSystemd bool, name string, args ...string) error {
	line := shellLine(name, args)
	switch {
	case in.NoCommands:
		in.say("not run (--prefix; a package's scripts should): %s", line)
		return nil
	case needsSystemd && !in.Systemd:
		in.say("systemd is not running here (no /run/systemd/system): not running %s", line)
		return nil
	case in.DryRun:
		in.say("would run: %s", line)
		return nil
	}
	in.say("running: %s", line)
	timeout := in.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	out, err := in.Runner.Run(ctx, name, args...)
	if out = strings.TrimSpace(out); out != "" {
		in.say("  %s", strings.ReplaceAll(out, "\n", "\n  "))
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("systemd: running %s: no answer within %s (a longer -timeout allows more): %w", line, timeout, err)
		}
		return fmt.Errorf("systemd: running %s: %w", line, err)
	}
	return nil
}

func (in *Installer) mkdir(dir string, mode fs.FileMode, group string) error {
	p := in.path(dir)
	if fi, err := os.Stat(p); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("systemd: %s exists and is not a directory", p)
		}
		in.say("directory %s exists", p)
		return nil
	}
	if in.DryRun {
		in.say("would create directory %s (%s)", p, in.owner(mode, group))
		return nil
	}
	if err := os.MkdirAll(p, mode); err != nil {
		return fmt.Errorf("systemd: creating %s: %w", p, err)
	}
	if err := in.own(p, mode, group); err != nil {
		return err
	}
	in.say("created directory %s (%s)", p, in.owner(mode, group))
	return nil
}

// write writes content to file unless it already holds it; with keep, an
// existing file is never replaced (it is the operator's).
func (in *Installer) write(file string, content []byte, mode fs.FileMode, group string, keep bool) error {
	p := in.path(file)
	old, err := os.ReadFile(p)
	exists := err == nil
	switch {
	case exists && keep:
		in.say("%s exists: not overwriting it", p)
		return nil
	case exists && bytes.Equal(old, content):
		in.say("%s is up to date", p)
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("systemd: reading %s: %w", p, err)
	}
	verb := "write"
	if exists {
		verb = "replace"
	}
	if in.DryRun {
		in.say("would %s %s (%s):\n%s", verb, p, in.owner(mode, group), indent(content))
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("systemd: creating %s: %w", filepath.Dir(p), err)
	}
	// Write beside it and rename, so a reader never sees half a file.
	tmp := p + ".vmesh-tmp"
	if err := os.WriteFile(tmp, content, mode); err != nil {
		return fmt.Errorf("systemd: writing %s: %w", p, err)
	}
	if err := in.own(tmp, mode, group); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("systemd: writing %s: %w", p, err)
	}
	in.say("%s %s (%s)", map[string]string{"write": "wrote", "replace": "replaced"}[verb], p, in.owner(mode, group))
	return nil
}

// own sets mode (whatever the umask) and, when installing for real, the group.
func (in *Installer) own(p string, mode fs.FileMode, group string) error {
	if err := os.Chmod(p, mode); err != nil {
		return fmt.Errorf("systemd: setting the mode of %s: %w", p, err)
	}
	if group == "" || in.SetGroup == nil {
		return nil
	}
	if err := in.SetGroup(p, group); err != nil {
		return fmt.Errorf("systemd: giving %s to group %s: %w", p, group, err)
	}
	return nil
}

// remove removes a file or a directory tree.
func (in *Installer) remove(file string) error {
	p := in.path(file)
	if strings.Count(filepath.Clean(file), "/") < 2 {
		// Never /, /etc or /var, whatever the layout says.
		return fmt.Errorf("systemd: refusing to remove %s", p)
	}
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		in.say("%s does not exist", p)
		return nil
	}
	if in.DryRun {
		in.say("would remove %s", p)
		return nil
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("systemd: removing %s: %w", p, err)
	}
	in.say("removed %s", p)
	return nil
}

// owner describes who a path belongs to; under --prefix the group is
// what a package must set, since install sets none there.
func (in *Installer) owner(mode fs.FileMode, group string) string {
	switch {
	case group == "":
		return fmt.Sprintf("mode %04o, root", mode.Perm())
	case in.NoCommands:
		return fmt.Sprintf("mode %04o; owner not set under --prefix: make it root:%s", mode.Perm(), group)
	}
	return fmt.Sprintf("mode %04o, root:%s", mode.Perm(), group)
}

// shellLine prints a command so that it can be pasted into a shell.
func shellLine(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$\\;&|<>*?()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func indent(b []byte) string {
	s := strings.TrimSuffix(string(b), "\n")
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
