package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// Consul's operator endpoints (/v1/operator/raft, /v1/operator/autopilot),
// snapshots (/v1/snapshot) and network coordinates (/v1/coordinate).

// RaftOperator is the agent's raft server as the operator endpoints see
// it; package mesh implements it. An error that should not be a 500
// carries its status (WithStatus).
type RaftOperator interface {
	RaftConfiguration(ctx context.Context) (discovery.RaftConfiguration, error)
	// RemoveRaftPeer removes the server with id or address (one is set).
	RemoveRaftPeer(ctx context.Context, id, address string) error
	// TransferLeader hands leadership to the server id (any: "").
	TransferLeader(ctx context.Context, id string) error
	AutopilotState(ctx context.Context) (*discovery.AutopilotState, error)
	// SaveSnapshot writes a snapshot archive and returns its index.
	SaveSnapshot(ctx context.Context, w io.Writer) (uint64, error)
	// RestoreSnapshot replaces the cluster's state with an archive's.
	RestoreSnapshot(ctx context.Context, archive []byte) error
}

// maxSnapshotBody bounds a snapshot archive sent for a restore.
const maxSnapshotBody = 1 << 30

func (a *API) registerOperator(mux *http.ServeMux) {
	operatorRead := func(z *acl.Authorizer) error { return z.OperatorRead() }
	operatorWrite := func(z *acl.Authorizer) error { return z.OperatorWrite() }
	// Autopilot's configuration is in the catalog: any agent reads it;
	// a write goes through raft like any other (operator:write).
	mux.Handle("GET /v1/operator/autopilot/configuration", a.guard(operatorRead, http.HandlerFunc(a.autopilotGet)))
	mux.HandleFunc("PUT /v1/operator/autopilot/configuration", a.autopilotPut)
	// The catalog's counts: any agent answers from its catalog.
	mux.Handle("GET /v1/operator/usage", a.guard(operatorRead, http.HandlerFunc(a.usage)))
	// Coordinates: vmesh has none (docs/consul-compatibility.md).
	mux.HandleFunc("GET /v1/coordinate/datacenters", a.coordinateDatacenters)
	mux.HandleFunc("GET /v1/coordinate/nodes", a.coordinateNodes)
	mux.HandleFunc("GET /v1/coordinate/node/{node}", a.coordinateNode)
	mux.HandleFunc("PUT /v1/coordinate/update", a.coordinateUpdate)
	if a.Raft == nil {
		return
	}
	mux.Handle("GET /v1/operator/raft/configuration", a.guard(operatorRead, http.HandlerFunc(a.raftConfiguration)))
	mux.Handle("DELETE /v1/operator/raft/peer", a.guard(operatorWrite, http.HandlerFunc(a.raftRemovePeer)))
	mux.Handle("POST /v1/operator/raft/transfer-leader", a.guard(operatorWrite, http.HandlerFunc(a.raftTransferLeader)))
	mux.Handle("GET /v1/operator/autopilot/health", a.guard(operatorRead, http.HandlerFunc(a.autopilotHealth)))
	mux.Handle("GET /v1/operator/autopilot/state", a.guard(operatorRead, http.HandlerFunc(a.autopilotState)))
	// A snapshot holds every secret (ACL tokens, the sealed CA): Consul
	// asks for acl:write, a management token's right, to save or restore.
	snapshot := func(z *acl.Authorizer) error { return z.Snapshot() }
	mux.Handle("GET /v1/snapshot", a.guard(snapshot, http.HandlerFunc(a.snapshotSave)))
	mux.Handle("PUT /v1/snapshot", a.guard(snapshot, http.HandlerFunc(a.snapshotRestore)))
}

func (a *API) raftConfiguration(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	conf, err := a.Raft.RaftConfiguration(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, conf)
}

func (a *API) raftRemovePeer(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, addr := q.Get("id"), q.Get("address")
	if (id == "") == (addr == "") {
		a.writeError(w, r, badRequest("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"))
		return
	}
	if err := a.Raft.RemoveRaftPeer(r.Context(), id, addr); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (a *API) raftTransferLeader(w http.ResponseWriter, r *http.Request) {
	if err := a.Raft.TransferLeader(r.Context(), r.URL.Query().Get("id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, struct{ Success bool }{true})
}

// autopilotConfig is Consul's AutopilotConfiguration on the wire.
type autopilotConfig struct {
	CleanupDeadServers      bool
	LastContactThreshold    *discovery.Duration
	MaxTrailingLogs         uint64
	MinQuorum               uint
	ServerStabilizationTime *discovery.Duration
	RedundancyZoneTag       string
	DisableUpgradeMigration bool
	UpgradeVersionTag       string
	CreateIndex             uint64
	ModifyIndex             uint64
}

func (a *API) autopilotGet(w http.ResponseWriter, r *http.Request) {
	var c discovery.AutopilotConfig
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, cfg, err := a.Store.Autopilot(ws)
		c = cfg
		return idx, err
	}) {
		return
	}
	lc, st := discovery.Duration(c.LastContactThreshold), discovery.Duration(c.ServerStabilizationTime)
	writeJSON(w, autopilotConfig{
		CleanupDeadServers: c.CleanupDeadServers, LastContactThreshold: &lc, MaxTrailingLogs: c.MaxTrailingLogs,
		MinQuorum: c.MinQuorum, ServerStabilizationTime: &st, CreateIndex: c.CreateIndex, ModifyIndex: c.ModifyIndex,
	})
}

func (a *API) autopilotPut(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	var body autopilotConfig
	if err := newLenientDecoder(w, r).Decode(&body); err != nil {
		a.writeError(w, r, decodeError(err))
		return
	}
	// A PUT replaces the whole configuration, as Consul's. A field left
	// out (null durations, a zero MaxTrailingLogs, which no autopilot can
	// run with) takes its default rather than a zero that would refuse
	// the write or mark every follower unhealthy: a client that sends
	// only {"CleanupDeadServers": false} gets the defaults for the rest.
	def := discovery.DefaultAutopilotConfig()
	req := discovery.AutopilotSetRequest{Config: discovery.AutopilotConfig{
		CleanupDeadServers: body.CleanupDeadServers, MaxTrailingLogs: body.MaxTrailingLogs, MinQuorum: body.MinQuorum,
		LastContactThreshold: def.LastContactThreshold, ServerStabilizationTime: def.ServerStabilizationTime,
	}}
	if body.MaxTrailingLogs == 0 {
		req.Config.MaxTrailingLogs = def.MaxTrailingLogs
	}
	// Enterprise's redundancy zones and upgrade migration: refused when
	// asked for, rather than stored and ignored.
	switch {
	case body.RedundancyZoneTag != "":
		a.writeError(w, r, badRequest("field RedundancyZoneTag: redundancy zones are a Consul Enterprise feature that vmesh does not have"))
		return
	case body.UpgradeVersionTag != "", body.DisableUpgradeMigration:
		a.writeError(w, r, badRequest("fields UpgradeVersionTag, DisableUpgradeMigration: upgrade migration is a Consul Enterprise feature that vmesh does not have"))
		return
	}
	if body.LastContactThreshold != nil {
		req.Config.LastContactThreshold = time.Duration(*body.LastContactThreshold)
	}
	if body.ServerStabilizationTime != nil {
		req.Config.ServerStabilizationTime = time.Duration(*body.ServerStabilizationTime)
	}
	if s := r.URL.Query().Get("cas"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			a.writeError(w, r, badRequest("Error parsing cas value: %q is not a number", s))
			return
		}
		req.CAS, req.Index = true, v
	}
	if err := req.Config.Validate(); err != nil {
		a.writeError(w, r, badRequest("Invalid autopilot configuration: %s", strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")))
		return
	}
	_, err := a.apply(r, req)
	if errors.Is(err, discovery.ErrCASConflict) {
		writeJSON(w, false)
		return
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, true)
}

// serverHealth is Consul's ServerHealth, for /v1/operator/autopilot/health.
type serverHealth struct {
	ID          string
	Name        string
	Address     string
	SerfStatus  string
	Version     string
	Leader      bool
	LastContact string
	LastTerm    uint64
	LastIndex   uint64
	Healthy     bool
	Voter       bool
	StableSince time.Time
}

func (a *API) autopilotHealth(w http.ResponseWriter, r *http.Request) {
	st, err := a.Raft.AutopilotState(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := struct {
		Healthy          bool
		FailureTolerance int
		Servers          []serverHealth
	}{Healthy: st.Healthy, FailureTolerance: st.FailureTolerance, Servers: []serverHealth{}}
	for _, s := range st.Servers {
		out.Servers = append(out.Servers, serverHealth{
			ID: s.ID, Name: s.Name, Address: s.Address, SerfStatus: serfStatus(s.NodeStatus), Version: a.Version,
			Leader: s.Leader, LastContact: s.LastContact.String(), LastTerm: s.LastTerm, LastIndex: s.LastIndex,
			Healthy: s.Healthy, Voter: s.Voter, StableSince: s.StableSince,
		})
	}
	w.Header().Set("Content-Type", "application/json")
	if !st.Healthy {
		// Consul answers an unhealthy cluster with a 429 and the body, so
		// that a load balancer's check fails.
		w.WriteHeader(http.StatusTooManyRequests)
	}
	writeJSON(w, out)
}

// serfStatus is autopilot's node status in Serf's words.
func serfStatus(s string) string {
	switch s {
	case "alive":
		return "alive"
	case "failed":
		return "failed"
	case "left":
		return "left"
	}
	return "none"
}

func (a *API) autopilotState(w http.ResponseWriter, r *http.Request) {
	st, err := a.Raft.AutopilotState(r.Context())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	type server struct {
		ID          string
		Name        string
		Address     string
		NodeStatus  string
		Version     string
		LastContact string
		LastTerm    uint64
		LastIndex   uint64
		Healthy     bool
		StableSince time.Time
		ReadReplica bool
		Status      string
		Meta        map[string]string
		NodeType    string
	}
	out := struct {
		Healthy                    bool
		FailureTolerance           int
		OptimisticFailureTolerance int
		Servers                    map[string]server
		Leader                     string
		Voters                     []string
	}{st.Healthy, st.FailureTolerance, st.OptimisticFailureTolerance, map[string]server{}, st.Leader, st.Voters}
	for _, s := range st.Servers {
		out.Servers[s.ID] = server{
			ID: s.ID, Name: s.Name, Address: s.Address, NodeStatus: s.NodeStatus, Version: a.Version,
			LastContact: s.LastContact.String(), LastTerm: s.LastTerm, LastIndex: s.LastIndex, Healthy: s.Healthy,
			StableSince: s.StableSince, Status: s.Status, Meta: map[string]string{}, NodeType: "voter",
		}
	}
	writeJSON(w, out)
}

func (a *API) snapshotSave(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	// Without ?stale, from a server that has everything the leader
	// committed, as Consul takes it from the leader.
	if _, stale := r.URL.Query()["stale"]; !stale {
		if err := a.Cluster.VerifyLeader(); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	var buf bytes.Buffer
	idx, err := a.Raft.SaveSnapshot(r.Context(), &buf)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// Consul's query meta, as on every read: a backup tool checks that
	// the snapshot came from a cluster with a leader.
	leader, _ := a.Cluster.Leader()
	w.Header().Set("Content-Type", "application/x-gzip")
	w.Header().Set("X-Consul-Index", strconv.FormatUint(max(idx, 1), 10))
	w.Header().Set("X-Consul-KnownLeader", strconv.FormatBool(leader != ""))
	w.Header().Set("X-Consul-LastContact", strconv.FormatInt(a.Cluster.LastContact().Milliseconds(), 10))
	w.Write(buf.Bytes())
}

func (a *API) snapshotRestore(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	archive, err := io.ReadAll(limitBody(w, r, maxSnapshotBody))
	if err != nil {
		a.writeError(w, r, bodyError(err))
		return
	}
	if len(archive) == 0 {
		a.writeError(w, r, badRequest("empty body: send the snapshot archive that GET /v1/snapshot (consul snapshot save) wrote"))
		return
	}
	if err := a.Raft.RestoreSnapshot(r.Context(), archive); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// Coordinates: vmesh runs no Serf, so no node has a network coordinate.
// The endpoints answer as Consul does for a cluster where none was
// computed yet: no coordinates, and a 404 for one node's. An update is
// refused (501): vmesh would not use it, and storing it only to show it
// back would pretend otherwise.

func (a *API) coordinateDatacenters(w http.ResponseWriter, r *http.Request) {
	type dcMap struct {
		Datacenter  string
		AreaID      string
		Coordinates []struct{}
	}
	writeJSON(w, []dcMap{{Datacenter: a.Datacenter, AreaID: "wan", Coordinates: []struct{}{}}})
}

func (a *API) coordinateNodes(w http.ResponseWriter, r *http.Request) {
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, _, err := a.Store.Nodes(ws)
		return idx, err
	}) {
		return
	}
	writeJSON(w, []struct{}{})
}

func (a *API) coordinateNode(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.NodeRead(node) }); !ok {
		return
	}
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, _, _, err := a.Store.Node(ws, node)
		return idx, err
	}) {
		return
	}
	// Consul's answer for a node with no coordinate: a 404 with no body.
	w.WriteHeader(http.StatusNotFound)
}

func (a *API) coordinateUpdate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Node string
	}
	if err := newLenientDecoder(w, r).Decode(&body); err != nil {
		a.writeError(w, r, decodeError(err))
		return
	}
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.NodeWrite(body.Node) }); !ok {
		return
	}
	a.writeError(w, r, &HTTPError{Code: http.StatusNotImplemented,
		Msg: "vmesh keeps no network coordinates (it runs no Serf): a coordinate update is not stored"})
}
