package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/checks"
	discdns "github.com/vmesh/vmesh/discovery/dns"
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/discovery/local"
	"github.com/vmesh/vmesh/iptables"
	"github.com/vmesh/vmesh/mesh/cli"
	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/mesh/membership"
	"github.com/vmesh/vmesh/raft"
	"github.com/vmesh/vmesh/telemetry"
)

// Agent is one vmesh agent: raft, the catalog, the HTTP API, health checks
// and service files. Start brings the parts up in order; Close takes them
// down in reverse and tolerates a partial start.
type Agent struct {
	cfg    config.Config
	logger *slog.Logger
	out    io.Writer // the banner
	// logLevel is the logger's level, which the admin listener's
	// /logging changes (nil: a logger the agent was handed, fixed); args
	// are the command line it shows on /server_info (admin.go).
	logLevel *slog.LevelVar
	args     []string
	started  time.Time
	// adminProxy is the proxy as the admin listener, which starts first,
	// reads it (admin.go).
	adminProxy adminProxy

	nodeID string
	store  *discovery.Store
	// member is this node's place in its cluster (server or client).
	member  *membership.Membership
	xds     xdsState             // xds.go
	metrics *prometheus.Registry // metrics.go: served on /metrics
	// raftMetrics are raft's go-metrics series (metrics.go).
	raftMetrics prometheus.Gatherer
	dnsSrv      *discdns.Server // dns.go
	checks      *checks.Runner
	httpLn      net.Listener
	httpSrv     *http.Server

	// reloadMu serializes service file reconciliation (start and SIGHUP).
	reloadMu sync.Mutex
	// xdsOpts are the xDS translation options, per-user port policy
	// included (xds.go): the API's allocator, the xDS server and capture
	// (which follows the server's views) all use this one value.
	xdsOpts xds.Options
	// userPorts gives each service user of this node its port, one
	// registration at a time (the API's that name a user or bind
	// upstreams, and the files'; discovery/userports.go).
	userPorts *discovery.UserPortAllocator

	// guard keeps health checks off the agent's own listeners (checks.go);
	// nil when checks { allow_agent_targets = true }.
	guard *checks.Guard

	// local registers this node and its file services and runs its
	// checks (local.State); Ready() is closed once registered.
	local *local.State

	// life runs parts() and the background loops (lifecycle.go).
	life *lifecycle
	// startFiles are the service definitions read at start (checked
	// before anything runs; capture checks their users).
	startFiles []*discovery.RegisterServiceRequest
	// removeDataDir is set for -dev, whose data dir is a temp dir.
	removeDataDir bool

	// tracing is the trace pipeline (tracing.go); its provider is nil
	// when tracing is off.
	tracing *telemetry.Tracing

	// acl resolves request tokens (acl.go); nil when ACLs are off.
	acl *aclResolver

	// proxy is the in-process proxy's listeners (proxy.go), which
	// capture follows; nil when the proxy is off.
	proxy proxyListeners
	// capture is traffic capture (capture.go); nil when off.
	capture         *iptables.Reconciler
	captureLinks    *iptables.Netlink
	stopCaptureLoop func()

	// logs streams the agent's log records to /v1/agent/monitor
	// (logmonitor.go).
	logs *logHub
	// reloader, when set (by `vmesh agent`), is what SIGHUP does; PUT
	// /v1/agent/reload runs it. Unset, a reload re-reads the service
	// definitions of the configuration the agent holds.
	reloader func(context.Context) error
	// tokens are the ACL tokens set through PUT /v1/agent/token/:kind
	// (agenttokens.go); read through agentToken, defaultToken, dnsToken.
	tokens *agentTokens
}

// NewAgent prepares an agent; nothing runs until Start.
func NewAgent(cfg config.Config, logger *slog.Logger, out io.Writer) *Agent {
	logs := newLogHub()
	logger = slog.New(&teeHandler{base: logger.Handler(), hub: logs})
	a := &Agent{cfg: cfg, logger: logger, out: out, logs: logs, started: time.Now()}
	a.member = membership.New(&a.cfg, logger)
	a.member.OnLeave = a.removeCapture // capture.go: a node out of the mesh steers nothing into it
	a.local = local.New(local.State{
		Writer: a.agentWriter(), SyncFiles: a.syncServiceFiles, Logger: a.logger.With("component", "local"),
		WaitLeader: a.member.WaitLeader,
	})
	// One set of translation options, so the per-user port policy the API
	// and service files allocate with is the one xDS and capture read.
	a.xdsOpts = a.xdsOptions()
	a.userPorts = &discovery.UserPortAllocator{Policy: a.xdsOpts.UserPortPolicy()}
	a.guard = a.checkGuard()
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

// Start brings the agent's parts up in order (parts) and returns once the
// HTTP API listens; the node registers itself and its service files as
// soon as raft has a leader. A failed start stops what had started.
func (a *Agent) Start(ctx context.Context) error {
	a.life = newLifecycle(ctx, a.logger)
	if err := a.life.start(ctx, a.parts()); err != nil {
		return err
	}
	a.banner()
	return nil
}

// parts are the agent's subsystems in start order; Close stops them in
// reverse. Capture goes last, once the proxy it steers traffic to runs,
// and so comes off first.
func (a *Agent) parts() []part {
	return []part{
		{name: "data dir", start: a.openDataDir, stop: a.removeDevDataDir},
		{name: "tracing", start: a.startTracing, stop: a.stopTracing},
		// Service files and capture are checked before anything runs, so
		// a bad file fails the start instead of deregistering what it
		// used to define, and nothing touches the kernel.
		{name: "service files", start: a.checkServiceFiles},
		{name: "capture check", start: a.prepareCapture, stop: a.closeCaptureLinks},
		{name: "raft", start: a.startCluster, stop: a.member.Close},
		{name: "health checks", start: a.startChecks, stop: a.closeChecks},
		{name: "xDS", start: a.startXDS, stop: a.closeXDS},
		{name: "DNS", start: a.startDNS, stop: a.closeDNS},
		{name: "HTTP API", start: a.startHTTP, stop: a.closeHTTP},
		{name: "local state", start: a.startLocalState},
		{name: "proxy", start: a.startProxy},
		{name: "capture", start: a.startCapture, stop: a.stopCapture},
	}
}

// openDataDir makes the data dir (a temp dir for -dev), the catalog, and
// reads or creates the node's ID.
func (a *Agent) openDataDir(context.Context) error {
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
	var err error
	if a.nodeID, err = raft.LoadNodeIDAs(a.cfg.DataDir, a.cfg.NodeID); err != nil {
		return fmt.Errorf("node_id: %w", err)
	}
	a.store = discovery.NewStore()
	a.tokens, err = loadAgentTokens(a.cfg.DataDir, a.cfg.ACL.EnableTokenPersistence)
	return err
}

func (a *Agent) removeDevDataDir() error {
	if a.removeDataDir {
		return os.RemoveAll(a.cfg.DataDir)
	}
	return nil
}

// checkServiceFiles reads every service definition once, so a bad file
// is a configuration error before anything starts.
func (a *Agent) checkServiceFiles(context.Context) error {
	files, err := a.desiredServices()
	if err != nil {
		return &config.Error{Err: err}
	}
	if err := a.checkDefaultService(files); err != nil {
		return &config.Error{Err: err}
	}
	a.startFiles = files
	return nil
}

// checkDefaultService refuses a capture.default_service that no service
// file of this host defines: the host's unattributed traffic would speak
// for a service it does not run (the proxy has no certificate for it).
// Files are what the agent knows before it starts and keeps registered
// for as long as it runs.
func (a *Agent) checkDefaultService(files []*discovery.RegisterServiceRequest) error {
	want := a.cfg.Capture.DefaultService
	if want == "" {
		return nil
	}
	var names []string
	for _, f := range files {
		if strings.EqualFold(f.Instance.Service, want) {
			return nil
		}
		if !slices.Contains(names, f.Instance.Service) {
			names = append(names, f.Instance.Service)
		}
	}
	have := "none"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	return fmt.Errorf("capture.default_service: %q is not a service registered on this host by its service files (they define: %s); define it in a file in %s or in a config file",
		want, have, a.cfg.ServicesDir)
}

// startCluster brings this node into its cluster (membership.Membership).
func (a *Agent) startCluster(ctx context.Context) error {
	if a.cfg.ACLEnabled() {
		r, err := newACLResolver(a.member, a.store, a.cfg.Datacenter, a.cfg.ACLDefaultPolicy(), a.defaultToken)
		if err != nil {
			return err
		}
		if a.cfg.IsServer() {
			r.initialManagement = a.cfg.ACL.Tokens.InitialManagement
		}
		a.acl = r
		a.member.ACL = r.local
	}
	if err := a.member.Start(ctx, a.nodeID, a.store); err != nil {
		return err
	}
	if a.acl != nil && a.cfg.ACL.Tokens.InitialManagement != "" && a.cfg.IsServer() {
		a.life.goLoop("ACL bootstrap", a.bootstrapInitialManagement)
	}
	return nil
}

// Left is closed once this agent has left its cluster; the agent process
// then stops, as Consul's does.
func (a *Agent) Left() <-chan struct{} { return a.member.Left() }

func (a *Agent) startChecks(context.Context) error {
	a.checks = checks.New(a.logger.With("component", "checks"), checkSink{a})
	a.checks.Guard, a.checks.OutputMax = a.guard, a.cfg.Checks.OutputMaxSize // checks.go
	// The runner's own gate: no script runs unless the config enables
	// them, whatever reached the catalog.
	a.checks.Scripts = a.cfg.EnableScriptChecks || a.cfg.EnableLocalScriptChecks
	a.checks.UpdateInterval = a.cfg.CheckUpdateInterval
	return nil
}

func (a *Agent) closeChecks() error {
	if a.checks != nil {
		a.checks.Close()
	}
	return nil
}

// startHTTP serves the HTTP API: Consul's endpoints and vmesh's own, with
// the xDS server's diagnostics when it runs.
func (a *Agent) startHTTP(context.Context) error {
	api := &httpapi.API{
		Store: a.store, Writer: a.member, Cluster: a.member, Sessions: a.member, TTL: a.checks,
		NodeName: a.cfg.NodeName, NodeID: a.nodeID, Datacenter: a.cfg.Datacenter, Version: cli.Version, Build: httpBuild(cli.Build()),
		Members: a.member.AgentMembers, Logger: a.logger.With("component", "http"), WaitReady: a.local.WaitReady,
		IntentionsDefaultAllow: a.cfg.IntentionsDefaultAllow(), UserPorts: a.userPorts,
		Operator: operator{a.member, a}, Raft: a.member, Diagnostics: a.diagnostics(), RemoteKV: a.member,
		ChecksWritten: a.local.SyncChecks, CheckTarget: a.checkTarget, ACLBootstrapReset: a.aclBootstrapReset,
		Monitor: a.logs, Reload: a.reloadFromAPI, Tokens: a.tokens,
	}
	if a.acl != nil {
		api.ACL = a.acl
	}
	if a.xds.leaves != nil {
		api.Leaves, api.LeafCertTTL = leafSource{a.xds.leaves}, a.xds.leaves.Lifetime()
	}
	api.Metrics, api.DebugConfig = a.metrics, a.debugConfig
	mux := http.NewServeMux()
	api.Register(mux)
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr())
	if err != nil {
		return fmt.Errorf("listening for the HTTP API on %s: %w", a.cfg.HTTPAddr(), err)
	}
	a.httpLn = ln
	a.httpSrv = &http.Server{Handler: httpapi.Traced(mux, a.tracerProvider()), ReadHeaderTimeout: 10 * time.Second}
	a.life.goLoop("HTTP API", func(context.Context) error {
		if err := a.httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// closeHTTP lets requests in flight finish, then cuts what is left
// (blocking queries, and connections that never sent a request, which
// net/http treats as busy for their first 5 s).
func (a *Agent) closeHTTP() error {
	if a.httpSrv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.httpSrv.Shutdown(ctx); err != nil {
		a.httpSrv.Close()
	}
	return nil
}

// startLocalState registers this node and its file services once it is
// in a cluster with a leader, and keeps its check runner in step
// (local.State).
func (a *Agent) startLocalState(context.Context) error {
	a.local.Store, a.local.Checks = a.store, a.checks
	a.local.Node = discovery.Node{ID: a.nodeID, Name: a.cfg.NodeName, Address: hostOf(a.cfg.ClusterAddr()), Datacenter: a.cfg.Datacenter}
	a.life.goLoop("local state", func(ctx context.Context) error {
		select {
		case <-a.member.Joined():
		case <-ctx.Done():
			return nil
		}
		// The role as the leader records it (a server's own registration
		// is how a bootstrap server gets it); the leader keeps its record
		// over whatever a node says (raft/roles.go).
		role := raft.RoleServer
		a.local.ServerPort = a.cfg.Ports.Cluster
		if a.member.Client() != nil {
			role, a.local.ServerPort = raft.RoleClient, 0
		}
		meta := maps.Clone(a.cfg.NodeMeta)
		if meta == nil {
			meta = map[string]string{}
		}
		meta[raft.RoleMetaKey] = role
		a.local.Node.Meta = meta
		a.local.Run(ctx)
		return nil
	})
	return nil
}

// debugConfig is the agent's configuration under Consul's DebugConfig
// names, for /v1/agent/self: addresses and settings, never a token.
func (a *Agent) debugConfig() map[string]any {
	dns := []string{}
	if a.cfg.Ports.DNS >= 0 {
		dns = append(dns, "tcp://"+a.cfg.DNSAddr(), "udp://"+a.cfg.DNSAddr())
	}
	return map[string]any{
		"ServerMode": a.cfg.IsServer(), "Bootstrap": a.cfg.Bootstrap, "DataDir": a.cfg.DataDir,
		"BindAddr": a.cfg.BindAddr, "ClientAddrs": []string{a.cfg.ClientAddr},
		"HTTPAddrs": []string{"tcp://" + a.cfg.HTTPAddr()}, "DNSAddrs": dns,
		"ServerPort": a.cfg.Ports.Cluster, "HTTPPort": a.cfg.Ports.HTTP, "DNSPort": a.cfg.Ports.DNS,
		"LogLevel": a.cfg.LogLevel, "NodeMeta": a.cfg.NodeMeta, "ACLDefaultPolicy": a.cfg.ACL.DefaultPolicy,
		"ACLEnableTokenPersistence": a.cfg.ACL.EnableTokenPersistence, "Revision": "", "Version": cli.Version,
	}
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
	fmt.Fprintf(a.out, "        Version: %s\n", cli.Build())
	fmt.Fprintf(a.out, "      Node name: %s\n", a.cfg.NodeName)
	fmt.Fprintf(a.out, "        Node ID: %s\n", a.nodeID)
	fmt.Fprintf(a.out, "     Datacenter: %s\n", a.cfg.Datacenter)
	fmt.Fprintf(a.out, "       Data dir: %s\n", a.cfg.DataDir)
	fmt.Fprintf(a.out, "       HTTP API: http://%s\n", a.HTTPAddr())
	if srv := a.member.Server(); srv != nil {
		fmt.Fprintf(a.out, "   Cluster addr: %s (mTLS)\n", srv.Addr())
	} else if a.member.Client() != nil {
		fmt.Fprintf(a.out, "   Cluster addr: client (a replica from %s)\n", strings.Join(a.member.Client().Servers(), ", "))
	} else {
		fmt.Fprintf(a.out, "   Cluster addr: %s (not in a cluster yet)\n", a.cfg.ClusterAddr())
	}
	switch {
	case !a.cfg.ACLEnabled():
		fmt.Fprintf(a.out, "           ACLs: off — any local user may do anything through the HTTP API\n")
	case a.cfg.ACLDefaultPolicy() == acl.DefaultAllow:
		fmt.Fprintf(a.out, "           ACLs: on, default allow (what no rule covers is allowed)\n")
	default:
		fmt.Fprintf(a.out, "           ACLs: on, default deny (requests need a token: X-Consul-Token)\n")
	}
	a.xdsBanner()
	a.dnsBanner()
	a.captureBanner()
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
	reqs, err := local.BuildFileServices(a.cfg.NodeName, defs)
	if err != nil {
		return nil, err
	}
	if err := a.checkFileTargets(reqs); err != nil { // checks.go
		return nil, err
	}
	return reqs, nil
}

// syncServiceFiles makes the catalog hold exactly the file-defined services
// (local.FileServices), one reconciliation at a time.
func (a *Agent) syncServiceFiles(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	want, err := a.desiredServices()
	if err != nil {
		return err
	}
	fs := &local.FileServices{Store: a.store, Writer: a.member, Node: a.cfg.NodeName, UserPorts: a.userPorts, Logger: a.logger}
	return fs.Sync(ctx, want)
}

// Reload re-reads the configuration's service definitions (SIGHUP).
func (a *Agent) Reload(ctx context.Context, cfg config.Config) error {
	a.reloadMu.Lock()
	a.cfg.SetServiceFiles(cfg.ServiceFiles())
	a.cfg.ServicesDir = cfg.ServicesDir
	a.reloadMu.Unlock()
	if files, err := a.desiredServices(); err == nil {
		if err := a.checkDefaultService(files); err != nil {
			a.logger.Warn("after the reload, captured traffic keeps the node's identity", "err", err)
		}
	}
	return a.syncServiceFiles(ctx)
}

// SetReloader makes fn what a reload through the API does: `vmesh
// agent` hands it the same path SIGHUP takes (re-read the config files,
// then Reload). Call it before Start.
func (a *Agent) SetReloader(fn func(context.Context) error) { a.reloader = fn }

// reloadFromAPI serves PUT /v1/agent/reload.
func (a *Agent) reloadFromAPI(ctx context.Context) error {
	if a.reloader != nil {
		return a.reloader(ctx)
	}
	a.reloadMu.Lock()
	cfg := a.cfg
	a.reloadMu.Unlock()
	return a.Reload(ctx, cfg)
}

// Close stops everything Start started, in reverse order. It is safe
// after a failed or partial Start.
func (a *Agent) Close() error {
	if a.life == nil {
		return nil
	}
	return a.life.stop()
}

// checkSink writes check results through raft for the check runner.
type checkSink struct{ a *Agent }

func (s checkSink) UpdateCheck(ctx context.Context, checkID, status, output string) error {
	_, err := s.a.agentWriter().Apply(ctx, discovery.UpdateCheckRequest{
		Node: s.a.cfg.NodeName, CheckID: checkID, Status: status, Output: output,
	})
	return err
}

func (s checkSink) DeregisterService(ctx context.Context, serviceID string) error {
	s.a.logger.Info("deregistering service: check critical for too long", "service_id", serviceID)
	_, err := s.a.agentWriter().Apply(ctx, discovery.DeregisterServiceRequest{Node: s.a.cfg.NodeName, ServiceID: serviceID})
	return err
}

// agentWriter is how the agent writes its own node, service files and
// check results: through its membership, with the agent token when one
// is configured or set (agenttokens.go), which the leader then checks on
// top of the node certificate (a node writes only its own node, services
// and checks).
func (a *Agent) agentWriter() discovery.Writer {
	return tokenWriter{a.member, a.agentToken}
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}
