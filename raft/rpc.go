package raft

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The cluster RPC: plain gRPC on the cluster port, with small JSON
// messages. Every method but Join needs a node certificate; the methods
// that change membership or write run on the leader.
const rpcService = "vmesh.cluster.v1.Cluster"

// JoinRequest asks for a node certificate with a join token.
type JoinRequest struct {
	TokenID  string
	Secret   string
	NodeName string
	NodeID   string
	CSR      []byte
	// Role is the role the joiner asks for: RoleServer (or "", as older
	// joiners send) or RoleClient. The leader records it (roles.go).
	Role string
}

// JoinResponse carries the signed node certificate and the CA. After a
// CA rotation it also carries what the joiner needs to be verified by,
// and to verify, nodes that know only an older root: the chain from the
// CA down to the oldest root still trusted (cross-signed roots, newest
// first) and the previous roots (newest first). All DER.
type JoinResponse struct {
	Cert  []byte
	CA    []byte
	Chain [][]byte `json:",omitempty"`
	Roots [][]byte `json:",omitempty"`
}

// AddPeerRequest adds the calling node (named by its certificate) to raft.
// The leader checks both fields against the caller: NodeID must be the ID
// the catalog holds for the certificate's node name, and Addr's host the
// address the call comes from.
type AddPeerRequest struct {
	NodeID string
	Addr   string
}

// AddPeerResponse says how the node was added.
type AddPeerResponse struct{ Voter bool }

// ForwardRequest is an encoded command for the leader to apply. Token
// is the ACL token of the request that made it, for the leader to
// authorize a cluster-wide write (acl.go).
type ForwardRequest struct {
	Command []byte
	Token   string `json:",omitempty"`
	// Traceparent is the forwarding node's span (trace.go): the leader's
	// apply span continues its trace. Older leaders ignore it.
	Traceparent string `json:",omitempty"`
}

// ForwardResponse is the leader's answer; ErrCode names a catalog error.
type ForwardResponse struct {
	Index   uint64
	ErrCode string
	ErrMsg  string
}

// HeartbeatRequest says the calling node is alive.
type HeartbeatRequest struct {
	NodeID string
	Addr   string
}

// LeaveRequest removes the calling node from the cluster. NodeID must be
// the ID the catalog holds for the certificate's node name: a node leaves
// only itself.
type LeaveRequest struct {
	NodeID string
	Force  bool
}

// ReadIndexResponse is the leader's commit index after it confirmed its
// leadership: a follower that has applied it serves a consistent read.
type ReadIndexResponse struct{ Index uint64 }

// MembersResponse lists the cluster's nodes as the leader sees them.
type MembersResponse struct{ Members []Member }

// StatsResponse is a server's raft progress, for autopilot.
type StatsResponse struct {
	LastTerm    uint64
	LastIndex   uint64
	LastContact int64 // ms since the leader was last heard; -1 never
}

// Empty is an empty message.
type Empty struct{}

type rpcHandler[Req, Resp any] func(s *Server, ctx context.Context, req *Req) (*Resp, error)

func method[Req, Resp any](name string, h rpcHandler[Req, Resp]) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(srv any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
			req := new(Req)
			if err := dec(req); err != nil {
				return nil, err
			}
			call := func(ctx context.Context, req any) (any, error) { return h(srv.(*Server), ctx, req.(*Req)) }
			if intercept == nil {
				return call(ctx, req)
			}
			return intercept(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + rpcService + "/" + name}, call)
		},
	}
}

type rpcServer interface{ isRPCServer() }

func (s *Server) isRPCServer() {}

var clusterServiceDesc = grpc.ServiceDesc{
	ServiceName: rpcService,
	HandlerType: (*rpcServer)(nil),
	Methods: []grpc.MethodDesc{
		method("Join", (*Server).rpcJoin),
		method("AddPeer", (*Server).rpcAddPeer),
		method("Forward", (*Server).rpcForward),
		method("Heartbeat", (*Server).rpcHeartbeat),
		method("Leave", (*Server).rpcLeave),
		method("ReadIndex", (*Server).rpcReadIndex),
		method("Members", (*Server).rpcMembers),
		method("Stats", (*Server).rpcStats),
		method("KVRead", (*Server).rpcKVRead),
		method("ResolveToken", (*Server).rpcResolveToken),
		method("ACLRead", (*Server).rpcACLRead),
		method("SignLeaf", (*Server).rpcSignLeaf),
		method("RenewNode", (*Server).rpcRenewNode),
		method("Txn", (*Server).rpcTxn),                             // sessions.go
		method("SessionRenew", (*Server).rpcSessionRenew),           // sessions.go
		method("RemoveNode", (*Server).rpcRemoveNode),               // revoke.go
		method("RotateCA", (*Server).rpcRotateCA),                   // rotate.go
		method("TransferLeader", (*Server).rpcTransferLeader),       // operator.go
		method("AutopilotState", (*Server).rpcAutopilotState),       // operator.go
		method("RaftConfiguration", (*Server).rpcRaftConfiguration), // operator.go
		method("Restore", (*Server).rpcRestore),                     // operator.go
	},
	Streams: []grpc.StreamDesc{subscribeStreamDesc},
}

// peerNode returns the calling node's name from its verified certificate,
// which must be valid now and not revoked.
func (s *Server) peerNode(ctx context.Context) (string, error) {
	return s.peerNodeFor(ctx, useCluster, 0)
}

// peerNodeFor returns the calling node's name from its verified
// certificate if admitPeer lets it be used for use.
func (s *Server) peerNodeFor(ctx context.Context, use peerUse, grace time.Duration) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return "", status.Error(codes.Unauthenticated, "this call needs a node certificate of this cluster")
	}
	// The listener verified the chain; the name is in the SPIFFE ID.
	cert := ti.State.PeerCertificates[0]
	name, err := nodeNameFromCert(cert)
	if err != nil {
		return "", err
	}
	if s.cluster == nil {
		return "", status.Error(codes.Unavailable, ErrNotInCluster.Error())
	}
	if err := s.cluster.cfg.Identity.admitPeer(name, cert, use, time.Now(), grace); err != nil {
		code := codes.Unauthenticated
		if errors.Is(err, ErrRevoked) {
			code = codes.PermissionDenied
		}
		return "", status.Errorf(code, "node %q: %v", name, err)
	}
	return name, nil
}

// peerCert is the caller's verified leaf certificate, or nil.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	return ti.State.PeerCertificates[0]
}

func nodeNameFromCert(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", status.Error(codes.Unauthenticated, "certificate has no SPIFFE ID")
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "certificate has no valid SPIFFE ID")
	}
	name, err := nodeName(id, id.TrustDomain())
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "certificate is not a node certificate")
	}
	return name, nil
}

// peerIP is the source address of the call, which the leader compares with
// the address a node asks to be reached at.
func peerIP(ctx context.Context) net.IP {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		return a.IP
	}
	return nil
}

// refusedReason marks a leader's answer that is a verdict, not a "try
// the leader again": both travel as FailedPrecondition, so a caller that
// follows the leader must tell them apart.
const (
	refusedQuorum = "QUORUM"
	refusedLeader = "LEADER" // revoke.go: the leader does not remove itself
)

func refusedStatus(reason, msg string) error {
	st := status.New(codes.FailedPrecondition, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "vmesh"}); err == nil {
		st = d
	}
	return st.Err()
}

func refusedFor(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == "vmesh" {
			return info.Reason
		}
	}
	return ""
}

// isNotLeader reports whether err is a follower's "not the leader" answer.
func isNotLeader(err error) bool {
	return status.Code(err) == codes.FailedPrecondition && refusedFor(err) == ""
}

// rpcClients caches one gRPC connection per peer address, made with the
// identity's current node certificate. A server checks the certificate
// of a connection, not of each call, so after a renewal the connections
// made with the old one are retired: new calls dial again, and calls in
// flight get retireAfter to finish.
type rpcClients struct {
	id *Identity
	// source is the advertised host: calls leave from it, so the leader
	// sees them come from the address the node asks to be reached at.
	source net.IP

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	epoch   uint64 // the identity's epoch the conns were made with
	retired []retiredConns
}

type retiredConns struct {
	timer *time.Timer
	conns map[string]*grpc.ClientConn
	at    time.Time
}

// retireAfter is how long a connection made with a renewed certificate
// stays open for the calls already on it.
const retireAfter = time.Minute

// dial binds the connection's source to the advertised host when this
// host has that address; otherwise it lets the kernel choose.
func (c *rpcClients) dial(ctx context.Context, addr string) (net.Conn, error) {
	if c.source != nil && !c.source.IsUnspecified() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: c.source}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if !errors.Is(err, syscall.EADDRNOTAVAIL) {
			return conn, err
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (c *rpcClients) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.id.epoch(); e != c.epoch {
		c.retire()
		c.epoch = e
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithContextDialer(c.dial),
		grpc.WithTransportCredentials(credentials.NewTLS(c.id.clientTLS(alpnRPC))),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{})))
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = map[string]*grpc.ClientConn{}
	}
	c.conns[addr] = cc
	return cc, nil
}

// retire closes the cached connections after retireAfter. c.mu is held.
func (c *rpcClients) retire() {
	now := time.Now()
	// Forget the ones whose timer has long fired.
	c.retired = slices.DeleteFunc(c.retired, func(r retiredConns) bool { return now.Sub(r.at) > 2*retireAfter })
	if len(c.conns) == 0 {
		return
	}
	old := c.conns
	c.conns = nil
	c.retired = append(c.retired, retiredConns{conns: old, at: now, timer: time.AfterFunc(retireAfter, func() { closeConns(old) })})
}

func closeConns(conns map[string]*grpc.ClientConn) {
	for _, cc := range conns {
		cc.Close()
	}
}

func (c *rpcClients) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.retired {
		if r.timer.Stop() { // not fired yet: close them here
			closeConns(r.conns)
		}
	}
	c.retired = nil
	closeConns(c.conns)
	c.conns = nil
}

// call invokes method on addr.
func (c *rpcClients) call(ctx context.Context, addr, name string, req, resp any) error {
	cc, err := c.get(addr)
	if err != nil {
		return err
	}
	return cc.Invoke(ctx, "/"+rpcService+"/"+name, req, resp)
}

// rpcErr turns a gRPC status into an error with the server's message; a
// refusal the caller can test for keeps its sentinel.
func rpcErr(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch {
	case refusedFor(err) == refusedQuorum:
		return &remoteError{sentinel: ErrQuorum, msg: st.Message()}
	case refusedFor(err) == refusedLeader:
		return &remoteError{sentinel: ErrIsLeader, msg: st.Message()}
	case st.Code() == codes.PermissionDenied && strings.HasPrefix(st.Message(), acl.ErrPermissionDenied.Error()):
		return &remoteError{sentinel: acl.ErrPermissionDenied, msg: st.Message()}
	case st.Code() == codes.PermissionDenied && st.Message() == acl.ErrNotFound.Error():
		return &remoteError{sentinel: acl.ErrNotFound, msg: st.Message()}
	case st.Code() == codes.NotFound:
		return &remoteError{sentinel: discovery.ErrNotFound, msg: st.Message()}
	case st.Code() == codes.InvalidArgument:
		return &remoteError{sentinel: discovery.ErrInvalid, msg: st.Message()}
	case st.Code() == codes.PermissionDenied:
		return &remoteError{sentinel: ErrPermissionDenied, msg: st.Message()}
	}
	return errors.New(st.Message())
}
