//go:build unix

package proxy_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// The gRPC path, measured against its floor in the same run: grpc-go
// unary calls (1 KB each way, as bench/proxy.sh's) from 16 client
// connections and 16 goroutines on 2 CPUs, straight to a grpc-go server,
// through a minimal httputil.ReverseProxy speaking h2c both ways, and
// through the proxy (an HTTP connection manager with an HTTP/2 cluster).
// Every reply is checked; cpu-ns/op is the process's CPU per call and
// goroutines/op the goroutines it started per call.
//
//	go test -run '^$' -bench 'L7GRPC' -count 6 ./dataplane/proxy

// benchGRPCConns is bench/proxy.sh's connection count.
const benchGRPCConns = 16

// grpcEcho answers a unary call with the request's payload.
type grpcEcho struct {
	testgrpc.UnimplementedTestServiceServer
}

func (grpcEcho) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
}

// grpcBackend serves grpcEcho on a loopback port until the benchmark
// ends.
func grpcBackend(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, grpcEcho{})
	go s.Serve(ln)
	tb.Cleanup(s.Stop)
	return ln.Addr().String()
}

// h2ReverseProxy is the floor for gRPC: httputil.ReverseProxy, h2c in
// and out (over TLS to the target when tlsTo is set, on TLS when
// listenTLS is), nothing else.
func h2ReverseProxy(tb testing.TB, target string, listenTLS, tlsTo *tls.Config) string {
	tb.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true, Protocols: new(http.Protocols)}
	scheme := "http"
	if tlsTo != nil {
		scheme = "https"
		tr.TLSClientConfig = tlsTo.Clone()
		tr.TLSClientConfig.NextProtos = []string{"h2"}
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	u := &url.URL{Scheme: scheme, Host: target}
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host },
		Transport:  tr,
		BufferPool: rpBuffers{},
	}
	tb.Cleanup(tr.CloseIdleConnections)
	srv := &http.Server{Handler: rp, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	if listenTLS != nil {
		listenTLS = listenTLS.Clone()
		listenTLS.NextProtos = []string{"h2"}
		srv.Protocols.SetHTTP2(true)
	}
	return serveHTTP(tb, srv, listenTLS)
}

// runGRPC makes unary calls to addr from parallel goroutines over
// benchGRPCConns connections, b.N in all, and fails on any call that
// errs or does not echo the payload.
func runGRPC(b *testing.B, addr string) {
	conns := make([]testgrpc.TestServiceClient, benchGRPCConns)
	for i := range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		conns[i] = testgrpc.NewTestServiceClient(cc)
	}
	req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: benchPayload}}
	call := func(c testgrpc.TestServiceClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.UnaryCall(ctx, req)
		if err != nil {
			return err
		}
		if n := len(resp.GetPayload().GetBody()); n != benchBody {
			return &badResponse{200, int64(n)}
		}
		return nil
	}
	// Open the connections (and the proxy's upstream ones) first.
	for _, c := range conns {
		if err := call(c); err != nil {
			b.Fatalf("warming up %s: %v", addr, err)
		}
	}
	var failed, next atomic.Int64
	var first atomic.Value
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, g0 := cpuTime(b), goroutinesCreated()
	b.RunParallel(func(pb *testing.PB) {
		c := conns[int(next.Add(1))%len(conns)]
		for pb.Next() {
			if err := call(c); err != nil {
				if failed.Add(1) == 1 {
					first.Store(err.Error())
				}
			}
		}
	})
	cpu, g := cpuTime(b)-cpu0, goroutinesCreated()-g0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d calls to %s failed; first: %v", n, b.N, addr, first.Load())
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(g)/float64(b.N), "goroutines/op")
}

// goroutinesCreated is how many goroutines the process started so far:
// per call, with direct's subtracted, the hand-offs a path adds.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// waitGRPC waits until a unary call to addr succeeds (the mesh's
// listeners and certificates are in place).
func waitGRPC(tb testing.TB, addr string) {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	defer cc.Close()
	c := testgrpc.NewTestServiceClient(cc)
	testkit.WaitFor(tb, 10*time.Second, "a gRPC call through "+addr, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err == nil
	})
}

// BenchmarkL7GRPC: gRPC unary calls through one plaintext hop (h2c in,
// h2c to the backend), and through the mesh (node-a's explicit
// upstream → h2 over mutual TLS → node-b's mesh port → h2c to the
// backend) against two ReverseProxies with mutual TLS between them.
func BenchmarkL7GRPC(b *testing.B) {
	backend := grpcBackend(b)
	fx := newMeshFixture(b)
	fx.service("ping", "ping-1", "grpc", backendPort(b, backend), false)
	fx.client("ping")
	waitGRPC(b, fx.addr("ping"))
	server, client := mtlsPair(b)
	hop2 := h2ReverseProxy(b, backend, server, nil)
	hop1 := h2ReverseProxy(b, hop2, nil, client)
	for _, p := range []struct{ name, addr string }{
		{"hop/direct", backend},
		{"hop/reverseproxy", h2ReverseProxy(b, backend, nil, nil)},
		{"hop/vmesh", h2Hop(b, backend)},
		{"mesh/reverseproxy-mtls", hop1},
		{"mesh/vmesh-mtls", fx.addr("ping")},
	} {
		b.Run(p.name, func(b *testing.B) { runGRPC(b, p.addr) })
	}
}
