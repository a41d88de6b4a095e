package raft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/vmesh/vmesh/discovery"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Cluster errors.
var (
	ErrQuorum = errors.New("raft: leaving would break quorum")
	// ErrPermissionDenied: the leader refused a membership change that
	// the caller's certificate does not allow (see rpcAddPeer, rpcLeave).
	ErrPermissionDenied = errors.New("raft: permission denied")
	ErrInvalidToken     = errors.New("raft: invalid join token")
	ErrTokenExpired     = errors.New("raft: join token expired")
	ErrNameTaken        = errors.New("raft: node name is taken")
	ErrJoinRefused      = errors.New("raft: join refused")
	ErrNotInCluster     = errors.New("raft: this node is not in a cluster")
	// ErrIsLeader: RemoveNode named the leader, which leaves only by
	// handing over leadership first (vmesh leave on it).
	ErrIsLeader      = errors.New("raft: the node is the leader")
	errNoCAInCatalog = errors.New("raft: the cluster CA is not in the catalog yet")
)

// ClusterConfig turns a Server into a cluster member: raft and the cluster
// RPC on one mutual-TLS port.
type ClusterConfig struct {
	Identity *Identity
	// Bind is the cluster port's listen address.
	Bind string
	// Voters caps the voters (1, 3 or 5); every other node is a nonvoter.
	Voters int
	// HeartbeatInterval is how often a node tells the leader it is alive;
	// NodeTTL how long the leader waits before it marks a silent node
	// critical; ReapAfter how long a critical node stays in the catalog.
	HeartbeatInterval time.Duration
	NodeTTL           time.Duration
	ReapAfter         time.Duration
	// LocalCA is the CA a bootstrapping node created; the first leader
	// stores it in raft.
	LocalCA *CA
	// VIPRange is where the leader allocates service VIPs (vips.go;
	// default DefaultVIPRange). Give every voter the same range.
	VIPRange netip.Prefix
	// NodeCertTTL is the lifetime of the node certificates this server
	// signs, and of its own (default DefaultNodeCertTTL); a node may ask
	// for less. RenewGrace is how long after its expiry a node
	// certificate may still renew itself (default DefaultRenewGrace).
	NodeCertTTL time.Duration
	RenewGrace  time.Duration
}

// Defaults of ClusterConfig.
const (
	DefaultVoters            = 3
	DefaultHeartbeatInterval = time.Second
	DefaultNodeTTL           = 10 * time.Second
	DefaultReapAfter         = 72 * time.Hour
)

// NodeCheckID is the node-level check the leader keeps for every node's
// liveness (Consul's serfHealth).
const NodeCheckID = discovery.NodeLivenessCheckID

func (c *ClusterConfig) withDefaults() {
	if c.Voters == 0 {
		c.Voters = DefaultVoters
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = DefaultNodeTTL
	}
	if c.ReapAfter == 0 {
		c.ReapAfter = DefaultReapAfter
	}
	if c.NodeCertTTL == 0 {
		c.NodeCertTTL = DefaultNodeCertTTL
	}
	if c.RenewGrace == 0 {
		c.RenewGrace = DefaultRenewGrace
	}
}

// cluster is the Server's cluster state.
type cluster struct {
	cfg      ClusterConfig
	listener *clusterListener
	layer    *streamLayer
	grpc     *grpc.Server
	clients  *rpcClients
	live     *liveness
}

// startCluster opens the cluster port and returns the raft transport on it
// and the advertised address (with the real port if the configured one
// was 0).
func (s *Server) startCluster(cfg ClusterConfig, advertise string) (hraft.Transport, string, error) {
	cfg.withDefaults()
	l, err := listenCluster(cfg.Bind, cfg.Identity, cfg.RenewGrace, s.logger)
	if err != nil {
		return nil, "", err
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		l.Close()
		return nil, "", fmt.Errorf("cluster address %q: %w", advertise, err)
	}
	if port == "0" {
		port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		advertise = net.JoinHostPort(host, port)
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		l.Close()
		return nil, "", err
	}
	layer := &streamLayer{chanListener: newChanListener(l.raft, l.done, adv), id: cfg.Identity, advertise: adv}
	trans := hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
		Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: newHCLog(s.logger).Named("transport"),
	})
	// Trust the roots and the deny list of this server's catalog (trust.go),
	// on the handshake and again on every call (revoke.go).
	cfg.Identity.followCatalog(s.store, s.logger)
	gs := grpc.NewServer(grpc.Creds(handshakenCreds{}), grpc.ForceServerCodec(jsonCodec{}),
		grpc.ChainUnaryInterceptor(s.unaryRefuseRevoked), grpc.ChainStreamInterceptor(s.streamRefuseRevoked))
	gs.RegisterService(&clusterServiceDesc, s)
	s.cluster = &cluster{
		cfg: cfg, listener: l, grpc: gs, layer: layer,
		clients: &rpcClients{id: cfg.Identity, source: adv.IP},
		live:    newLiveness(),
	}
	go gs.Serve(newChanListener(l.rpc, l.done, l.Addr()))
	return trans, advertise, nil
}

func (c *cluster) close() {
	c.listener.Close()
	c.layer.closeInbound()
	c.grpc.Stop()
	c.clients.closeAll()
}

// Addr is this server's advertised cluster address.
func (s *Server) Addr() string { return string(s.transport.LocalAddr()) }

// ---- forwarding and reads ----

// maxForwardWait bounds how long a write waits for a leader.
const maxForwardWait = 30 * time.Second

// leaderCall calls method on the leader, following the leader as it moves
// and waiting (within ctx) while there is none. retryUnavailable says
// whether a call that may have reached the leader can be sent again.
func (s *Server) leaderCall(ctx context.Context, name string, req, resp any, retryUnavailable bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxForwardWait)
		defer cancel()
	}
	backoff := 25 * time.Millisecond
	for {
		leader, _ := s.raft.LeaderWithID()
		var err error
		if leader == "" {
			err = ErrNoLeader
		} else if string(leader) == s.Addr() {
			return fmt.Errorf("%w: this node became the leader", ErrNotLeader)
		} else {
			err = s.cluster.clients.call(ctx, string(leader), name, req, resp)
			if err == nil {
				return nil
			}
			// Only "not the leader" and, when allowed, "unavailable" are
			// worth another try; a refusal is the leader's answer.
			if !isNotLeader(err) && !(retryUnavailable && status.Code(err) == codes.Unavailable) {
				return rpcErr(err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v (last error: %v)", ErrNoLeader, ctx.Err(), err)
		case <-s.done:
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// forward sends an encoded command to the leader and returns once this
// node has applied it (read-your-writes).
func (s *Server) forward(ctx context.Context, buf []byte) (idx uint64, err error) {
	if s.tracer != nil {
		var span trace.Span
		ctx, span = startWriteSpan(ctx, s.tracer, "raft.forward", trace.SpanKindClient, buf)
		defer func() { endWriteSpan(span, idx, err) }()
	}
	var resp ForwardResponse
	// A call that may have reached a dying leader is sent again: writes
	// are idempotent registrations or carry a CAS index, and only a
	// committed write is ever acknowledged.
	err = s.leaderCall(ctx, "Forward", &ForwardRequest{Command: buf, Token: discovery.TokenFrom(ctx), Traceparent: traceparent(ctx)}, &resp, true)
	if errors.Is(err, ErrNotLeader) && s.IsLeader() {
		return s.applyLocal(ctx, buf)
	}
	if err != nil {
		return 0, err
	}
	if werr := s.waitApplied(ctx, resp.Index); werr != nil {
		return 0, werr
	}
	return resp.Index, decodeRemoteErr(resp.ErrCode, resp.ErrMsg)
}

// waitApplied waits until this node's catalog has applied index.
func (s *Server) waitApplied(ctx context.Context, index uint64) error {
	for {
		ch := s.fsm.appliedCh()
		if s.fsm.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for index %d to apply locally: %w", index, ctx.Err())
		case <-s.done:
			return ErrClosed
		}
	}
}

// Catalog errors cross the RPC as codes and come back as the same
// sentinels, so errors.Is works on a follower as on the leader.
var remoteCodes = map[string]error{
	"cas":      discovery.ErrCASConflict,
	"notfound": discovery.ErrNotFound,
	"invalid":  discovery.ErrInvalid,
	"lost":     ErrLeadershipLost,
	// Wraps ErrInvalid, so encodeRemoteErr looks for it first.
	"agentnode": discovery.ErrAgentNode,
}

type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func encodeRemoteErr(err error) (string, string) {
	if err == nil {
		return "", ""
	}
	if errors.Is(err, discovery.ErrAgentNode) {
		return "agentnode", err.Error()
	}
	for code, sentinel := range remoteCodes {
		if errors.Is(err, sentinel) {
			return code, err.Error()
		}
	}
	return "other", err.Error()
}

func decodeRemoteErr(code, msg string) error {
	if code == "" {
		return nil
	}
	if sentinel, ok := remoteCodes[code]; ok {
		return &remoteError{sentinel: sentinel, msg: msg}
	}
	return errors.New(msg)
}

func (s *Server) rpcForward(ctx context.Context, req *ForwardRequest) (*ForwardResponse, error) {
	caller, err := s.peerNode(ctx)
	if err != nil {
		return nil, err
	}
	if err := authorizeForward(caller, req.Command); err != nil {
		s.logger.Warn("refused a forwarded command", "caller", caller, "err", err)
		return nil, err
	}
	if discovery.MessageType(req.Command[0])&^discovery.IgnoreUnknownTypeFlag == discovery.ACLBootstrapType {
		var b discovery.ACLBootstrapRequest
		if err := decode(req.Command[1:], &b); err != nil || b.ResetIndex != 0 {
			return nil, status.Error(codes.PermissionDenied, "an ACL bootstrap reset is made on the leader itself, with the reset file in its data dir; no node may forward one")
		}
	}
	// A node's own writes carry a token when it has one (an HTTP
	// request's, or its acl.tokens.agent): checked too, on top of the
	// certificate. A cluster-wide write is always checked.
	if rule := forwardRules[discovery.MessageType(req.Command[0])&^discovery.IgnoreUnknownTypeFlag]; rule == forwardAny || (rule == forwardOwnNode && req.Token != "") {
		if err := s.authorizeForwardACL(req.Token, req.Command); err != nil {
			s.logger.Warn("refused a forwarded command by ACL", "caller", caller, "err", err)
			return nil, err
		}
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	cmd, err := s.leaderRoleForward(req.Command) // roles.go: a node never picks its own role
	if err != nil {
		return nil, err
	}
	idx, err := s.applyLocal(withTraceparent(ctx, req.Traceparent), cmd)
	if errors.Is(err, ErrNotLeader) {
		return nil, s.notLeader(ctx)
	}
	code, msg := encodeRemoteErr(err)
	if code == "other" && idx == 0 {
		return nil, status.Error(codes.Internal, msg)
	}
	return &ForwardResponse{Index: idx, ErrCode: code, ErrMsg: msg}, nil
}

// notLeader is the answer of a leader-only call on a follower; the caller
// looks the leader up again and retries.
func (s *Server) notLeader(ctx context.Context) error {
	addr, _ := s.raft.LeaderWithID()
	grpc.SetTrailer(ctx, metadata.Pairs("vmesh-leader", string(addr)))
	return status.Errorf(codes.FailedPrecondition, "not the leader (leader: %q)", addr)
}

func (s *Server) rpcReadIndex(ctx context.Context, _ *Empty) (*ReadIndexResponse, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return nil, s.notLeader(ctx)
	}
	// What the leader's catalog has applied covers every write acknowledged
	// before this call (an ack waits for the leader's apply).
	return &ReadIndexResponse{Index: s.fsm.applied.Load()}, nil
}

func (s *Server) rpcStats(ctx context.Context, _ *Empty) (*StatsResponse, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	return s.localStats(), nil
}

func (s *Server) localStats() *StatsResponse {
	st := s.raft.Stats()
	term, _ := strconv.ParseUint(st["last_log_term"], 10, 64)
	idx, _ := strconv.ParseUint(st["last_log_index"], 10, 64)
	lc := int64(-1)
	if s.IsLeader() {
		lc = 0
	} else if t := s.raft.LastContact(); !t.IsZero() {
		lc = time.Since(t).Milliseconds()
	}
	return &StatsResponse{LastTerm: term, LastIndex: idx, LastContact: lc}
}

// ---- members ----

// Member is one node of the cluster as the leader sees it.
type Member struct {
	Name        string
	ID          string
	Addr        string
	Role        string // leader, voter, nonvoter, none (not in raft)
	NodeRole    string // RoleServer or RoleClient, as the catalog records it
	Status      string // alive, failed
	LastContact time.Duration
}

// Members lists the cluster's nodes; it asks the leader, which alone knows
// every node's liveness, and falls back to a local view without a leader.
func (s *Server) Members(ctx context.Context) ([]Member, error) {
	if s.cluster == nil || s.IsLeader() {
		return s.localMembers()
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var resp MembersResponse
	if err := s.leaderCall(ctx, "Members", &Empty{}, &resp, true); err != nil {
		ms, lerr := s.localMembers()
		if lerr != nil {
			return nil, lerr
		}
		for i := range ms {
			ms[i].Status = "unknown"
		}
		return ms, nil
	}
	return resp.Members, nil
}

func (s *Server) rpcMembers(ctx context.Context, _ *Empty) (*MembersResponse, error) {
	if _, err := s.peerNode(ctx); err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	ms, err := s.localMembers()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &MembersResponse{Members: ms}, nil
}

func (s *Server) localMembers() ([]Member, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	leaderAddr, _ := s.raft.LeaderWithID()
	byID := map[string]*Member{}
	var out []*Member
	for _, srv := range f.Configuration().Servers {
		m := &Member{ID: string(srv.ID), Addr: string(srv.Address), Role: "voter", Status: "alive"}
		if srv.Suffrage != hraft.Voter {
			m.Role = "nonvoter"
		}
		if srv.Address == leaderAddr {
			m.Role = "leader"
		}
		byID[m.ID] = m
		out = append(out, m)
	}
	_, nodes, err := s.store.Nodes(nil)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		m := byID[n.ID]
		if m == nil {
			m = &Member{ID: n.ID, Addr: n.Address, Role: "none", Status: "alive"}
			out = append(out, m)
		}
		m.Name = n.Name
		if m.NodeRole = NodeRole(n); m.NodeRole == "" && m.Role != "none" {
			m.NodeRole = RoleServer
		}
		if s.cluster != nil && s.IsLeader() {
			if seen, ok := s.cluster.live.get(n.Name); ok {
				m.LastContact = time.Since(seen.at)
			}
			if _, chk, _ := s.store.Check(nil, n.Name, NodeCheckID); chk != nil && chk.Status == discovery.HealthCritical {
				m.Status = "failed"
			}
		}
	}
	res := make([]Member, 0, len(out))
	for _, m := range out {
		res = append(res, *m)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Name < res[j].Name })
	return res, nil
}

// ---- liveness ----

type seen struct {
	id, addr string
	at       time.Time
}

// liveness is the leader's memory of when each node last said it was
// alive. It is not replicated: a new leader starts every node's clock at
// the moment it took over.
type liveness struct {
	mu    sync.Mutex
	nodes map[string]seen
	crit  map[string]time.Time // node -> critical since
	since time.Time            // leadership start
}

func newLiveness() *liveness {
	return &liveness{nodes: map[string]seen{}, crit: map[string]time.Time{}}
}

func (l *liveness) reset(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes, l.crit, l.since = map[string]seen{}, map[string]time.Time{}, now
}

func (l *liveness) mark(name, id, addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes[name] = seen{id: id, addr: addr, at: now}
}

func (l *liveness) get(name string) (seen, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.nodes[name]
	return v, ok
}

// lastSeen is when name was last heard from, counting the start of this
// leadership as a heartbeat.
func (l *liveness) lastSeen(name string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.nodes[name]; ok && v.at.After(l.since) {
		return v.at
	}
	return l.since
}

func (s *Server) rpcHeartbeat(ctx context.Context, req *HeartbeatRequest) (*Empty, error) {
	name, err := s.peerNode(ctx)
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader(ctx)
	}
	// The ID a heartbeat keeps alive is the one the catalog holds for the
	// certificate's name: a node cannot keep another server looking alive.
	_, n, _, err := s.store.Node(nil, name)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if n != nil && n.ID != req.NodeID {
		return nil, status.Errorf(codes.PermissionDenied, "heartbeat refused: the certificate names node %q, which is node ID %s, not %s", name, n.ID, req.NodeID)
	}
	s.cluster.live.mark(name, req.NodeID, req.Addr, time.Now())
	if cert := peerCert(ctx); cert != nil {
		s.healCustody(ctx, name, req.NodeID, cert.PublicKey) // custody.go
	}
	return &Empty{}, nil
}

// heartbeatLoop tells the leader, every interval, that this node is alive.
func (s *Server) heartbeatLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cluster.cfg.HeartbeatInterval)
	defer t.Stop()
	name := s.cluster.cfg.Identity.Name
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if s.IsLeader() {
			s.cluster.live.mark(name, s.nodeID, s.Addr(), time.Now())
			continue
		}
		leader, _ := s.raft.LeaderWithID()
		if leader == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cluster.cfg.HeartbeatInterval)
		err := s.cluster.clients.call(ctx, string(leader), "Heartbeat", &HeartbeatRequest{NodeID: s.nodeID, Addr: s.Addr()}, &Empty{})
		cancel()
		if err != nil {
			s.logger.Debug("heartbeat to the leader failed", "leader", leader, "err", err)
		}
	}
}

// checkLiveness, on the leader, turns each node's node check critical when
// it has been silent longer than the TTL and passing when it speaks again;
// a node critical for longer than ReapAfter is removed. It writes only on a
// change.
func (s *Server) checkLiveness(ctx context.Context) {
	_, nodes, err := s.store.Nodes(nil)
	if err != nil {
		return
	}
	now := time.Now()
	self := s.cluster.cfg.Identity.Name
	for _, n := range nodes {
		if n.External {
			continue // no agent heartbeats for it (catalog_register.go)
		}
		want := discovery.HealthPassing
		output := "Agent alive and reachable"
		last := s.cluster.live.lastSeen(n.Name)
		if n.Name != self && now.Sub(last) > s.cluster.cfg.NodeTTL {
			want = discovery.HealthCritical
			output = fmt.Sprintf("No heartbeat from the agent for %s (last at %s)", now.Sub(last).Round(time.Second), last.UTC().Format(time.RFC3339))
		}
		s.cluster.live.mu.Lock()
		critSince, wasCrit := s.cluster.live.crit[n.Name]
		if want == discovery.HealthCritical && !wasCrit {
			s.cluster.live.crit[n.Name], critSince = now, now
		} else if want == discovery.HealthPassing {
			delete(s.cluster.live.crit, n.Name)
		}
		s.cluster.live.mu.Unlock()

		if want == discovery.HealthCritical && now.Sub(critSince) > s.cluster.cfg.ReapAfter {
			s.logger.Info("reaping a node that has been critical too long", "node", n.Name, "since", critSince)
			s.removeNode(ctx, n.Name, n.ID)
			continue
		}
		if _, old, _ := s.store.Check(nil, n.Name, discovery.LegacyNodeLivenessCheckID); old != nil {
			if _, err := s.applyCmd(ctx, discovery.DeregisterCheckRequest{Node: n.Name, CheckID: old.CheckID}); err != nil {
				s.logger.Warn("removing a node's old liveness check", "node", n.Name, "err", err)
			}
		}
		_, cur, _ := s.store.Check(nil, n.Name, NodeCheckID)
		if cur != nil && cur.Status == want {
			continue
		}
		if cur == nil {
			_, err = s.applyCmd(ctx, discovery.RegisterCheckRequest{Check: discovery.Check{
				Node: n.Name, CheckID: NodeCheckID, Name: discovery.NodeLivenessCheckName, Status: want, Output: output, Type: "vmesh-node",
			}})
		} else {
			_, err = s.applyCmd(ctx, discovery.UpdateCheckRequest{Node: n.Name, CheckID: NodeCheckID, Status: want, Output: output})
		}
		if err != nil {
			s.logger.Warn("updating node liveness", "node", n.Name, "err", err)
		} else if want == discovery.HealthCritical {
			s.logger.Warn("node marked critical: no heartbeat", "node", n.Name)
		}
	}
}

// removeNode takes a node out of raft and the catalog. It revokes
// nothing: Leave and RemoveNode do that first (revoke.go); reaping does
// not, so a host that was only down comes back.
func (s *Server) removeNode(ctx context.Context, name, id string) error {
	if id != "" && s.isRaftMember(id) {
		if err := s.raft.RemoveServer(hraft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
			return fmt.Errorf("removing %s from raft: %w", name, err)
		}
	}
	if err := s.dropCAFor(ctx, name); err != nil && !errors.Is(err, errNoCAInCatalog) {
		s.logger.Warn("deleting a removed node's sealed CA key", "node", name, "err", err)
	}
	_, err := s.applyCmd(ctx, discovery.DeregisterNodeRequest{Node: name})
	return err
}

// applyCmd applies on the leader without forwarding.
func (s *Server) applyCmd(ctx context.Context, cmd discovery.Command) (uint64, error) {
	buf, err := encodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	return s.applyLocal(ctx, buf)
}
