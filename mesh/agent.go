package mesh

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/checks"
	discdns "github.com/vmesh/vmesh/discovery/dns"
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/cli"
	"github.com/vmesh/vmesh/mesh/config"
)

// Agent is one vmesh agent: raft, the catalog, the HTTP API, health checks
// and service files. Start brings the parts up in order; Close takes them
// down in reverse and tolerates a partial start.
type Agent struct {
	cfg    config.Config
	logger *slog.Logger
	out    io.Writer // the banner

	nodeID string
	store  *discovery.Store
	joinState
	xds     xdsState             // xds.go
	metrics *prometheus.Registry // metrics.go: served on /metrics
	dnsSrv  *discdns.Server      // dns.go
	checks  *checks.Runner
	httpLn  net.Listener
	httpSrv *http.Server

	// reloadMu serializes service file reconciliation (start and SIGHUP).
	reloadMu sync.Mutex
	// userPorts gives each service user of this node its port, one
	// registration at a time (the API's that name a user or bind
	// upstreams, and the files'; discovery/userports.go).
	userPorts *discovery.UserPortAllocator

	// ready is closed once this node is registered in the catalog.
	ready chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// removeDataDir is set for -dev, whose data dir is a temp dir.
	removeDataDir bool

	// capture is traffic capture (capture.go); nil when off.
	capture      *captureRunner
	captureLinks *iptables.Netlink
}

// NewAgent prepares an agent; nothing runs until Start.
func NewAgent(cfg config.Config, logger *slog.Logger, out io.Writer) *Agent {
	a := &Agent{cfg: cfg, logger: logger, out: out, ready: make(chan struct{})}
	a.joined, a.left = make(chan struct{}), make(chan struct{})
	a.userPorts = &discovery.UserPortAllocator{Policy: a.xdsOptions().UserPortPolicy()}
	// Before raft opens, so its first metrics (the election) are kept.
	a.metrics = newAgentRegistry(a)
	return a
}

// HTTPAddr is the address the HTTP API listens on, once started.
func (a *Agent) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// Start opens raft, starts the HTTP API and the background loops. It
// returns once the API listens; the node registers itself and its service
// files as soon as raft has a leader.
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.cfg.Dev && a.cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "vmesh-dev-")
		if err != nil {
			return fmt.Errorf("creating dev data dir: %w", err)
		}
		a.cfg.DataDir, a.removeDataDir = dir, true
	}
	if err := os.MkdirAll(a.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	if a.nodeID, err = loadNodeID(a.cfg.DataDir); err != nil {
		return err
	}
	// Services files are checked before anything starts, so a bad file
	// fails the start instead of deregistering what it used to define.
	files, err := a.desiredServices()
	if err != nil {
		return &config.Error{Err: err}
	}

	a.store = discovery.NewStore()
	// Capture is checked (with the host's routes and the files' users)
	// before anything starts, and applied last, below.
	if err := a.prepareCapture(files); err != nil {
		return err
	}
	if err := a.startCluster(ctx); err != nil {
		return err
	}

	a.checks = checks.New(a.logger.With("component", "checks"), checkSink{a})

	api := &httpapi.API{
		Store: a.store, Writer: &a.ref, Cluster: &a.ref, TTL: a.checks,
		NodeName: a.cfg.NodeName, NodeID: a.nodeID, Datacenter: a.cfg.Datacenter, Version: cli.Version,
		Members: a.members, Logger: a.logger.With("component", "http"), WaitReady: a.waitReady,
		IntentionsDefaultAllow: a.cfg.IntentionsDefaultAllow(), UserPorts: a.userPorts,
	}
	mux := http.NewServeMux()
	api.Register(mux)
	mux.HandleFunc("PUT /v1/vmesh/raft/snapshot", a.handleSnapshot)
	a.registerClusterAPI(mux)
	if err := a.startXDS(ctx, mux); err != nil {
		return err
	}
	if err := a.startDNS(ctx); err != nil {
		return err
	}

	a.httpLn, err = net.Listen("tcp", a.cfg.HTTPAddr())
	if err != nil {
		return fmt.Errorf("listening for the HTTP API on %s: %w", a.cfg.HTTPAddr(), err)
	}
	a.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := a.applyCapture(ctx); err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.goLoop(func() {
		if err := a.httpSrv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("HTTP API stopped", "err", err)
		}
	})
	a.goLoop(func() { a.runLocalState(runCtx) })
	if err := a.startProxy(runCtx); err != nil {
		return err
	}
	if a.xds.leaves != nil {
		a.goLoop(func() { a.xds.leaves.Run(runCtx) })
	}
	if a.capture != nil {
		a.goLoop(func() { a.capture.run(runCtx) })
	}
	a.banner()
	return nil
}

func (a *Agent) goLoop(fn func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn()
	}()
}

func (a *Agent) banner() {
	if a.out == nil {
		return
	}
	mode := ""
	if a.cfg.Dev {
		mode = " (dev mode: one node, data in a temp dir)"
	}
	fmt.Fprintf(a.out, "==> vmesh agent running%s\n", mode)
	fmt.Fprintf(a.out, "      Node name: %s\n", a.cfg.NodeName)
	fmt.Fprintf(a.out, "        Node ID: %s\n", a.nodeID)
	fmt.Fprintf(a.out, "     Datacenter: %s\n", a.cfg.Datacenter)
	fmt.Fprintf(a.out, "       Data dir: %s\n", a.cfg.DataDir)
	fmt.Fprintf(a.out, "       HTTP API: http://%s\n", a.HTTPAddr())
	if srv := a.ref.get(); srv != nil {
		fmt.Fprintf(a.out, "   Cluster addr: %s (mTLS)\n", srv.Addr())
	} else {
		fmt.Fprintf(a.out, "   Cluster addr: %s (not in a cluster yet)\n", a.cfg.ClusterAddr())
	}
	a.xdsBanner()
	a.dnsBanner()
	a.captureBanner()
}

// runLocalState waits for a leader, registers this node and the services
// of its files, then keeps the check runner in step with the catalog.
func (a *Agent) runLocalState(ctx context.Context) {
	select {
	case <-a.joined:
	case <-ctx.Done():
		return
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.ref.get().WaitLeader(wctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			break
		}
		a.logger.Warn("no raft leader yet; still waiting", "bootstrap", a.cfg.Bootstrap)
	}
	if !retry(ctx, a.logger, "registering this node", a.registerNode) {
		return
	}
	close(a.ready)
	if !retry(ctx, a.logger, "registering services from files", a.syncServiceFiles) {
		return
	}
	for {
		ws := memdb.NewWatchSet()
		_, checks, err := a.store.NodeChecks(ws, a.cfg.NodeName)
		if err != nil {
			a.logger.Error("reading local checks", "err", err)
		} else {
			a.checks.Sync(checks)
		}
		if ws.WatchCtx(ctx) != nil {
			return
		}
	}
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

// waitReady blocks until this node is registered in the catalog.
func (a *Agent) waitReady(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return errors.New("this node is not registered yet (no raft leader?)")
	}
}

func (a *Agent) registerNode(ctx context.Context) error {
	want := discovery.Node{
		ID: a.nodeID, Name: a.cfg.NodeName, Address: hostOf(a.cfg.ClusterAddr()), Datacenter: a.cfg.Datacenter,
	}
	_, cur, _, err := a.store.Node(nil, a.cfg.NodeName)
	if err != nil {
		return err
	}
	if cur != nil && cur.ID == want.ID && cur.Address == want.Address && cur.Datacenter == want.Datacenter {
		return nil
	}
	_, err = a.ref.Apply(ctx, discovery.RegisterNodeRequest{Node: want})
	return err
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// desiredServices reads every service definition: those in config files
// and those in services_dir.
func (a *Agent) desiredServices() ([]*discovery.RegisterServiceRequest, error) {
	defs := a.cfg.ServiceFiles()
	fromDir, err := config.LoadServiceFiles(a.cfg.ServicesDir)
	if err != nil {
		return nil, err
	}
	defs = append(defs, fromDir...)
	return discovery.BuildFileServices(a.cfg.NodeName, defs)
}

// syncServiceFiles makes the catalog hold exactly the file-defined services
// (discovery.FileServices), one reconciliation at a time.
func (a *Agent) syncServiceFiles(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	want, err := a.desiredServices()
	if err != nil {
		return err
	}
	fs := &discovery.FileServices{Store: a.store, Writer: &a.ref, Node: a.cfg.NodeName, UserPorts: a.userPorts, Logger: a.logger}
	return fs.Sync(ctx, want)
}

// Reload re-reads the configuration's service definitions (SIGHUP).
func (a *Agent) Reload(ctx context.Context, cfg config.Config) error {
	a.reloadMu.Lock()
	a.cfg.SetServiceFiles(cfg.ServiceFiles())
	a.cfg.ServicesDir = cfg.ServicesDir
	a.reloadMu.Unlock()
	return a.syncServiceFiles(ctx)
}

func (a *Agent) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	srv := a.ref.get()
	if srv == nil {
		http.Error(w, errNotJoined.Error(), http.StatusConflict)
		return
	}
	idx, err := srv.Snapshot()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]uint64{"Index": idx})
}

// Close stops everything Start started, in reverse order.
func (a *Agent) Close() error {
	var errs []error
	// Capture went up last; stop steering traffic before the rest goes.
	a.closeCapture()
	if a.httpSrv != nil {
		// Let requests in flight finish; then cut what is left (blocking
		// queries, and connections that never sent a request, which
		// net/http treats as busy for their first 5 s).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := a.httpSrv.Shutdown(ctx); err != nil {
			a.httpSrv.Close()
		}
		cancel()
	} else if a.httpLn != nil {
		a.httpLn.Close()
	}
	a.closeXDS()
	a.closeDNS()
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	if a.checks != nil {
		a.checks.Close()
	}
	if srv := a.ref.get(); srv != nil {
		if err := srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stopping raft: %w", err))
		}
	}
	if a.removeDataDir {
		os.RemoveAll(a.cfg.DataDir)
	}
	return errors.Join(errs...)
}

// checkSink writes check results through raft for the check runner.
type checkSink struct{ a *Agent }

func (s checkSink) UpdateCheck(ctx context.Context, checkID, status, output string) error {
	_, err := s.a.ref.Apply(ctx, discovery.UpdateCheckRequest{
		Node: s.a.cfg.NodeName, CheckID: checkID, Status: status, Output: output,
	})
	return err
}

func (s checkSink) DeregisterService(ctx context.Context, serviceID string) error {
	s.a.logger.Info("deregistering service: check critical for too long", "service_id", serviceID)
	_, err := s.a.ref.Apply(ctx, discovery.DeregisterServiceRequest{Node: s.a.cfg.NodeName, ServiceID: serviceID})
	return err
}

// loadNodeID reads the node's UUID from the data dir, creating it once.
func loadNodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading node ID: %w", err)
	}
	var u [16]byte
	rand.Read(u[:])
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing node ID: %w", err)
	}
	return id, nil
}
