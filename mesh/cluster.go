package mesh

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

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/raft"
)

// errNotJoined answers writes while this agent is in no cluster.
var errNotJoined = errors.New("this agent is not in a cluster yet: run 'vmesh join ADDR' with a token in -token-file or " + config.JoinTokenEnv + " (or start it with -bootstrap)")

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
	return 0, errNotJoined
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
	return errNotJoined
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
	return errNotJoined
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

func (a *Agent) role() string {
	if a.cfg.IsServer() {
		return raft.RoleServer
	}
	return raft.RoleClient
}

// leftFile marks a data dir whose node left its cluster: a restart does not
// rejoin; only a new join does.
func leftFile(dataDir string) string { return filepath.Join(dataDir, "left") }

// startCluster brings raft up as the data dir says: resume with a stored
// identity, bootstrap a new cluster, join one, or wait for 'vmesh join'.
func (a *Agent) startCluster(ctx context.Context) error {
	if _, err := os.Stat(leftFile(a.cfg.DataDir)); err == nil {
		a.logger.Warn("this node left its cluster; it stays out until 'vmesh join ADDR'")
		return nil
	}
	id, err := raft.LoadIdentity(a.cfg.DataDir)
	switch {
	case err == nil:
		if storedRole(a.cfg.DataDir) == raft.RoleClient {
			if a.cfg.IsServer() {
				a.logger.Warn("this node joined as a client; -server takes effect only after it leaves and joins again")
			}
			return a.startClient(id, nil)
		}
		ca, err := raft.LoadLocalCA(a.cfg.DataDir, id)
		if err != nil {
			return err
		}
		return a.openRaft(id, ca, a.cfg.Bootstrap)
	case !errors.Is(err, raft.ErrNoIdentity):
		return fmt.Errorf("loading the node identity: %w", err)
	case a.cfg.Bootstrap:
		id, ca, err := raft.BootstrapIdentity(a.cfg.DataDir, a.cfg.Cluster.TrustDomain, a.cfg.NodeName)
		if err != nil {
			return fmt.Errorf("creating the cluster CA: %w", err)
		}
		a.logger.Info("bootstrapping a new cluster", "trust_domain", a.cfg.Cluster.TrustDomain, "ca_fingerprint", raft.Fingerprint(ca.Cert))
		return a.openRaft(id, ca, true)
	case a.cfg.Join != "":
		token, warning, err := a.cfg.ReadJoinToken()
		if err != nil {
			return &config.Error{Err: err}
		}
		if warning != "" {
			a.logger.Warn(warning)
		}
		return a.join(ctx, a.cfg.Join, token)
	}
	a.logger.Info("not in a cluster yet: waiting for 'vmesh join ADDR'")
	return nil
}

func (a *Agent) openRaft(id *raft.Identity, localCA *raft.CA, bootstrap bool) error {
	if id.Name != a.cfg.NodeName {
		return &config.Error{Err: fmt.Errorf("node_name: %q, but the node certificate in %s names %q; keep the name or start from an empty data dir",
			a.cfg.NodeName, a.cfg.DataDir, id.Name)}
	}
	srv, err := raft.Open(raft.Config{
		NodeID:            a.nodeID,
		Addr:              a.cfg.ClusterAddr(),
		DataDir:           a.cfg.DataDir,
		Bootstrap:         bootstrap,
		SnapshotThreshold: a.cfg.Raft.SnapshotThreshold,
		TrailingLogs:      a.cfg.Raft.TrailingLogs,
		SnapshotInterval:  a.cfg.Raft.SnapshotInterval,
		Logger:            a.logger.With("component", "raft"),
		Cluster: &raft.ClusterConfig{
			Identity: id, Bind: a.cfg.ClusterBind(), Voters: a.cfg.Cluster.Voters, LocalCA: localCA,
			HeartbeatInterval: a.cfg.Cluster.HeartbeatInterval, NodeTTL: a.cfg.Cluster.NodeTTL, ReapAfter: a.cfg.Cluster.ReapAfter,
			VIPRange: a.cfg.VIPRange(),
		},
	}, a.store)
	if err != nil {
		return err
	}
	a.ref.p.Store(srv)
	a.joinedOnce.Do(func() { close(a.joined) })
	return nil
}

// startClient runs this node as a client: no raft, a replica of the
// catalog in a.store, writes through the leader. servers are where to
// start; without them, the servers remembered in the data dir.
func (a *Agent) startClient(id *raft.Identity, servers []string) error {
	if id.Name != a.cfg.NodeName {
		return &config.Error{Err: fmt.Errorf("node_name: %q, but the node certificate in %s names %q; keep the name or start from an empty data dir",
			a.cfg.NodeName, a.cfg.DataDir, id.Name)}
	}
	if len(servers) == 0 {
		b, _ := os.ReadFile(serversFile(a.cfg.DataDir))
		servers = strings.Fields(string(b))
	}
	if a.cfg.Join != "" && !slices.Contains(servers, a.cfg.Join) {
		servers = append(servers, a.cfg.Join)
	}
	dir := a.cfg.DataDir
	c, err := raft.NewClient(raft.ClientConfig{
		Identity: id, NodeID: a.nodeID, Addr: a.cfg.ClusterAddr(), Servers: servers,
		HeartbeatInterval: a.cfg.Cluster.HeartbeatInterval,
		OnServers: func(s []string) {
			if err := os.WriteFile(serversFile(dir), []byte(strings.Join(s, "\n")+"\n"), 0o600); err != nil {
				a.logger.Warn("remembering the servers", "err", err)
			}
		},
		Logger: a.logger.With("component", "client"),
	}, a.store)
	if err != nil {
		return err
	}
	c.Start()
	a.ref.c.Store(c)
	a.joinedOnce.Do(func() { close(a.joined) })
	a.logger.Info("running as a client: a replica of the catalog, writes through the leader", "servers", servers)
	return nil
}

// join gets a node certificate from the cluster at addr; a server then
// starts raft and asks the leader to add it, a client starts its replica.
func (a *Agent) join(ctx context.Context, addr, token string) error {
	a.joinMu.Lock()
	defer a.joinMu.Unlock()
	if a.ref.inCluster() {
		return fmt.Errorf("this agent is already in a cluster (leave it first)")
	}
	if _, err := os.Stat(leftFile(a.cfg.DataDir)); err == nil {
		// A node that left starts over: its old log names a cluster
		// configuration it is no longer part of.
		if err := os.RemoveAll(filepath.Join(a.cfg.DataDir, "raft")); err != nil {
			return err
		}
	}
	role := a.role()
	id, err := raft.Join(ctx, raft.JoinParams{Addr: addr, Token: token, NodeName: a.cfg.NodeName, NodeID: a.nodeID, DataDir: a.cfg.DataDir, Role: role})
	if err != nil {
		return err
	}
	if err := os.WriteFile(roleFile(a.cfg.DataDir), []byte(role+"\n"), 0o600); err != nil {
		return fmt.Errorf("joined, but could not record the role: %w", err)
	}
	if role == raft.RoleClient {
		if err := a.startClient(id, []string{addr}); err != nil {
			return err
		}
		os.Remove(leftFile(a.cfg.DataDir))
		a.logger.Info("joined the cluster as a client", "via", addr)
		return nil
	}
	if err := a.openRaft(id, nil, false); err != nil {
		return err
	}
	voter, err := a.ref.get().AddSelf(ctx, addr)
	if err != nil {
		return fmt.Errorf("joined with a certificate, but the leader did not add this node: %w", err)
	}
	os.Remove(leftFile(a.cfg.DataDir))
	a.logger.Info("joined the cluster", "via", addr, "voter", voter)
	return nil
}

// Left is closed once this agent has left its cluster; the agent process
// then stops, as Consul's does.
func (a *Agent) Left() <-chan struct{} { return a.left }

// leave takes this node out of its cluster and marks the data dir so a
// restart does not rejoin.
func (a *Agent) leave(ctx context.Context, force bool) error {
	a.joinMu.Lock()
	defer a.joinMu.Unlock()
	if c := a.ref.client(); c != nil {
		// A client holds no raft seat: it deregisters its node (and so its
		// services) through the leader.
		if err := c.Leave(ctx); err != nil {
			return err
		}
	} else if srv := a.ref.get(); srv == nil {
		return errNotJoined
	} else if err := srv.Leave(ctx, force); err != nil {
		return err
	}
	if err := os.WriteFile(leftFile(a.cfg.DataDir), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return fmt.Errorf("left, but could not record it: %w", err)
	}
	a.removeCapture(ctx) // capture.go: a node out of the mesh steers nothing into it
	a.leftOnce.Do(func() { close(a.left) })
	return nil
}

// notServer says why a server-only operation is refused here.
func (a *Agent) notServer() error {
	if a.ref.client() != nil {
		return errors.New("this agent is a client: join tokens and snapshots are a server's; run the command against a server's HTTP API")
	}
	return errNotJoined
}

// operator is the agent as the HTTP API's /v1/vmesh/* endpoints see it
// (httpapi.Operator). It maps raft's errors to the statuses the API
// answers: a refused join is a 403, a leave that would break quorum a 409.
type operator struct{ a *Agent }

func (o operator) Join(ctx context.Context, addr, token string) error {
	if _, err := raft.ParseToken(token); err != nil {
		return httpapi.WithStatus(http.StatusBadRequest, fmt.Errorf("field Token: %v", err))
	}
	err := o.a.join(ctx, addr, token)
	if errors.Is(err, raft.ErrJoinRefused) || errors.Is(err, raft.ErrCAFingerprint) || errors.Is(err, raft.ErrInvalidToken) {
		return httpapi.WithStatus(http.StatusForbidden, err)
	}
	return err
}

func (o operator) Leave(ctx context.Context, force bool) error {
	err := o.a.leave(ctx, force)
	if errors.Is(err, raft.ErrQuorum) || errors.Is(err, errNotJoined) {
		return httpapi.WithStatus(http.StatusConflict, err)
	}
	return err
}

func (o operator) CreateJoinToken(ctx context.Context, ttl time.Duration, uses int) (string, discovery.JoinTokenInfo, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return "", discovery.JoinTokenInfo{}, httpapi.WithStatus(http.StatusConflict, o.a.notServer())
	}
	return srv.CreateToken(ctx, ttl, uses)
}

func (o operator) JoinTokens(context.Context) ([]discovery.JoinTokenInfo, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return nil, httpapi.WithStatus(http.StatusConflict, o.a.notServer())
	}
	return srv.Tokens()
}

func (o operator) RevokeJoinToken(ctx context.Context, id string) (discovery.JoinTokenInfo, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return discovery.JoinTokenInfo{}, httpapi.WithStatus(http.StatusConflict, o.a.notServer())
	}
	return srv.RevokeToken(ctx, id)
}

func (o operator) Snapshot() (uint64, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return 0, httpapi.WithStatus(http.StatusConflict, o.a.notServer())
	}
	return srv.Snapshot()
}

func (o operator) ClusterMembers(ctx context.Context) ([]httpapi.ClusterMember, error) {
	a := o.a
	var ms []raft.Member
	var err error
	switch srv, c := a.ref.get(), a.ref.client(); {
	case srv != nil:
		ms, err = srv.Members(ctx)
	case c != nil:
		if ms, err = c.Members(ctx); err != nil {
			// No leader answers: what the replica knows, health unknown.
			ms, err = a.replicaMembers(), nil
		}
	default:
		return []httpapi.ClusterMember{{Name: a.cfg.NodeName, ID: a.nodeID, Role: "none", NodeRole: a.role(), Status: "not joined"}}, nil
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
func (a *Agent) replicaMembers() []raft.Member {
	_, nodes, _ := a.store.Nodes(nil)
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

// members feeds /v1/agent/members (Consul's shape).
func (a *Agent) members() []httpapi.Member {
	ms, err := operator{a}.ClusterMembers(context.Background())
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

// joinState groups the agent's cluster membership fields.
type joinState struct {
	ref        raftRef
	joinMu     sync.Mutex
	joined     chan struct{}
	joinedOnce sync.Once
	left       chan struct{}
	leftOnce   sync.Once
}
