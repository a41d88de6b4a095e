package local

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// State keeps what this agent owns in the catalog in step with it,
// as Consul's agent-local state does: once the cluster has a leader it
// registers this node, then the services of its files, then keeps the
// node's check runner in step with the checks the catalog holds for it.
type State struct {
	Store  *discovery.Store
	Writer discovery.Writer
	// Node is this node as it registers itself.
	Node discovery.Node
	// ServerPort, on a server, is its cluster port: the node registers
	// the servers' own "consul" service there (discovery.ServerServiceName),
	// as Consul's servers do. 0 on a client.
	ServerPort int
	// WaitLeader blocks until the cluster has a leader (or ctx ends).
	WaitLeader func(ctx context.Context) error
	// SyncFiles registers the services of this node's files.
	SyncFiles func(ctx context.Context) error
	// Checks runs the node's health checks; it is handed every set of
	// checks the catalog holds for the node.
	Checks interface {
		Sync(checks []*discovery.Check)
	}
	Logger *slog.Logger

	ready  chan struct{}
	syncMu *sync.Mutex // one read-and-Sync at a time, so a later read is never undone by an earlier one
}

// New returns an idle State; Run does the work.
func New(ls State) *State {
	ls.ready = make(chan struct{})
	ls.syncMu = new(sync.Mutex)
	return &ls
}

// Ready is closed once this node is registered in the catalog.
func (l *State) Ready() <-chan struct{} { return l.ready }

// WaitReady blocks until this node is registered in the catalog, so that
// a registration sent right after start is not refused for a node that
// registers a moment later.
func (l *State) WaitReady(ctx context.Context) error {
	select {
	case <-l.ready:
		return nil
	case <-ctx.Done():
		return errors.New("this node is not registered yet (no raft leader?)")
	}
}

// Run waits for a leader, registers the node and its file services
// (retrying with back-off), then follows the node's checks until ctx ends.
func (l *State) Run(ctx context.Context) {
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := l.WaitLeader(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			break
		}
		l.Logger.Warn("no raft leader yet; still waiting")
	}
	if !retry(ctx, l.Logger, "registering this node", l.registerNode) {
		return
	}
	close(l.ready)
	if l.ServerPort > 0 && !retry(ctx, l.Logger, "registering the servers' consul service", l.registerServerService) {
		return
	}
	if !retry(ctx, l.Logger, "registering services from files", l.SyncFiles) {
		return
	}
	for {
		ws := memdb.NewWatchSet()
		if err := l.syncChecks(ws); err != nil {
			l.Logger.Error("reading local checks", "err", err)
		}
		if ws.WatchCtx(ctx) != nil {
			return
		}
	}
}

// SyncChecks hands the checks the catalog holds for this node to the
// check runner now, without waiting for the watch loop: a registration
// answers only once the runner knows its checks, so a TTL update sent
// right after it finds the check.
func (l *State) SyncChecks() {
	if err := l.syncChecks(nil); err != nil {
		l.Logger.Error("reading local checks", "err", err)
	}
}

func (l *State) syncChecks(ws memdb.WatchSet) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.Store == nil || l.Checks == nil {
		return nil // not running yet: Run syncs first thing
	}
	_, checks, err := l.Store.NodeChecks(ws, l.Node.Name)
	if err != nil {
		return err
	}
	l.Checks.Sync(checks)
	return nil
}

// registerNode writes the node unless the catalog already holds it as is.
func (l *State) registerNode(ctx context.Context) error {
	_, cur, _, err := l.Store.Node(nil, l.Node.Name)
	if err != nil {
		return err
	}
	want := l.Node
	if cur != nil && cur.ID == want.ID && cur.Address == want.Address && cur.Datacenter == want.Datacenter {
		return nil
	}
	_, err = l.Writer.Apply(ctx, discovery.RegisterNodeRequest{Node: want})
	return err
}

// registerServerService registers this server's "consul" instance unless
// the catalog holds it as is. A token that may not write it (the agent
// token lacks service:write on "consul") leaves it out: it is a
// convenience for Consul's tools, not something the mesh needs.
func (l *State) registerServerService(ctx context.Context) error {
	_, cur, err := l.Store.Instance(nil, l.Node.Name, discovery.ServerServiceName)
	if err != nil {
		return err
	}
	if cur != nil && cur.IsServerService() && cur.Port == l.ServerPort {
		return nil
	}
	_, err = l.Writer.Apply(ctx, discovery.ServerServiceRequest(l.Node.Name, l.ServerPort))
	if err != nil && strings.Contains(err.Error(), "Permission denied") {
		l.Logger.Warn("not registering the consul service of this server: the agent token may not write it", "err", err)
		return nil
	}
	return err
}

// retry runs fn until it succeeds, backing off up to 5 s; it returns false
// when ctx ends first.
func retry(ctx context.Context, logger *slog.Logger, what string, fn func(context.Context) error) bool {
	backoff := 100 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil {
			return true
		}
		logger.Warn(what, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
