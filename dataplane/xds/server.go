package xds

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

// DefaultDebounce is how long the server lets catalog changes gather
// before it rebuilds: long enough that a burst of registrations (an agent
// starting with many service files) costs one rebuild, short enough that a
// change reaches clients well within a second.
const DefaultDebounce = 25 * time.Millisecond

// Config configures a Server.
type Config struct {
	// Store is the catalog the server reads.
	Store *discovery.Store
	// Options are passed to every translation.
	Options Options
	// UnixSocket is a path to serve on ("" for none). A stale socket file
	// left by a crash is replaced; any other file there is an error.
	UnixSocket string
	// TCPAddr is a host:port to serve on too ("" for none; port 0 picks
	// one, see Addrs).
	TCPAddr string
	// Secrets, when set, supplies mesh nodes' TLS secrets over SDS.
	Secrets SecretSource
	// TCPAuth authenticates the TCP listener's clients by ACL token and
	// decides which secrets each gets (auth.go); NodeName is this agent's
	// node, whose proxy certificate needs node:write.
	TCPAuth  TCPAuth
	NodeName string
	// Debounce defaults to DefaultDebounce.
	Debounce time.Duration
	Logger   *slog.Logger
	// Metrics receives the server's measurements (nil: none are kept).
	Metrics *Metrics
	// TracerProvider, when set, traces pushes (trace.go).
	TracerProvider trace.TracerProvider
}

// Server serves the catalog as xDS (SotW and delta ADS, and the per-type
// services) to every client that connects, each with its own snapshot.
type Server struct {
	cfg    Config
	logger *slog.Logger
	cache  cache.SnapshotCache
	grpc   *grpc.Server
	// grpcTCP serves the TCP listener, with token authentication.
	grpcTCP *grpc.Server
	lns     []net.Listener

	// buildMu serializes building and setting snapshots, so a client's
	// snapshot never goes back to an older view.
	buildMu sync.Mutex
	view    *View
	// pushed counts the snapshots set (buildMu held), for push spans.
	pushed int
	// watchers get every new view (Watch), under buildMu.
	watchers []chan *View
	// built holds the latest snapshot per build key: clients that are not
	// mesh proxies share one per kind, so 100 proxyless apps cost one build.
	built map[string]*builtSnap

	// mu guards the client table, which stream callbacks update.
	mu      sync.Mutex
	clients map[string]*client
	streams map[streamKey]string // -> node ID ("" until its first request)

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type builtSnap struct {
	view *View
	snap *cache.Snapshot
}

type streamKey struct {
	delta bool
	id    int64
}

// client is one xDS client (a node ID) and what it has been sent.
type client struct {
	info      NodeInfo
	userAgent string
	streams   int
	connected time.Time
	snap      *cache.Snapshot // what it is served
	snapIndex uint64          // the raft index that was built from
	types     map[string]*TypeStatus
}

// TypeStatus is what a client was last sent of one resource type and what
// it made of it.
type TypeStatus struct {
	Sent      string    `json:",omitempty"`
	SentNonce string    `json:",omitempty"`
	SentAt    time.Time `json:",omitzero"`
	// Acked is the last version the client accepted.
	Acked   string    `json:",omitempty"`
	AckedAt time.Time `json:",omitzero"`
	// Rejected is set while the client's answer to the latest response is
	// a NACK.
	Rejected bool
	// Nacks counts the client's NACKs of this type; LastNack is the latest.
	Nacks    int
	LastNack *Nack `json:",omitempty"`
}

// Nack is a rejected response.
type Nack struct {
	Version string
	Nonce   string
	Error   string
	At      time.Time
}

// ClientStatus is a connected xDS client as /v1/vmesh/xds/clients shows it.
type ClientStatus struct {
	Node      string
	Mesh      bool
	Proxyless bool
	UserAgent string
	Streams   int
	Connected time.Time
	// Version is the raft index of the catalog its snapshot was built from.
	Version uint64
	// Types are keyed by short type name (clusters, listeners, ...).
	Types map[string]TypeStatus
}

// NewServer prepares a server; nothing runs until Start.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("xds: Config.Store is required")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg: cfg, logger: cfg.Logger,
		built: map[string]*builtSnap{}, clients: map[string]*client{}, streams: map[streamKey]string{},
	}
	// ads=false: with ads=true the cache never answers a request for a
	// subset of resources until it names every resource of the snapshot,
	// and proxyless gRPC asks for exactly the resources it needs.
	s.cache = cache.NewSnapshotCache(false, cache.IDHash{}, cacheLogger{cfg.Logger})
	return s, nil
}

// Start reads the catalog, starts listening and serving, and starts the
// loop that rebuilds snapshots on catalog changes. It returns once the
// listeners are open.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	st, err := s.cfg.Store.MeshState(nil)
	if err != nil {
		return fmt.Errorf("reading the catalog: %w", err)
	}
	s.view = NewView(st, s.cfg.Options)

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	xs := serverv3.NewServer(runCtx, s.cache, s.callbacks())
	opts := []grpc.ServerOption{
		// Find dead clients (their snapshots are dropped on close) and let
		// live ones keep idle streams open.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	register := func(g *grpc.Server) {
		discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, xs)
		clusterservice.RegisterClusterDiscoveryServiceServer(g, xs)
		endpointservice.RegisterEndpointDiscoveryServiceServer(g, xs)
		listenerservice.RegisterListenerDiscoveryServiceServer(g, xs)
		routeservice.RegisterRouteDiscoveryServiceServer(g, xs)
		secretservice.RegisterSecretDiscoveryServiceServer(g, xs)
	}
	s.grpc = grpc.NewServer(opts...)
	register(s.grpc)
	// The TCP listener gets its own gRPC server, whose streams are
	// authenticated and filtered (auth.go).
	s.grpcTCP = grpc.NewServer(append(opts, grpc.StreamInterceptor(s.authStream))...)
	register(s.grpcTCP)

	if p := s.cfg.UnixSocket; p != "" {
		ln, err := listenUnix(p)
		if err != nil {
			return err
		}
		s.lns = append(s.lns, ln)
	}
	if a := s.cfg.TCPAddr; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("xds: listening on %s: %w", a, err)
		}
		s.lns = append(s.lns, ln)
	}
	for _, ln := range s.lns {
		g := s.grpc
		if _, tcp := ln.Addr().(*net.TCPAddr); tcp {
			g = s.grpcTCP
		}
		s.goLoop(func() {
			if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				s.logger.Error("xDS server stopped", "addr", ln.Addr().String(), "err", err)
			}
		})
	}
	s.goLoop(func() { s.watch(runCtx) })
	return nil
}

// listenUnix listens on path, replacing a socket a crashed agent left but
// never another kind of file.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("xds: %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("xds: removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("xds: listening on %s: %w", path, err)
	}
	// Owner and group: an operator opens it to other local users by group;
	// the TCP listener is the way in for everyone else.
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("xds: %w", err)
	}
	return ln, nil
}

func (s *Server) goLoop(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// Addrs returns the addresses the server listens on, once started.
func (s *Server) Addrs() []net.Addr {
	var out []net.Addr
	for _, ln := range s.lns {
		out = append(out, ln.Addr())
	}
	return out
}

// Close stops serving (streams end), stops the rebuild loop and removes
// the unix socket. It tolerates a partial Start.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		// GracefulStop would wait for streams, which never end on their
		// own: xDS streams live as long as their clients.
		for _, g := range []*grpc.Server{s.grpc, s.grpcTCP} {
			if g != nil {
				g.Stop()
			}
		}
		for _, ln := range s.lns {
			ln.Close() // those no server had taken yet
		}
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		if s.cfg.UnixSocket != "" && len(s.lns) > 0 {
			os.Remove(s.cfg.UnixSocket)
		}
	})
	return nil
}

// watch rebuilds every client's snapshot when the catalog changes.
func (s *Server) watch(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		if s.cfg.Secrets != nil {
			ws.Add(s.cfg.Secrets.Changed())
		}
		st, err := s.cfg.Store.MeshState(ws)
		if err != nil {
			s.logger.Error("reading the catalog", "err", err)
		} else {
			s.update(NewView(st, s.cfg.Options))
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Debounce):
		}
	}
}

// Watch returns a channel that holds the newest view: the current one at
// once, then each view the server builds after a catalog change. It has
// one slot, drained and refilled, so a slow reader skips to the newest
// view instead of queueing old ones. Capture follows the mesh through it,
// so the kernel steers exactly what the proxies are configured for.
func (s *Server) Watch() <-chan *View {
	ch := make(chan *View, 1)
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.watchers = append(s.watchers, ch)
	if s.view != nil {
		ch <- s.view
	}
	return ch
}

// buildKey groups clients that get the same snapshot.
func buildKey(info NodeInfo) string {
	switch {
	case info.Mesh():
		return "mesh:" + info.Node
	case info.Proxyless:
		return "client:proxyless"
	case info.MeshTLS:
		return "client:mesh-mtls"
	}
	return "client"
}

// update makes v the current view and brings every client to it.
func (s *Server) update(v *View) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	// Even an older index replaces the view: a snapshot restore can take
	// the catalog back, and clients must follow it.
	s.view = v
	for _, ch := range s.watchers {
		select { // drain a view the reader has not taken: it is stale
		case <-ch:
		default:
		}
		ch <- v
	}
	s.mu.Lock()
	ids := make([]string, 0, len(s.clients))
	for id := range s.clients {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Strings(ids)
	span, before := s.startPush(v, len(ids)), s.pushed
	used := map[string]bool{}
	for _, id := range ids {
		used[s.refresh(id)] = true
	}
	endPush(span, s.pushed-before)
	for k := range s.built {
		if !used[k] {
			delete(s.built, k)
		}
	}
}

// refresh brings one client to the current view (buildMu held) and returns
// its build key.
func (s *Server) refresh(id string) string {
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if c == nil {
		return ""
	}
	if s.view.Index == 0 {
		// No catalog yet (an agent not in a cluster): there is no config
		// to give, and an empty one would tell the client it is
		// initialized (Envoy's and our proxy's /ready would say LIVE).
		return ""
	}
	info := s.view.NodeInfo(&core.Node{Id: id, UserAgentName: c.userAgent})
	key := buildKey(info)
	b := s.built[key]
	if b == nil || b.view != s.view {
		snap, err := Build(s.view, info)
		if err == nil && info.Mesh() && s.cfg.Secrets != nil {
			err = addSecrets(snap, s.cfg.Secrets.Secrets(info.Node))
		}
		if err == nil {
			err = Check(snap)
		}
		if err != nil {
			// A translation bug must not take the fleet down with it:
			// clients keep what they have.
			s.cfg.Metrics.buildFailed()
			s.logger.Error("building xDS snapshot; clients keep their current one", "node", id, "index", s.view.Index, "err", err)
			return key
		}
		if b != nil {
			keepVersions(b.snap, snap)
		}
		b = &builtSnap{view: s.view, snap: snap}
		s.built[key] = b
	}
	s.mu.Lock()
	c.info = info
	stale := c.snap != b.snap
	c.snap, c.snapIndex = b.snap, b.view.Index
	s.mu.Unlock()
	if stale {
		s.pushed++
		if err := s.cache.SetSnapshot(context.Background(), id, b.snap); err != nil {
			s.logger.Error("setting xDS snapshot", "node", id, "err", err)
		}
	}
	return key
}

// keepVersions gives each resource type of next that is unchanged since
// prev prev's version, so a catalog change resends only the types it
// touched (a check flapping changes endpoints, not listeners). Versions
// stay raft indexes: the index at which the type last changed.
func keepVersions(prev, next *cache.Snapshot) {
	for i := range next.Resources {
		a, b := prev.Resources[i].Items, next.Resources[i].Items
		if len(a) != len(b) {
			continue
		}
		same := true
		for name, r := range b {
			o, ok := a[name]
			if !ok || !proto.Equal(o.Resource, r.Resource) {
				same = false
				break
			}
		}
		if same {
			next.Resources[i] = prev.Resources[i]
		}
	}
}

// Snapshot returns the snapshot a client is currently served.
func (s *Server) Snapshot(nodeID string) (*cache.Snapshot, bool) {
	rs, err := s.cache.GetSnapshot(nodeID)
	if err != nil {
		return nil, false
	}
	snap, ok := rs.(*cache.Snapshot)
	return snap, ok
}

// Clients lists the connected clients, by node ID.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ClientStatus, 0, len(s.clients))
	for id, c := range s.clients {
		cs := ClientStatus{
			Node: id, Mesh: c.info.Mesh(), Proxyless: c.info.Proxyless, UserAgent: c.userAgent,
			Streams: c.streams, Connected: c.connected, Version: c.snapIndex, Types: map[string]TypeStatus{},
		}
		for t, ts := range c.types {
			cs.Types[shortType(t)] = *ts
		}
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// cacheLogger sends go-control-plane's logs to slog; its Info is chatty
// (every stale nonce), so it is debug here.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(format string, args ...any) { c.l.Debug(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Infof(format string, args ...any)  { c.l.Debug(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Warnf(format string, args ...any)  { c.l.Warn(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Errorf(format string, args ...any) { c.l.Error(fmt.Sprintf(format, args...)) }
