package raft

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// JoinParams describe a node asking to join a cluster.
type JoinParams struct {
	// Addr is any member's cluster address; a follower redirects to the
	// leader.
	Addr     string
	Token    string
	NodeName string
	NodeID   string
	DataDir  string
	// Role is RoleServer or RoleClient ("" is a server).
	Role string
}

// Join asks a cluster for a node certificate: it checks that the member it
// reaches presents the CA the token pins, sends a CSR (the key never leaves
// this node) and the token, and stores the identity it gets in DataDir.
// Adding the node to raft happens after its raft is up (AddSelf).
func Join(ctx context.Context, p JoinParams) (*Identity, error) {
	tok, err := ParseToken(p.Token)
	if err != nil {
		return nil, err
	}
	key, csr, err := newNodeKey(p.NodeName)
	if err != nil {
		return nil, err
	}
	req := &JoinRequest{TokenID: tok.ID, Secret: tok.Secret, NodeName: p.NodeName, NodeID: p.NodeID, CSR: csr, Role: p.Role}
	var resp JoinResponse
	var pinned *x509.Certificate
	addr := p.Addr
	// A follower redirects to the leader (a few hops at most); while the
	// cluster elects one (a member joined a moment ago, a leader died),
	// the same member is asked again with back-off, for up to 30 s.
	backoff, electionUntil := 100*time.Millisecond, time.Now().Add(30*time.Second)
	for hop := 0; ; {
		pinned, err = joinCall(ctx, addr, tok.Fingerprint, req, &resp)
		leader, redirect := redirectTarget(err)
		if redirect && hop < 3 {
			addr, hop = leader, hop+1
			continue
		}
		if !electing(err) || time.Now().After(electionUntil) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("joining: %w (while the cluster had no leader: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(resp.CA)
	if err != nil {
		return nil, fmt.Errorf("joining: bad CA in the answer: %w", err)
	}
	cert, err := x509.ParseCertificate(resp.Cert)
	if err != nil {
		return nil, fmt.Errorf("joining: bad node certificate in the answer: %w", err)
	}
	chain, err := parseDERs(resp.Chain)
	if err != nil {
		return nil, fmt.Errorf("joining: bad chain in the answer: %w", err)
	}
	prev, err := parseDERs(resp.Roots)
	if err != nil {
		return nil, fmt.Errorf("joining: bad previous roots in the answer: %w", err)
	}
	if Fingerprint(ca) != tok.Fingerprint {
		// The CA was rotated since the root the token pins: the new
		// certificate must verify up to that root through the chain of
		// cross-signed roots (trust.go).
		opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if pinned != nil {
			opts.Roots.AddCert(pinned)
		}
		for _, c := range append(chain, ca) {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cert.Verify(opts); err != nil {
			return nil, fmt.Errorf("%w: answer carries CA %s, which the root the token pins (%s) does not vouch for: %v", ErrCAFingerprint, Fingerprint(ca), tok.Fingerprint, err)
		}
	}
	id, err := newIdentityChain(append([]*x509.Certificate{ca}, prev...), chain, cert, key)
	if err != nil {
		return nil, err
	}
	if err := id.save(p.DataDir); err != nil {
		return nil, fmt.Errorf("saving the node identity: %w", err)
	}
	return id, nil
}

// electing says whether err is a not-leader answer that names no leader:
// an election is under way.
func electing(err error) bool {
	var re *redirectErr
	return errors.As(err, &re) && re.leader == ""
}

// redirectTarget reads the leader's address from a not-leader answer.
func redirectTarget(err error) (string, bool) {
	var re *redirectErr
	if errors.As(err, &re) && re.leader != "" {
		return re.leader, true
	}
	return "", false
}

type redirectErr struct{ leader string }

func (e *redirectErr) Error() string {
	if e.leader == "" {
		return "not the leader, and no leader is known yet (an election is under way)"
	}
	return "not the leader; leader is " + e.leader
}

func parseDERs(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// joinCall makes the Join RPC over TLS that trusts exactly the CA whose
// fingerprint the token pins: the member presents it after its own
// certificate (presentedChain), and its certificate must verify up to it.
// It returns that CA certificate.
func joinCall(ctx context.Context, addr, fingerprint string, req *JoinRequest, resp *JoinResponse) (*x509.Certificate, error) {
	var seenFP string
	var pinned *x509.Certificate
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpnRPC},
		InsecureSkipVerify: true, // verified below against the pinned CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs, err := parseDERs(raw)
			if err != nil {
				return err
			}
			if len(certs) < 2 {
				return fmt.Errorf("%w: the member sent no CA certificate", ErrCAFingerprint)
			}
			seenFP = Fingerprint(certs[len(certs)-1])
			want, _ := hex.DecodeString(fingerprint)
			inter := x509.NewCertPool()
			var ca *x509.Certificate
			for _, c := range certs[1:] {
				got := sha256.Sum256(c.Raw)
				if subtle.ConstantTimeCompare(want, got[:]) == 1 {
					ca = c
				} else {
					inter.AddCert(c)
				}
			}
			if ca == nil {
				return fmt.Errorf("%w: %s presented CA %s but the token pins %s (wrong cluster, or someone in between)", ErrCAFingerprint, addr, seenFP, fingerprint)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			pinned, seenFP = ca, fingerprint
			return nil
		},
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{})))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var trailer metadata.MD
	err = cc.Invoke(ctx, "/"+rpcService+"/Join", req, resp, grpc.Trailer(&trailer), grpc.WaitForReady(false))
	if err == nil {
		return pinned, nil
	}
	if status.Code(err) == codes.FailedPrecondition && strings.HasPrefix(status.Convert(err).Message(), "not the leader") {
		l := trailer.Get("vmesh-leader")
		if len(l) == 1 && l[0] != "" {
			return nil, &redirectErr{leader: l[0]}
		}
		return nil, &redirectErr{} // no leader yet: an election
	}
	if seenFP != "" && seenFP != fingerprint {
		return nil, fmt.Errorf("%w: %s presented CA %s but the token pins %s", ErrCAFingerprint, addr, seenFP, fingerprint)
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.PermissionDenied, codes.Unauthenticated, codes.AlreadyExists, codes.InvalidArgument:
			return nil, fmt.Errorf("%w by %s: %s", ErrJoinRefused, addr, st.Message())
		case codes.Unavailable:
			return nil, fmt.Errorf("joining %s: cannot reach the cluster port: %s", addr, st.Message())
		}
		return nil, fmt.Errorf("joining %s: %s", addr, st.Message())
	}
	return nil, err
}

func (s *Server) rpcJoin(ctx context.Context, req *JoinRequest) (*JoinResponse, error) {
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	tok, err := s.store.Token(req.TokenID)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if tok == nil || !tok.SecretMatches(req.Secret) {
		return nil, status.Error(codes.PermissionDenied, "invalid join token: "+discovery.ErrTokenUnknown.Error())
	}
	now := time.Now()
	// The same verdicts as the FSM's, read first so that a refused join
	// writes nothing; the FSM decides again when the use is spent.
	if err := tokenVerdict(tok, now.Unix()); err != nil {
		return nil, joinTokenStatus(err)
	}
	if req.NodeName == "" || req.NodeID == "" {
		return nil, status.Error(codes.InvalidArgument, "NodeName and NodeID are required")
	}
	_, n, _, err := s.store.Node(nil, req.NodeName)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// A token admits a new node, never an impostor: the name of a node
	// in the catalog that is heartbeating is not for anyone else, whatever
	// ID the joiner claims. A departed node (deregistered) or a silent one
	// is not protected by this check.
	if n != nil && s.nodeHeartbeating(req.NodeName, now) {
		return nil, status.Errorf(codes.AlreadyExists, "node name %q belongs to a live node (it is taken by node %s, which is heartbeating); pick another name, or stop that node and wait until it is marked critical",
			req.NodeName, n.ID)
	}
	if n != nil && n.ID != req.NodeID {
		return nil, status.Errorf(codes.AlreadyExists, "node name %q is taken by node %s; pick another name or make that node leave", req.NodeName, n.ID)
	}
	role, err := joinRole(req.Role)
	if err != nil {
		return nil, err
	}
	if cur := NodeRole(n); cur != "" && cur != role {
		return nil, status.Errorf(codes.FailedPrecondition, "node %q is recorded as a %s; it joins as a %s only after it leaves (vmesh leave)", req.NodeName, cur, role)
	}
	_, root, err := s.store.CA(nil)
	if err != nil || root == nil {
		return nil, status.Error(codes.Unavailable, "the cluster CA is not ready yet")
	}
	ca, err := s.UnsealCA(root) // custody.go: in memory, for this join only
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "this leader cannot open the cluster CA key: %v", err)
	}
	if _, _, err := ca.checkNodeCSR(req.CSR, req.NodeName); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// Spend the use through raft before signing: of two joiners racing on
	// a single-use token, the log orders them and the second is refused.
	used, err := s.applyCmd(ctx, discovery.TokenUseRequest{ID: tok.ID, Now: now.Unix()})
	if err != nil {
		if st := joinTokenStatus(err); st != nil {
			return nil, st
		}
		return nil, status.Errorf(codes.Unavailable, "spending a use of the join token: %v", err)
	}
	// Issued at the use's index: after any revocation of this name that
	// the log holds before it (trust.go), so a node that left and joins
	// again is not refused.
	cert, err := ca.SignNodeAt(req.CSR, req.NodeName, used, s.cluster.cfg.NodeCertTTL)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if n == nil {
		// The catalog now ties the name to the ID the joiner gave: it is
		// what AddPeer and Leave later check the certificate's name
		// against. The agent registers its full node once it runs.
		node := discovery.Node{Name: req.NodeName, ID: req.NodeID, Meta: map[string]string{RoleMetaKey: role}}
		if ip := peerIP(ctx); ip != nil {
			node.Address = ip.String()
		}
		if _, err := s.applyCmd(ctx, discovery.RegisterNodeRequest{Node: node}); err != nil {
			return nil, status.Errorf(codes.Unavailable, "recording node %q: %v", req.NodeName, err)
		}
	}
	s.logger.Info("signed a certificate for a joining node", "node", req.NodeName, "role", role, "token", req.TokenID)
	chain, roots, err := trustDERs(root)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &JoinResponse{Cert: cert.Raw, CA: ca.Cert.Raw, Chain: chain, Roots: roots}, nil
}

// tokenVerdict is the FSM's TokenUse check without the write.
func tokenVerdict(t *discovery.JoinToken, now int64) error {
	switch {
	case t.Revoked:
		return discovery.ErrTokenRevoked
	case t.Expired(now):
		return fmt.Errorf("%w at %s", discovery.ErrTokenExpired, time.Unix(t.ExpiresAt, 0).UTC().Format(time.RFC3339))
	case t.UsesLeft < 1:
		return discovery.ErrTokenUsed
	}
	return nil
}

// joinTokenStatus is what a joiner reads for a token refusal, or nil when
// err is not one.
func joinTokenStatus(err error) error {
	switch {
	case errors.Is(err, discovery.ErrTokenExpired):
		return status.Errorf(codes.PermissionDenied, "invalid join token: %v; create a new one with 'vmesh token create'", err)
	case errors.Is(err, discovery.ErrTokenUsed), errors.Is(err, discovery.ErrTokenRevoked), errors.Is(err, discovery.ErrTokenUnknown):
		return status.Errorf(codes.PermissionDenied, "invalid join token: %v", err)
	}
	return nil
}

// nodeHeartbeating says whether this leader heard from the node named
// name within the node TTL (the leader itself always is). Only a node's
// own certificate can send its heartbeat, so a claim in a join request
// cannot fake it.
func (s *Server) nodeHeartbeating(name string, now time.Time) bool {
	if name == s.cluster.cfg.Identity.Name {
		return true
	}
	v, ok := s.cluster.live.get(name)
	return ok && now.Sub(v.at) <= s.cluster.cfg.NodeTTL
}

// AddSelf asks the leader to add this node to raft, as a voter while there
// are fewer than the cap, else as a nonvoter. seed is any member's
// address, used while this node does not know the leader yet.
func (s *Server) AddSelf(ctx context.Context, seed string) (voter bool, err error) {
	req := &AddPeerRequest{NodeID: s.nodeID, Addr: s.Addr()}
	addr := seed
	for hop := 0; hop < 5; hop++ {
		var resp AddPeerResponse
		var trailer metadata.MD
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		cc, gerr := s.cluster.clients.get(addr)
		if gerr != nil {
			cancel()
			return false, gerr
		}
		err = cc.Invoke(cctx, "/"+rpcService+"/AddPeer", req, &resp, grpc.Trailer(&trailer))
		cancel()
		if err == nil {
			return resp.Voter, nil
		}
		if isNotLeader(err) {
			if l := trailer.Get("vmesh-leader"); len(l) == 1 && l[0] != "" && l[0] != s.Addr() {
				addr = l[0]
				continue
			}
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		return false, rpcErr(err)
	}
	return false, fmt.Errorf("adding this node to raft: %w", rpcErr(err))
}

// callerNode checks that the certificate's node is the node ID the call
// names: the catalog ties each name to its ID (rpcJoin records it), so a
// node acts only on itself.
func (s *Server) callerNode(ctx context.Context, name, id, what string) error {
	_, n, _, err := s.store.Node(nil, name)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	if n == nil {
		return status.Errorf(codes.PermissionDenied, "%s refused: the catalog holds no node %q (removed or reaped); join again with a token", what, name)
	}
	if n.ID != id {
		return status.Errorf(codes.PermissionDenied, "%s refused: the certificate names node %q, which is node ID %s, not %s; a node acts only on itself", what, name, n.ID, id)
	}
	return nil
}

func (s *Server) rpcAddPeer(ctx context.Context, req *AddPeerRequest) (*AddPeerResponse, error) {
	name, err := s.peerNode(ctx)
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	if err := s.callerNode(ctx, name, req.NodeID, "adding to raft"); err != nil {
		return nil, err
	}
	if _, n, _, _ := s.store.Node(nil, name); NodeRole(n) == RoleClient {
		return nil, status.Errorf(codes.PermissionDenied, "adding to raft refused: node %q joined as a client; only servers are raft members (leave, then join again with -server)", name)
	}
	// The address must be the caller's own: its host is where the call
	// comes from, so no node can point another's raft ID, or a new one,
	// at an address it does not hold.
	host, _, err := net.SplitHostPort(req.Addr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "Addr %q: %v", req.Addr, err)
	}
	src := peerIP(ctx)
	if ip := net.ParseIP(host); ip == nil || src == nil || !ip.Equal(src) {
		return nil, status.Errorf(codes.PermissionDenied, "adding to raft refused: address %s is not where node %q calls from (%v); advertise an address of the node itself", req.Addr, name, src)
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	voters := 0
	for _, srv := range f.Configuration().Servers {
		if srv.ID == hraft.ServerID(req.NodeID) {
			if srv.Address == hraft.ServerAddress(req.Addr) {
				return &AddPeerResponse{Voter: srv.Suffrage == hraft.Voter}, nil
			}
		} else if srv.Address == hraft.ServerAddress(req.Addr) {
			return nil, status.Errorf(codes.PermissionDenied, "adding to raft refused: address %s belongs to server %s", req.Addr, srv.ID)
		}
		if srv.Suffrage == hraft.Voter {
			voters++
		}
	}
	voter := voters < s.cluster.cfg.Voters
	var fut hraft.IndexFuture
	if voter {
		fut = s.raft.AddVoter(hraft.ServerID(req.NodeID), hraft.ServerAddress(req.Addr), 0, 30*time.Second)
	} else {
		fut = s.raft.AddNonvoter(hraft.ServerID(req.NodeID), hraft.ServerAddress(req.Addr), 0, 30*time.Second)
	}
	if err := fut.Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "adding %s to raft: %v", name, err)
	}
	s.cluster.live.mark(name, req.NodeID, req.Addr, time.Now())
	s.logger.Info("added a node to raft", "node", name, "addr", req.Addr, "voter", voter)
	// A raft member signs: seal the CA key to the key in its certificate.
	// A failure here is healed by its heartbeats (custody.go).
	if cert := peerCert(ctx); cert != nil {
		if err := s.sealCAFor(ctx, name, cert.PublicKey); err != nil {
			s.logger.Warn("sealing the CA key to a new server", "node", name, "err", err)
		}
	}
	return &AddPeerResponse{Voter: voter}, nil
}

// Leave takes this node out of the cluster: if it leads, it checks the
// quorum and hands leadership over first; then the leader removes it
// from raft and the catalog. Unless force, it is refused (ErrQuorum) when
// the voters left healthy would be fewer than a quorum of the current
// voters; the refusal comes before anything changes.
func (s *Server) Leave(ctx context.Context, force bool) error {
	if s.cluster == nil {
		return ErrNotInCluster
	}
	if s.IsLeader() {
		if !force {
			if err := s.leaveAllowed(s.nodeID); err != nil {
				return err
			}
		}
		if err := s.transferLeadership(); err != nil {
			if !force {
				return err
			}
			s.logger.Warn("leaving without handing over leadership (forced)", "err", err)
			s.leaving.Store(true)
			return nil
		}
	}
	// From here on the node does not add itself back (rejoinLoop).
	s.leaving.Store(true)
	req := &LeaveRequest{NodeID: s.nodeID, Force: force}
	err := s.leaderCall(ctx, "Leave", req, &Empty{}, false)
	if err != nil {
		s.leaving.Store(false)
	}
	return err
}

func (s *Server) transferLeadership() error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	others := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == hraft.Voter && srv.ID != hraft.ServerID(s.nodeID) {
			others++
		}
	}
	if others == 0 {
		return fmt.Errorf("%w: this node is the only voter; the cluster would have none", ErrQuorum)
	}
	if err := s.raft.LeadershipTransfer().Error(); err != nil {
		return fmt.Errorf("handing over leadership: %w", err)
	}
	return nil
}

func (s *Server) rpcLeave(ctx context.Context, req *LeaveRequest) (*Empty, error) {
	name, err := s.peerNode(ctx)
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	if err := s.callerNode(ctx, name, req.NodeID, "leave"); err != nil {
		return nil, err
	}
	if req.NodeID == s.nodeID {
		return nil, status.Error(codes.FailedPrecondition, "the leader cannot remove itself; it hands over leadership first")
	}
	if err := s.leaveAllowed(req.NodeID); err != nil && !req.Force {
		return nil, refusedStatus(refusedQuorum, err.Error())
	}
	// A node that leaves is revoked first (revoke.go): its certificate,
	// copied or kept, opens nothing from here on.
	if err := s.revokeNode(ctx, name, reasonLeft); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if err := s.removeNode(ctx, name, req.NodeID); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	s.logger.Info("node left the cluster", "node", name, "forced", req.Force)
	return &Empty{}, nil
}

// leaveAllowed refuses a voter's leave that would leave fewer healthy
// voters than a quorum of the current voter set. A voter counts as healthy
// when it heartbeated within leaveFreshness, which is shorter than the
// node TTL: a server killed a few seconds ago must not count.
func (s *Server) leaveAllowed(id string) error {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	voters, healthy, isVoter := 0, 0, false
	now := time.Now()
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != hraft.Voter {
			continue
		}
		voters++
		if string(srv.ID) == id {
			isVoter = true
			continue
		}
		if string(srv.ID) == s.nodeID || s.serverSeenWithin(string(srv.ID), now, s.leaveFreshness()) {
			healthy++
		}
	}
	if !isVoter {
		return nil
	}
	if quorum := voters/2 + 1; healthy < quorum {
		return fmt.Errorf("%w: leaving would leave %d healthy of %d voters, and the cluster needs %d to accept writes; repair or add a server first, or leave with -force",
			ErrQuorum, healthy, voters, quorum)
	}
	return nil
}

// leaveFreshness is how recent a voter's heartbeat must be for a leave to
// count it as healthy.
func (s *Server) leaveFreshness() time.Duration {
	return min(3*s.cluster.cfg.HeartbeatInterval, s.cluster.cfg.NodeTTL)
}

// serverAlive reports whether the node with raft ID id has heartbeated
// within the TTL.
func (s *Server) serverAlive(id string, now time.Time) bool {
	return s.serverSeenWithin(id, now, s.cluster.cfg.NodeTTL)
}

// serverSeenWithin reports whether the node with raft ID id has
// heartbeated within d (the start of this leadership counts).
func (s *Server) serverSeenWithin(id string, now time.Time, d time.Duration) bool {
	s.cluster.live.mu.Lock()
	defer s.cluster.live.mu.Unlock()
	for _, v := range s.cluster.live.nodes {
		if v.id == id {
			return now.Sub(v.at) <= d
		}
	}
	return now.Sub(s.cluster.live.since) <= d
}

// ---- recovery ----

// PeersFile is where an operator puts a peers.json to recover a cluster
// that lost quorum (see docs/cluster.md).
func PeersFile(dataDir string) string { return filepath.Join(dataDir, "raft", "peers.json") }

// recoverFromPeersFile rewrites the raft configuration from peers.json,
// keeping every committed entry, then renames the file so it runs once.
func recoverFromPeersFile(dataDir string, rc *hraft.Config, fsm hraft.FSM, logs *raftboltdb.BoltStore, snaps hraft.SnapshotStore, trans hraft.Transport) (bool, error) {
	path := PeersFile(dataDir)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	conf, err := hraft.ReadConfigJSON(path)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := hraft.RecoverCluster(rc, fsm, logs, logs, snaps, trans, conf); err != nil {
		return false, fmt.Errorf("recovering from %s: %w", path, err)
	}
	if err := os.Rename(path, path+".recovered"); err != nil {
		return true, fmt.Errorf("recovered, but could not rename %s: %w", path, err)
	}
	return true, nil
}

// ---- leadership ----

// monitorLeadership runs leaderLoop while this node leads.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var cur *running
	stop := func() {
		if cur != nil {
			cur.cancel()
			<-cur.done
			cur = nil
		}
	}
	defer stop()
	for {
		select {
		case <-s.done:
			return
		case isLeader := <-s.raft.LeaderCh():
			stop()
			if isLeader {
				ctx, cancel := context.WithCancel(context.Background())
				r := &running{cancel: cancel, done: make(chan struct{})}
				go func() {
					defer close(r.done)
					s.leaderLoop(ctx)
				}()
				cur = r
			}
		}
	}
}

func (s *Server) leaderLoop(ctx context.Context) {
	s.cluster.live.reset(time.Now())
	if err := s.raft.Barrier(30 * time.Second).Error(); err != nil {
		s.logger.Warn("leader barrier failed", "err", err)
		return
	}
	if err := s.storeLocalCA(ctx); err != nil {
		s.logger.Error("storing the cluster CA in raft", "err", err)
	}
	if err := s.reconcileCustody(ctx); err != nil {
		s.logger.Error("checking who holds the CA key", "err", err)
	}
	ap := newAutopilot(s)
	ap.Start(ctx)
	s.autopilot.Store(ap)
	defer func() { s.autopilot.Store(nil); <-ap.Stop() }()
	defer s.startVIPs(ctx)() // vips.go: a VIP for every new service
	// sessions.go: the TTL of every session.
	defer s.startSessionTimers(ctx)()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	reap := time.NewTicker(time.Minute)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.checkLiveness(ctx)
		case now := <-reap.C:
			s.reapTokens(ctx, now)
			s.reapRevocations(ctx, now)  // revoke.go
			s.dropRetiredRoots(ctx, now) // rotate.go
			if err := s.reconcileCustody(ctx); err != nil {
				s.logger.Warn("checking who holds the CA key", "err", err)
			}
		}
	}
}

// storeLocalCA writes the bootstrap node's CA into raft once, its key
// sealed to this node only (custody.go), then drops the key file that
// kept it safe until then.
func (s *Server) storeLocalCA(ctx context.Context) error {
	ca := s.cluster.cfg.LocalCA
	if ca == nil {
		return nil
	}
	if _, cur, _ := s.store.CA(nil); cur == nil {
		self := s.cluster.cfg.Identity
		sk, err := SealCAKey(ca, self.Name, &self.Key().PublicKey)
		if err != nil {
			return err
		}
		td, _ := ca.TrustDomain()
		if _, err := s.applyCmd(ctx, discovery.SetCARequest{CA: discovery.CARoot{
			CertPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
			SealedKeys:  []discovery.SealedCAKey{sk},
			TrustDomain: td.String(), Fingerprint: Fingerprint(ca.Cert),
		}}); err != nil {
			return err
		}
	}
	if s.dataDir != "" {
		os.Remove(filepath.Join(tlsDir(s.dataDir), caKeyFile))
	}
	return nil
}
