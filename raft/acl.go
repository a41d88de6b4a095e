package raft

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ACLs on the servers. The ACL state lives in raft (discovery/acl.go) and
// never on a client: a client asks a server to resolve a token
// (ResolveToken) and builds the Authorizer itself. A write a node forwards
// with a token is authorized again by the leader, with the leader's own
// resolution, so a client that skipped its own check gains nothing.

// aclState is the server's resolver; nil while ACLs are off.
type aclState struct{ resolver atomic.Pointer[acl.Resolver] }

// SetACL turns ACL enforcement on (r) or off (nil) for what this server
// decides itself: forwarded writes and clients' token resolution.
func (s *Server) SetACL(r *acl.Resolver) { s.acl.resolver.Store(r) }

// ResolveTokenRequest asks a server for a token's rules.
type ResolveTokenRequest struct{ Secret string }

// ResolveTokenResponse is a token (its SecretID left out) and the rules
// its policies, roles and identities grant here. NotFound: no such token,
// or it expired.
type ResolveTokenResponse struct {
	Token    acl.Token
	Rules    []acl.Rule
	NotFound bool
}

func (s *Server) rpcResolveToken(ctx context.Context, req *ResolveTokenRequest) (*ResolveTokenResponse, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	r := s.acl.resolver.Load()
	if r == nil {
		return nil, status.Error(codes.FailedPrecondition, "ACLs are disabled on this server; enable them on every agent alike")
	}
	tok, rules, err := r.ResolveRules(req.Secret)
	if errors.Is(err, acl.ErrNotFound) {
		return &ResolveTokenResponse{NotFound: true}, nil
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out := *tok
	out.SecretID = ""
	return &ResolveTokenResponse{Token: out, Rules: rules}, nil
}

// ResolveToken asks a server for a token's rules (a client's
// resolution; it caches the answer).
func (c *Client) ResolveToken(ctx context.Context, secret string) (*acl.Token, []acl.Rule, error) {
	var resp ResolveTokenResponse
	if err := c.leaderCall(ctx, "ResolveToken", &ResolveTokenRequest{Secret: secret}, &resp, true); err != nil {
		return nil, nil, err
	}
	if resp.NotFound {
		return nil, nil, acl.ErrNotFound
	}
	return &resp.Token, resp.Rules, nil
}

// authorizeForwardACL checks a cluster-wide write forwarded with token
// against the leader's ACLs (a no-op while they are off).
func (s *Server) authorizeForwardACL(token string, buf []byte) error {
	r := s.acl.resolver.Load()
	if r == nil {
		return nil
	}
	cmd, err := decodeCommand(buf)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "decoding command: %v", err)
	}
	_, authz, err := r.Resolve(token)
	if err == nil {
		err = discovery.AuthorizeCommand(authz, s.store, cmd)
	}
	if errors.Is(err, acl.ErrNotFound) || errors.Is(err, acl.ErrPermissionDenied) {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return err
}

// decodeCommand decodes the cluster-wide commands a node may forward with
// a token.
func decodeCommand(buf []byte) (discovery.Command, error) {
	if len(buf) == 0 {
		return nil, errors.New("empty command")
	}
	var cmd discovery.Command
	switch t := discovery.MessageType(buf[0]) &^ discovery.IgnoreUnknownTypeFlag; t {
	case discovery.RegisterNodeType:
		cmd = &discovery.RegisterNodeRequest{}
	case discovery.DeregisterNodeType:
		cmd = &discovery.DeregisterNodeRequest{}
	case discovery.RegisterServiceType:
		cmd = &discovery.RegisterServiceRequest{}
	case discovery.DeregisterServiceType:
		cmd = &discovery.DeregisterServiceRequest{}
	case discovery.RegisterCheckType:
		cmd = &discovery.RegisterCheckRequest{}
	case discovery.DeregisterCheckType:
		cmd = &discovery.DeregisterCheckRequest{}
	case discovery.UpdateCheckType:
		cmd = &discovery.UpdateCheckRequest{}
	case discovery.CatalogRegisterType:
		cmd = &discovery.CatalogRegisterRequest{}
	case discovery.CatalogDeregisterType:
		cmd = &discovery.CatalogDeregisterRequest{}
	case discovery.AutopilotSetType:
		cmd = &discovery.AutopilotSetRequest{}
	case discovery.KVType:
		cmd = &discovery.KVRequest{}
	case discovery.SessionType:
		cmd = &discovery.SessionRequest{}
	case discovery.TxnType:
		cmd = &discovery.TxnRequest{}
	case discovery.ConfigEntryType:
		cmd = &discovery.ConfigEntryRequest{}
	case discovery.IntentionType:
		cmd = &discovery.IntentionRequest{}
	case discovery.TokenCreateType:
		cmd = &discovery.TokenCreateRequest{}
	case discovery.TokenDeleteType:
		cmd = &discovery.TokenDeleteRequest{}
	case discovery.TokenRevokeType:
		cmd = &discovery.TokenRevokeRequest{}
	case discovery.ACLTokenSetType:
		cmd = &discovery.ACLTokenSetRequest{}
	case discovery.ACLTokenDeleteType:
		cmd = &discovery.ACLTokenDeleteRequest{}
	case discovery.ACLPolicySetType:
		cmd = &discovery.ACLPolicySetRequest{}
	case discovery.ACLPolicyDeleteType:
		cmd = &discovery.ACLPolicyDeleteRequest{}
	case discovery.ACLRoleSetType:
		cmd = &discovery.ACLRoleSetRequest{}
	case discovery.ACLRoleDeleteType:
		cmd = &discovery.ACLRoleDeleteRequest{}
	case discovery.ACLBootstrapType:
		cmd = &discovery.ACLBootstrapRequest{}
	default:
		return nil, fmt.Errorf("command %d carries no token rule", t)
	}
	if err := decode(buf[1:], cmd); err != nil {
		return nil, err
	}
	return derefCommand(cmd), nil
}

// derefCommand turns the pointer decodeCommand filled into the value
// AuthorizeCommand switches on.
func derefCommand(cmd discovery.Command) discovery.Command {
	switch c := cmd.(type) {
	case *discovery.RegisterNodeRequest:
		return *c
	case *discovery.DeregisterNodeRequest:
		return *c
	case *discovery.RegisterServiceRequest:
		return c // AuthorizeCommand takes it by pointer too
	case *discovery.DeregisterServiceRequest:
		return *c
	case *discovery.CatalogRegisterRequest:
		return *c
	case *discovery.CatalogDeregisterRequest:
		return *c
	case *discovery.AutopilotSetRequest:
		return *c
	case *discovery.RegisterCheckRequest:
		return *c
	case *discovery.DeregisterCheckRequest:
		return *c
	case *discovery.UpdateCheckRequest:
		return *c
	case *discovery.KVRequest:
		return *c
	case *discovery.SessionRequest:
		return *c
	case *discovery.TxnRequest:
		return *c
	case *discovery.ConfigEntryRequest:
		return *c
	case *discovery.IntentionRequest:
		return *c
	case *discovery.TokenCreateRequest:
		return *c
	case *discovery.TokenDeleteRequest:
		return *c
	case *discovery.TokenRevokeRequest:
		return *c
	case *discovery.ACLTokenSetRequest:
		return *c
	case *discovery.ACLTokenDeleteRequest:
		return *c
	case *discovery.ACLPolicySetRequest:
		return *c
	case *discovery.ACLPolicyDeleteRequest:
		return *c
	case *discovery.ACLRoleSetRequest:
		return *c
	case *discovery.ACLRoleDeleteRequest:
		return *c
	case *discovery.ACLBootstrapRequest:
		return *c
	}
	return cmd
}

// rpcACLRead answers a read of the ACL state for a client (which holds
// none), authorized by the token the query carries.
func (s *Server) rpcACLRead(ctx context.Context, q *discovery.ACLQuery) (*discovery.ACLResult, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	authz := acl.ManageAll("")
	if r := s.acl.resolver.Load(); r != nil {
		var err error
		if _, authz, err = r.Resolve(q.Token); err != nil {
			return nil, aclStatus(err)
		}
	}
	res, err := discovery.ACLRead(s.store, authz, *q)
	if err != nil {
		return nil, aclStatus(err)
	}
	return &res, nil
}

// aclStatus is err as the gRPC status rpcErr turns back into it.
func aclStatus(err error) error {
	switch {
	case errors.Is(err, acl.ErrNotFound), errors.Is(err, acl.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, discovery.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, discovery.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// ACLRead reads the ACL state from a server.
func (c *Client) ACLRead(ctx context.Context, q discovery.ACLQuery) (discovery.ACLResult, error) {
	var res discovery.ACLResult
	err := c.leaderCall(ctx, "ACLRead", &q, &res, true)
	return res, err
}
