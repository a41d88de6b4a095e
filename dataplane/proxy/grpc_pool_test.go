//go:build unix

package proxy_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/types/known/anypb"
)

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// h2Hop is one proxy with a plaintext HTTP listener routing everything
// to backend over HTTP/2 (h2c).
func h2Hop(tb testing.TB, backend string) string {
	tb.Helper()
	cp := startControlPlane(tb)
	c := staticCluster("backend", backend)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(tb, &httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}}),
	}
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*route.Route{prefixRoute("/", "backend")}}}}
	cp.setAll(tb, "1", []types.Resource{httpListener(tb, "web", "r", nil)}, []types.Resource{c}, []types.Resource{rc})
	p := startProxy(tb, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, Logger: testkit.Discard(), Metrics: proxy.NewMetrics(nil)})
	testkit.WaitFor(tb, 10*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	return p.ListenerAddrs()["web"].String()
}

// TestGRPCStreamsShareUpstreamConnection: the calls of many downstream
// HTTP/2 connections to one endpoint are streams of one upstream HTTP/2
// connection (the endpoint's max_concurrent_streams allows them), not a
// connection each; every reply is whole, through the write batching of
// both sides.
func TestGRPCStreamsShareUpstreamConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, grpcEcho{})
	go s.Serve(cl)
	t.Cleanup(s.Stop)
	hop := h2Hop(t, ln.Addr().String())

	const conns, calls = 16, 20
	clients := make([]testgrpc.TestServiceClient, conns)
	for i := range clients {
		cc, err := grpc.NewClient(hop, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		clients[i] = testgrpc.NewTestServiceClient(cc)
	}
	req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: benchPayload}}
	call := func(c testgrpc.TestServiceClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.UnaryCall(ctx, req)
		if err == nil && len(resp.GetPayload().GetBody()) != benchBody {
			err = &badResponse{200, int64(len(resp.GetPayload().GetBody()))}
		}
		return err
	}
	// The first call opens the upstream connection.
	if err := call(clients[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, conns*calls)
	for _, c := range clients {
		wg.Go(func() {
			for range calls {
				if err := call(c); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a call through the proxy: %v", err)
	}
	if n := cl.n.Load(); n != 1 {
		t.Fatalf("the backend accepted %d connections for %d concurrent downstream connections, want 1 shared", n, conns)
	}
}
