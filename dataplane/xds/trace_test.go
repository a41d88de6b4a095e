package xds

import (
	"context"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestPushSpans: a catalog change the server brings a connected client
// to is one xds.push span with the view's index, the clients and the
// snapshots set.
func TestPushSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	st := newTestStore(t)
	srv, err := NewServer(Config{Store: st.Store, TCPAddr: "127.0.0.1:0", Logger: testkit.Logger(t),
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := dial(t, srv.Addrs()[0].String()).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "envoy-1", UserAgentName: "envoy"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	recv(t, 2*time.Second, stream.Recv)

	idx := st.register(t, discovery.Instance{ID: "web-1", Service: "web", Port: 8080})
	var push sdktrace.ReadOnlySpan
	testkit.WaitFor(t, 5*time.Second, "the push span of the registration", func() bool {
		for _, sp := range rec.Ended() {
			if sp.Name() != "xds.push" {
				continue
			}
			for _, kv := range sp.Attributes() {
				if kv.Key == "vmesh.xds.index" && kv.Value.AsInt64() >= int64(idx) {
					push = sp
				}
			}
		}
		return push != nil
	})
	attrs := map[attribute.Key]int64{}
	for _, kv := range push.Attributes() {
		attrs[kv.Key] = kv.Value.AsInt64()
	}
	if attrs["vmesh.xds.clients"] != 1 || attrs["vmesh.xds.pushed"] != 1 {
		t.Errorf("push span attributes %v, want 1 client, 1 snapshot set", push.Attributes())
	}
}
