package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Operator is the local agent as vmesh's own endpoints (/v1/vmesh/*) see
// it: cluster membership, join tokens, raft snapshots and an Envoy
// bootstrap. Package mesh implements it; an error that should not be a
// 500 carries its status as an HTTPError (see WithStatus).
type Operator interface {
	// Join joins the cluster whose member listens at addr (host:port).
	Join(ctx context.Context, addr, token string) error
	// Leave takes this node out of its cluster.
	Leave(ctx context.Context, force bool) error
	// CreateJoinToken mints a join token valid for ttl (0: no expiry).
	CreateJoinToken(ctx context.Context, ttl time.Duration) (token string, expires time.Time, err error)
	// ClusterMembers lists the cluster's nodes and their raft roles.
	ClusterMembers(ctx context.Context) ([]ClusterMember, error)
	// Snapshot takes a raft snapshot now and returns its index.
	Snapshot() (uint64, error)
	// EnvoyBootstrap renders an Envoy bootstrap for node (empty: this
	// node) with its admin listener at admin (empty: the default); tcp
	// asks for the TCP xDS address instead of the unix socket.
	EnvoyBootstrap(node, admin string, tcp bool) ([]byte, error)
}

// ClusterMember is a node as GET /v1/vmesh/members shows it.
type ClusterMember struct {
	Name          string
	ID            string
	Addr          string
	Role          string
	Status        string
	LastContactMs int64
}

// WithStatus marks err to be answered with code instead of a 500.
func WithStatus(code int, err error) error {
	if err == nil {
		return nil
	}
	return &HTTPError{Code: code, Msg: err.Error(), Err: err}
}

// defaultJoinTokenTTL is how long a token lives when ?ttl is not given.
const defaultJoinTokenTTL = 24 * time.Hour

// registerVmesh adds vmesh's own endpoints. Diagnostics that other
// packages render (the xDS server's clients and config dump, Prometheus'
// metrics) are mounted as given; nil ones are left out.
func (a *API) registerVmesh(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vmesh/vips", a.vipsList)
	for pattern, h := range map[string]http.Handler{
		"GET /v1/vmesh/xds/clients":     a.Diagnostics.XDSClients,
		"GET /v1/vmesh/xds/config_dump": a.Diagnostics.XDSConfigDump,
		"GET /v1/vmesh/metrics":         a.Diagnostics.Metrics,
	} {
		if h != nil {
			mux.Handle(pattern, h)
		}
	}
	if a.Operator == nil {
		return
	}
	mux.HandleFunc("PUT /v1/vmesh/join", a.vmeshJoin)
	mux.HandleFunc("PUT /v1/vmesh/leave", a.vmeshLeave)
	mux.HandleFunc("PUT /v1/vmesh/token", a.vmeshToken)
	mux.HandleFunc("GET /v1/vmesh/members", a.vmeshMembers)
	mux.HandleFunc("PUT /v1/vmesh/raft/snapshot", a.vmeshSnapshot)
	mux.HandleFunc("GET /v1/vmesh/envoy/bootstrap", a.vmeshEnvoyBootstrap)
}

// Diagnostics are read-only handlers rendered by other packages that the
// API serves under /v1/vmesh/.
type Diagnostics struct {
	XDSClients, XDSConfigDump, Metrics http.Handler
}

func (a *API) vmeshJoin(w http.ResponseWriter, r *http.Request) {
	var body struct{ Addr, Token string }
	if err := decodeBody(w, r, &body); err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, _, err := net.SplitHostPort(body.Addr); err != nil {
		a.writeError(w, r, badRequest("field Addr: %q is not host:port", body.Addr))
		return
	}
	if err := a.Operator.Join(r.Context(), body.Addr, body.Token); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (a *API) vmeshLeave(w http.ResponseWriter, r *http.Request) {
	_, force := r.URL.Query()["force"]
	if err := a.Operator.Leave(r.Context(), force); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (a *API) vmeshToken(w http.ResponseWriter, r *http.Request) {
	ttl := defaultJoinTokenTTL
	if s := r.URL.Query().Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			a.writeError(w, r, badRequest("ttl: %q is not a duration such as 24h", s))
			return
		}
		ttl = d
	}
	tok, exp, err := a.Operator.CreateJoinToken(r.Context(), ttl)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := map[string]string{"Token": tok}
	if !exp.IsZero() {
		out["ExpiresAt"] = exp.UTC().Format(time.RFC3339)
	}
	writeJSON(w, out)
}

func (a *API) vmeshMembers(w http.ResponseWriter, r *http.Request) {
	ms, err := a.Operator.ClusterMembers(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, ms)
}

func (a *API) vmeshSnapshot(w http.ResponseWriter, r *http.Request) {
	idx, err := a.Operator.Snapshot()
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, map[string]uint64{"Index": idx})
}

func (a *API) vmeshEnvoyBootstrap(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out, err := a.Operator.EnvoyBootstrap(q.Get("node"), q.Get("admin"), q.Has("tcp"))
	if err != nil {
		var he *HTTPError
		if !errors.As(err, &he) {
			err = badRequest("%v", err)
		}
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}
