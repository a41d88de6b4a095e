//go:build unix

package proxy_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/telemetry"
)

// BenchmarkL7Observability: what tracing and access logs cost on the L7
// hop, side by side in one run: the HTTP/1.1 hop of BenchmarkL7Hop with
// neither ("off", the agent's default), with tracing at the default 1 %
// sampling and at 100 % (spans exported over OTLP/gRPC to a real
// receiver in the test), and with the default JSON access log written to
// a file. Each path runs twice: "cpu" under parallel load (cpu-ns/op:
// the whole process's CPU per request, client and backend included, so
// read differences, not absolutes), and "latency" one request at a time
// (p50-µs, p99-µs of the round trip). Read every figure as a ratio to
// "off".
//
//	go test -run '^$' -bench 'L7Observability' -count 3 ./dataplane/proxy
func BenchmarkL7Observability(b *testing.B) {
	backend := benchBackend(b)
	otlp := testkit.StartOTLP(b, "127.0.0.1")
	traced := func(ratio float64) *telemetry.Tracing {
		tp, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{
			Endpoint: "http://" + otlp.GRPCAddr, Protocol: telemetry.ProtocolGRPC, SampleRatio: ratio}, func(string) string { return "" })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp
	}
	logDir, err := os.MkdirTemp("", "vmesh-obs-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(logDir) })
	logPath := filepath.Join(logDir, "access.log")
	paths := []struct{ name, addr string }{
		{"off", benchHopWith(b, backend, nil, nil)},
		{"trace-1pct", benchHopWith(b, backend, nil, traced(0.01).TracerProvider())},
		{"trace-100pct", benchHopWith(b, backend, nil, traced(1).TracerProvider())},
		{"accesslog", benchHopWith(b, backend, fileAccessLog(b, logPath), nil)},
	}
	ran := map[string]bool{}
	for _, p := range paths {
		url := "http://" + p.addr + "/bench"
		b.Run(p.name+"/cpu", func(b *testing.B) { ran[p.name] = true; runClient(b, url, false) })
		b.Run(p.name+"/latency", func(b *testing.B) { ran[p.name] = true; runLatency(b, url) })
	}
	// The access-logged path must have written lines, when -bench ran it.
	if st, err := os.Stat(logPath); ran["accesslog"] && (err != nil || st.Size() == 0) {
		b.Fatalf("no access log written: %v", err)
	}
}

// runLatency sends b.N GETs one after another on one keep-alive
// connection and reports the round trip's median and 99th percentile.
func runLatency(b *testing.B, url string) {
	tr := benchTransport(false)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n != benchBody {
			b.Fatalf("GET %s: status %d, %d bytes, %v", url, resp.StatusCode, n, err)
		}
	}
	get()
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		get()
		took = append(took, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(took)
	at := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}
