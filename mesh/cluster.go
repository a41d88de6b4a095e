package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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

// raftRef is the agent's raft server, which exists only once the agent is
// in a cluster. It implements discovery.Writer and httpapi.Cluster so the
// HTTP API can serve (reads with no leader, writes refused) before that.
type raftRef struct{ p atomic.Pointer[raft.Server] }

func (r *raftRef) get() *raft.Server { return r.p.Load() }

func (r *raftRef) Apply(ctx context.Context, cmd discovery.Command) (uint64, error) {
	s := r.get()
	if s == nil {
		return 0, errNotJoined
	}
	return s.Apply(ctx, cmd)
}

func (r *raftRef) Leader() (string, string) {
	if s := r.get(); s != nil {
		return s.Leader()
	}
	return "", ""
}

func (r *raftRef) Peers() ([]string, error) {
	if s := r.get(); s != nil {
		return s.Peers()
	}
	return nil, nil
}

func (r *raftRef) LastContact() time.Duration {
	if s := r.get(); s != nil {
		return s.LastContact()
	}
	return 0
}

func (r *raftRef) VerifyLeader() error {
	if s := r.get(); s != nil {
		return s.VerifyLeader()
	}
	return errNotJoined
}

func (r *raftRef) Stats() map[string]string {
	if s := r.get(); s != nil {
		return s.Stats()
	}
	return map[string]string{"state": "not in a cluster"}
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

// join gets a node certificate from the cluster at addr, starts raft and
// asks the leader to add this node.
func (a *Agent) join(ctx context.Context, addr, token string) error {
	a.joinMu.Lock()
	defer a.joinMu.Unlock()
	if a.ref.get() != nil {
		return fmt.Errorf("this agent is already in a cluster (leave it first)")
	}
	if _, err := os.Stat(leftFile(a.cfg.DataDir)); err == nil {
		// A node that left starts over: its old log names a cluster
		// configuration it is no longer part of.
		if err := os.RemoveAll(filepath.Join(a.cfg.DataDir, "raft")); err != nil {
			return err
		}
	}
	id, err := raft.Join(ctx, raft.JoinParams{Addr: addr, Token: token, NodeName: a.cfg.NodeName, NodeID: a.nodeID, DataDir: a.cfg.DataDir})
	if err != nil {
		return err
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
	srv := a.ref.get()
	if srv == nil {
		return errNotJoined
	}
	if err := srv.Leave(ctx, force); err != nil {
		return err
	}
	if err := os.WriteFile(leftFile(a.cfg.DataDir), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return fmt.Errorf("left, but could not record it: %w", err)
	}
	a.removeCapture(ctx) // capture.go: a node out of the mesh steers nothing into it
	a.leftOnce.Do(func() { close(a.left) })
	return nil
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
		return "", discovery.JoinTokenInfo{}, httpapi.WithStatus(http.StatusConflict, errNotJoined)
	}
	return srv.CreateToken(ctx, ttl, uses)
}

func (o operator) JoinTokens(context.Context) ([]discovery.JoinTokenInfo, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return nil, httpapi.WithStatus(http.StatusConflict, errNotJoined)
	}
	return srv.Tokens()
}

func (o operator) RevokeJoinToken(ctx context.Context, id string) (discovery.JoinTokenInfo, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return discovery.JoinTokenInfo{}, httpapi.WithStatus(http.StatusConflict, errNotJoined)
	}
	return srv.RevokeToken(ctx, id)
}

func (o operator) Snapshot() (uint64, error) {
	srv := o.a.ref.get()
	if srv == nil {
		return 0, httpapi.WithStatus(http.StatusConflict, errNotJoined)
	}
	return srv.Snapshot()
}

func (o operator) ClusterMembers(ctx context.Context) ([]httpapi.ClusterMember, error) {
	a := o.a
	srv := a.ref.get()
	if srv == nil {
		return []httpapi.ClusterMember{{Name: a.cfg.NodeName, ID: a.nodeID, Role: "none", Status: "not joined"}}, nil
	}
	ms, err := srv.Members(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]httpapi.ClusterMember, 0, len(ms))
	for _, m := range ms {
		out = append(out, httpapi.ClusterMember{Name: m.Name, ID: m.ID, Addr: m.Addr, Role: m.Role, Status: m.Status, LastContactMs: m.LastContact.Milliseconds()})
	}
	return out, nil
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
		out = append(out, httpapi.Member{Name: m.Name, Addr: host, Port: p, Role: m.Role, Status: status})
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
