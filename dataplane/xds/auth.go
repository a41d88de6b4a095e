package xds

import (
	"context"
	"fmt"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The TCP listener can be reached by anyone who can reach its address, so
// unlike the unix socket (guarded by its file mode) it authenticates its
// clients: each stream carries an ACL token in the x-consul-token
// metadata, as Consul's Envoy bootstraps send it, and receives only the
// secrets that token may use: a service's certificate with service:write
// on it, the node's proxy certificate with node:write on the node, the
// CA roots (public) always.

// TokenHeader is the gRPC metadata key of a TCP client's ACL token.
const TokenHeader = "x-consul-token"

// TokenAuthorizer is what a TCP client's token may do.
type TokenAuthorizer interface {
	ServiceWrite(name string) error
	NodeWrite(name string) error
}

// TCPAuth resolves a TCP client's token; nil means ACLs are off, and the
// TCP listener is as open as the HTTP API then is.
type TCPAuth func(ctx context.Context, token string) (TokenAuthorizer, error)

// authStream is the TCP server's stream interceptor.
func (s *Server) authStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if s.cfg.TCPAuth == nil {
		return handler(srv, ss)
	}
	md, _ := metadata.FromIncomingContext(ss.Context())
	tokens := md.Get(TokenHeader)
	if len(tokens) == 0 || tokens[0] == "" {
		return status.Error(codes.Unauthenticated, "xDS over TCP needs an ACL token in the "+TokenHeader+" metadata")
	}
	authz, err := s.cfg.TCPAuth(ss.Context(), tokens[0])
	if err != nil {
		s.logger.Warn("refused an xDS client over TCP", "err", err)
		return status.Error(codes.PermissionDenied, "xDS over TCP: "+err.Error())
	}
	return handler(srv, &secretFilter{ServerStream: ss, authz: authz, node: s.cfg.NodeName})
}

// secretFilter drops from the responses of one stream the secrets its
// token may not have.
type secretFilter struct {
	grpc.ServerStream
	authz TokenAuthorizer
	node  string
}

func (f *secretFilter) allowed(name string) bool {
	switch {
	case name == SecretRoots:
		return true
	case name == SecretNodeCert:
		return f.authz.NodeWrite(f.node) == nil
	case strings.HasPrefix(name, secretServicePrefix):
		return f.authz.ServiceWrite(strings.TrimPrefix(name, secretServicePrefix)) == nil
	}
	return false
}

func (f *secretFilter) SendMsg(m any) error {
	switch r := m.(type) {
	case *discoveryv3.DiscoveryResponse:
		if r.GetTypeUrl() != resource.SecretType {
			break
		}
		c := proto.Clone(r).(*discoveryv3.DiscoveryResponse)
		c.Resources = nil
		for _, a := range r.Resources {
			var sec tlsv3.Secret
			if err := a.UnmarshalTo(&sec); err != nil {
				return fmt.Errorf("xds: reading a secret to filter it: %w", err)
			}
			if f.allowed(sec.GetName()) {
				c.Resources = append(c.Resources, a)
			}
		}
		return f.ServerStream.SendMsg(c)
	case *discoveryv3.DeltaDiscoveryResponse:
		if r.GetTypeUrl() != resource.SecretType {
			break
		}
		c := proto.Clone(r).(*discoveryv3.DeltaDiscoveryResponse)
		c.Resources = nil
		for _, res := range r.Resources {
			if f.allowed(res.GetName()) {
				c.Resources = append(c.Resources, res)
			}
		}
		return f.ServerStream.SendMsg(c)
	}
	return f.ServerStream.SendMsg(m)
}
