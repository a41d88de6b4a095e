package raft

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ClientConfig configures a client node: no raft, a Replica of the
// catalog, and writes forwarded to the leader with its node certificate.
type ClientConfig struct {
	Identity *Identity
	NodeID   string
	// Addr is this node's advertised cluster address (heartbeats carry it;
	// nothing listens on it).
	Addr string
	// Servers are servers' cluster addresses to start from (the join
	// address, or those remembered from the last run). The client then
	// follows the servers the leader lists.
	Servers           []string
	HeartbeatInterval time.Duration
	// OnServers, when set, is told each new server list (to remember it
	// across restarts).
	OnServers func([]string)
	// DataDir is where the renewed node certificate and key are written
	// ("" keeps them in memory only: tests). NodeCertTTL is the lifetime
	// the client asks for (default DefaultNodeCertTTL).
	DataDir     string
	NodeCertTTL time.Duration
	Logger      *slog.Logger
	// TracerProvider, when set, traces writes (trace.go).
	TracerProvider trace.TracerProvider
}

// Client is a client node's link to the cluster: its Replica, its
// heartbeat, and its writes through the leader. The leader authorizes
// every write by the client's certificate (forward.go): a client writes
// only its own node, services and checks.
type Client struct {
	cfg     ClientConfig
	tracer  trace.Tracer // nil: no tracing
	replica *Replica
	clients *rpcClients

	servers atomic.Pointer[[]string]
	leader  atomic.Pointer[string]

	done   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// How often a client asks for the server list.
const clientServersEvery = 10 * time.Second

// NewClient prepares a client that fills store (empty) from the servers.
// Start runs it.
func NewClient(cfg ClientConfig, store *discovery.Store) (*Client, error) {
	if cfg.Identity == nil || cfg.NodeID == "" {
		return nil, errors.New("raft: client: Identity and NodeID are required")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("raft: client: no server address known; join again with 'vmesh join ADDR'")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeCertTTL <= 0 {
		cfg.NodeCertTTL = DefaultNodeCertTTL
	}
	c := &Client{cfg: cfg, tracer: newTracer(cfg.TracerProvider), done: make(chan struct{})}
	c.clients = &rpcClients{id: cfg.Identity}
	// Trust the roots and the deny list of the replica (trust.go).
	cfg.Identity.followCatalog(store, cfg.Logger)
	servers := slices.Clone(cfg.Servers)
	c.servers.Store(&servers)
	r, err := NewReplica(ReplicaConfig{Identity: cfg.Identity, Servers: servers, ServerList: c.replicaServers, Logger: cfg.Logger.With("component", "replica")}, store)
	if err != nil {
		return nil, err
	}
	c.replica = r
	return c, nil
}

// Start runs the replica, the heartbeat, the server list refresh and the
// node certificate's renewal until Close.
func (c *Client) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(4)
	go func() { defer c.wg.Done(); c.replica.Run(ctx) }()
	go func() { defer c.wg.Done(); c.heartbeatLoop(ctx) }()
	go func() { defer c.wg.Done(); c.serversLoop(ctx) }()
	go func() { defer c.wg.Done(); c.nodeRenewal().run(ctx) }()
}

// nodeRenewal renews the client's node certificate through the servers.
func (c *Client) nodeRenewal() *renewal {
	return &renewal{
		id: c.cfg.Identity, dataDir: c.cfg.DataDir, ttl: c.cfg.NodeCertTTL,
		sign: func(ctx context.Context, csr []byte, ttl time.Duration) (*RenewNodeResponse, error) {
			var resp RenewNodeResponse
			if err := anyServer(ctx, c.clients, c.serverOrder(), "RenewNode", &RenewNodeRequest{CSR: csr, TTL: ttl}, &resp); err != nil {
				return nil, err
			}
			return &resp, nil
		},
		logger: c.cfg.Logger.With("component", "node-cert"),
	}
}

// SignLeaf has a server sign a leaf for this client's proxy or one of its
// services (the LeafIssuer's signer on a client), trying the servers it
// knows in turn.
func (c *Client) SignLeaf(ctx context.Context, req *SignLeafRequest) (*x509.Certificate, error) {
	var resp SignLeafResponse
	if err := anyServer(ctx, c.clients, c.serverOrder(), "SignLeaf", req, &resp); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(resp.Cert)
}

// serverOrder is the known servers from a random one on, so that clients
// spread their signing requests.
func (c *Client) serverOrder() []string {
	s := c.Servers()
	if len(s) == 0 {
		return nil
	}
	i := rand.IntN(len(s))
	return slices.Concat(s[i:], s[:i])
}

// Close stops the client.
func (c *Client) Close() error {
	c.once.Do(func() {
		close(c.done)
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		c.clients.closeAll()
	})
	return nil
}

// Replica is the client's copy of the catalog.
func (c *Client) Replica() *Replica { return c.replica }

// Servers are the servers' cluster addresses known now.
func (c *Client) Servers() []string { return slices.Clone(*c.servers.Load()) }

// Leader is the leader's address as last heard ("" when unknown).
func (c *Client) Leader() (addr, id string) {
	if p := c.leader.Load(); p != nil {
		return *p, ""
	}
	return "", ""
}

// LastContact is how long ago a server was last heard on the replica
// stream (0 before the first).
func (c *Client) LastContact() time.Duration {
	t := c.replica.LastContact()
	if t.IsZero() {
		return 0
	}
	return time.Since(t)
}

// WaitLeader waits until the client has its first copy of the catalog
// and a leader answered: writes can then go through.
func (c *Client) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := c.Leader(); addr != "" && c.replica.Snapshots() > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a leader: %w", ErrNoLeader)
		case <-c.done:
			return ErrClosed
		case <-t.C:
		}
	}
}

// Stats is the client's state for /v1/agent/self.
func (c *Client) Stats() map[string]string {
	st := map[string]string{
		"state":          "client",
		"last_index":     fmt.Sprint(c.replica.LastIndex()),
		"replica_server": c.replica.Server(),
		"snapshots":      fmt.Sprint(c.replica.Snapshots()),
	}
	if lc := c.replica.LastContact(); lc.IsZero() {
		st["last_contact"] = "never"
	} else {
		st["last_contact"] = time.Since(lc).Round(time.Millisecond).String()
	}
	if l, _ := c.Leader(); l != "" {
		st["leader_addr"] = l
	}
	return st
}

// Apply has the leader apply cmd, authorized by this node's certificate,
// and returns once the replica holds it (read-your-writes).
func (c *Client) Apply(ctx context.Context, cmd discovery.Command) (idx uint64, err error) {
	buf, err := encodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	if c.tracer != nil {
		var span trace.Span
		ctx, span = startWriteSpan(ctx, c.tracer, "raft.forward", trace.SpanKindClient, buf)
		defer func() { endWriteSpan(span, idx, err) }()
	}
	var resp ForwardResponse
	if err := c.leaderCall(ctx, "Forward", &ForwardRequest{Command: buf, Token: discovery.TokenFrom(ctx), Traceparent: traceparent(ctx)}, &resp, true); err != nil {
		return 0, err
	}
	// Only what the replica holds is worth waiting for: a KV or session
	// write never reaches it.
	if resp.Index > 0 && replicated[cmd.MessageType()] {
		if err := c.replica.WaitIndex(ctx, resp.Index); err != nil {
			return 0, err
		}
	}
	return resp.Index, decodeRemoteErr(resp.ErrCode, resp.ErrMsg)
}

// Members asks the leader for the cluster's nodes.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var resp MembersResponse
	if err := c.leaderCall(ctx, "Members", &Empty{}, &resp, true); err != nil {
		return nil, err
	}
	return resp.Members, nil
}

// Leave has the leader revoke this node's certificate and deregister it
// (with its services); the agent then stops.
func (c *Client) Leave(ctx context.Context) error {
	return c.leaderCall(ctx, "Leave", &LeaveRequest{NodeID: c.cfg.NodeID}, &Empty{}, true)
}

// leaderCall calls method on the leader: the one last heard, else each
// known server in turn, following a follower's redirect. It waits (within
// ctx, at most maxForwardWait) while no server answers.
func (c *Client) leaderCall(ctx context.Context, name string, req, resp any, retryUnavailable bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxForwardWait)
		defer cancel()
	}
	backoff := 25 * time.Millisecond
	next := 0
	var err error
	for {
		addr, _ := c.Leader()
		if addr == "" {
			servers := c.Servers()
			addr = servers[next%len(servers)]
			next++
		}
		var cc *grpc.ClientConn
		if cc, err = c.clients.get(addr); err == nil {
			var trailer metadata.MD
			err = cc.Invoke(ctx, "/"+rpcService+"/"+name, req, resp, grpc.Trailer(&trailer))
			if err == nil {
				c.leader.Store(&addr)
				return nil
			}
			if isNotLeader(err) {
				if l := trailer.Get("vmesh-leader"); len(l) == 1 && l[0] != "" && l[0] != addr {
					c.leader.Store(&l[0])
					continue
				}
			} else if !(retryUnavailable && status.Code(err) == codes.Unavailable) {
				return rpcErr(err)
			}
		}
		c.leader.Store(nil)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v (last error: %v)", ErrNoLeader, ctx.Err(), err)
		case <-c.done:
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// heartbeatLoop tells the leader, every interval, that this node is alive.
func (c *Client) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, max(c.cfg.HeartbeatInterval, time.Second))
		err := c.leaderCall(hctx, "Heartbeat", &HeartbeatRequest{NodeID: c.cfg.NodeID, Addr: c.cfg.Addr}, &Empty{}, true)
		cancel()
		if err != nil {
			c.cfg.Logger.Debug("heartbeat to the leader failed", "err", err)
		}
	}
}

// serversLoop keeps the server list: the raft members the leader lists.
func (c *Client) serversLoop(ctx context.Context) {
	for {
		if ms, err := c.Members(ctx); err == nil {
			var servers []string
			for _, m := range ms {
				if m.Role != "none" && m.Addr != "" {
					servers = append(servers, m.Addr)
				}
			}
			slices.Sort(servers)
			if len(servers) > 0 && !slices.Equal(servers, sortedCopy(c.Servers())) {
				c.servers.Store(&servers)
				c.cfg.Logger.Info("servers", "servers", servers)
				if c.cfg.OnServers != nil {
					c.cfg.OnServers(slices.Clone(servers))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(clientServersEvery):
		}
	}
}

// replicaServers is the server list for the replica stream, rotated by an
// offset of this node's own: every client knows the same sorted list, and
// without it every client would follow the same first server.
func (c *Client) replicaServers() []string {
	s := *c.servers.Load()
	if len(s) < 2 {
		return slices.Clone(s)
	}
	h := fnv.New32a()
	h.Write([]byte(c.cfg.NodeID))
	k := int(h.Sum32() % uint32(len(s)))
	return append(slices.Clone(s[k:]), s[:k]...)
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// VerifyLeader is what a ?consistent read needs on a client: the leader
// confirms its leadership and names its applied index, and the replica
// waits until it holds that index.
func (c *Client) VerifyLeader() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp ReadIndexResponse
	if err := c.leaderCall(ctx, "ReadIndex", &Empty{}, &resp, true); err != nil {
		return err
	}
	return c.replica.WaitIndex(ctx, resp.Index)
}
