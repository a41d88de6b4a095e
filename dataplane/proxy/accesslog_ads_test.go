package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestAccessLogFlagsADS: through a proxy configured over xDS with a JSON
// file access log, each way a request can end leaves its line with
// Envoy's flag and details, and each refused one a warn line: 200 (no
// flag), connect failures with the retries spent (UF,URX), no endpoint
// (UH), no route (NR), the route timeout (UT).
func TestAccessLogFlagsADS(t *testing.T) {
	ok, slow := startHTTPApp(t, "ok", false), startHTTPApp(t, "slow", false)
	slow.delay = 3 * time.Second
	addr := func(a *httpApp) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.port)) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there: connections are refused

	logPath := filepath.Join(t.TempDir(), "access.log")
	js, err := structpb.NewStruct(map[string]any{
		"id": "%REQ(X-REQUEST-ID)%", "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
		"details": "%RESPONSE_CODE_DETAILS%", "host": "%UPSTREAM_HOST%", "cluster": "%UPSTREAM_CLUSTER%",
	})
	if err != nil {
		t.Fatal(err)
	}
	withLog := func(h *hcm.HttpConnectionManager) {
		h.AccessLog = []*accesslog.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslog.AccessLog_TypedConfig{
			TypedConfig: mustAny(t, &fileal.FileAccessLog{Path: logPath, AccessLogFormat: &fileal.FileAccessLog_LogFormat{
				LogFormat: &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_JsonFormat{JsonFormat: js}}}}),
		}}}
	}
	to := func(prefix, c string, a *route.RouteAction) *route.Route {
		if a == nil {
			a = &route.RouteAction{}
		}
		a.ClusterSpecifier = &route.RouteAction_Cluster{Cluster: c}
		return &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: prefix}}, Action: &route.Route_Route{Route: a}}
	}
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{
		to("/ok", "ok", nil),
		to("/dead", "dead", &route.RouteAction{RetryPolicy: &route.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(2)}}),
		to("/empty", "empty", nil),
		to("/slow", "slow", &route.RouteAction{Timeout: durationpb.New(200 * time.Millisecond)}),
	}}}}
	cp := startControlPlane(t)
	cp.setAll(t, "1", []types.Resource{httpListener(t, "web", "r", withLog)},
		[]types.Resource{staticCluster("ok", addr(ok)), staticCluster("dead", dead), staticCluster("slow", addr(slow)),
			multiCluster("empty", cluster.Cluster_ROUND_ROBIN)},
		[]types.Resource{rc})
	var logs testkit.SyncBuffer
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), AccessLogDir: filepath.Dir(logPath)})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	base := "http://" + p.ListenerAddrs()["web"].String()
	c := &http.Client{Timeout: 5 * time.Second}

	cases := []struct {
		path    string
		code    int
		flags   string
		details string
		host    string
	}{
		{"/ok", 200, "-", "via_upstream", addr(ok)},
		{"/dead", 503, "UF,URX", "upstream_reset_before_response_started{connection_failure}", dead},
		{"/empty", 503, "UH", "no_healthy_upstream", ""},
		{"/nothing", 404, "NR", "route_not_found", ""},
		{"/slow", 504, "UT", "upstream_response_timeout", addr(slow)},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
		req.Header.Set("X-Request-Id", "id"+tc.path)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Fatalf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
	}
	byID := map[string]map[string]any{}
	testkit.WaitFor(t, 10*time.Second, "a line per request", func() bool {
		b, _ := os.ReadFile(logPath)
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var l map[string]any
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("not JSON: %q", sc.Text())
			}
			id, _ := l["id"].(string)
			byID[id] = l
		}
		return len(byID) >= len(cases)
	})
	for _, tc := range cases {
		l := byID["id"+tc.path]
		host, _ := l["host"].(string)
		if l["code"] != float64(tc.code) || l["flags"] != tc.flags || l["details"] != tc.details || host != tc.host {
			t.Errorf("%s: line %v; want code %d, flags %s, details %s, host %q", tc.path, l, tc.code, tc.flags, tc.details, tc.host)
		}
		if tc.code >= 400 && !strings.Contains(logs.String(), "request_id=id"+tc.path) {
			t.Errorf("%s: no warn line for the refused request:\n%s", tc.path, logs.String())
		}
	}
	if strings.Contains(logs.String(), "request_id=id/ok") {
		t.Errorf("a warn line for a request that went through:\n%s", logs.String())
	}
}
