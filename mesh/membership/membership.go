package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"log/slog"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/raft"
	"go.opentelemetry.io/otel/trace"
)

// ErrNotJoined answers writes while this agent is in no cluster.
var ErrNotJoined = errors.New("this agent is not in a cluster yet: run 'vmesh join ADDR' with a token in -token-file or " + config.JoinTokenEnv + " (or start it with -bootstrap)")

// raftRef is the agent's link to its cluster, which exists only once the
// agent is in one: a raft server (servers) or a raft.Client (clients: a
// replica of the catalog, writes through the leader). It implements
// discovery.Writer and httpapi.Cluster so the HTTP API can serve (reads
// with no leader, writes refused) before that.
type raftRef struct {
	p atomic.Pointer[raft.Server]
	c atomic.Pointer[raft.Client]
}

// get is the raft server; nil on a client or outside a cluster.
func (r *raftRef) get() *raft.Server { return r.p.Load() }

// client is the client link; nil on a server or outside a cluster.
func (r *raftRef) client() *raft.Client { return r.c.Load() }

// inCluster says whether this agent is in a cluster, as either role.
func (r *raftRef) inCluster() bool { return r.get() != nil || r.client() != nil }

func (r *raftRef) Apply(ctx context.Context, cmd discovery.Command) (uint64, error) {
	if s := r.get(); s != nil {
		return s.Apply(ctx, cmd)
	}
	if c := r.client(); c != nil {
		return c.Apply(ctx, cmd)
	}
	return 0, ErrNotJoined
}

// ApplyTxn applies a KV transaction through the leader (httpapi.SessionCluster).
func (r *raftRef) ApplyTxn(ctx context.Context, req discovery.TxnRequest) (uint64, *discovery.TxnResult, error) {
	if s := r.get(); s != nil {
		return s.ApplyTxn(ctx, req)
	}
	if c := r.client(); c != nil {
		return c.ApplyTxn(ctx, req)
	}
	return 0, nil, ErrNotJoined
}

// RenewSession restarts a session's TTL on the leader.
func (r *raftRef) RenewSession(ctx context.Context, id string) (*discovery.Session, error) {
	if s := r.get(); s != nil {
		return s.RenewSession(ctx, id)
	}
	if c := r.client(); c != nil {
		return c.RenewSession(ctx, id)
	}
	return nil, ErrNotJoined
}

func (r *raftRef) Leader() (string, string) {
	if s := r.get(); s != nil {
		return s.Leader()
	}
	if c := r.client(); c != nil {
		return c.Leader()
	}
	return "", ""
}

// Peers are the raft servers; a client lists the servers it knows.
func (r *raftRef) Peers() ([]string, error) {
	if s := r.get(); s != nil {
		return s.Peers()
	}
	if c := r.client(); c != nil {
		return c.Servers(), nil
	}
	return nil, nil
}

// LastContact is, on a client, how long ago its replica last heard a
// server: how stale its reads may be.
func (r *raftRef) LastContact() time.Duration {
	if s := r.get(); s != nil {
		return s.LastContact()
	}
	if c := r.client(); c != nil {
		return c.LastContact()
	}
	return 0
}

// VerifyLeader is what a ?consistent read needs: on a client, the
// leader's applied index, which its replica then waits for.
func (r *raftRef) VerifyLeader() error {
	if s := r.get(); s != nil {
		return s.VerifyLeader()
	}
	if c := r.client(); c != nil {
		return c.VerifyLeader()
	}
	return ErrNotJoined
}

func (r *raftRef) Stats() map[string]string {
	if s := r.get(); s != nil {
		return s.Stats()
	}
	if c := r.client(); c != nil {
		return c.Stats()
	}
	return map[string]string{"state": "not in a cluster"}
}

// waitLeader waits until writes can go through.
func (r *raftRef) waitLeader(ctx context.Context) error {
	if s := r.get(); s != nil {
		return s.WaitLeader(ctx)
	}
	if c := r.client(); c != nil {
		return c.WaitLeader(ctx)
	}
	return ErrNotJoined
}

// roleFile remembers the role this node joined with; serversFile the
// servers a client last knew, so a restart finds them.
func roleFile(dataDir string) string    { return filepath.Join(dataDir, "role") }
func serversFile(dataDir string) string { return filepath.Join(dataDir, "servers") }

// storedRole is the role this data dir's node joined with; a data dir
// from before roles (no file) is a server's.
func storedRole(dataDir string) string {
	b, err := os.ReadFile(roleFile(dataDir))
	if err == nil && strings.TrimSpace(string(b)) == raft.RoleClient {
		return raft.RoleClient
	}
	return raft.RoleServer
}

func (m *Membership) role() string {
	if m.cfg.IsServer() {
		return raft.RoleServer
	}
	return raft.RoleClient
}

// leftFile marks a data dir whose node left its cluster: a restart does not
// rejoin; only a new join does.
func leftFile(dataDir string) string { return filepath.Join(dataDir, "left") }

// start brings raft up as the data dir says: resume with a stored
// identity, bootstrap a new cluster, join one, or wait for 'vmesh join'.
func (m *Membership) start(ctx context.Context) error {
	if _, err := os.Stat(leftFile(m.cfg.DataDir)); err == nil {
		m.logger.Warn("this node left its cluster; it stays out until 'vmesh join ADDR'")
		return nil
	}
	id, err := raft.LoadIdentity(m.cfg.DataDir)
	switch {
	case err == nil:
		if storedRole(m.cfg.DataDir) == raft.RoleClient {
			if m.cfg.IsServer() {
				m.logger.Warn("this node joined as a client; -server takes effect only after it leaves and joins again")
			}
			return m.startClient(id, nil)
		}
		ca, err := raft.LoadLocalCA(m.cfg.DataDir, id)
		if err != nil {
			return err
		}
		return m.openRaft(id, ca, m.cfg.Bootstrap)
	case !errors.Is(err, raft.ErrNoIdentity):
		return fmt.Errorf("loading the node identity: %w", err)
	case m.cfg.Bootstrap:
		id, ca, err := raft.BootstrapIdentity(m.cfg.DataDir, m.cfg.Cluster.TrustDomain, m.cfg.NodeName)
		if err != nil {
			return fmt.Errorf("creating the cluster CA: %w", err)
		}
		m.logger.Info("bootstrapping a new cluster", "trust_domain", m.cfg.Cluster.TrustDomain, "ca_fingerprint", raft.Fingerprint(ca.Cert))
		return m.openRaft(id, ca, true)
	case m.cfg.Join != "":
		token, warning, err := m.cfg.ReadJoinToken()
		if err != nil {
			return &config.Error{Err: err}
		}
		if warning != "" {
			m.logger.Warn(warning)
		}
		return m.join(ctx, m.cfg.Join, token)
	}
	m.logger.Info("not in a cluster yet: waiting for 'vmesh join ADDR'")
	return nil
}

func (m *Membership) openRaft(id *raft.Identity, localCA *raft.CA, bootstrap bool) error {
	if id.Name != m.cfg.NodeName {
		return &config.Error{Err: fmt.Errorf("node_name: %q, but the node certificate in %s names %q; keep the name or start from an empty data dir",
			m.cfg.NodeName, m.cfg.DataDir, id.Name)}
	}
	srv, err := raft.Open(raft.Config{
		NodeID:            m.nodeID,
		Addr:              m.cfg.ClusterAddr(),
		DataDir:           m.cfg.DataDir,
		Bootstrap:         bootstrap,
		SnapshotThreshold: m.cfg.Raft.SnapshotThreshold,
		TrailingLogs:      m.cfg.Raft.TrailingLogs,
		SnapshotInterval:  m.cfg.Raft.SnapshotInterval,
		Logger:            m.logger.With("component", "raft"),
		TracerProvider:    m.TracerProvider,
		Cluster: &raft.ClusterConfig{
			Identity: id, Bind: m.cfg.ClusterBind(), Voters: m.cfg.Cluster.Voters, LocalCA: localCA,
			HeartbeatInterval: m.cfg.Cluster.HeartbeatInterval, NodeTTL: m.cfg.Cluster.NodeTTL, ReapAfter: m.cfg.Cluster.ReapAfter,
			VIPRange: m.cfg.VIPRange(), NodeCertTTL: m.cfg.Cluster.NodeCertTTL, RenewGrace: m.cfg.Cluster.NodeCertGrace,
		},
	}, m.store)
	if err != nil {
		return err
	}
	if m.ACL != nil {
		srv.SetACL(m.ACL)
	}
	m.p.Store(srv)
	m.joinedOnce.Do(func() { close(m.joined) })
	return nil
}

// startClient runs this node as a client: no raft, a replica of the
// catalog in m.store, writes through the leader. servers are where to
// start; without them, the servers remembered in the data dir.
func (m *Membership) startClient(id *raft.Identity, servers []string) error {
	if id.Name != m.cfg.NodeName {
		return &config.Error{Err: fmt.Errorf("node_name: %q, but the node certificate in %s names %q; keep the name or start from an empty data dir",
			m.cfg.NodeName, m.cfg.DataDir, id.Name)}
	}
	if len(servers) == 0 {
		b, _ := os.ReadFile(serversFile(m.cfg.DataDir))
		servers = strings.Fields(string(b))
	} else {
		// The servers it joined through: the client learns others only
		// when the list changes, and a restart needs at least these.
		m.rememberServers(servers)
	}
	if m.cfg.Join != "" && !slices.Contains(servers, m.cfg.Join) {
		servers = append(servers, m.cfg.Join)
	}
	c, err := raft.NewClient(raft.ClientConfig{
		Identity: id, NodeID: m.nodeID, Addr: m.cfg.ClusterAddr(), Servers: servers,
		HeartbeatInterval: m.cfg.Cluster.HeartbeatInterval,
		DataDir:           m.cfg.DataDir, NodeCertTTL: m.cfg.Cluster.NodeCertTTL,
		OnServers:      m.rememberServers,
		Logger:         m.logger.With("component", "client"),
		TracerProvider: m.TracerProvider,
	}, m.store)
	if err != nil {
		return err
	}
	c.Start()
	m.c.Store(c)
	m.joinedOnce.Do(func() { close(m.joined) })
	m.logger.Info("running as a client: a replica of the catalog, writes through the leader", "servers", servers)
	return nil
}

// rememberServers writes the servers a client knows to the data dir, for
// its next start.
func (m *Membership) rememberServers(s []string) {
	if err := os.WriteFile(serversFile(m.cfg.DataDir), []byte(strings.Join(s, "\n")+"\n"), 0o600); err != nil {
		m.logger.Warn("remembering the servers", "err", err)
	}
}

// join gets a node certificate from the cluster at addr; a server then
// starts raft and asks the leader to add it, a client starts its replica.
func (m *Membership) join(ctx context.Context, addr, token string) error {
	m.joinMu.Lock()
	defer m.joinMu.Unlock()
	if m.inCluster() {
		return fmt.Errorf("this agent is already in a cluster (leave it first)")
	}
	if _, err := os.Stat(leftFile(m.cfg.DataDir)); err == nil {
		// A node that left starts over: its old log names a cluster
		// configuration it is no longer part of.
		if err := os.RemoveAll(filepath.Join(m.cfg.DataDir, "raft")); err != nil {
			return err
		}
	}
	role := m.role()
	id, err := raft.Join(ctx, raft.JoinParams{Addr: addr, Token: token, NodeName: m.cfg.NodeName, NodeID: m.nodeID, DataDir: m.cfg.DataDir, Role: role})
	if err != nil {
		return err
	}
	if err := os.WriteFile(roleFile(m.cfg.DataDir), []byte(role+"\n"), 0o600); err != nil {
		return fmt.Errorf("joined, but could not record the role: %w", err)
	}
	if role == raft.RoleClient {
		if err := m.startClient(id, []string{addr}); err != nil {
			return err
		}
		os.Remove(leftFile(m.cfg.DataDir))
		m.logger.Info("joined the cluster as a client", "via", addr)
		return nil
	}
	if err := m.openRaft(id, nil, false); err != nil {
		return err
	}
	voter, err := m.get().AddSelf(ctx, addr)
	if err != nil {
		return fmt.Errorf("joined with a certificate, but the leader did not add this node: %w", err)
	}
	os.Remove(leftFile(m.cfg.DataDir))
	m.logger.Info("joined the cluster", "via", addr, "voter", voter)
	return nil
}

// Left is closed once this agent has left its cluster; the agent process
// then stops, as Consul's does.
func (m *Membership) Left() <-chan struct{} { return m.left }

// leave takes this node out of its cluster and marks the data dir so a
// restart does not rejoin.
func (m *Membership) leave(ctx context.Context, force bool) error {
	m.joinMu.Lock()
	defer m.joinMu.Unlock()
	if c := m.client(); c != nil {
		// A client holds no raft seat: it deregisters its node (and so its
		// services) through the leader.
		if err := c.Leave(ctx); err != nil {
			return err
		}
	} else if srv := m.get(); srv == nil {
		return ErrNotJoined
	} else if err := srv.Leave(ctx, force); err != nil {
		return err
	}
	if err := os.WriteFile(leftFile(m.cfg.DataDir), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return fmt.Errorf("left, but could not record it: %w", err)
	}
	if m.OnLeave != nil {
		m.OnLeave(ctx) // a node out of the mesh steers nothing into it (capture)
	}
	m.leftOnce.Do(func() { close(m.left) })
	return nil
}

// notServer says why a server-only operation is refused here.
func (m *Membership) notServer() error {
	if m.client() != nil {
		return errors.New("this agent is a client: join tokens, snapshots, removing nodes and rotating the CA are a server's; run the command against a server's HTTP API")
	}
	return ErrNotJoined
}

// operator is the agent as the HTTP API's /v1/vmesh/* endpoints see it
// (httpapi.Operator). It maps raft's errors to the statuses the API
// answers: a refused join is a 403, a leave that would break quorum a 409.

func (m *Membership) Join(ctx context.Context, addr, token string) error {
	if _, err := raft.ParseToken(token); err != nil {
		return httpapi.WithStatus(http.StatusBadRequest, fmt.Errorf("field Token: %v", err))
	}
	err := m.join(ctx, addr, token)
	if errors.Is(err, raft.ErrJoinRefused) || errors.Is(err, raft.ErrCAFingerprint) || errors.Is(err, raft.ErrInvalidToken) {
		return httpapi.WithStatus(http.StatusForbidden, err)
	}
	return err
}

func (m *Membership) Leave(ctx context.Context, force bool) error {
	err := m.leave(ctx, force)
	if errors.Is(err, raft.ErrQuorum) || errors.Is(err, ErrNotJoined) {
		return httpapi.WithStatus(http.StatusConflict, err)
	}
	return err
}

func (m *Membership) CreateJoinToken(ctx context.Context, ttl time.Duration, uses int) (string, discovery.JoinTokenInfo, error) {
	srv := m.get()
	if srv == nil {
		return "", discovery.JoinTokenInfo{}, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.CreateToken(ctx, ttl, uses)
}

func (m *Membership) JoinTokens(context.Context) ([]discovery.JoinTokenInfo, error) {
	srv := m.get()
	if srv == nil {
		return nil, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.Tokens()
}

func (m *Membership) RevokeJoinToken(ctx context.Context, id string) (discovery.JoinTokenInfo, error) {
	srv := m.get()
	if srv == nil {
		return discovery.JoinTokenInfo{}, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.RevokeToken(ctx, id)
}

func (m *Membership) Snapshot() (uint64, error) {
	srv := m.get()
	if srv == nil {
		return 0, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	return srv.Snapshot()
}

// ForceLeave removes node from the cluster and revokes its certificates
// (PUT /v1/agent/force-leave/{node}). Only a server asks the leader; the
// leader refuses a server caller too when the removal would break quorum
// (409). Naming the leader changes nothing and answers 200: the leader
// is alive (it answered), and Consul's force-leave of a live node is a
// no-op too (the node refutes it). The leader leaves by `vmesh leave`.
func (m *Membership) ForceLeave(ctx context.Context, node string) error {
	srv := m.get()
	if srv == nil {
		return httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	err := srv.RemoveNode(ctx, node)
	if errors.Is(err, raft.ErrIsLeader) {
		m.logger.Warn("force-leave of the leader changes nothing: it is alive; run 'vmesh leave' on it (it hands over leadership first)", "node", node)
		return nil
	}
	return operatorStatus(err)
}

// RotateCA replaces the cluster CA (PUT /v1/vmesh/ca/rotate); a server
// asks the leader.
func (m *Membership) RotateCA(ctx context.Context) (*discovery.CARoot, error) {
	srv := m.get()
	if srv == nil {
		return nil, httpapi.WithStatus(http.StatusConflict, m.notServer())
	}
	ca, err := srv.RotateCA(ctx)
	return ca, operatorStatus(err)
}

// operatorStatus maps the leader's refusals of an operator's cluster
// change to HTTP: quorum 409, permission 403.
func operatorStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrQuorum), errors.Is(err, raft.ErrIsLeader):
		return httpapi.WithStatus(http.StatusConflict, err)
	case errors.Is(err, raft.ErrPermissionDenied):
		return httpapi.WithStatus(http.StatusForbidden, err)
	}
	return err
}

func (m *Membership) ClusterMembers(ctx context.Context) ([]httpapi.ClusterMember, error) {
	var ms []raft.Member
	var err error
	switch srv, c := m.get(), m.client(); {
	case srv != nil:
		ms, err = srv.Members(ctx)
	case c != nil:
		if ms, err = c.Members(ctx); err != nil {
			// No leader answers: what the replica knows, health unknown.
			ms, err = m.replicaMembers(), nil
		}
	default:
		return []httpapi.ClusterMember{{Name: m.cfg.NodeName, ID: m.nodeID, Role: "none", NodeRole: m.role(), Status: "not joined"}}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]httpapi.ClusterMember, 0, len(ms))
	for _, m := range ms {
		out = append(out, httpapi.ClusterMember{Name: m.Name, ID: m.ID, Addr: m.Addr, Role: m.Role, NodeRole: m.NodeRole, Status: m.Status, LastContactMs: m.LastContact.Milliseconds()})
	}
	return out, nil
}

// replicaMembers is a client's view of the nodes from its replica, when
// no leader answers.
func (m *Membership) replicaMembers() []raft.Member {
	_, nodes, _ := m.store.Nodes(nil)
	out := make([]raft.Member, 0, len(nodes))
	for _, n := range nodes {
		role := raft.NodeRole(n)
		raftRole := "unknown"
		if role == raft.RoleClient {
			raftRole = "none"
		}
		out = append(out, raft.Member{Name: n.Name, ID: n.ID, Addr: n.Address, Role: raftRole, NodeRole: role, Status: "unknown"})
	}
	return out
}

// AgentMembers feeds /v1/agent/members (Consul's shape).
func (m *Membership) AgentMembers() []httpapi.Member {
	ms, err := m.ClusterMembers(context.Background())
	if err != nil {
		return nil
	}
	var out []httpapi.Member
	for _, m := range ms {
		status := 1
		if m.Status == "failed" {
			status = 4
		}
		host, port, _ := net.SplitHostPort(m.Addr)
		p, _ := strconv.Atoi(port)
		// Consul's role tag: "consul" for a server, "node" for a client;
		// vmesh's own (the raft state, or "client") in vmesh_role.
		role, detail := "consul", m.Role
		if m.NodeRole == raft.RoleClient {
			role, detail = "node", raft.RoleClient
		}
		out = append(out, httpapi.Member{Name: m.Name, Addr: host, Port: p, Role: role, VMeshRole: detail, Status: status})
	}
	return out
}

// Membership is an agent's place in its cluster: a raft server (servers)
// or a raft.Client (clients: a replica of the catalog, writes through the
// leader), how it got there (bootstrap, join, a restart that resumes) and
// how it leaves. It implements discovery.Writer and httpapi.Cluster, and
// the cluster half of httpapi.Operator, so the HTTP API serves (reads with
// no leader, writes refused) before the agent is in a cluster.
type Membership struct {
	raftRef
	cfg    *config.Config
	nodeID string
	store  *discovery.Store
	logger *slog.Logger
	// OnLeave runs once this node has left, before Left is closed.
	OnLeave func(ctx context.Context)
	// ACL, when set, turns on ACL enforcement in this node's raft server
	// (forwarded writes, clients' token resolution).
	ACL *acl.Resolver
	// TracerProvider, when set, traces raft writes (nil: none).
	TracerProvider trace.TracerProvider

	joinMu     sync.Mutex
	joined     chan struct{}
	joinedOnce sync.Once
	left       chan struct{}
	leftOnce   sync.Once
}

// New is the membership of the agent configured by cfg (read when Start
// runs, so a -dev data dir chosen later counts); nothing runs until Start.
func New(cfg *config.Config, logger *slog.Logger) *Membership {
	return &Membership{cfg: cfg, logger: logger, joined: make(chan struct{}), left: make(chan struct{})}
}

// Start brings this node into its cluster as its data dir and config say:
// resume, bootstrap, join, or wait for 'vmesh join'. nodeID is its raft
// server ID; store is the catalog raft (or the client's replica) fills.
func (m *Membership) Start(ctx context.Context, nodeID string, store *discovery.Store) error {
	m.nodeID, m.store = nodeID, store
	return m.start(ctx)
}

// Close stops the raft server or the client link.
func (m *Membership) Close() error {
	if c := m.client(); c != nil {
		c.Close()
	}
	if srv := m.get(); srv != nil {
		return srv.Close()
	}
	return nil
}

// Joined is closed once this node is in a cluster, as either role.
func (m *Membership) Joined() <-chan struct{} { return m.joined }

// Server is the raft server; nil on a client or outside a cluster.
func (m *Membership) Server() *raft.Server { return m.get() }

// Client is the client link; nil on a server or outside a cluster.
func (m *Membership) Client() *raft.Client { return m.client() }

// InCluster says whether this node is in a cluster, as either role.
func (m *Membership) InCluster() bool { return m.inCluster() }

// WaitLeader waits until writes can go through.
func (m *Membership) WaitLeader(ctx context.Context) error { return m.waitLeader(ctx) }

// HoldsKV says whether this node's catalog holds the KV: a server's does,
// a client's replica does not (nor does an agent not in a cluster yet).
func (m *Membership) HoldsKV() bool { return m.client() == nil }

// KVRead reads KV from a server, for a client.
func (m *Membership) KVRead(ctx context.Context, q discovery.KVQuery) (discovery.KVResult, error) {
	c := m.client()
	if c == nil {
		return discovery.KVResult{}, errors.New("this agent holds its KV itself")
	}
	return c.KVRead(ctx, q)
}

// ACLRead reads the ACL state from a server, for a client.
func (m *Membership) ACLRead(ctx context.Context, q discovery.ACLQuery) (discovery.ACLResult, error) {
	c := m.client()
	if c == nil {
		return discovery.ACLResult{}, errors.New("this agent holds its ACL state itself")
	}
	return c.ACLRead(ctx, q)
}
