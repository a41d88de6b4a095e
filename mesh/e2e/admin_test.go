package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/vmesh/vmesh/lab/testkit"
)

// adminGet GETs path on an admin listener.
func adminGet(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminListener: a real agent's admin listener as an operator uses
// it. /ready is 503 while the in-process proxy has no config (the agent
// is not in a cluster yet, so it has no catalog to serve) and 200 LIVE
// once it joined and the proxy applied its first listeners and clusters;
// after HTTP traffic through the proxy, /clusters shows the upstream's
// host with its counters; POST /logging?level=debug makes the agent log
// at debug, which it did not before; /config_dump is what the proxy
// applied; and /metrics passes Prometheus' lint.
func TestAdminListener(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n0 := newNode(t, "n0", "127.49.0.2").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n0 leads", func() bool { return n0.leader() != "" })
	n1 := newNode(t, "n1", "127.49.0.1", "-proxy", "-log-level", "info").start()
	admin := n1.ip + ":15000"

	// Not in a cluster: no catalog, no config for the proxy.
	code, body := adminGet(t, admin, "/ready")
	if code != http.StatusServiceUnavailable || (body != "PRE_INITIALIZING\n" && body != "INITIALIZING\n") {
		t.Fatalf("/ready before the first config = %d %q; want 503 and the initializing state", code, body)
	}
	var info struct {
		Version, State string
		Build          struct {
			Revision  string
			GoVersion string `json:"go_version"`
		} `json:"build"`
		Node map[string]string
	}
	_, body = adminGet(t, admin, "/server_info")
	if err := json.Unmarshal([]byte(body), &info); err != nil || info.State == "LIVE" || info.Node["id"] != "n1" ||
		!strings.HasPrefix(info.Version, "vmesh/") || info.Build.Revision == "" || !strings.HasPrefix(info.Build.GoVersion, "go") {
		t.Errorf("/server_info before the first config = %s (%v)", body, err)
	}
	if strings.Contains(n1.p.stderr.String(), "level=DEBUG") {
		t.Fatal("the agent logs at debug with -log-level info")
	}

	if code, _, errs := n1.cli("join", n0.clusterAddr(), "-token-file", n0.tokenFile("1h")); code != 0 {
		t.Fatalf("vmesh join: %d %s", code, errs)
	}
	testkit.WaitFor(t, 30*time.Second, "/ready to answer 200 LIVE", func() bool {
		code, body := adminGet(t, admin, "/ready")
		return code == http.StatusOK && body == "LIVE\n"
	})

	// HTTP traffic through n1's proxy: caller's upstream to web.
	web := startHTTPApp(t, n1.ip, "web-1")
	n1.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, n1.ip, web.port()))
	n1.registerJSON(`{"ID":"caller-1","Name":"caller","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"web","LocalBindPort":21049}]}}}}`)
	n1.intention("caller", "web", "allow")
	call := func() bool {
		code, app, _, err := httpCall(&http.Client{Timeout: 3 * time.Second}, http.MethodGet, "http://"+hostPort(n1.ip, 21049)+"/hello", "")
		return err == nil && code == 200 && app == "web-1"
	}
	testkit.WaitFor(t, 30*time.Second, "a call through n1's proxy to web", call)
	for i := range 5 {
		if !call() {
			t.Fatalf("call %d failed", i)
		}
	}

	// /clusters: the upstream cluster to web has n1's mesh port as its
	// host, with the calls counted.
	var clusters struct {
		Statuses []struct {
			Name  string
			Stats map[string]uint64
			Hosts []struct {
				Address     string
				HealthFlags string `json:"health_flags"`
				Stats       map[string]uint64
			}
		} `json:"cluster_statuses"`
	}
	_, body = adminGet(t, admin, "/clusters?format=json")
	if err := json.Unmarshal([]byte(body), &clusters); err != nil {
		t.Fatalf("/clusters?format=json: %v\n%s", err, body)
	}
	var webCluster string
	for _, c := range clusters.Statuses {
		if strings.Contains(c.Name, "web") && len(c.Hosts) == 1 && c.Hosts[0].Stats["rq_total"] >= 6 && c.Hosts[0].Stats["rq_success"] >= 6 &&
			c.Hosts[0].HealthFlags == "healthy" && strings.HasPrefix(c.Hosts[0].Address, n1.ip+":") && c.Stats["upstream_rq_total"] >= 6 {
			webCluster = c.Name
		}
	}
	if webCluster == "" {
		t.Fatalf("/clusters has no cluster to web with one healthy host on %s and the 6 calls counted:\n%s", n1.ip, body)
	}
	_, text := adminGet(t, admin, "/clusters")
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(webCluster) + `::` + regexp.QuoteMeta(n1.ip) + `:\d+::rq_success::\d+$`).MatchString(text) {
		t.Errorf("/clusters text lacks %s::<host>::rq_success::N:\n%s", webCluster, text)
	}
	if _, lst := adminGet(t, admin, "/listeners"); !strings.Contains(lst, "::"+hostPort(n1.ip, 21049)) {
		t.Errorf("/listeners lacks the upstream listener on %s:\n%s", hostPort(n1.ip, 21049), lst)
	}
	if _, st := adminGet(t, admin, "/stats?filter="+"^cluster\\."); !strings.Contains(st, "cluster."+webCluster+".upstream_rq_total: ") {
		t.Errorf("/stats?filter=^cluster\\. lacks %s's upstream_rq_total:\n%s", webCluster, st)
	}

	// /config_dump: the proxy's applied config, with versions; keys
	// redacted (the proxy holds this node's leaf certificates).
	_, dump := adminGet(t, admin, "/config_dump")
	for _, want := range []string{"envoy.admin.v3.ListenersConfigDump", "envoy.admin.v3.ClustersConfigDump", "envoy.admin.v3.SecretsConfigDump",
		`"version_info"`, `"last_updated"`, webCluster, "[redacted]"} {
		if !strings.Contains(dump, want) {
			t.Errorf("/config_dump lacks %q", want)
		}
	}
	if strings.Contains(dump, "PRIVATE KEY") {
		t.Error("/config_dump shows a private key")
	}

	// /logging: GET does not change it; POST does, and the agent logs
	// at debug (an xDS update applied by the proxy, after a registration).
	if code, _ := adminGet(t, admin, "/logging?level=debug"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /logging?level=debug = %d, want 405", code)
	}
	if strings.Contains(n1.p.stderr.String(), "level=DEBUG") {
		t.Fatal("the agent logs at debug before /logging changed the level")
	}
	resp, err := http.Post("http://"+admin+"/logging?level=debug", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "vmesh: debug") {
		t.Fatalf("POST /logging?level=debug = %d %q", resp.StatusCode, b)
	}
	n1.registerJSON(fmt.Sprintf(`{"ID":"web-2","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, n1.ip, web.port()))
	testkit.WaitFor(t, 10*time.Second, "debug lines in the agent's log", func() bool {
		return strings.Contains(n1.p.stderr.String(), "level=DEBUG")
	})

	// Every series the agent exposes passes Prometheus' lint.
	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.New(resp.Body).Lint()
	resp.Body.Close()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if _, prom := adminGet(t, admin, "/stats/prometheus"); !strings.Contains(prom, "vmesh_build_info{") || !strings.Contains(prom, "vmesh_upstream_requests_total{") {
		t.Error("/stats/prometheus lacks vmesh_build_info or vmesh_upstream_requests_total")
	}
}

// TestVersionNamesTheCommit: a binary built from this tree names its
// commit (go build stamps it from git when asked: GOFLAGS may turn it off,
// so the build here asks) and the Go version, and /v1/agent/self and the
// banner say the same. Where go cannot stamp (outside a checkout, or in a
// git worktree, whose .git is a file) it says "unknown" and why; a release
// build's -ldflags -X sets the revision.
func TestVersionNamesTheCommit(t *testing.T) {
	skipShort(t)
	t.Parallel()
	vmeshBin(t) // (the shared build first: the builds below reuse its cache)
	head, stampable := gitHead(t)
	bin := filepath.Join(t.TempDir(), "vmesh")
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, "github.com/vmesh/vmesh")
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=auto")
	if stampable {
		build.Args[2], build.Env[len(build.Env)-1] = "-buildvcs=true", "GOFLAGS=-buildvcs=true"
	}
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", build.Args, err, b)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("vmesh version: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "vmesh ") || !strings.HasPrefix(lines[2], "Go go") {
		t.Fatalf("vmesh version = %q; want the version, the revision and the Go version", out)
	}
	if stampable {
		if !strings.HasPrefix(lines[1], "Revision "+head) {
			t.Errorf("vmesh version says %q; the tree is at %s", lines[1], head)
		}
	} else {
		t.Logf("not a git checkout that go build can stamp (head %q): expecting unknown", head)
		if !strings.HasPrefix(lines[1], "Revision unknown (built without VCS information") {
			t.Errorf("vmesh version says %q; want unknown with the reason", lines[1])
		}
	}
	if same, _ := exec.Command(bin, "--version").CombinedOutput(); string(same) != string(out) {
		t.Errorf("vmesh --version = %q, vmesh version = %q", same, out)
	}

	// The agent of that binary: its banner and /v1/agent/self.
	n := newNode(t, "n1", "127.50.0.1")
	n.p = runProc(t, exec.Command(bin, "agent", "-node", n.name, "-bind", n.ip, "-client", n.ip, "-data-dir", n.dataDir, "-services-dir", "", "-server", "-bootstrap"))
	n.p.waitHTTP(30 * time.Second)
	full := strings.Fields(lines[1])[1]
	short := full
	if len(short) > 12 {
		short = short[:12]
	}
	if !strings.Contains(n.p.stdout.String(), "Version: "+strings.TrimPrefix(lines[0], "vmesh ")+" (revision "+short) {
		t.Errorf("the banner does not name version and revision %s:\n%s", short, n.p.stdout)
	}
	var self struct {
		Config struct{ Version, Revision string }
		VMesh  struct{ Version, Revision, GoVersion string }
	}
	testkit.GetJSON(t, n.httpAddr(), "/v1/agent/self", &self)
	if self.Config.Version == "" || self.VMesh.Revision != full || !strings.HasPrefix(self.Config.Revision, short) || !strings.HasPrefix(self.VMesh.GoVersion, "go") {
		t.Errorf("/v1/agent/self: %+v; vmesh version says revision %s", self, full)
	}

	// -ldflags -X sets the revision for a release build made without .git.
	if b, err := exec.Command("go", "build", "-buildvcs=false", "-ldflags", "-X github.com/vmesh/vmesh/mesh/cli.Revision=abcdef0123456789", "-o", bin,
		"github.com/vmesh/vmesh").CombinedOutput(); err != nil {
		t.Fatalf("go build -ldflags -X: %v\n%s", err, b)
	}
	if rel, _ := exec.Command(bin, "version").CombinedOutput(); !strings.Contains(string(rel), "Revision abcdef0123456789\n") {
		t.Errorf("a release build with -X Revision: %q", rel)
	}
}

// gitHead is the commit of the tree the test runs in, and whether go
// build can stamp it: a checkout whose .git is a directory (go does not
// follow a worktree's .git file).
func gitHead(t *testing.T) (string, bool) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", false
	}
	fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git"))
	return strings.TrimSpace(string(head)), err == nil && fi.IsDir()
}
