//go:build unix

package proxy_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/lab/testkit"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkL7HopAccessLog: the cost of access logs on the L7 hop. The
// same hop as BenchmarkL7Hop (HTTP/1.1), without access logs and with the
// default JSON format (the one xDS sends when proxy-defaults sets none)
// written to a file; read the ratio of the two.
//
//	go test -run '^$' -bench 'L7HopAccessLog' -count 6 ./dataplane/proxy
func BenchmarkL7HopAccessLog(b *testing.B) {
	backend := benchBackend(b)
	logPath := filepath.Join(b.TempDir(), "access.log")
	logged := fileAccessLog(b, logPath)
	ran := map[string]bool{}
	for _, path := range []struct {
		name string
		addr string
	}{
		{"vmesh", benchHopWith(b, backend, nil, nil)},
		{"vmesh-accesslog", benchHopWith(b, backend, logged, nil)},
	} {
		b.Run("http1/"+path.name, func(b *testing.B) {
			ran[path.name] = true
			runClient(b, "http://"+path.addr+"/bench", false)
		})
	}
	// The logged path must have written lines, when -bench ran it.
	if st, err := os.Stat(logPath); ran["vmesh-accesslog"] && (err != nil || st.Size() == 0) {
		b.Fatalf("no access log written: %v", err)
	}
}

// fileAccessLog sets the default JSON access log (the one xDS sends when
// proxy-defaults sets no format), written to path, on an HTTP connection
// manager.
func fileAccessLog(b *testing.B, path string) func(*hcm.HttpConnectionManager) {
	fields := map[string]any{}
	for k, v := range xds.DefaultAccessLogJSON {
		fields[k] = v
	}
	js, err := structpb.NewStruct(fields)
	if err != nil {
		b.Fatal(err)
	}
	return func(h *hcm.HttpConnectionManager) {
		h.AccessLog = []*accesslog.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslog.AccessLog_TypedConfig{
			TypedConfig: mustAny(b, &fileal.FileAccessLog{Path: path, AccessLogFormat: &fileal.FileAccessLog_LogFormat{
				LogFormat: &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_JsonFormat{JsonFormat: js}}}}),
		}}}
	}
}

// benchHopWith is benchHop (HTTP/1.1) with the HTTP connection manager
// changed by hcmOpt and the proxy tracing with tp (both may be nil).
func benchHopWith(b *testing.B, backend string, hcmOpt func(*hcm.HttpConnectionManager), tp trace.TracerProvider) string {
	cp := startControlPlane(b)
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*route.Route{prefixRoute("/", "backend")}}}}
	cp.setAll(b, "1", []types.Resource{httpListener(b, "web", "r", func(h *hcm.HttpConnectionManager) {
		h.StatPrefix = "outbound_web"
		if hcmOpt != nil {
			hcmOpt(h)
		}
	})}, []types.Resource{staticCluster("backend", backend)}, []types.Resource{rc})
	p := startProxy(b, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, Logger: testkit.Discard(), Metrics: proxy.NewMetrics(nil),
		AccessLogDir: os.TempDir(), TracerProvider: tp}) // b.TempDir's parent: where the benchmark's log is
	testkit.WaitFor(b, 10*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	return p.ListenerAddrs()["web"].String()
}
