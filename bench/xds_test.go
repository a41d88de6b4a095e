package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// xdsCatalog fills a store with n services of 3 instances each, spread over
// 100 hosts; a third are HTTP, a third gRPC; host-0's first 30 instances
// have 2 explicit upstreams each. It returns the next free raft index.
func xdsCatalog(b *testing.B, n int) (*discovery.Store, uint64) {
	b.Helper()
	s := discovery.NewStore()
	idx := uint64(1)
	for i := range 100 {
		if err := s.EnsureNode(idx, &discovery.Node{Name: fmt.Sprintf("host-%d", i), Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)}); err != nil {
			b.Fatal(err)
		}
		idx++
	}
	protos := []string{"tcp", "http", "grpc"}
	for i := range n {
		for j := range 3 {
			in := &discovery.Instance{Node: fmt.Sprintf("host-%d", (i*3+j)%100), ID: fmt.Sprintf("s%d-%d", i, j),
				Service: fmt.Sprintf("svc-%d", i), Port: 8000 + j, Protocol: protos[i%3], Weights: discovery.Weights{Passing: 1, Warning: 1}}
			if in.Node == "host-0" && i < 30 {
				in.Upstreams = []discovery.Upstream{
					{DestinationName: fmt.Sprintf("svc-%d", (i+1)%n), LocalBindAddress: "127.0.0.1", LocalBindPort: 20000 + 2*i},
					{DestinationName: fmt.Sprintf("svc-%d", (i+2)%n), LocalBindAddress: "127.0.0.1", LocalBindPort: 20001 + 2*i},
				}
			}
			if err := s.EnsureService(idx, in, nil); err != nil {
				b.Fatal(err)
			}
			idx++
		}
	}
	return s, idx
}

// BenchmarkXDSBuild measures one translation of the whole catalog for 100,
// 1,000 and 10,000 services (3 instances each): the catalog read alone
// (the floor), then read + NewView + Build for a host's mesh proxy and for
// a proxyless client, and Check, which the server runs on every build.
func BenchmarkXDSBuild(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		store, _ := xdsCatalog(b, n)
		read := func(b *testing.B) *discovery.MeshState {
			st, err := store.MeshState(nil)
			if err != nil {
				b.Fatal(err)
			}
			return st
		}
		b.Run(fmt.Sprintf("services=%d/read", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				read(b)
			}
		})
		for _, who := range []struct {
			name string
			node *core.Node
		}{{"mesh", &core.Node{Id: "host-0"}}, {"proxyless", &core.Node{Id: "app", UserAgentName: "gRPC Go"}}} {
			b.Run(fmt.Sprintf("services=%d/build-%s", n, who.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					v := xds.NewView(read(b), xds.Options{})
					if _, err := xds.Build(v, v.NodeInfo(who.node)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("services=%d/check", n), func(b *testing.B) {
			v := xds.NewView(read(b), xds.Options{})
			snap, err := xds.Build(v, v.NodeInfo(&core.Node{Id: "host-0"}))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := xds.Check(snap); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkXDSPropagation measures change-to-client latency: one
// registration of an instance of svc-0 in a 1,000-service catalog, until
// every connected client has received svc-0's endpoints with it. Clients
// are proxyless-style (each asks for svc-0's endpoints by name over its own
// ADS stream and ACKs). 1 client is the floor for 100; both include the
// server's 25 ms debounce.
func BenchmarkXDSPropagation(b *testing.B) {
	for _, clients := range []int{1, 100} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			store, idx := xdsCatalog(b, 1000)
			srv, err := xds.NewServer(xds.Config{Store: store, TCPAddr: "127.0.0.1:0", Logger: testkit.Logger(b, slog.LevelError)})
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			conn, err := grpc.NewClient(srv.Addrs()[0].String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			// seen[k] receives the number of endpoints each time client k
			// gets an update.
			seen := make([]chan int, clients)
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			for k := range clients {
				stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := stream.Send(&discoverygrpc.DiscoveryRequest{
					Node:    &core.Node{Id: "app-" + strconv.Itoa(k), UserAgentName: "gRPC Go"},
					TypeUrl: resource.EndpointType, ResourceNames: []string{"svc-0"},
				}); err != nil {
					b.Fatal(err)
				}
				seen[k] = make(chan int, 1024)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						resp, err := stream.Recv()
						if err != nil {
							return
						}
						n := 0
						for _, a := range resp.GetResources() {
							var cla endpoint.ClusterLoadAssignment
							if a.UnmarshalTo(&cla) == nil {
								for _, l := range cla.GetEndpoints() {
									n += len(l.GetLbEndpoints())
								}
							}
						}
						seen[k] <- n
						if stream.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{"svc-0"},
							VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}) != nil {
							return
						}
					}
				}()
			}
			// Every client has its first answer (3 endpoints).
			for k := range clients {
				waitEndpoints(b, seen[k], 3)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				in := &discovery.Instance{Node: "host-1", ID: fmt.Sprintf("new-%d", i), Service: "svc-0", Port: 9000 + i%1000,
					Weights: discovery.Weights{Passing: 1, Warning: 1}}
				if err := store.EnsureService(idx, in, nil); err != nil {
					b.Fatal(err)
				}
				idx++
				for k := range clients {
					waitEndpoints(b, seen[k], 4+i)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			reportLatency(b, lat, "changes/s")
		})
	}
}

// waitEndpoints reads updates until one has want endpoints.
func waitEndpoints(b *testing.B, ch chan int, want int) {
	b.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case n := <-ch:
			if n == want {
				return
			}
		case <-timeout:
			b.Fatalf("no update with %d endpoints within 10 s", want)
		}
	}
}
