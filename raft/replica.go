package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// ReplicaConfig configures a client's Replica.
type ReplicaConfig struct {
	// Identity is this node's certificate: the server authenticates the
	// subscription with it.
	Identity *Identity
	// Servers are the servers' cluster addresses, tried in turn.
	Servers []string
	// ServerList, when set, is asked before each attempt for the servers
	// known now (a client learns them as the cluster changes); Servers is
	// used while it returns none. While the replica follows the only
	// server it knew, it asks every second, and moves to the first of the
	// list (resuming, without a snapshot) once it names more.
	ServerList func() []string
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults
	// 50 ms and 5 s); the wait doubles while no server answers.
	MinBackoff, MaxBackoff time.Duration
	// Timeout is how long a stream may stay silent before the replica
	// gives up on that server (default 3 × DefaultStreamKeepAlive).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Replica is a client's copy of the replicated catalog, followed from a
// server's replica stream (stream.go). Its Store holds the same objects
// at the same raft indexes as the servers', so reads and blocking queries
// on it behave as on a server; it never holds KV, join tokens or the CA
// key.
type Replica struct {
	cfg   ReplicaConfig
	store *discovery.Store

	lastIndex   atomic.Uint64
	lastContact atomic.Int64 // unix nanoseconds; 0 never
	snapshots   atomic.Uint64
	server      atomic.Pointer[string]

	mu     sync.Mutex
	notify chan struct{} // closed when lastIndex moves; nil while nobody waits

	// onIndex, when set (by the scale benchmark), is called on the
	// replica's goroutine each time lastIndex moves.
	onIndex func(uint64)
}

// NewReplica returns a replica that fills store, which should be empty.
func NewReplica(cfg ReplicaConfig, store *discovery.Store) (*Replica, error) {
	if cfg.Identity == nil {
		return nil, errors.New("raft: replica: Identity is required")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("raft: replica: Servers is empty; give at least one server's cluster address")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * DefaultStreamKeepAlive
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Replica{cfg: cfg, store: store}, nil
}

// Store is the replicated catalog. Only the replica writes it.
func (r *Replica) Store() *discovery.Store { return r.store }

// LastIndex is the raft index the replica is current to.
func (r *Replica) LastIndex() uint64 { return r.lastIndex.Load() }

// LastContact is when a server was last heard; zero before the first.
func (r *Replica) LastContact() time.Time {
	if n := r.lastContact.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Server is the address of the server the replica follows now ("" when
// none).
func (r *Replica) Server() string {
	if p := r.server.Load(); p != nil {
		return *p
	}
	return ""
}

// Snapshots counts the full snapshots this replica has loaded.
func (r *Replica) Snapshots() uint64 { return r.snapshots.Load() }

// WaitIndex waits until the replica is current to index.
func (r *Replica) WaitIndex(ctx context.Context, index uint64) error {
	for {
		r.mu.Lock()
		if r.notify == nil {
			r.notify = make(chan struct{})
		}
		ch := r.notify
		r.mu.Unlock()
		if r.lastIndex.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the replica to reach index %d (at %d): %w", index, r.lastIndex.Load(), ctx.Err())
		}
	}
}

func (r *Replica) setIndex(idx uint64) {
	r.lastIndex.Store(idx)
	r.mu.Lock()
	if r.notify != nil {
		close(r.notify)
		r.notify = nil // made again by the next waiter
	}
	r.mu.Unlock()
	if r.onIndex != nil {
		r.onIndex(idx)
	}
}

// Run follows the servers until ctx ends: one server at a time, moving to
// the next when a stream breaks, resuming from LastIndex. It returns
// ctx's error.
func (r *Replica) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	next := 0
	for {
		servers := r.cfg.Servers
		if r.cfg.ServerList != nil {
			if l := r.cfg.ServerList(); len(l) > 0 {
				servers = l
			}
		}
		addr := servers[next%len(servers)]
		next++
		progressed, err := r.follow(ctx, addr, len(servers) == 1)
		r.server.Store(nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errMoreServers) {
			// Resume at once on the first of the longer list (a Client
			// rotates it per node, so its clients spread over the servers).
			r.cfg.Logger.Debug("replica stream: more servers known; moving", "from", addr, "index", r.LastIndex())
			next = 0
			continue
		}
		if progressed {
			backoff = r.cfg.MinBackoff
		}
		r.cfg.Logger.Info("replica stream ended; trying the next server", "server", addr, "index", r.LastIndex(), "err", err)
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: clients do not come back in step
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
}

// maxEventSize bounds one stream event: a snapshot batch of large records.
const maxEventSize = 64 << 20

// replicaWindow is the replica stream's HTTP/2 flow-control window, for
// the stream and the connection.
const replicaWindow = 4 << 20

var replicaStreamDesc = grpc.StreamDesc{StreamName: "Subscribe", ServerStreams: true}

// errReplicaDiverged: a delta did not apply as on the server.
var errReplicaDiverged = errors.New("raft: replica: a command failed here that the server applied")

// replicaDialOptions are the replica stream's connection options.
func replicaDialOptions(id *Identity) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(id.clientTLS(alpnRPC))),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(jsonCodec{}), grpc.MaxCallRecvMsgSize(maxEventSize)),
		// Fixed flow-control windows: with the default dynamic window the
		// client answers nearly every event with a bandwidth-probing ping
		// that the server must read and acknowledge, which doubles the
		// server's work per change. The stream is a trickle of small
		// events after one snapshot; 4 MiB keeps a snapshot flowing.
		grpc.WithInitialWindowSize(replicaWindow), grpc.WithInitialConnWindowSize(replicaWindow),
	}
}

// errMoreServers ends a stream taken from the only server known when
// ServerList has come to name more.
var errMoreServers = errors.New("raft: replica: more servers are known now")

// follow streams from addr until the stream ends. progressed says whether
// any event arrived. only says addr was the only server known: the stream
// then ends once ServerList names more (errMoreServers), so that the
// clients that all joined through one server do not all stay on it.
func (r *Replica) follow(ctx context.Context, addr string, only bool) (progressed bool, err error) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	defer cancel()
	cc, err := grpc.NewClient(addr, replicaDialOptions(r.cfg.Identity)...)
	if err != nil {
		return false, err
	}
	defer cc.Close()
	stream, err := cc.NewStream(ctx, &replicaStreamDesc, "/"+rpcService+"/Subscribe")
	if err != nil {
		return false, err
	}
	if err := stream.SendMsg(&SubscribeRequest{FromIndex: r.LastIndex()}); err != nil {
		return false, err
	}
	if err := stream.CloseSend(); err != nil {
		return false, err
	}
	r.server.Store(&addr)
	// A server that goes silent (a dead host keeps no connection to
	// reset) is left after Timeout; it sends progress every KeepAlive.
	watchdog := time.AfterFunc(r.cfg.Timeout, cancel)
	defer watchdog.Stop()

	var restore *discovery.Restorer
	defer func() {
		if restore != nil {
			restore.Abort()
		}
	}()
	if only && r.cfg.ServerList != nil {
		// Asked every second, not at events: a client that learns the
		// servers while idle moves then, not during the next change's
		// fan-out. Not before the replica holds a first snapshot.
		var stop atomic.Bool
		defer stop.Store(true)
		var arm func()
		arm = func() {
			time.AfterFunc(time.Second, func() {
				if stop.Load() || ctx.Err() != nil {
					return
				}
				if r.LastIndex() > 0 && len(r.cfg.ServerList()) > 1 {
					cancelCause(errMoreServers)
					return
				}
				arm()
			})
		}
		arm()
	}
	for {
		var ev SubscribeEvent
		if err := stream.RecvMsg(&ev); err != nil {
			if errors.Is(context.Cause(ctx), errMoreServers) {
				return progressed, errMoreServers
			}
			if st, ok := status.FromError(err); ok && st.Code() == codes.ResourceExhausted {
				return progressed, fmt.Errorf("the server dropped this replica: %s", st.Message())
			}
			return progressed, err
		}
		watchdog.Reset(r.cfg.Timeout)
		r.lastContact.Store(time.Now().UnixNano())
		progressed = true
		switch ev.Kind {
		case EventSnapshot:
			if restore == nil {
				restore = r.store.NewRestorer()
			}
			for _, b := range ev.Records {
				if err := addReplicaRecord(restore, b); err != nil {
					return progressed, err
				}
			}
		case EventSnapshotEnd:
			if restore == nil {
				restore = r.store.NewRestorer() // an empty catalog
			}
			restore.Commit()
			restore = nil
			r.snapshots.Add(1)
			r.setIndex(ev.Index)
		case EventDeltas:
			if restore != nil {
				return progressed, errors.New("raft: replica: deltas inside a snapshot")
			}
			for _, d := range ev.Deltas {
				if err := r.applyDelta(d); err != nil {
					return progressed, err
				}
			}
		case EventProgress:
			if restore == nil && ev.Index > r.LastIndex() {
				r.setIndex(ev.Index)
			}
		default:
			// A newer server's event: nothing this replica needs.
		}
	}
}

// addReplicaRecord decodes one snapshot record into the restore, refusing
// any kind a replica must not hold.
func addReplicaRecord(rs *discovery.Restorer, b []byte) error {
	if len(b) == 0 {
		return errors.New("raft: replica: empty snapshot record")
	}
	rt := discovery.RecordType(b[0])
	rec, err := discovery.NewRecord(rt)
	if err != nil {
		return err
	}
	if err := decode(b[1:], rec); err != nil {
		return fmt.Errorf("decoding snapshot record %d: %w", rt, err)
	}
	out, ok := discovery.ReplicaRecord(rt, rec)
	if !ok {
		return fmt.Errorf("raft: replica: the server sent a record of kind %d, which a replica must not hold", rt)
	}
	return rs.Add(rt, out)
}

// applyDelta applies one command with the FSM's own appliers, at the
// server's index, so the replica's objects carry the same indexes.
func (r *Replica) applyDelta(d Delta) error {
	if d.Index <= r.LastIndex() {
		return nil // already here (a resume that overlaps)
	}
	if len(d.Command) == 0 {
		return errors.New("raft: replica: empty command")
	}
	t := discovery.MessageType(d.Command[0]) &^ discovery.IgnoreUnknownTypeFlag
	fn, ok := appliers[t]
	if !ok || !replicated[t] {
		return fmt.Errorf("raft: replica: the server sent command type %d at index %d, which a replica does not apply", t, d.Index)
	}
	if resp, _ := fn(r.store, d.Command[1:], d.Index).(error); resp != nil {
		// The servers applied it; going on would serve a different state.
		// Forgetting the index makes the next stream start with a snapshot.
		r.setIndex(0)
		return fmt.Errorf("%w: type %d at index %d: %v", errReplicaDiverged, t, d.Index, resp)
	}
	r.setIndex(d.Index)
	return nil
}
