package admin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/anypb"
)

type fakeProxy struct{ state string }

func (f *fakeProxy) State() string  { return f.state }
func (f *fakeProxy) NodeID() string { return "node-1" }
func (f *fakeProxy) Listeners() []proxy.ListenerStatus {
	return []proxy.ListenerStatus{{Name: "outbound", Address: "127.0.0.1:15001", Bound: "127.0.0.1:15001"}, {Name: "warm", Address: "127.0.0.1:0"}}
}
func (f *fakeProxy) Clusters() []proxy.ClusterStatus {
	return []proxy.ClusterStatus{{
		Name:       "orders",
		Thresholds: map[string]uint64{"max_connections": 1024},
		Stats:      map[string]uint64{"upstream_rq_total": 5},
		Hosts: []proxy.HostStatus{{Address: "10.0.0.1:8080", Weight: 1, HealthFlags: "failed_outlier_check", Ejected: true,
			Stats: map[string]uint64{"rq_total": 5, "rq_error": 5}}},
	}}
}
func (f *fakeProxy) ConfigDump() *adminv3.ConfigDump {
	l, _ := anypb.New(&listener.Listener{Name: "outbound"})
	ld, _ := anypb.New(&adminv3.ListenersConfigDump{VersionInfo: "42", DynamicListeners: []*adminv3.ListenersConfigDump_DynamicListener{{
		Name: "outbound", ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: "42", Listener: l}}}})
	return &adminv3.ConfigDump{Configs: []*anypb.Any{ld}}
}

func newTestAdmin(t *testing.T, p Proxy) (http.Handler, *slog.LevelVar) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vmesh_requests_total", Help: "h"}, []string{"code"})
	reg.MustRegister(c)
	c.WithLabelValues("200").Add(3)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vmesh_request_duration_seconds", Help: "h"})
	reg.MustRegister(h)
	h.Observe(0.5)
	lv := new(slog.LevelVar)
	return Handler(Config{
		Proxy: p, Gatherer: reg, Prometheus: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Level: lv,
		Version: "1.2.3", Build: map[string]string{"revision": "abc"}, Node: map[string]string{"datacenter": "dc1"},
		Args:   []string{"agent", "-acl-token=s3cret", "-node", "n1", "-join-token", "t0ken", "-token-file", "/etc/tok"},
		Logger: testkit.Discard(),
	}), lv
}

func do(t *testing.T, h http.Handler, method, target string, hdr ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "127.0.0.1:15000"
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		p    Proxy
		code int
		body string
	}{
		{&fakeProxy{state: proxy.StatePreInitializing}, 503, "PRE_INITIALIZING\n"},
		{&fakeProxy{state: proxy.StateInitializing}, 503, "INITIALIZING\n"},
		{&fakeProxy{state: proxy.StateLive}, 200, "LIVE\n"},
		{nil, 200, "LIVE\n"},
	} {
		h, _ := newTestAdmin(t, tc.p)
		if code, body := do(t, h, "GET", "/ready"); code != tc.code || body != tc.body {
			t.Errorf("%v: /ready = %d %q, want %d %q", tc.p, code, body, tc.code, tc.body)
		}
	}
}

func TestServerInfo(t *testing.T) {
	h, _ := newTestAdmin(t, &fakeProxy{state: proxy.StateLive})
	code, body := do(t, h, "GET", "/server_info")
	var got struct {
		Version, State     string
		Uptime             string                  `json:"uptime_current_epoch"`
		CommandLineOptions struct{ Args []string } `json:"command_line_options"`
		Node               map[string]string
		Build              map[string]string
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
		t.Fatalf("/server_info = %d %s: %v", code, body, err)
	}
	args := strings.Join(got.CommandLineOptions.Args, " ")
	if got.Version != "1.2.3" || got.State != "LIVE" || got.Node["id"] != "node-1" || got.Node["datacenter"] != "dc1" || got.Build["revision"] != "abc" ||
		!strings.HasSuffix(got.Uptime, "s") || args != "agent -acl-token=[redacted] -node n1 -join-token [redacted] -token-file /etc/tok" {
		t.Errorf("/server_info = %+v", got)
	}
}

func TestListeners(t *testing.T) {
	h, _ := newTestAdmin(t, &fakeProxy{})
	if _, body := do(t, h, "GET", "/listeners"); body != "outbound::127.0.0.1:15001\nwarm::127.0.0.1:0 (not bound)\n" {
		t.Errorf("/listeners = %q", body)
	}
	_, body := do(t, h, "GET", "/listeners?format=json")
	var got struct {
		Statuses []struct{ Name, LocalAddress string } `json:"listener_statuses"`
	}
	json.Unmarshal([]byte(body), &got)
	if len(got.Statuses) != 2 || got.Statuses[0].Name != "outbound" {
		t.Errorf("/listeners?format=json = %s", body)
	}
}

func TestClusters(t *testing.T) {
	h, _ := newTestAdmin(t, &fakeProxy{})
	_, body := do(t, h, "GET", "/clusters")
	for _, want := range []string{
		"orders::default_priority::max_connections::1024\n", "orders::added_via_api::true\n", "orders::upstream_rq_total::5\n",
		"orders::10.0.0.1:8080::rq_error::5\n", "orders::10.0.0.1:8080::health_flags::failed_outlier_check\n", "orders::10.0.0.1:8080::weight::1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/clusters lacks %q:\n%s", want, body)
		}
	}
	_, body = do(t, h, "GET", "/clusters?format=json")
	var got struct {
		Statuses []proxy.ClusterStatus `json:"cluster_statuses"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got.Statuses) != 1 || !got.Statuses[0].Hosts[0].Ejected || got.Statuses[0].Hosts[0].Stats["rq_total"] != 5 {
		t.Errorf("/clusters?format=json = %s (%v)", body, err)
	}
}

func TestStats(t *testing.T) {
	h, _ := newTestAdmin(t, &fakeProxy{})
	_, body := do(t, h, "GET", "/stats")
	for _, want := range []string{`vmesh_requests_total{code="200"}: 3` + "\n", "vmesh_request_duration_seconds_count: 1\n",
		"vmesh_request_duration_seconds_sum: 0.5\n", "cluster.orders.upstream_rq_total: 5\n", "cluster.orders.10.0.0.1:8080.rq_error: 5\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/stats lacks %q:\n%s", want, body)
		}
	}
	if _, body := do(t, h, "GET", "/stats?filter=^cluster%5C.orders%5C.upstream"); body != "cluster.orders.upstream_rq_total: 5\n" {
		t.Errorf("/stats?filter = %q", body)
	}
	_, body = do(t, h, "GET", "/stats?format=json&filter=requests_total")
	var got struct{ Stats []stat }
	if err := json.Unmarshal([]byte(body), &got); err != nil || len(got.Stats) != 1 || got.Stats[0].Value != 3 {
		t.Errorf("/stats?format=json = %s", body)
	}
	if code, body := do(t, h, "GET", "/stats?filter=("); code != 400 || !strings.Contains(body, "filter") {
		t.Errorf("a bad filter = %d %q, want 400 naming filter", code, body)
	}
	if code, body := do(t, h, "GET", "/stats/prometheus"); code != 200 || !strings.Contains(body, "# TYPE vmesh_requests_total counter") {
		t.Errorf("/stats/prometheus = %d %q", code, body)
	}
}

func TestConfigDump(t *testing.T) {
	h, _ := newTestAdmin(t, &fakeProxy{})
	code, body := do(t, h, "GET", "/config_dump")
	if code != 200 || !strings.Contains(body, `"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"`) ||
		!strings.Contains(body, `"version_info": "42"`) || !strings.Contains(body, `"dynamic_listeners"`) {
		t.Errorf("/config_dump = %d\n%s", code, body)
	}
	h, _ = newTestAdmin(t, nil)
	if code, body := do(t, h, "GET", "/config_dump"); code != 404 || !strings.Contains(body, "/xds/config_dump") {
		t.Errorf("/config_dump without a proxy = %d %q", code, body)
	}
}

func TestLogging(t *testing.T) {
	h, lv := newTestAdmin(t, nil)
	if code, body := do(t, h, "GET", "/logging"); code != 200 || body != "active loggers:\n  vmesh: info\n" {
		t.Errorf("GET /logging = %d %q", code, body)
	}
	if code, _ := do(t, h, "GET", "/logging?level=debug"); code != 405 || lv.Level() != slog.LevelInfo {
		t.Errorf("GET /logging?level=debug = %d, level %v; want 405 and no change", code, lv.Level())
	}
	if code, body := do(t, h, "POST", "/logging?level=debug"); code != 200 || body != "active loggers:\n  vmesh: debug\n" || lv.Level() != slog.LevelDebug {
		t.Errorf("POST /logging?level=debug = %d %q, level %v", code, body, lv.Level())
	}
	if code, body := do(t, h, "POST", "/logging?level=loud"); code != 400 || !strings.Contains(body, "level") || lv.Level() != slog.LevelDebug {
		t.Errorf("POST /logging?level=loud = %d %q", code, body)
	}
	if code, _ := do(t, h, "POST", "/logging?level=warning"); code != 200 || lv.Level() != slog.LevelWarn {
		t.Errorf("Envoy's warning: %d, level %v", code, lv.Level())
	}
	// A page of another site that POSTs a form to the admin port.
	if code, _ := do(t, h, "POST", "/logging?level=debug", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); code != 403 || lv.Level() != slog.LevelWarn {
		t.Errorf("a cross-site POST = %d, level %v; want 403 and no change", code, lv.Level())
	}
}

// On a loopback address, a Host that is a name (DNS rebinding) is
// refused; IP addresses and localhost are not.
func TestGuardHost(t *testing.T) {
	h, _ := newTestAdmin(t, &fakeProxy{state: proxy.StateLive})
	for host, want := range map[string]int{"127.0.0.1:15000": 200, "[::1]:15000": 200, "localhost:15000": 200, "rebound.example:15000": 403} {
		if code, _ := do(t, h, "GET", "/ready", "Host", host); code != want {
			t.Errorf("Host %s: %d, want %d", host, code, want)
		}
	}
	// Through a real listener on 127.0.0.1, as the agent serves it.
	srv := httptest.NewServer(h)
	defer srv.Close()
	for host, want := range map[string]int{"": 200, "rebound.example": 403} {
		req, _ := http.NewRequest("GET", srv.URL+"/ready", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("over loopback, Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
}
