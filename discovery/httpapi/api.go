package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/discovery"
)

// Cluster is what the API needs to know about consensus; raft.Server is
// one.
type Cluster interface {
	Leader() (addr, id string)
	Peers() ([]string, error)
	LastContact() time.Duration
	VerifyLeader() error
	Stats() map[string]string
}

// SessionCluster is what sessions, locks and transactions need of the
// cluster beyond Writer.Apply; the agent's raft link (server or client)
// is one.
type SessionCluster interface {
	// ApplyTxn applies a transaction through raft and returns its result:
	// every operation's, or the errors of those that failed (then
	// nothing changed).
	ApplyTxn(ctx context.Context, req discovery.TxnRequest) (uint64, *discovery.TxnResult, error)
	// RenewSession restarts a session's TTL on the leader; nil when the
	// session does not exist.
	RenewSession(ctx context.Context, id string) (*discovery.Session, error)
}

// Member is one agent as /v1/agent/members shows it.
type Member struct {
	Name string
	Addr string
	Port int
	Role string
	// VMeshRole, when set, is vmesh's own detail (raft state, or
	// "client"), in the vmesh_role tag.
	VMeshRole string
	Status    int // 1 alive, as Serf numbers it
}

// API serves the Consul-compatible HTTP API over the catalog. Reads come
// from the local Store; writes go through Writer (raft). It never touches
// raft directly, so the cluster layer can forward writes to a leader
// without this code knowing.
type API struct {
	Store   *discovery.Store
	Writer  discovery.Writer
	Cluster Cluster
	// Sessions serves sessions, KV locks and transactions; nil answers
	// those with a 501.
	Sessions   SessionCluster
	TTL        TTLUpdater
	NodeName   string
	NodeID     string
	Datacenter string
	Version    string
	// Build names the binary beyond its version (/v1/agent/self).
	Build BuildInfo
	// Members lists the agents of the cluster.
	Members func() []Member
	// WaitReady blocks until this agent's node is in the catalog, so that a
	// registration sent right after start is not refused for a node that
	// registers a moment later. Nil means always ready.
	WaitReady func(ctx context.Context) error
	Logger    *slog.Logger
	// IntentionsDefaultAllow is the agent's intentions_default: what
	// /v1/connect/intentions/check answers when no intention matches.
	IntentionsDefaultAllow bool
	// UserPorts serializes this node's service registrations and gives
	// each service user its port (userports.go). The agent shares it with
	// its service-file sync. Nil: a private one with the default policy.
	UserPorts *discovery.UserPortAllocator
	// CheckTarget refuses a check whose target the agent does not probe
	// (its own listeners: checks.Guard); nil refuses none.
	CheckTarget func(name string, def discovery.CheckDefinition) error

	// Operator serves vmesh's own cluster endpoints (/v1/vmesh/join,
	// leave, token, members, raft/snapshot, envoy/bootstrap); nil leaves
	// them out. Diagnostics mounts other packages' read-only handlers.
	Operator    Operator
	Diagnostics Diagnostics
	// Raft serves Consul's /v1/operator/raft, autopilot health and state,
	// and /v1/snapshot (api_operator.go); nil leaves them out.
	Raft RaftOperator
	// ChecksWritten, when set, is called after a write of this node's
	// services or checks, before the answer: the agent hands the new
	// checks to its runner, so a TTL update sent right after finds them.
	ChecksWritten func()
	// ACL resolves request tokens; nil turns ACLs off (api_acl.go).
	ACL ACLResolver
	// ACLBootstrapReset, when set, reads the reset index an operator left
	// in the agent's data dir (acl-bootstrap-reset, Consul's reset
	// procedure); 0 when there is none.
	ACLBootstrapReset func() (uint64, error)
	// RemoteKV, when set and HoldsKV says no, serves KV reads: a client
	// agent holds no KV and asks a server, as a Consul client does.
	RemoteKV RemoteKV
	// Monitor streams the agent's log lines (GET /v1/agent/monitor); nil
	// answers that endpoint with a 501.
	Monitor LogMonitor
	// Reload does what SIGHUP does (PUT /v1/agent/reload); nil answers
	// that endpoint with a 501.
	Reload func(ctx context.Context) error
	// Tokens sets the agent's ACL tokens (PUT /v1/agent/token/:kind,
	// api_agent_token.go); nil answers that endpoint with a 501.
	Tokens AgentTokens
	// Leaves serves /v1/agent/connect/ca/leaf (api_connect.go); nil
	// answers it with a 500. LeafCertTTL is the leaves' lifetime, as
	// /v1/connect/ca/configuration shows it.
	Leaves      LeafSource
	LeafCertTTL time.Duration
	// Metrics is what /v1/agent/metrics reports (api_agent_ops.go); nil
	// reports only the Go runtime. DebugConfig, when set, gives
	// /v1/agent/self's DebugConfig the agent's settings under Consul's
	// names (never a secret).
	Metrics     prometheus.Gatherer
	DebugConfig func() map[string]any

	ownPorts discovery.UserPortAllocator // UserPorts when that is nil
}

func (a *API) userPorts() *discovery.UserPortAllocator {
	if a.UserPorts != nil {
		return a.UserPorts
	}
	return &a.ownPorts
}

// RemoteKV reads KV from a server, for an agent that holds none.
type RemoteKV interface {
	// HoldsKV says whether this agent's own catalog holds the KV (a
	// server's does; a client's replica does not).
	HoldsKV() bool
	KVRead(ctx context.Context, q discovery.KVQuery) (discovery.KVResult, error)
	// ACLRead reads the ACL state, which only servers hold.
	ACLRead(ctx context.Context, q discovery.ACLQuery) (discovery.ACLResult, error)
}

// checkTargets asks CheckTarget about each of checks.
func (a *API) checkTargets(checks ...*discovery.Check) error {
	if a.CheckTarget == nil {
		return nil
	}
	var errs []error
	for _, c := range checks {
		if err := a.CheckTarget(c.CheckID, c.Definition); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Blocking query limits, as Consul's.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
	// readyTimeout bounds how long a write waits for the agent to be ready.
	readyTimeout = 15 * time.Second
)

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	// agent
	mux.HandleFunc("PUT /v1/agent/service/register", a.serviceRegister)
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", a.serviceDeregister)
	mux.HandleFunc("GET /v1/agent/services", a.agentServices)
	mux.HandleFunc("GET /v1/agent/service/{id}", a.agentService)
	mux.HandleFunc("GET /v1/agent/checks", a.agentChecks)
	mux.HandleFunc("PUT /v1/agent/check/register", a.checkRegister)
	mux.HandleFunc("PUT /v1/agent/check/deregister/{id}", a.checkDeregister)
	mux.HandleFunc("PUT /v1/agent/check/pass/{id}", a.checkTTL(discovery.HealthPassing))
	mux.HandleFunc("PUT /v1/agent/check/warn/{id}", a.checkTTL(discovery.HealthWarning))
	mux.HandleFunc("PUT /v1/agent/check/fail/{id}", a.checkTTL(discovery.HealthCritical))
	mux.HandleFunc("PUT /v1/agent/check/update/{id}", a.checkTTL(""))
	mux.HandleFunc("GET /v1/agent/self", a.agentSelf)
	mux.HandleFunc("GET /v1/agent/members", a.agentMembers)
	a.registerAgentOps(mux)
	// catalog
	mux.HandleFunc("GET /v1/catalog/services", a.catalogServices)
	mux.HandleFunc("GET /v1/catalog/service/{name}", a.catalogService)
	mux.HandleFunc("GET /v1/catalog/nodes", a.catalogNodes)
	mux.HandleFunc("GET /v1/catalog/node/{node}", a.catalogNode)
	mux.HandleFunc("GET /v1/catalog/node-services/{node}", a.catalogNodeServices)
	mux.HandleFunc("GET /v1/catalog/datacenters", a.catalogDatacenters)
	mux.HandleFunc("PUT /v1/catalog/register", a.catalogRegister)     // api_catalog_write.go
	mux.HandleFunc("PUT /v1/catalog/deregister", a.catalogDeregister) // api_catalog_write.go
	// health
	mux.HandleFunc("GET /v1/health/service/{name}", a.healthService)
	mux.HandleFunc("GET /v1/health/checks/{name}", a.healthChecks)
	mux.HandleFunc("GET /v1/health/state/{state}", a.healthState)
	mux.HandleFunc("GET /v1/health/node/{node}", a.healthNode)
	// kv
	mux.HandleFunc("GET /v1/kv/{key...}", a.kvGet)
	mux.HandleFunc("PUT /v1/kv/{key...}", a.kvPut)
	mux.HandleFunc("DELETE /v1/kv/{key...}", a.kvDelete)
	// sessions and transactions (api_session.go, api_txn.go)
	a.registerSessions(mux)
	mux.HandleFunc("PUT /v1/txn", a.txn)
	// status
	mux.HandleFunc("GET /v1/status/leader", a.statusLeader)
	mux.HandleFunc("GET /v1/status/peers", a.statusPeers)
	// config entries, and what Consul derives from the gateway kinds (api_gateways.go)
	a.registerConfig(mux)
	a.registerGateways(mux)
	// intentions (api_intentions.go)
	a.registerIntentions(mux)
	// vmesh's own: VIPs, cluster membership, diagnostics (vmesh.go)
	a.registerVmesh(mux)
	// ACLs (api_acl.go)
	a.registerACL(mux)
	// Connect: CA, leaves, authorize (api_connect.go)
	a.registerConnect(mux)
	// join, metrics, host, local service health (api_agent_info.go)
	a.registerAgentInfo(mux)
	// operator, snapshots, coordinates (api_operator.go)
	a.registerOperator(mux)
	// Anything else under /v1/: a 404 with Consul's headers.
	mux.HandleFunc("/v1/", a.notImplemented)
}

// HTTPError is an error with the status code the API answers it with.
type HTTPError struct {
	Code int
	Msg  string
	Err  error // the cause, when there is one (WithStatus)
}

func (e *HTTPError) Error() string { return e.Msg }
func (e *HTTPError) Unwrap() error { return e.Err }

func badRequest(format string, args ...any) error {
	return &HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf(format, args...)}
}

// writeError is the one way a handler answers an error: Consul's status
// code (from an HTTPError, or the catalog's sentinel errors) and the message
// as a plain-text body, as Consul does, so that consul/api shows it as is.
// A 500 is logged: it is our fault, not the client's.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	msg := err.Error()
	var he *HTTPError
	aclCode, isACL := aclError(err)
	switch {
	case errors.As(err, &he):
		code = he.Code
	case isACL:
		code = aclCode
	case errors.Is(err, discovery.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, discovery.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInternalServerError && a.Logger != nil {
		a.Logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// newLenientDecoder decodes a JSON request body within the size limit,
// ignoring fields it does not know.
func newLenientDecoder(w http.ResponseWriter, r *http.Request) *json.Decoder {
	return json.NewDecoder(limitBody(w, r, maxBody))
}

// decodeBody decodes a JSON request body strictly: an unknown field or a
// value of the wrong type is a 400 that names the field.
func decodeBody(w http.ResponseWriter, r *http.Request, out any) error {
	dec := json.NewDecoder(limitBody(w, r, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return badRequest("Request decode failed: trailing data after the JSON object")
	}
	return nil
}

// queryOptions are the parameters every read accepts.
type queryOptions struct {
	minIndex   uint64
	wait       time.Duration
	stale      bool
	consistent bool
}

func (a *API) parseQuery(r *http.Request) (queryOptions, error) {
	q := r.URL.Query()
	var o queryOptions
	// Refuse what would otherwise be silently ignored and change the answer.
	if err := checkFilterParams(r); err != nil {
		return o, err
	}
	if err := a.checkDC(r); err != nil {
		return o, err
	}
	if s := q.Get("index"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return o, badRequest("Invalid index: %q is not a number", s)
		}
		o.minIndex = v
	}
	o.wait = defaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			// Consul also takes a bare number of milliseconds? It does not:
			// it wants a Go duration.
			return o, badRequest("Invalid wait time: %q", s)
		}
		o.wait = min(d, maxWait)
	}
	_, o.stale = q["stale"]
	_, o.consistent = q["consistent"]
	if o.stale && o.consistent {
		return o, badRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
	}
	return o, nil
}

// checkDC refuses ?dc= naming another datacenter, as Consul does when it
// has no path there (vmesh has one datacenter per cluster).
func (a *API) checkDC(r *http.Request) error {
	if dc := r.URL.Query().Get("dc"); dc != "" && dc != a.Datacenter {
		return &HTTPError{Code: http.StatusInternalServerError, Msg: "No path to datacenter"}
	}
	return nil
}

// notImplemented answers an endpoint vmesh does not have with a 404 that
// carries Consul's read headers, so that clients which read them on
// every answer (python-consul) report the 404 instead of failing on a
// missing header.
func (a *API) notImplemented(w http.ResponseWriter, r *http.Request) {
	leader, _ := a.Cluster.Leader()
	w.Header().Set("X-Consul-Index", "1")
	w.Header().Set("X-Consul-KnownLeader", strconv.FormatBool(leader != ""))
	w.Header().Set("X-Consul-LastContact", strconv.FormatInt(a.Cluster.LastContact().Milliseconds(), 10))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, "vmesh does not implement "+r.Method+" "+r.URL.Path)
}

// read runs a (possibly blocking) query and writes Consul's headers. query
// fills in the result it wants encoded and returns the index it read at.
// It returns false after writing an error.
func (a *API) read(w http.ResponseWriter, r *http.Request, query func(ws memdb.WatchSet) (uint64, error)) bool {
	o, err := a.parseQuery(r)
	if err != nil {
		a.writeError(w, r, err)
		return false
	}
	leader, _ := a.Cluster.Leader()
	if leader == "" && !o.stale {
		a.writeError(w, r, &HTTPError{Code: http.StatusInternalServerError, Msg: "No cluster leader"})
		return false
	}
	if o.consistent {
		if err := a.Cluster.VerifyLeader(); err != nil {
			a.writeError(w, r, err)
			return false
		}
	}
	ctx := r.Context()
	if o.minIndex > 0 {
		// Jitter spreads the wake-ups of many watchers that block with the
		// same wait, as Consul does (up to wait/16).
		wait := o.wait + rand.N(o.wait/16+1)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	var idx uint64
	err = a.Store.Blocking(ctx, o.minIndex, func(ws memdb.WatchSet) (uint64, error) {
		var err error
		idx, err = query(ws)
		return idx, err
	})
	if err != nil {
		a.writeError(w, r, err)
		return false
	}
	// A client that sends index=0 back would not block: never answer 0.
	idx = max(idx, 1)
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("X-Consul-KnownLeader", strconv.FormatBool(leader != ""))
	w.Header().Set("X-Consul-LastContact", strconv.FormatInt(a.Cluster.LastContact().Milliseconds(), 10))
	if _, cached := r.URL.Query()["cached"]; cached {
		setCacheHeaders(w, a.Cluster.LastContact())
	}
	return true
}

// setCacheHeaders answers ?cached as Consul's agent cache answers it for
// a query it keeps current in the background: every vmesh read is served
// from the agent's own copy of the catalog, which raft (on a server) or
// the replica stream (on a client) keeps current, so it is a HIT, and its
// Age is 0 while that copy is in touch with the leader, else the time
// since it last was (Consul's Age after a lost refresh), in seconds.
func setCacheHeaders(w http.ResponseWriter, lastContact time.Duration) {
	w.Header().Set("X-Cache", "HIT")
	w.Header().Set("Age", strconv.FormatInt(int64(max(lastContact, 0)/time.Second), 10))
}

// readOne serves one object with a (possibly blocking) read, or answers
// missing() when the query finds none.
func readOne[T any](a *API, w http.ResponseWriter, r *http.Request, query func(ws memdb.WatchSet) (uint64, *T, error), missing func() error) {
	var out *T
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, v, err := query(ws)
		out = v
		return idx, err
	}) {
		return
	}
	if out == nil {
		a.writeError(w, r, missing())
		return
	}
	writeJSON(w, out)
}

// authorize lets a write through once the agent can write and the
// request's token allows cmd (discovery.AuthorizeCommand).
func (a *API) authorize(r *http.Request, cmd discovery.Command) error {
	if err := a.ready(r); err != nil {
		return err
	}
	authz, err := a.authorizer(r)
	if err != nil {
		return err
	}
	return discovery.AuthorizeCommand(authz, a.Store, cmd)
}

// apply sends a write through raft.
func (a *API) apply(r *http.Request, cmd discovery.Command) (uint64, error) {
	if err := a.authorize(r, cmd); err != nil {
		return 0, err
	}
	return a.Writer.Apply(discovery.WithToken(r.Context(), requestToken(r)), cmd)
}

// ready waits, within readyTimeout, until the agent can write.
func (a *API) ready(r *http.Request) error {
	if a.WaitReady == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	err := a.WaitReady(ctx)
	cancel()
	if err != nil {
		return &HTTPError{Code: http.StatusServiceUnavailable, Msg: "agent not ready: " + err.Error()}
	}
	return nil
}

// errNoSessions answers sessions, locks and transactions on an API built
// without a SessionCluster.
var errNoSessions = &HTTPError{Code: http.StatusNotImplemented, Msg: "sessions and transactions are not available on this agent"}

// applyTxn applies a transaction through the cluster once the request's
// token allows every operation; get-tree results the token may not read
// are left out, as Consul does.
func (a *API) applyTxn(r *http.Request, req discovery.TxnRequest) (uint64, *discovery.TxnResult, error) {
	if a.Sessions == nil {
		return 0, nil, errNoSessions
	}
	if err := a.ready(r); err != nil {
		return 0, nil, err
	}
	// (authz filters the results below too)
	authz, err := a.authorizer(r)
	if err == nil {
		err = discovery.AuthorizeCommand(authz, a.Store, req)
	}
	if err != nil {
		return 0, nil, err
	}
	idx, res, err := a.Sessions.ApplyTxn(discovery.WithToken(r.Context(), requestToken(r)), req)
	if err != nil || res == nil {
		return idx, res, err
	}
	// A token that may write a key may read it: only get-tree's entries
	// can be ones it was not checked for.
	kept := res.Results[:0:0]
	for _, e := range res.Results {
		if authz.KeyRead(e.Key) == nil {
			kept = append(kept, e)
		}
	}
	res.Results = kept
	return idx, res, nil
}

func (a *API) statusLeader(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	addr, _ := a.Cluster.Leader()
	writeJSON(w, addr)
}

func (a *API) statusPeers(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	peers, err := a.Cluster.Peers()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if peers == nil {
		peers = []string{}
	}
	writeJSON(w, peers)
}

// TTLUpdater records TTL check results; the agent's CheckRunner is one.
type TTLUpdater interface {
	UpdateTTL(ctx context.Context, checkID, status, output string) error
}

// decodeError answers a JSON decoding error with a 400 that names the field.
func decodeError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return bodyError(err)
	}
	return badRequest("%s", discovery.DecodeError(err))
}

// BuildInfo is the build the agent reports in /v1/agent/self: Config.Revision
// (Consul's short commit) and the "VMesh" block.
type BuildInfo struct {
	Version       string
	Revision      string // the full commit, or "unknown"
	ShortRevision string `json:"-"`
	Modified      bool   // built from a tree with uncommitted changes
	RevisionNote  string `json:",omitempty"`
	GoVersion     string
}
