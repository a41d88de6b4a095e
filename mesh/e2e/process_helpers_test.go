package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// exitUsage is vmesh's exit status for bad flags and bad configuration.
const exitUsage = 2

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// vmeshBin is the vmesh binary, built on first use and shared by every
// test of the run, so `go test -run XXX` builds nothing.
func vmeshBin(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "vmesh-bin-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "vmesh")
		out, err := exec.Command("go", "build", "-o", build.bin, "github.com/vmesh/vmesh").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatalf("building vmesh for process tests: %v", build.err)
	}
	return build.bin
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real agent processes; skipped with -short")
	}
}

// proc is a vmesh agent running as its own process.
type proc struct {
	t        testing.TB
	cmd      *exec.Cmd
	stdout   *testkit.SyncBuffer
	stderr   *testkit.SyncBuffer
	done     chan struct{}
	httpAddr string
}

var bannerHTTP = regexp.MustCompile(`HTTP API: http://(\S+)`)

// startProc runs `vmesh args...`; waitHTTP waits for an agent's banner.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return runProc(t, exec.Command(vmeshBin(t), args...))
}

// aclAllow is the config the test agents run with: ACLs on, as on every
// non-dev agent, but allowing what no rule covers, so that tests of other
// features need no tokens while every request still goes through token
// resolution (on clients, through a server). The ACL tests start agents
// with their own config (default deny) after this one, which wins.
const aclAllow = `acl { default_policy = "allow" }` + "\n"

// keepACLDefaults in a command's environment keeps the agent's own ACL
// defaults (the tests of those defaults).
const keepACLDefaults = "VMESH_E2E_ACL_DEFAULTS=1"

// allowByDefault adds aclAllow to a `vmesh agent` command (not -dev, and
// not one whose environment has keepACLDefaults).
func allowByDefault(t testing.TB, cmd *exec.Cmd) {
	agent := slices.Index(cmd.Args, "agent")
	if agent < 1 || filepath.Base(cmd.Args[agent-1]) != "vmesh" || slices.Contains(cmd.Args, "-dev") || slices.Contains(cmd.Env, keepACLDefaults) {
		return
	}
	path := filepath.Join(t.TempDir(), "acl-allow.hcl")
	if err := os.WriteFile(path, []byte(aclAllow), 0o600); err != nil {
		t.Fatal(err)
	}
	// Before the command's own -config flags, so that theirs win.
	cmd.Args = slices.Insert(cmd.Args, agent+1, "-config", path)
}

// runProc starts cmd (vmesh itself, or vmesh behind a wrapper such as
// `ip netns exec`) and kills it when the test ends, logging its output if
// the test failed.
func runProc(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	allowByDefault(t, cmd)
	p := &proc{t: t, cmd: cmd, stdout: &testkit.SyncBuffer{}, stderr: &testkit.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), p.stdout, p.stderr)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP waits for the agent's banner and returns its HTTP address.
func (p *proc) waitHTTP(d time.Duration) string {
	p.t.Helper()
	var m []string
	printed := testkit.Eventually(d, func() bool {
		m = bannerHTTP.FindStringSubmatch(p.stdout.String())
		return m != nil || p.exited()
	})
	switch {
	case m != nil:
		p.httpAddr = m[1]
		return p.httpAddr
	case printed:
		p.t.Fatalf("agent exited before listening: %v\n%s", p.cmd.ProcessState, p.stderr)
	default:
		p.t.Fatalf("agent did not print its HTTP address within %s", d)
	}
	return ""
}

// waitLeader waits until /v1/status/leader names a leader.
func (p *proc) waitLeader(d time.Duration) {
	p.t.Helper()
	testkit.WaitFor(p.t, d, "a leader", func() bool {
		resp, err := http.Get("http://" + p.httpAddr + "/v1/status/leader")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var leader string
		return json.NewDecoder(resp.Body).Decode(&leader) == nil && leader != ""
	})
}

// stop sends sig and waits for the exit; it returns the exit code (-1 when
// killed by a signal).
func (p *proc) stop(sig syscall.Signal) int {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("agent did not exit after %v", sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("vmesh did not exit within %s", d)
	}
	return p.cmd.ProcessState.ExitCode()
}
