package raft

import (
	"context"
	"fmt"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Revocation: a node that leaves (Leave) or that an operator removes
// (RemoveNode) is revoked before it is taken out, so from that moment its
// node certificates open nothing on the cluster port (trust.go). Reaping a
// node that was silent for ReapAfter, and autopilot's removal of a dead
// server, revoke nothing: a host that was only down comes back by itself.

// Revocation reasons, as logs and the deny list's refusals name them.
const (
	reasonLeft    = "left the cluster"
	reasonRemoved = "removed by an operator"
)

// revocationKeep is how long a revocation is kept: until every
// certificate it denies has expired (it was issued before the revocation,
// for at most NodeCertTTL) and is past the renewal grace, in which an
// expired certificate may still renew itself (admitPeer), with an hour
// for clocks.
func (s *Server) revocationKeep() time.Duration {
	return s.cluster.cfg.NodeCertTTL + s.cluster.cfg.RenewGrace + time.Hour
}

// RemoveNodeRequest asks the leader to remove a node and revoke its
// certificates. The caller must be a server.
type RemoveNodeRequest struct{ Node string }

// revokeNode has the catalog deny node's certificates issued up to now.
// Leader only.
func (s *Server) revokeNode(ctx context.Context, node, reason string) error {
	idx, err := s.applyCmd(ctx, discovery.RevocationRequest{Op: discovery.RevocationAdd,
		Revocation: discovery.Revocation{Node: node, Reason: reason, At: time.Now().Unix()}})
	if err != nil {
		return fmt.Errorf("revoking node %q: %w", node, err)
	}
	s.logger.Info("revoked a node's certificates", "node", node, "reason", reason, "index", idx)
	return nil
}

// RemoveNode removes node from the cluster (raft and the catalog) and
// revokes its certificates, as an operator's decision: the node need not
// be reachable, and it comes back only by joining again with a new token.
// A follower forwards it to the leader.
func (s *Server) RemoveNode(ctx context.Context, node string) error {
	if s.cluster == nil {
		return ErrNotInCluster
	}
	if s.IsLeader() {
		if err := s.removeByOperator(ctx, s.cluster.cfg.Identity.Name, node); err != nil {
			return rpcErr(err)
		}
		return nil
	}
	return s.leaderCall(ctx, "RemoveNode", &RemoveNodeRequest{Node: node}, &Empty{}, false)
}

func (s *Server) rpcRemoveNode(ctx context.Context, req *RemoveNodeRequest) (*Empty, error) {
	caller, err := s.serverCallerAtLeader(ctx, fmt.Sprintf("removing node %q", req.Node))
	if err != nil {
		return nil, err
	}
	if err := s.removeByOperator(ctx, caller, req.Node); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

// serverCallerAtLeader is the prologue of an operator's RPC: this
// server is the leader, and the calling node (from its certificate) is a
// server. A client's certificate, which a compromised host holds, acts
// for no operator. what names the act in the refusal ("removing node
// x"); the caller's name comes back for the audit trail.
func (s *Server) serverCallerAtLeader(ctx context.Context, what string) (string, error) {
	caller, err := s.peerNode(ctx)
	if err != nil {
		return "", err
	}
	if !s.IsLeader() {
		return "", s.notLeader(ctx)
	}
	if !s.isServerNode(caller) {
		return "", status.Errorf(codes.PermissionDenied, "%s refused: node %q is not a server; run it against a server's HTTP API", what, caller)
	}
	return caller, nil
}

// isServerNode says whether the catalog records name as a server (or,
// from before roles were recorded, holds it in the raft configuration).
func (s *Server) isServerNode(name string) bool {
	_, n, _, err := s.store.Node(nil, name)
	if err != nil || n == nil {
		return false
	}
	switch NodeRole(n) {
	case RoleServer:
		return true
	case "":
		return s.inRaft(n.ID)
	}
	return false
}

// removeByOperator is RemoveNode on the leader; by names the server the
// operator asked. It returns gRPC statuses.
func (s *Server) removeByOperator(ctx context.Context, by, node string) error {
	if node == "" {
		return status.Error(codes.InvalidArgument, "node: a node name is required")
	}
	if node == s.cluster.cfg.Identity.Name {
		return refusedStatus(refusedLeader, fmt.Sprintf("node %q is the leader; run 'vmesh leave' on it (it hands over leadership first), or remove it once another server leads", node))
	}
	_, n, _, err := s.store.Node(nil, node)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	id := ""
	if n != nil {
		id = n.ID
		if err := s.leaveAllowed(id); err != nil {
			return refusedStatus(refusedQuorum, err.Error())
		}
	}
	// The revocation first: once removal starts, the node's certificate
	// opens nothing, even if the rest fails (run the removal again).
	if err := s.revokeNode(ctx, node, reasonRemoved); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	if n == nil {
		// Not in the catalog (reaped, or a name never seen): its
		// certificates are revoked all the same.
		s.logger.Info("an operator removed a node the catalog does not hold: revoked only", "node", node, "by", by)
		return nil
	}
	if err := s.removeNode(ctx, node, id); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	s.logger.Info("an operator removed a node", "node", node, "by", by)
	return nil
}

// reapRevocations, on the leader, deletes revocations whose certificates
// have all expired.
func (s *Server) reapRevocations(ctx context.Context, now time.Time) {
	_, revs, err := s.store.Revocations(nil)
	if err != nil {
		return
	}
	for _, r := range revs {
		if now.Sub(time.Unix(r.At, 0)) < s.revocationKeep() {
			continue
		}
		if _, err := s.applyCmd(ctx, discovery.RevocationRequest{Op: discovery.RevocationDelete,
			Revocation: discovery.Revocation{Node: r.Node, Index: r.Index}}); err != nil {
			s.logger.Warn("deleting an expired revocation", "node", r.Node, "err", err)
			return
		}
	}
}

// refuseRevoked is the cluster RPC's check of every call: a connection
// whose handshake passed before its node was revoked is refused on its
// next call, and a replica stream on its next event (stream.go). It asks
// admitPeer as the handshake does (the deny list; expiry is for each
// RPC's peerNodeFor to judge, which knows the call's use).
func (s *Server) refuseRevoked(ctx context.Context) error {
	cert := peerCert(ctx)
	if cert == nil || s.cluster == nil {
		return nil // a joiner: only Join answers it
	}
	name, err := nodeNameFromCert(cert)
	if err != nil {
		return err
	}
	if err := s.cluster.cfg.Identity.admitPeer(name, cert, useHandshake, time.Now(), 0); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

func (s *Server) unaryRefuseRevoked(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !s.raftUp.Load() {
		return nil, errRaftStarting
	}
	if err := s.refuseRevoked(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamRefuseRevoked(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !s.raftUp.Load() {
		return errRaftStarting
	}
	if err := s.refuseRevoked(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

// errRaftStarting answers a call that arrives while this server's cluster
// port is open but its raft is not created yet (a restart); the caller
// tries another server or again.
var errRaftStarting = status.Error(codes.Unavailable, "raft is starting on this server")
