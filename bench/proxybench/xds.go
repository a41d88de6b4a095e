package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// benchRoute is one listener of the one-hop proxy: plaintext on listen,
// to the one backend, as TCP or, for http and grpc, through an HTTP
// connection manager (grpc: HTTP/2 to the backend).
type benchRoute struct {
	listen, backend netip.AddrPort
	proto           string
}

// parseRoute reads LISTEN=BACKEND/PROTO.
func parseRoute(s string) (benchRoute, error) {
	l, rest, ok := strings.Cut(s, "=")
	b, proto, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return benchRoute{}, fmt.Errorf("-route %q: want LISTEN=BACKEND/PROTO, e.g. 127.0.0.1:19101=127.0.0.1:8080/http", s)
	}
	var r benchRoute
	var err error
	if r.listen, err = netip.ParseAddrPort(l); err != nil {
		return r, fmt.Errorf("-route %q: listen address: %v", s, err)
	}
	if r.backend, err = netip.ParseAddrPort(b); err != nil {
		return r, fmt.Errorf("-route %q: backend address: %v", s, err)
	}
	switch proto {
	case "tcp", "http", "grpc":
	default:
		return r, fmt.Errorf("-route %q: protocol %q: want tcp, http or grpc", s, proto)
	}
	r.proto = proto
	return r, nil
}

// snapshot is everything the proxy is served: per route a listener and a
// static cluster, no EDS, RDS or SDS (route configurations are inline).
// Only fields that vmesh's proxy honours, so that it accepts all of it.
func snapshot(version string, routes []benchRoute) (*cache.Snapshot, error) {
	var ls, cs []types.Resource
	for i, r := range routes {
		name := fmt.Sprintf("bench_%d_%s", i, r.proto)
		c := &cluster.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(2 * time.Second),
			LoadAssignment: &endpoint.ClusterLoadAssignment{
				ClusterName: name,
				Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: sockAddr(r.backend)}},
				}}}},
			},
		}
		var filter proto.Message = &tcp.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcp.TcpProxy_Cluster{Cluster: name}}
		filterName := wellknown.TCPProxy
		if r.proto != "tcp" {
			filterName = wellknown.HTTPConnectionManager
			router, err := anypb.New(&routerfilter.Router{})
			if err != nil {
				return nil, err
			}
			filter = &hcm.HttpConnectionManager{
				StatPrefix: name,
				RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
					Name: name,
					VirtualHosts: []*route.VirtualHost{{
						Name: name, Domains: []string{"*"},
						Routes: []*route.Route{{
							Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
							Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: name}}},
						}},
					}},
				}},
				HttpFilters: []*hcm.HttpFilter{{Name: wellknown.Router, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: router}}},
			}
		}
		if r.proto == "grpc" {
			opts, err := anypb.New(&httpopts.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
				}},
			})
			if err != nil {
				return nil, err
			}
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
		}
		typed, err := anypb.New(filter)
		if err != nil {
			return nil, err
		}
		ls = append(ls, &listener.Listener{
			Name:         name,
			Address:      sockAddr(r.listen),
			FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{Name: filterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: typed}}}}},
		})
		cs = append(cs, c)
	}
	return cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: ls,
		resource.ClusterType:  cs,
	})
}

func sockAddr(a netip.AddrPort) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: a.Addr().String(), PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(a.Port())},
	}}}
}

// xdsServer serves one node's snapshot over ADS and logs every NACK.
type xdsServer struct {
	grpc *grpc.Server
	// nacks receives each NACK's error detail (dropped when full).
	nacks chan string
}

func newXDSServer(ctx context.Context, node string, snap *cache.Snapshot, logger *slog.Logger) (*xdsServer, error) {
	sc := cache.NewSnapshotCache(false, cache.IDHash{}, cacheLogger{logger})
	if err := sc.SetSnapshot(ctx, node, snap); err != nil {
		return nil, fmt.Errorf("setting the snapshot: %w", err)
	}
	s := &xdsServer{grpc: grpc.NewServer(), nacks: make(chan string, 16)}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoverygrpc.DiscoveryRequest) error {
			switch {
			case req.GetErrorDetail() != nil:
				logger.Error("NACK", "type", req.GetTypeUrl(), "node", req.GetNode().GetId(), "error", req.GetErrorDetail().GetMessage())
				select {
				case s.nacks <- req.GetErrorDetail().GetMessage():
				default:
				}
			case req.GetVersionInfo() != "":
				logger.Info("ACK", "type", req.GetTypeUrl(), "node", req.GetNode().GetId(), "version", req.GetVersionInfo())
			}
			return nil
		},
	}
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(s.grpc, serverv3.NewServer(ctx, sc, cb))
	return s, nil
}

func runXDS(args []string) error {
	fs := flag.NewFlagSet("xds", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:18000", "serve xDS on this `host:port`")
	node := fs.String("node", "bench", "the proxy's xDS node `name`")
	var routes []benchRoute
	fs.Func("route", "a listener: `LISTEN=BACKEND/PROTO` (repeatable)", func(s string) error {
		r, err := parseRoute(s)
		if err == nil {
			routes = append(routes, r)
		}
		return err
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(routes) == 0 {
		return errors.New("at least one -route is required")
	}
	snap, err := snapshot("1", routes)
	if err != nil {
		return err
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "bench-xds")
	s, err := newXDSServer(ctx, *node, snap, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	logger.Info("serving xDS", "addr", ln.Addr().String(), "node", *node, "listeners", len(routes))
	go func() {
		<-ctx.Done()
		s.grpc.Stop()
	}()
	if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// cacheLogger puts go-control-plane's cache logging on slog: warnings and
// errors only, the rest is per-request noise.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(string, ...any) {}
func (c cacheLogger) Infof(string, ...any)  {}
func (c cacheLogger) Warnf(f string, a ...any) {
	c.l.Warn(fmt.Sprintf(f, a...))
}
func (c cacheLogger) Errorf(f string, a ...any) {
	c.l.Error(fmt.Sprintf(f, a...))
}
