package mesh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vmeshBin is the vmesh binary built once for tests that need a real
// process (SIGKILL, exit codes, signals).
var vmeshBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmesh-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vmeshBin = filepath.Join(dir, "vmesh")
	build := exec.Command("go", "build", "-o", vmeshBin, "github.com/vmesh/vmesh")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building vmesh for process tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a process writer and a test reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a vmesh agent running as its own process.
type proc struct {
	t        testing.TB
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	done     chan struct{}
	httpAddr string
}

var bannerHTTP = regexp.MustCompile(`HTTP API: http://(\S+)`)

// startProc runs `vmesh args...`; waitHTTP waits for an agent's banner.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	return runProc(t, exec.Command(vmeshBin, args...))
}

// runProc starts cmd (vmesh itself, or vmesh behind a wrapper such as
// `ip netns exec`) and kills it when the test ends, logging its output if
// the test failed.
func runProc(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
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

// waitHTTP waits for the agent's banner and returns its HTTP address.
func (p *proc) waitHTTP(d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if m := bannerHTTP.FindStringSubmatch(p.stdout.String()); m != nil {
			p.httpAddr = m[1]
			return p.httpAddr
		}
		select {
		case <-p.done:
			p.t.Fatalf("agent exited before listening: %v\n%s", p.cmd.ProcessState, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("agent did not print its HTTP address within %s", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLeader waits until /v1/status/leader names a leader.
func (p *proc) waitLeader(d time.Duration) {
	p.t.Helper()
	waitFor(p.t, d, "a leader", func() bool {
		resp, err := http.Get("http://" + p.httpAddr + "/v1/status/leader")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var leader string
		return json.NewDecoder(resp.Body).Decode(&leader) == nil && leader != ""
	})
}

// signal sends sig and, for SIGKILL/SIGTERM, waits for the exit; it returns
// the exit code (-1 when killed by a signal).
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

// getJSON GETs path from the agent and decodes the answer; it returns the
// X-Consul-Index header.
func getJSON(t testing.TB, addr, path string, out any) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: decoding %q: %v", path, body, err)
		}
	}
	var idx uint64
	fmt.Sscan(resp.Header.Get("X-Consul-Index"), &idx)
	return idx
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
