//go:build unix

package proxy_test

import (
	"context"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/telemetry"
)

// BenchmarkL7Tracing: the one-hop HTTP/1.1 path of BenchmarkL7Hop with
// tracing off (no provider: the agent's default), on with a sample ratio
// of 0 (every request carries trace context, no span is recorded), and
// on with every request recorded and exported over OTLP/gRPC to a real
// receiver. Read as ratios to "off" (and to BenchmarkL7Hop/http1/vmesh
// of the tree before tracing).
//
//	go test -run '^$' -bench 'L7Tracing|L7Hop/http1/vmesh' -count 5 ./dataplane/proxy
func BenchmarkL7Tracing(b *testing.B) {
	backend := benchBackend(b)
	otlp := testkit.StartOTLP(b, "127.0.0.1")
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		name  string
		on    bool
		ratio float64
	}{{"off", false, 0}, {"ratio0", true, 0}, {"ratio1", true, 1}} {
		var tp *telemetry.Tracing
		if c.on {
			var err error
			tp, err = telemetry.NewTracing(context.Background(), telemetry.TracingConfig{
				Endpoint: "http://" + otlp.GRPCAddr, Protocol: telemetry.ProtocolGRPC, SampleRatio: c.ratio}, noEnv)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { tp.Shutdown(context.Background()) })
		}
		addr := benchHopTraced(b, backend, false, tp.TracerProvider())
		b.Run("http1/"+c.name, func(b *testing.B) { runClient(b, "http://"+addr+"/bench", false) })
	}
	if len(otlp.Spans()) == 0 {
		b.Log("no spans were exported by ratio1 before the end (the batcher exports every 5 s)")
	}
}
