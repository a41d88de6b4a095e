package proxy_test

import (
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
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
)

// TestAccessLogDirADS: a file access log the xDS server points outside the
// host's access log directory is turned off, with a warn line naming the
// field, the path and the directory, while the listener is accepted
// (no NACK) and serves, and its other logger, inside the directory,
// writes.
func TestAccessLogDirADS(t *testing.T) {
	ok := startHTTPApp(t, "ok", false)
	root := t.TempDir()
	dir, outside := filepath.Join(root, "logs"), filepath.Join(root, "etc")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	inside, escape := filepath.Join(dir, "access.log"), filepath.Join(dir, "..", "etc", "cron")
	logger := func(path string) *accesslog.AccessLog {
		return &accesslog.AccessLog{Name: "envoy.access_loggers.file", ConfigType: &accesslog.AccessLog_TypedConfig{
			TypedConfig: mustAny(t, &fileal.FileAccessLog{Path: path})}}
	}
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"},
		Routes: []*route.Route{prefixRoute("/", "ok")}}}}
	cp := startControlPlane(t)
	cp.setAll(t, "1", []types.Resource{httpListener(t, "web", "r", func(h *hcm.HttpConnectionManager) {
		h.AccessLog = []*accesslog.AccessLog{logger(escape), logger(inside)}
	})}, []types.Resource{staticCluster("ok", net.JoinHostPort("127.0.0.1", strconv.Itoa(ok.port)))}, []types.Resource{rc})
	var logs testkit.SyncBuffer
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), AccessLogDir: dir})
	testkit.WaitFor(t, 5*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	if st := p.Status()[resource.ListenerType]; st.Nacks != 0 || st.Acked != "1" {
		t.Errorf("listener status %+v, want version 1 accepted", st)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.ListenerAddrs()["web"].String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	testkit.WaitFor(t, 10*time.Second, "the line inside the directory", func() bool {
		b, _ := os.ReadFile(inside)
		return strings.Contains(string(b), `"GET / HTTP/1.1" 200`)
	})
	if _, err := os.Lstat(filepath.Join(outside, "cron")); err == nil {
		t.Errorf("a file was created outside the access log directory")
	}
	out := logs.String()
	for _, want := range []string{"access log refused", "field=\"listener web", "file.path", "path=" + escape, "access_log_dir=" + dir,
		"is not inside this host's access log directory"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the proxy's log:\n%s", want, out)
		}
	}
}
