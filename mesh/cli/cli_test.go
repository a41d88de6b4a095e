package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
)

// runCLI runs the CLI as main would, without an agent command.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &Env{Stdout: &out, Stderr: &errb}
	code := Run(context.Background(), append([]string{"vmesh"}, args...), env, nil)
	return code, out.String(), errb.String()
}

// Help goes to stdout with exit 0 however it is asked for; no arguments
// at all is a usage error on stderr.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"help"}} {
		code, out, errs := runCLI(t, args...)
		if code != ExitOK || errs != "" || !strings.Contains(out, "usage: vmesh <command>") {
			t.Errorf("vmesh %v = %d, stdout %q, stderr %q; want the usage on stdout, exit 0", args, code, out, errs)
		}
		for _, want := range []string{"join", "validate", "redirect", "Exit codes: 0 ok, 1 failed", "2 usage or configuration error"} {
			if !strings.Contains(out, want) {
				t.Errorf("vmesh %v: usage lacks %q:\n%s", args, want, out)
			}
		}
	}
	code, out, errs := runCLI(t)
	if code != ExitUsage || out != "" || !strings.Contains(errs, "usage: vmesh <command>") {
		t.Errorf("vmesh = %d, stdout %q, stderr %q; want the usage on stderr, exit 2", code, out, errs)
	}
	if code, _, errs := runCLI(t, "help", "frobnicate"); code != ExitUsage || !strings.Contains(errs, "frobnicate") {
		t.Errorf("help frobnicate = %d %q; want exit 2 naming it", code, errs)
	}
}

// Every command's help, by `help CMD`, `CMD -h` or `CMD --help`, is on
// stdout with exit 0 and lists the command's flags with their defaults.
func TestHelpCommand(t *testing.T) {
	t.Parallel()
	for name, f := range builtin {
		want := f(&Env{}).Help()
		for _, args := range [][]string{{"help", name}, {name, "-h"}, {name, "--help"}} {
			code, out, errs := runCLI(t, args...)
			if code != ExitOK || errs != "" || out != want {
				t.Errorf("vmesh %v = %d, stdout %q, stderr %q; want %s's help, exit 0", args, code, out, errs, name)
			}
		}
	}
	_, out, _ := runCLI(t, "help", "join")
	for _, want := range []string{"usage: vmesh join [flags] ADDR", "-token-file file", "-http-addr address", "(default \"127.0.0.1:8500\")"} {
		if !strings.Contains(out, want) {
			t.Errorf("help join lacks %q:\n%s", want, out)
		}
	}
	// After a subcommand and positional arguments too.
	if code, out, _ := runCLI(t, "join", "10.0.0.1:7400", "-h"); code != ExitOK || !strings.Contains(out, "usage: vmesh join") {
		t.Errorf("join ADDR -h = %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "services", "register", "--help"); code != ExitOK || !strings.Contains(out, "usage: vmesh services") {
		t.Errorf("services register --help = %d %q", code, out)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, out, errs := runCLI(t, args...)
		b := Build()
		want := "vmesh " + Version + "\n" + "Revision " + b.Revision
		if code != ExitOK || !strings.HasPrefix(out, want) || !strings.Contains(out, "\nGo "+runtime.Version()+" ") || errs != "" {
			t.Errorf("vmesh %v = %d %q %q; want %q, then the Go version", args, code, out, errs, want)
		}
	}
}

// Flags may come before or after positional arguments, and a bad flag is
// a usage error that shows the command's help on stderr.
func TestCLIFlagsAnywhere(t *testing.T) {
	t.Parallel()
	tokenFile := testkit.WriteFile(t, t.TempDir(), "token", "T")
	os.Chmod(tokenFile, 0o600)
	for _, args := range [][]string{
		{"join", "-token-file", tokenFile, "10.0.0.1:7400", "-http-addr", "127.0.0.1:1"},
		{"join", "10.0.0.1:7400", "-token-file", tokenFile, "--http-addr", "127.0.0.1:1"},
		{"config", "read", "service-defaults", "web", "--http-addr", "127.0.0.1:1"},
		{"envoy", "bootstrap", "--http-addr", "127.0.0.1:1", "--node", "n"},
	} {
		// The flags parsed: the failure is reaching the agent (exit 1).
		if code, _, errs := runCLI(t, args...); code != ExitFailed || !strings.Contains(errs, "127.0.0.1:1") {
			t.Errorf("vmesh %v = %d %q; want exit 1 reaching 127.0.0.1:1", args, code, errs)
		}
	}
	code, _, errs := runCLI(t, "members", "--frob")
	if code != ExitUsage || !strings.Contains(errs, "-frob") || !strings.Contains(errs, "usage: vmesh members") {
		t.Errorf("members --frob = %d %q; want exit 2 with the help", code, errs)
	}
	if code, _, errs := runCLI(t, "frobnicate"); code != ExitUsage || !strings.Contains(errs, "frobnicate") {
		t.Errorf("unknown command = %d %q", code, errs)
	}
}

// validate checks config and service files without an agent: exit 0 and
// "Configuration is valid.", or 2 with every problem, each naming its file
// (and line, where the decoder or the service check knows it).
func TestValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := testkit.WriteFile(t, dir, "good.hcl", "node_name = \"n1\"\ndata_dir = \"/tmp/x\"\nservice {\n  name = \"web\"\n  port = 80\n}\n")
	code, out, errs := runCLI(t, "validate", good)
	if code != ExitOK || out != "Configuration is valid.\n" {
		t.Fatalf("validate good = %d %q %q", code, out, errs)
	}
	bad := t.TempDir()
	svcDir := filepath.Join(bad, "services.d")
	if err := os.Mkdir(svcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, bad, "a.hcl", "node_name = \"n1\"\nfrobnicate = 1\n")
	testkit.WriteFile(t, bad, "b.json", `{"log_level": "loud", "services_dir": "`+svcDir+`"}`)
	testkit.WriteFile(t, svcDir, "web.hcl", "service {\n  name = \"bad\"\n  port = 70000\n}\n")
	code, out, errs = runCLI(t, "validate", bad)
	if code != ExitUsage || out != "" {
		t.Fatalf("validate bad = %d %q; want exit 2", code, out)
	}
	for _, want := range []string{filepath.Join(bad, "a.hcl") + ":2:1", "frobnicate", "log_level", filepath.Join(svcDir, "web.hcl")} {
		if !strings.Contains(errs, want) {
			t.Errorf("validate bad: stderr lacks %q:\n%s", want, errs)
		}
	}
	if code, _, _ := runCLI(t, "validate"); code != ExitUsage {
		t.Errorf("validate without a path = %d, want 2", code)
	}
	if code, _, errs := runCLI(t, "validate", filepath.Join(dir, "missing.hcl")); code != ExitUsage || !strings.Contains(errs, "missing.hcl") {
		t.Errorf("validate missing file = %d %q", code, errs)
	}
}

// go test binaries carry no VCS stamp, so the revision is "unknown" with
// the reason; -X sets it for release builds.
func TestBuildRevision(t *testing.T) {
	b := Build()
	if b.Revision == "" || (b.Revision == "unknown") != (b.RevisionNote != "") {
		t.Errorf("Build() = %+v: want a revision, or unknown with a reason", b)
	}
	old := Revision
	Revision = "0123456789abcdef0123"
	defer func() { Revision = old }()
	if b := Build(); b.Revision != "0123456789abcdef0123" || b.ShortRevision() != "0123456789ab" || b.RevisionNote != "" {
		t.Errorf("with -X Revision: %+v", b)
	}
}
