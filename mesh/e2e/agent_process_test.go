package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestAgentBadConfigExits2: a bad config or service file stops the agent
// before it starts anything, with exit status 2 and file:line in the message.
func TestAgentBadConfigExits2(t *testing.T) {
	skipShort(t)
	t.Parallel()
	cases := []struct {
		name  string
		file  string // written to dir/<file>
		body  string
		extra []string
		want  []string
	}{
		{"unknown key", "vmesh.hcl", "node_name = \"a\"\n\nnode_nmae = \"b\"\n", nil, []string{"vmesh.hcl:3", `unknown key "node_nmae"`}},
		{"syntax error", "vmesh.hcl", "ports {\n  http = \n}\n", nil, []string{"vmesh.hcl:"}},
		{"wrong type json", "vmesh.json", "{\n  \"ports\": {\n    \"http\": \"8500\"\n  }\n}\n", nil, []string{"vmesh.json:3", "ports.http", "expected a number"}},
		{"bad value", "vmesh.hcl", "ports {\n  http = 70000\n}\nlog_level = \"loud\"\n", nil, []string{"ports.http", "70000", "log_level", "loud"}},
		{"bad service in config", "vmesh.hcl", "service {\n  name = \"web\"\n  port = 8080\n  check {\n    interval = \"10s\"\n  }\n}\n", nil, []string{"vmesh.hcl:1", `service "web"`, "one of HTTP, TCP, GRPC or TTL"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := testkit.WriteFile(t, dir, tc.file, tc.body)
			args := append([]string{"agent", "-config", path, "-data-dir", t.TempDir(), "-bootstrap",
				"-http-addr", "127.14.0.1:0", "-cluster-port", "0", "-services-dir", ""}, tc.extra...)
			p := startProc(t, args...)
			if code := p.wait(20 * time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2\nstderr: %s", code, p.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(p.stderr.String(), w) {
					t.Errorf("stderr does not mention %q:\n%s", w, p.stderr)
				}
			}
		})
	}
	t.Run("bad service file", func(t *testing.T) {
		svcDir := t.TempDir()
		testkit.WriteFile(t, svcDir, "good.hcl", "service {\n  name = \"good\"\n  port = 1\n}\n")
		testkit.WriteFile(t, svcDir, "web.json", "{\n  \"service\": {\n    \"name\": \"web\",\n    \"prot\": 80\n  }\n}\n")
		p := startProc(t, "agent", "-data-dir", t.TempDir(), "-bootstrap", "-http-addr", "127.14.0.1:0", "-cluster-port", "0", "-services-dir", svcDir)
		if code := p.wait(20 * time.Second); code != 2 {
			t.Fatalf("exit code %d, want 2\nstderr: %s", code, p.stderr)
		}
		if !strings.Contains(p.stderr.String(), "web.json:4") || !strings.Contains(p.stderr.String(), `"prot"`) {
			t.Fatalf("stderr does not name web.json:4 and the key:\n%s", p.stderr)
		}
	})
	t.Run("bad flag", func(t *testing.T) {
		p := startProc(t, "agent", "-no-such-flag")
		if code := p.wait(20 * time.Second); code != 2 {
			t.Fatalf("exit code %d, want 2", code)
		}
		if !strings.Contains(p.stderr.String(), "no-such-flag") {
			t.Fatalf("stderr does not name the flag:\n%s", p.stderr)
		}
	})
}

// TestServiceFilesReload: service files are registered at start; on SIGHUP
// new files register, changed files update, removed files deregister, and a
// bad file changes nothing while the agent keeps serving.
func TestServiceFilesReload(t *testing.T) {
	skipShort(t)
	t.Parallel()
	svcDir := t.TempDir()
	testkit.WriteFile(t, svcDir, "web.hcl", `
service {
  name = "web"
  id   = "web-1"
  port = 8080
  tags = ["v1"]
  check {
    ttl = "30s"
  }
}
`)
	testkit.WriteFile(t, svcDir, "multi.json", `{"services": [{"name": "a", "port": 1}, {"name": "b", "port": 2, "checks": [{"tcp": "127.0.0.1:1", "interval": "1s"}]}]}`)
	cfgDir := t.TempDir()
	cfg := testkit.WriteFile(t, cfgDir, "vmesh.hcl", "service {\n  name = \"from-config\"\n  port = 9\n}\n")
	p := startProc(t, "agent", "-bootstrap", "-data-dir", t.TempDir(), "-config", cfg, "-services-dir", svcDir,
		"-http-addr", "127.11.0.1:0", "-cluster-port", "0", "-bind", "127.11.0.1", "-client", "127.11.0.1")
	addr := p.waitHTTP(10 * time.Second)
	p.waitLeader(15 * time.Second)

	services := func() map[string]struct {
		Service string
		Port    int
		Tags    []string
	} {
		var out map[string]struct {
			Service string
			Port    int
			Tags    []string
		}
		testkit.GetJSON(t, addr, "/v1/agent/services", &out)
		return out
	}
	testkit.WaitFor(t, 10*time.Second, "file services registered", func() bool { return len(services()) == 4 })
	if s := services()["web-1"]; s.Service != "web" || s.Port != 8080 {
		t.Fatalf("web-1 = %+v", s)
	}
	// An API registration is not owned by files: reloads leave it alone.
	if code, body := testkit.HTTPDo(t, http.MethodPut, "http://"+addr+"/v1/agent/service/register", `{"Name":"api-svc","Port":5}`); code != 200 {
		t.Fatalf("API register: %d %s", code, body)
	}

	// A broken file: reload is refused, nothing changes, still serving.
	testkit.WriteFile(t, svcDir, "web.hcl", "service {\n  name = \"web\"\n  port = \"eighty\"\n}\n")
	os.Remove(filepath.Join(svcDir, "multi.json"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	testkit.WaitFor(t, 10*time.Second, "reload failure logged", func() bool {
		return strings.Contains(p.stderr.String(), "reload failed") && strings.Contains(p.stderr.String(), "web.hcl:3")
	})
	if got := services(); len(got) != 5 {
		t.Fatalf("after a bad reload: %d services, want all 5 kept: %+v", len(got), got)
	}

	// Fixed and changed: web updates, multi.json's services go, a new file comes.
	testkit.WriteFile(t, svcDir, "web.hcl", "service {\n  name = \"web\"\n  id = \"web-1\"\n  port = 8081\n  tags = [\"v2\"]\n}\n")
	testkit.WriteFile(t, svcDir, "new.hcl", "service {\n  name = \"new\"\n  port = 7\n}\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	// Applied means every change of the reload: a and b, both of
	// multi.json, are deregistered one after the other, so waiting for a
	// alone can see b still there.
	testkit.WaitFor(t, 10*time.Second, "reload applied", func() bool {
		got := services()
		_, hasA := got["a"]
		_, hasB := got["b"]
		_, hasNew := got["new"]
		return !hasA && !hasB && hasNew && got["web-1"].Port == 8081
	})
	got := services()
	for _, id := range []string{"web-1", "new", "from-config", "api-svc"} {
		if _, ok := got[id]; !ok {
			t.Errorf("after reload %s is missing: %+v", id, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("after reload: %d services, want 4: %+v", len(got), got)
	}
	if code := p.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM exit code %d", code)
	}
}

// TestDevAnswersLeaderWithin5s is the README's first command: `vmesh agent
// -dev` answers /v1/status/leader within 5 s of starting, on the default
// port. -client moves it to its own loopback address so it cannot clash
// with a developer's running agent.
func TestDevAnswersLeaderWithin5s(t *testing.T) {
	skipShort(t)
	t.Parallel()
	client := "127.13.0.1"
	bin := vmeshBin(t) // built before the clock starts
	start := time.Now()
	p := runProc(t, exec.Command(bin, "agent", "-dev", "-client", client))
	addr := p.waitHTTP(5 * time.Second)
	if addr != client+":8500" {
		t.Fatalf("dev agent listens on %s, want the default port %s:8500", addr, client)
	}
	p.waitLeader(5*time.Second - time.Since(start))
	t.Logf("leader known %s after start", time.Since(start).Round(time.Millisecond))
	var leader string
	testkit.GetJSON(t, addr, "/v1/status/leader", &leader)
	if leader != client+":7400" {
		t.Fatalf("leader = %q, want %s:7400", leader, client)
	}
	dataDir := ""
	for _, l := range strings.Split(p.stdout.String(), "\n") {
		if strings.Contains(l, "Data dir:") {
			dataDir = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
		}
	}
	if code := p.stop(syscall.SIGINT); code != 0 {
		t.Fatalf("SIGINT exit code %d, want 0", code)
	}
	if _, err := os.Stat(dataDir); dataDir == "" || !os.IsNotExist(err) {
		t.Fatalf("dev data dir %q still exists after exit (err %v)", dataDir, err)
	}
}
