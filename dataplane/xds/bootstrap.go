package xds

import (
	"fmt"
	"net/netip"
	"time"

	bootstrap "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// xdsClusterName is the bootstrap's static cluster that reaches the agent.
const xdsClusterName = "vmesh_xds"

// DefaultEnvoyAdmin is a user Envoy's admin address: not 15000, which is
// the agent's own.
const DefaultEnvoyAdmin = "127.0.0.1:19000"

// BootstrapOptions say what a bootstrap points at.
type BootstrapOptions struct {
	// Node is the Envoy's xDS node ID: this agent's node name makes it the
	// host's mesh proxy; any other name makes it a plain xDS client.
	Node string
	// Socket (a unix socket path) or TCP (host:port) is the agent's xDS
	// server; Socket wins when both are set.
	Socket, TCP string
	// Admin is the Envoy's admin address.
	Admin string
}

// EnvoyBootstrap renders an Envoy v3 bootstrap that takes everything over
// ADS from the agent, as JSON.
func EnvoyBootstrap(o BootstrapOptions) ([]byte, error) {
	adminHost, adminPort, err := splitAddrPort(o.Admin)
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	var xdsAddr *core.Address
	switch {
	case o.Socket != "":
		xdsAddr = &core.Address{Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: o.Socket}}}
	case o.TCP != "":
		h, p, err := splitAddrPort(o.TCP)
		if err != nil {
			return nil, fmt.Errorf("xDS address: %w", err)
		}
		xdsAddr = socketAddress(h, p)
	default:
		return nil, fmt.Errorf("the agent serves no xDS address")
	}
	// gRPC needs HTTP/2 to the xDS server.
	h2, err := anypb.New(&httpopts.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
		}},
	})
	if err != nil {
		return nil, err
	}
	ads := &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3, ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	b := &bootstrap.Bootstrap{
		Node: &core.Node{Id: o.Node, Cluster: "vmesh"},
		Admin: &bootstrap.Admin{
			Address: socketAddress(adminHost, adminPort),
		},
		DynamicResources: &bootstrap.Bootstrap_DynamicResources{
			AdsConfig: &core.ApiConfigSource{
				ApiType:             core.ApiConfigSource_GRPC,
				TransportApiVersion: core.ApiVersion_V3,
				GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName},
				}}},
				SetNodeOnFirstMessageOnly: true,
			},
			CdsConfig: ads,
			LdsConfig: ads,
		},
		StaticResources: &bootstrap.Bootstrap_StaticResources{Clusters: []*cluster.Cluster{{
			Name:                          xdsClusterName,
			ClusterDiscoveryType:          &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
			ConnectTimeout:                durationpb.New(time.Second),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
			LoadAssignment: &endpoint.ClusterLoadAssignment{
				ClusterName: xdsClusterName,
				Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: xdsAddr}},
				}}}},
			},
		}}},
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("building the bootstrap: %w", err)
	}
	out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(b)
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func splitAddrPort(s string) (string, uint32, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not IP:port", s)
	}
	return ap.Addr().String(), uint32(ap.Port()), nil
}

func socketAddress(host string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}
