package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
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
	// CreateJoinToken mints a join token that admits uses joins within
	// ttl; the caller has checked both against the discovery limits.
	CreateJoinToken(ctx context.Context, ttl time.Duration, uses int) (token string, info discovery.JoinTokenInfo, err error)
	// JoinTokens lists the join tokens, without their secrets.
	JoinTokens(ctx context.Context) ([]discovery.JoinTokenInfo, error)
	// RevokeJoinToken marks a join token revoked (discovery.ErrNotFound
	// when there is none).
	RevokeJoinToken(ctx context.Context, id string) (discovery.JoinTokenInfo, error)
	// ClusterMembers lists the cluster's nodes and their raft roles.
	ClusterMembers(ctx context.Context) ([]ClusterMember, error)
	// Snapshot takes a raft snapshot now and returns its index.
	Snapshot() (uint64, error)
	// ForceLeave takes node out of the cluster and revokes its node
	// certificates: an operator's decision, which the node need not
	// answer. It comes back only by joining with a new token.
	ForceLeave(ctx context.Context, node string) error
	// RotateCA replaces the cluster CA with a new one cross-signed by the
	// current one and returns the new CA record (no keys).
	RotateCA(ctx context.Context) (*discovery.CARoot, error)
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
	// NodeRole is "server" or "client", as the leader recorded it at join.
	NodeRole string `json:",omitempty"`
}

// WithStatus marks err to be answered with code instead of a 500.
func WithStatus(code int, err error) error {
	if err == nil {
		return nil
	}
	return &HTTPError{Code: code, Msg: err.Error(), Err: err}
}

// registerVmesh adds vmesh's own endpoints. Diagnostics that other
// packages render (the xDS server's clients and config dump, Prometheus'
// metrics) are mounted as given; nil ones are left out.
func (a *API) registerVmesh(mux *http.ServeMux) {
	operatorRead := func(z *acl.Authorizer) error { return z.OperatorRead() }
	operatorWrite := func(z *acl.Authorizer) error { return z.OperatorWrite() }
	mux.Handle("GET /v1/vmesh/vips", a.guard(operatorRead, http.HandlerFunc(a.vipsList)))
	// The CA roots are public (Consul serves them to any token): every
	// proxy and verifier needs them, and they carry no key.
	mux.HandleFunc("GET /v1/connect/ca/roots", a.caRoots) // api_ca.go
	for pattern, h := range map[string]http.Handler{
		"GET /v1/vmesh/xds/clients":     a.Diagnostics.XDSClients,
		"GET /v1/vmesh/xds/config_dump": a.Diagnostics.XDSConfigDump,
		"GET /v1/vmesh/metrics":         a.Diagnostics.Metrics,
	} {
		if h != nil {
			mux.Handle(pattern, a.guard(operatorRead, h))
		}
	}
	if a.Operator == nil {
		return
	}
	// Membership and join tokens: acl:write or operator:write.
	membership := discovery.AuthorizeJoinTokens
	mux.Handle("PUT /v1/vmesh/join", a.guard(membership, http.HandlerFunc(a.vmeshJoin)))
	mux.Handle("PUT /v1/vmesh/leave", a.guard(membership, http.HandlerFunc(a.vmeshLeave)))
	mux.Handle("PUT /v1/vmesh/token", a.guard(membership, http.HandlerFunc(a.vmeshToken)))
	mux.Handle("GET /v1/vmesh/tokens", a.guard(membership, http.HandlerFunc(a.vmeshTokens)))
	mux.Handle("DELETE /v1/vmesh/token/{id}", a.guard(membership, http.HandlerFunc(a.vmeshTokenRevoke)))
	// Removing a node revokes its certificate: the same authority as
	// admitting one.
	mux.Handle("PUT /v1/agent/force-leave/{node}", a.guard(membership, http.HandlerFunc(a.agentForceLeave)))
	mux.Handle("GET /v1/vmesh/members", a.guard(operatorRead, http.HandlerFunc(a.vmeshMembers)))
	mux.Handle("PUT /v1/vmesh/raft/snapshot", a.guard(operatorWrite, http.HandlerFunc(a.vmeshSnapshot)))
	mux.Handle("PUT /v1/vmesh/ca/rotate", a.guard(operatorWrite, http.HandlerFunc(a.vmeshCARotate)))
	// An Envoy bootstrap names this agent's xDS endpoints, no secret:
	// whoever may write a service may run a proxy for it.
	mux.Handle("GET /v1/vmesh/envoy/bootstrap", a.guard(func(z *acl.Authorizer) error { return z.ServiceWriteAny() }, http.HandlerFunc(a.vmeshEnvoyBootstrap)))
}

// guard serves h only to a request whose token passes check.
func (a *API) guard(check func(*acl.Authorizer) error, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := a.allow(w, r, check); ok {
			h.ServeHTTP(w, r)
		}
	})
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
	q := r.URL.Query()
	ttl := discovery.DefaultJoinTokenTTL
	if s := q.Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			a.writeError(w, r, badRequest("ttl: %q is not a duration such as 1h", s))
			return
		}
		ttl = d
	}
	if ttl <= 0 || ttl > discovery.MaxJoinTokenTTL {
		a.writeError(w, r, badRequest("ttl: %s is not between 1s and %s: every join token expires", ttl, discovery.MaxJoinTokenTTL))
		return
	}
	uses := discovery.DefaultJoinTokenUses
	if s := q.Get("uses"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > discovery.MaxJoinTokenUses {
			a.writeError(w, r, badRequest("uses: %q is not a number between 1 and %d", s, discovery.MaxJoinTokenUses))
			return
		}
		uses = n
	}
	tok, info, err := a.Operator.CreateJoinToken(r.Context(), ttl, uses)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, struct {
		Token string
		discovery.JoinTokenInfo
	}{tok, info})
}

func (a *API) vmeshTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.Operator.JoinTokens(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if ts == nil {
		ts = []discovery.JoinTokenInfo{}
	}
	writeJSON(w, ts)
}

func (a *API) vmeshTokenRevoke(w http.ResponseWriter, r *http.Request) {
	info, err := a.Operator.RevokeJoinToken(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, info)
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
