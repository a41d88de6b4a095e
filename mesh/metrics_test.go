package mesh

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/vmesh/vmesh/lab/testkit"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vmesh/vmesh/mesh/cli"
)

// scrape GETs a /metrics URL and parses the text exposition.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping %s: %s %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return mfs
}

// sample is the value of the series of name whose labels include want
// (every label of want, others ignored), summed over the matching series;
// ok is false when none matches.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, ok bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, w := range want {
			if have[k] != w {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

func hasPrefix(mfs map[string]*dto.MetricFamily, prefix string) bool {
	for name := range mfs {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// TestAgentMetrics: an agent running its in-process proxy serves /metrics
// on the admin listener (and /v1/vmesh/metrics on the API): the proxy's
// xDS updates, raft's own series and this node's raft state, the xDS
// server's client; and a TCP exchange through an upstream listener moves
// that listener's connection counters.
func TestAgentMetrics(t *testing.T) {
	// Alone on its loopback IP: the proxy binds the default mesh ports.
	const ip = "127.0.45.1"
	cfg := testConfig(t)
	cfg.BindAddr, cfg.ClientAddr = ip, ip
	cfg.Addresses.HTTP, cfg.Addresses.DNS, cfg.Addresses.Admin = ip+":0", ip+":0", ip+":0"
	cfg.Proxy.Enabled = true
	a := startAgent(t, cfg)
	admin := a.AdminAddr()
	if admin == "" {
		t.Fatal("the admin listener is not listening")
	}
	metricsURL := "http://" + admin + "/metrics"

	// An echo app, and web with an upstream listener to it.
	app, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	api := "http://" + a.HTTPAddr()
	if code, body := testkit.HTTPDo(t, http.MethodPut, api+"/v1/agent/service/register",
		fmt.Sprintf(`{"Name":"echo","Address":%q,"Port":%d}`, ip, app.Addr().(*net.TCPAddr).Port)); code != 200 {
		t.Fatalf("register echo: %d %s", code, body)
	}
	upstream := net.JoinHostPort(ip, fmt.Sprint(testkit.FreePort(t, ip)))
	_, port, _ := net.SplitHostPort(upstream)
	if code, body := testkit.HTTPDo(t, http.MethodPut, api+"/v1/agent/service/register",
		fmt.Sprintf(`{"Name":"web","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"echo","LocalBindAddress":%q,"LocalBindPort":%s}]}}}}`, ip, port)); code != 200 {
		t.Fatalf("register web: %d %s", code, body)
	}
	if code, body := testkit.HTTPDo(t, http.MethodPut, api+"/v1/connect/intentions/exact?source=web&destination=echo", `{"Action":"allow"}`); code != 200 {
		t.Fatalf("allow intention: %d %s", code, body)
	}
	echo := func() error {
		c, err := net.DialTimeout("tcp", upstream, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintln(c, "hello"); err != nil {
			return err
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if got != "hello\n" {
			return fmt.Errorf("echo answered %q", got)
		}
		return nil
	}
	testkit.WaitFor(t, 15*time.Second, "an echo through the proxy", func() bool { return echo() == nil })

	listener := "vmesh/upstream/" + upstream
	before := scrape(t, metricsURL)
	n0, ok := sample(before, "vmesh_connections_total", map[string]string{"listener": listener})
	if !ok || n0 < 1 {
		t.Errorf("vmesh_connections_total{listener=%q} = %v (present %v) after an echo, want >= 1", listener, n0, ok)
	}
	in0, _ := sample(before, "vmesh_connections_total", map[string]string{"listener": "vmesh/inbound"})
	if err := echo(); err != nil {
		t.Fatalf("echo: %v", err)
	}
	after := scrape(t, metricsURL)
	if n1, _ := sample(after, "vmesh_connections_total", map[string]string{"listener": listener}); n1 != n0+1 {
		t.Errorf("vmesh_connections_total{listener=%q}: %v before one more echo, %v after; want +1", listener, n0, n1)
	}
	// The bytes went on through this host's inbound mesh listener.
	if in1, _ := sample(after, "vmesh_connections_total", map[string]string{"listener": "vmesh/inbound"}); in1 < in0+1 {
		t.Errorf(`vmesh_connections_total{listener="vmesh/inbound"}: %v before, %v after; want it up`, in0, in1)
	}
	testkit.WaitFor(t, 5*time.Second, "the upstream listener's connections to close", func() bool {
		v, ok := sample(scrape(t, metricsURL), "vmesh_active_connections", map[string]string{"listener": listener})
		return ok && v == 0
	})

	for _, typ := range []string{"Listener", "Cluster"} {
		if v, _ := sample(after, "vmesh_xds_updates_total", map[string]string{"type": typ}); v < 1 {
			t.Errorf(`vmesh_xds_updates_total{type=%q} = %v, want > 0`, typ, v)
		}
	}
	if v, _ := sample(after, "vmesh_xds_server_connected_clients", nil); v < 1 {
		t.Errorf("vmesh_xds_server_connected_clients = %v, want the in-process proxy", v)
	}
	if v, _ := sample(after, "vmesh_xds_server_acks_total", map[string]string{"type": "Listener"}); v < 1 {
		t.Errorf(`vmesh_xds_server_acks_total{type="Listener"} = %v, want > 0`, v)
	}
	// raft's own metrics (go-metrics sink): the registrations were raft
	// applies; and the agent's view of its raft state.
	if v, ok := sample(after, "vmesh_raft_apply_total", nil); !ok || v < 1 {
		t.Errorf("vmesh_raft_apply_total = %v (present %v), want > 0 after writes", v, ok)
	}
	if !hasPrefix(after, "vmesh_raft_boltdb_") {
		t.Error("no vmesh_raft_boltdb_* series")
	}
	// The cluster the echo went to counts it; the proxy's own series and
	// build info are there.
	if v, _ := sample(after, "vmesh_upstream_requests_total", map[string]string{"outcome": "success"}); v < 2 {
		t.Errorf(`vmesh_upstream_requests_total{outcome="success"} = %v, want the echoes`, v)
	}
	if v, _ := sample(after, "vmesh_build_info", nil); v != 1 {
		t.Errorf("vmesh_build_info = %v, want 1", v)
	}
	// Every series of a real agent with traffic through its proxy passes
	// Prometheus' lint.
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.New(resp.Body).Lint()
	resp.Body.Close()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint over /metrics: %v", err)
		for _, p := range problems {
			t.Errorf("  %s: %s", p.Metric, p.Text)
		}
	}
	if v, _ := sample(after, "vmesh_raft_leader", nil); v != 1 {
		t.Errorf("vmesh_raft_leader = %v, want 1 on a single bootstrapped node", v)
	}
	if v, _ := sample(after, "vmesh_raft_state", map[string]string{"state": "leader"}); v != 1 {
		t.Errorf(`vmesh_raft_state{state="leader"} = %v, want 1`, v)
	}
	if li, _ := sample(after, "vmesh_raft_applied_index", nil); li < 1 {
		t.Errorf("vmesh_raft_applied_index = %v, want > 0", li)
	}
	if !hasPrefix(after, "go_") || !hasPrefix(after, "process_") {
		t.Error("no go_* or process_* series")
	}

	// The HTTP API serves the same registry.
	if v, _ := sample(scrape(t, api+"/v1/vmesh/metrics"), "vmesh_raft_leader", nil); v != 1 {
		t.Errorf("/v1/vmesh/metrics: vmesh_raft_leader = %v, want 1", v)
	}
}

// TestAgentMetricsTwoAgents: two agents in one process each serve their
// own registry (no duplicate registration panic, each its own raft
// state), and both carry the process-wide raft_* series.
func TestAgentMetricsTwoAgents(t *testing.T) {
	var agents []*Agent
	for _, name := range []string{"node-a", "node-b"} {
		cfg := testConfig(t)
		cfg.NodeName = name
		cfg.Addresses.Admin = "127.0.0.1:0"
		agents = append(agents, startAgent(t, cfg))
	}
	for _, a := range agents {
		mfs := scrape(t, "http://"+a.AdminAddr()+"/metrics")
		if v, _ := sample(mfs, "vmesh_raft_leader", nil); v != 1 {
			t.Errorf("%s: vmesh_raft_leader = %v, want 1 (each bootstrapped alone)", a.cfg.NodeName, v)
		}
		if _, ok := sample(mfs, "vmesh_raft_apply_total", nil); !ok {
			t.Errorf("%s: no vmesh_raft_apply_total", a.cfg.NodeName)
		}
		idx, _ := sample(mfs, "vmesh_catalog_index", nil)
		if want := a.store.LastIndex(); idx != float64(want) {
			t.Errorf("%s: vmesh_catalog_index = %v, want %d", a.cfg.NodeName, idx, want)
		}
	}
}

var proxyMetricsLine = regexp.MustCompile(`metrics=http://(\S+)/metrics`)

// TestProxyCommandMetrics: `vmesh proxy --admin-addr` serves its own
// /metrics, showing what it got from the agent's xDS, and nothing else.
func TestProxyCommandMetrics(t *testing.T) {
	const ip = "127.0.45.2"
	cfg := testConfig(t)
	cfg.BindAddr, cfg.ClientAddr = ip, ip
	cfg.Addresses.HTTP, cfg.Addresses.DNS, cfg.Addresses.Admin = ip+":0", ip+":0", ip+":0"
	a := startAgent(t, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &testkit.SyncBuffer{}
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"vmesh", "proxy", "--xds", a.XDSAddrs()[0].String(), "--node", cfg.NodeName,
			"--admin-addr", ip + ":0"}, &cli.Env{Stdout: io.Discard, Stderr: stderr})
	}()
	var addr string
	testkit.WaitFor(t, 10*time.Second, "the proxy's metrics address in its log", func() bool {
		if m := proxyMetricsLine.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	testkit.WaitFor(t, 10*time.Second, "the proxy's xDS updates on its /metrics", func() bool {
		mfs := scrape(t, "http://"+addr+"/metrics")
		l, _ := sample(mfs, "vmesh_xds_updates_total", map[string]string{"type": "Listener"})
		c, _ := sample(mfs, "vmesh_xds_updates_total", map[string]string{"type": "Cluster"})
		return l > 0 && c > 0
	})
	mfs := scrape(t, "http://"+addr+"/metrics")
	if hasPrefix(mfs, "raft_") || hasPrefix(mfs, "vmesh_raft_") {
		t.Error("the standalone proxy exports raft series")
	}
	if code, _ := testkit.HTTPDo(t, http.MethodGet, "http://"+addr+"/config_dump", ""); code != http.StatusNotFound {
		t.Errorf("GET /config_dump on the proxy's admin address: %d, want 404 (only /metrics)", code)
	}
	cancel()
	select {
	case code := <-exited:
		if code != cli.ExitOK {
			t.Errorf("vmesh proxy exited %d, want 0; stderr:\n%s", code, stderr)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("vmesh proxy did not stop")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("the proxy's admin address still accepts after it stopped")
	}
}

// TestProxyCommandBadAdminAddr: a bad --admin-addr is a usage error that
// names the flag.
func TestProxyCommandBadAdminAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		code int
	}{
		{"nope", cli.ExitUsage},
		{"192.0.2.1:1", cli.ExitFailed}, // well-formed, not an address of this host
	} {
		stderr := &testkit.SyncBuffer{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		code := run(ctx, []string{"vmesh", "proxy", "--xds", "127.0.0.1:1", "--node", "n", "--admin-addr", tc.addr},
			&cli.Env{Stdout: io.Discard, Stderr: stderr})
		cancel()
		if code != tc.code || !strings.Contains(stderr.String(), "--admin-addr") {
			t.Errorf("--admin-addr %s: exit %d, want %d, with a message naming the flag; stderr: %s", tc.addr, code, tc.code, stderr)
		}
	}
}
