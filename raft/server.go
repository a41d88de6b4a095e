package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hraft "github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/vmesh/vmesh/discovery"
	"go.opentelemetry.io/otel/trace"
)

// Sentinel errors.
var (
	ErrNotLeader = errors.New("raft: not leader")
	ErrNoLeader  = errors.New("raft: no known leader")
	ErrClosed    = errors.New("raft: server closed")
	// ErrLeadershipLost: the leader lost its leadership while a write was
	// in flight; the write's outcome is unknown.
	ErrLeadershipLost = errors.New("raft: leadership lost")
)

// Config configures a Server.
type Config struct {
	// NodeID is the stable raft server ID (the node's UUID).
	NodeID string
	// Addr is the address peers reach this server at (the cluster port).
	Addr string
	// DataDir holds raft.db (log and stable store, bbolt) and snapshots/.
	DataDir string
	// Bootstrap makes this server a one-voter cluster if it has no state.
	Bootstrap bool
	// SnapshotThreshold, TrailingLogs and SnapshotInterval tune log
	// compaction; zero values take hashicorp/raft's defaults.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration
	// Cluster, when set, runs raft and the cluster RPC on a mutual-TLS
	// port (see ClusterConfig). Nil means a single node on an in-memory
	// transport bound to Addr: no socket at all (tests, benchmarks).
	Cluster *ClusterConfig
	// Transport overrides the transport of a node without Cluster.
	Transport hraft.Transport
	// Stream tunes the replica stream to clients (stream.go).
	Stream StreamConfig
	Logger *slog.Logger
	// TracerProvider, when set, traces writes (trace.go).
	TracerProvider trace.TracerProvider
}

// Server is this node's raft replica of the catalog.
type Server struct {
	raft      *hraft.Raft
	logStore  *raftboltdb.BoltStore
	transport hraft.Transport
	store     *discovery.Store
	fsm       *fsm
	logger    *slog.Logger
	tracer    trace.Tracer // nil: no tracing
	nodeID    string
	dataDir   string
	cluster   *cluster // nil for a single in-memory node
	stream    StreamConfig
	custody   custody  // custody.go
	acl       aclState // acl.go
	// raftUp is set once raft exists: the cluster port opens before it
	// (raft's transport is on it), and calls until then are refused.
	raftUp atomic.Bool
	wg     sync.WaitGroup
	// sessions are the session TTL timers, while this server leads
	// (sessions.go).
	sessions atomic.Pointer[sessionTimers]
	// autopilot is the leader's, while this server leads (operator.go
	// reads its state).
	autopilot atomic.Pointer[autopilot.Autopilot]
	// snaps is the snapshot store, for an operator's snapshot when
	// nothing new was written since the last one (operator.go).
	snaps hraft.SnapshotStore
	// caughtUp is set once this node's catalog holds every entry that was
	// committed when it started (after a restart the log is replayed only
	// once a leader commits). Until then reads see no leader, so nobody
	// reads a catalog that is missing acknowledged writes.
	caughtUp atomic.Bool
	// leaving is set once Leave asked the leader to remove this node, so
	// that rejoinLoop does not add it back.
	leaving   atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the raft state in cfg.DataDir and starts raft.
// The catalog is rebuilt from the latest snapshot and the log after it.
func Open(cfg Config, store *discovery.Store) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating raft dir: %w", err)
	}
	hl := newHCLog(cfg.Logger)
	logStore, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("opening raft log %s: %w", filepath.Join(dir, "raft.db"), err)
	}
	fileSnaps, err := hraft.NewFileSnapshotStoreWithLogger(dir, 2, hl.Named("snapshot"))
	if err == nil {
		err = tightenModes(dir)
	}
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("opening snapshot store: %w", err)
	}
	snaps := privateSnapshots{FileSnapshotStore: fileSnaps, dir: dir}
	s := &Server{snaps: snaps, logStore: logStore, store: store, logger: cfg.Logger, tracer: newTracer(cfg.TracerProvider), done: make(chan struct{}),
		nodeID: cfg.NodeID, dataDir: cfg.DataDir, fsm: newFSM(store, cfg.Logger), stream: cfg.Stream.withDefaults()}
	s.fsm.hist = newHistory(s.stream.History, cfg.Logger)
	trans := cfg.Transport
	switch {
	case cfg.Cluster != nil:
		t, addr, err := s.startCluster(*cfg.Cluster, cfg.Addr)
		if err != nil {
			logStore.Close()
			return nil, err
		}
		trans, cfg.Addr = t, addr
	case trans == nil:
		_, trans = hraft.NewInmemTransport(hraft.ServerAddress(cfg.Addr))
	}
	s.transport = trans
	fail := func(err error) (*Server, error) {
		if s.cluster != nil {
			s.cluster.close()
		}
		logStore.Close()
		return nil, err
	}

	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.BatchApplyCh = true // group concurrent writes into one fsync
	rc.MaxAppendEntries = 256
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	rc.NoSnapshotRestoreOnStart = false
	// A server removed from the configuration keeps running, so that it
	// can add itself back (rejoinLoop) instead of staying down until a
	// restart; a node that leaves stops with its agent.
	rc.ShutdownOnRemove = false

	recovered, err := recoverFromPeersFile(cfg.DataDir, rc, newFSM(discovery.NewStore(), cfg.Logger), logStore, snaps, trans)
	if err != nil {
		return fail(err)
	}
	if recovered {
		cfg.Logger.Warn("recovered the raft configuration from peers.json", "file", PeersFile(cfg.DataDir)+".recovered")
	}
	if cfg.Bootstrap {
		has, err := hraft.HasExistingState(logStore, logStore, snaps)
		if err != nil {
			return fail(fmt.Errorf("checking raft state: %w", err))
		}
		if !has {
			conf := hraft.Configuration{Servers: []hraft.Server{{
				Suffrage: hraft.Voter, ID: rc.LocalID, Address: trans.LocalAddr(),
			}}}
			if err := hraft.BootstrapCluster(rc, logStore, logStore, snaps, trans, conf); err != nil {
				return fail(fmt.Errorf("bootstrapping raft: %w", err))
			}
		}
	}
	r, err := hraft.NewRaft(rc, s.fsm, logStore, logStore, snaps, trans)
	if err != nil {
		return fail(fmt.Errorf("starting raft: %w", err))
	}
	s.raft = r
	s.raftUp.Store(true) // the cluster RPC may use s.raft from now on
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchCatchUp()
	}()
	if s.cluster != nil {
		s.wg.Add(4)
		go s.monitorLeadership()
		go s.heartbeatLoop()
		go s.rejoinLoop()
		go s.renewLoop()
	}
	return s, nil
}

// watchCatchUp sets caughtUp: on a leader, after a barrier (every earlier
// entry applied); on a follower, once it has applied what it knows to be
// committed.
func (s *Server) watchCatchUp() {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		switch s.raft.State() {
		case hraft.Leader:
			if s.raft.Barrier(5*time.Second).Error() == nil {
				s.caughtUp.Store(true)
				return
			}
		case hraft.Follower:
			if a, _ := s.raft.LeaderWithID(); a != "" && s.raft.CommitIndex() > 0 && s.raft.AppliedIndex() >= s.raft.CommitIndex() {
				s.caughtUp.Store(true)
				return
			}
		}
	}
}

// defaultApplyTimeout bounds a write whose context has no deadline.
const defaultApplyTimeout = 30 * time.Second

// Apply commits cmd through raft and returns its index once this node's
// catalog has applied it. The catalog's own verdict on the command (for
// example a failed check-and-set) is returned as the error.
func (s *Server) Apply(ctx context.Context, cmd discovery.Command) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	buf, err := encodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	if s.cluster != nil && !s.IsLeader() {
		return s.forward(ctx, buf)
	}
	idx, err := s.applyLocal(ctx, buf)
	if errors.Is(err, ErrNotLeader) && s.cluster != nil {
		return s.forward(ctx, buf)
	}
	return idx, err
}

// applyLocal applies an encoded command on this node, which must lead.
func (s *Server) applyLocal(ctx context.Context, buf []byte) (uint64, error) {
	idx, resp, err := s.applyLocalResp(ctx, buf)
	if err != nil {
		return idx, err
	}
	if rerr, ok := resp.(error); ok && rerr != nil {
		return idx, rerr
	}
	return idx, nil
}

// applyLocalResp is applyLocal that also returns what the FSM answered
// (a transaction's result, sessions.go).
func (s *Server) applyLocalResp(ctx context.Context, buf []byte) (uint64, any, error) {
	if s.tracer == nil {
		return s.commit(ctx, buf)
	}
	ctx, span := startWriteSpan(ctx, s.tracer, "raft.apply", trace.SpanKindInternal, buf)
	idx, resp, err := s.commit(ctx, buf)
	verdict := err
	if rerr, ok := resp.(error); ok && verdict == nil {
		verdict = rerr
	}
	endWriteSpan(span, idx, verdict)
	return idx, resp, err
}

// commit is applyLocalResp's work.
func (s *Server) commit(ctx context.Context, buf []byte) (uint64, any, error) {
	select {
	case <-s.done:
		return 0, nil, ErrClosed
	default:
	}
	timeout := defaultApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return 0, nil, context.DeadlineExceeded
		}
	}
	f := s.raft.Apply(buf, timeout)
	// Wait in a goroutine: with BatchApplyCh a future queued as raft shuts
	// down is never answered (hashicorp/raft#498), so the caller must be
	// able to leave on its context or on Close.
	res := make(chan error, 1)
	go func() { res <- f.Error() }()
	var err error
	select {
	case err = <-res:
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-s.done:
		return 0, nil, ErrClosed
	}
	if err != nil {
		switch {
		case errors.Is(err, hraft.ErrNotLeader):
			return 0, nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, hraft.ErrLeadershipLost):
			// Unlike ErrNotLeader, the entry may still commit: retrying a
			// non-idempotent write on this error is not safe.
			return 0, nil, fmt.Errorf("%w: leadership lost while applying; the write may or may not have been applied", ErrLeadershipLost)
		case errors.Is(err, hraft.ErrRaftShutdown):
			return 0, nil, ErrClosed
		}
		return 0, nil, fmt.Errorf("applying command %d: %w", buf[0], err)
	}
	return f.Index(), f.Response(), nil
}

// Leader returns the leader's cluster address and ID ("" when unknown,
// and while this server is not in the cluster's configuration: it is not
// a member then, whatever it last heard).
func (s *Server) Leader() (addr, id string) {
	if !s.caughtUp.Load() {
		return "", ""
	}
	if s.cluster != nil && !s.InConfiguration() {
		return "", ""
	}
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// IsLeader reports whether this server leads.
func (s *Server) IsLeader() bool { return s.raft.State() == hraft.Leader }

// VerifyLeader confirms with a quorum that this server still leads; the
// basis of ?consistent reads.
//
// On a follower of a cluster it asks the leader for its commit index
// (which the leader returns only after confirming its leadership) and
// waits until this node has applied it, so a local read that follows is as
// fresh as one on the leader.
func (s *Server) VerifyLeader() error {
	if s.cluster != nil && !s.IsLeader() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var resp ReadIndexResponse
		if err := s.leaderCall(ctx, "ReadIndex", &Empty{}, &resp, true); err != nil {
			return err
		}
		return s.waitApplied(ctx, resp.Index)
	}
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return nil
}

// LastContact is how long ago this server heard from the leader; zero on
// the leader itself.
func (s *Server) LastContact() time.Duration {
	if s.IsLeader() {
		return 0
	}
	lc := s.raft.LastContact()
	if lc.IsZero() {
		return 0
	}
	return time.Since(lc)
}

// WaitLeader blocks until a leader is known or ctx ends.
func (s *Server) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := s.Leader(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a leader: %w", ErrNoLeader)
		case <-t.C:
		}
	}
}

// Barrier waits until every entry committed before it is applied locally.
func (s *Server) Barrier(timeout time.Duration) error {
	return s.raft.Barrier(timeout).Error()
}

// Peers lists the cluster addresses of the voters.
func (s *Server) Peers() ([]string, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("reading raft configuration: %w", err)
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == hraft.Voter { // as Consul's /v1/status/peers
			out = append(out, string(srv.Address))
		}
	}
	return out, nil
}

// Snapshot takes a snapshot now and compacts the log behind it. It returns
// the index the snapshot covers.
func (s *Server) Snapshot() (uint64, error) {
	f := s.raft.Snapshot()
	if err := f.Error(); err != nil {
		return 0, fmt.Errorf("taking snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return 0, fmt.Errorf("opening snapshot: %w", err)
	}
	rc.Close()
	return meta.Index, nil
}

// Stats reports raft's own statistics plus the first index still in the
// log, which shows how far compaction has gone.
func (s *Server) Stats() map[string]string {
	st := s.raft.Stats()
	if first, err := s.logStore.FirstIndex(); err == nil {
		st["first_log_index"] = strconv.FormatUint(first, 10)
	}
	return st
}

// Close shuts raft down and closes the log store.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		err := s.raft.Shutdown().Error()
		s.wg.Wait()
		if s.cluster != nil {
			s.cluster.close()
		}
		if nt, ok := s.transport.(*hraft.NetworkTransport); ok {
			nt.CloseStreams() // the pooled connections to peers
		}
		if c, ok := s.transport.(interface{ Close() error }); ok {
			c.Close()
		}
		if cerr := s.logStore.Close(); err == nil {
			err = cerr
		}
		s.closeErr = err
	})
	return s.closeErr
}
