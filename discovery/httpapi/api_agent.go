package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

func (a *API) serviceRegister(w http.ResponseWriter, r *http.Request) {
	var reg discovery.ServiceRegistration
	if err := decodeBody(w, r, &reg); err != nil {
		a.writeError(w, r, err)
		return
	}
	req, err := reg.Build(a.NodeName, "api")
	if err == nil {
		err = a.checkTargets(req.Checks...)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.registerService(r, req); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.checksWritten()
	w.WriteHeader(http.StatusOK)
}

func (a *API) checksWritten() {
	if a.ChecksWritten != nil {
		a.ChecksWritten()
	}
}

// registerService checks req against this node's other instances, gives
// its user a port, and writes it. A registration that names a user or
// binds upstream ports does all that under the node's registration lock
// (UserPortAllocator), so two at once cannot both pass the checks, or take
// one port, against a catalog that holds neither. Others neither take nor
// bind a port and skip the lock: they do not queue behind a user's
// registration waiting on raft (during a leader election, say).
func (a *API) registerService(r *http.Request, req *discovery.RegisterServiceRequest) error {
	ports := a.userPorts()
	if req.Instance.User != "" || len(req.Instance.Upstreams) > 0 {
		ports.Lock()
		defer ports.Unlock()
	}
	if err := a.checkIDFree(req); err != nil {
		return err
	}
	if err := a.checkUser(req); err != nil {
		return err
	}
	if err := ports.Assign(a.Store, req); err != nil {
		return err
	}
	_, err := a.apply(r, req)
	return err
}

// checkIDFree refuses a registration whose ID already belongs to another
// service on this node: re-registering the same service updates it, as in
// Consul, but silently turning "web-1" into a "db" would surprise everyone
// watching "web".
func (a *API) checkIDFree(req *discovery.RegisterServiceRequest) error {
	_, cur, err := a.Store.Instance(nil, req.Instance.Node, req.Instance.ID)
	if err != nil {
		return err
	}
	if cur != nil && cur.Service != req.Instance.Service {
		return badRequest("ID: duplicate ID %q: already registered for service %q; deregister it first", req.Instance.ID, cur.Service)
	}
	if sc := req.Sidecar; sc != nil {
		_, cur, err := a.Store.Instance(nil, req.Instance.Node, sc.ID)
		if err != nil {
			return err
		}
		if cur != nil && cur.SidecarFor != req.Instance.ID {
			return badRequest("Connect.SidecarService: the sidecar's ID %q is already registered for service %q; deregister it first", sc.ID, cur.Service)
		}
	}
	return nil
}

func (a *API) serviceDeregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, cur, err := a.Store.Instance(nil, a.NodeName, id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if cur == nil || cur.IsServerService() {
		a.writeError(w, r, notFound("Unknown service ID %q. Ensure that the service ID is passed, not the service name.", id))
		return
	}
	if _, err := a.apply(r, discovery.DeregisterServiceRequest{Node: a.NodeName, ServiceID: id}); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (a *API) agentServices(w http.ResponseWriter, r *http.Request) {
	ev, err := requestFilter(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	out := map[string]*agentService{}
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, insts, err := a.Store.NodeInstances(ws, a.NodeName)
		// A server's "consul" service is the catalog's, not the agent's, as in Consul.
		insts = slices.DeleteFunc(insts, (*discovery.Instance).IsServerService)
		insts, filtered := keep(insts, func(in *discovery.Instance) bool { return serviceReadable(authz, in.Service) })
		setFiltered(w, filtered)
		clear(out)
		for _, in := range insts {
			out[in.ID] = toAgentService(in, a.Datacenter)
		}
		if err != nil {
			return idx, err
		}
		out, err = filterMap(ev, out)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

// agentService serves one of this agent's services to a token that may
// read it (a 403 otherwise, as Consul answers).
func (a *API) agentService(w http.ResponseWriter, r *http.Request) {
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var svc *discovery.Instance
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, in, err := a.Store.Instance(ws, a.NodeName, r.PathValue("id"))
		if in != nil && in.IsServerService() {
			in = nil
		}
		svc = in
		return idx, err
	}) {
		return
	}
	if svc == nil {
		a.writeError(w, r, notFound("unknown service ID: %s", r.PathValue("id")))
		return
	}
	if err := authz.ServiceRead(svc.Service); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, toAgentService(svc, a.Datacenter))
}

func (a *API) agentChecks(w http.ResponseWriter, r *http.Request) {
	ev, err := requestFilter(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	out := map[string]*healthCheck{}
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, checks, err := a.Store.NodeChecks(ws, a.NodeName)
		// A service's check needs service:read, a node check node:read on
		// this agent's node, as Consul filters its agent's checks (the
		// catalog's also ask node:read for a service's check).
		checks, filtered := keep(checks, func(c *discovery.Check) bool {
			if c.CheckID == discovery.NodeLivenessCheckID {
				return true // never shown here: not the caller's to see filtered
			}
			if c.ServiceID != "" {
				return serviceReadable(authz, c.ServiceName)
			}
			return nodeReadable(authz, a.NodeName)
		})
		setFiltered(w, filtered)
		clear(out)
		for _, c := range checks {
			if c.CheckID != discovery.NodeLivenessCheckID {
				out[c.CheckID] = toHealthCheck(c)
			}
		}
		if err != nil {
			return idx, err
		}
		out, err = filterMap(ev, out)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

func (a *API) checkRegister(w http.ResponseWriter, r *http.Request) {
	var ct discovery.CheckType
	if err := decodeBody(w, r, &ct); err != nil {
		a.writeError(w, r, err)
		return
	}
	chk, err := ct.BuildCheck(a.NodeName)
	if err == nil {
		err = a.checkTargets(chk)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := a.apply(r, discovery.RegisterCheckRequest{Check: *chk}); err != nil {
		if errors.Is(err, discovery.ErrNotFound) {
			err = badRequest("ServiceID: %v", err)
		}
		a.writeError(w, r, err)
		return
	}
	a.checksWritten()
	w.WriteHeader(http.StatusOK)
}

func (a *API) checkDeregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, cur, err := a.Store.Check(nil, a.NodeName, id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if cur == nil {
		a.writeError(w, r, notFound("Unknown check ID %q", id))
		return
	}
	if _, err := a.apply(r, discovery.DeregisterCheckRequest{Node: a.NodeName, CheckID: id}); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// checkTTL handles pass/warn/fail (status fixed, ?note= as output) and
// update (status and output in the body). It writes through the check
// runner, not the Writer, so it asks apply's rule itself: service:write
// on the check's service, node:write on this node for a node check (or
// for a check the catalog does not hold), as Consul's agent does.
func (a *API) checkTTL(status string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if _, ok := a.allow(w, r, func(z *acl.Authorizer) error {
			return discovery.AuthorizeCommand(z, a.Store, discovery.UpdateCheckRequest{Node: a.NodeName, CheckID: id})
		}); !ok {
			return
		}
		output := r.URL.Query().Get("note")
		st := status
		if st == "" {
			var body struct{ Status, Output string }
			if err := decodeBody(w, r, &body); err != nil {
				a.writeError(w, r, err)
				return
			}
			if !discovery.ValidHealthState(body.Status) {
				a.writeError(w, r, badRequest("Status: %q is not one of passing, warning, critical", body.Status))
				return
			}
			st, output = body.Status, body.Output
		}
		err := a.TTL.UpdateTTL(r.Context(), id, st, output)
		switch {
		case errors.Is(err, discovery.ErrCheckNotFound):
			err = notFound("Unknown check ID %q", id)
		case errors.Is(err, discovery.ErrNotTTLCheck):
			err = badRequest("CheckID %q does not have an associated TTL", id)
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

// agentSelf needs agent:read on this agent's node: its configuration and
// raft state are the operator's, as in Consul.
func (a *API) agentSelf(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.AgentRead(a.NodeName) }); !ok {
		return
	}
	addr, _ := a.Cluster.Leader()
	raftStats := a.Cluster.Stats()
	stats := map[string]any{
		"agent": map[string]string{"node": a.NodeName, "leader_addr": addr},
		"raft":  raftStats,
	}
	writeJSON(w, map[string]any{
		"Config": map[string]any{
			"Datacenter": a.Datacenter, "NodeName": a.NodeName, "NodeID": a.NodeID,
			"Server": raftStats["state"] != "client", "Version": a.Version, "Revision": a.Build.ShortRevision, "PrimaryDatacenter": a.Datacenter,
		},
		"VMesh":       a.Build,
		"DebugConfig": a.debugConfig(),
		"Member":      a.selfMember(),
		"Meta":        map[string]string{},
		"Stats":       stats,
	})
}

type wireMember struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// members is the cluster's members in Consul's shape, each with its own
// Serf-style tags. Of itself this agent knows its node ID and build; of
// another member, what the catalog holds: its node ID once it registered
// ("id" is left out before that). The catalog does not record an agent's
// build, so another member has no "build" tag: consul/api decodes Tags as
// a map, where a missing key reads as "", and an absent tag says
// "unknown" where a copy of ours would be wrong.
func (a *API) members() []wireMember {
	var ms []Member
	if a.Members != nil {
		ms = a.Members()
	}
	if len(ms) == 0 {
		ms = []Member{{Name: a.NodeName, Status: 1, Role: "node"}}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	ids := a.nodeIDs()
	out := make([]wireMember, 0, len(ms))
	for _, m := range ms {
		// Consul's Serf tags: the protocol versions (vsn*) and segment
		// every member has; a server's raft protocol and server port.
		tags := map[string]string{
			"role": m.Role, "dc": a.Datacenter, "segment": "",
			"vsn": "2", "vsn_min": "2", "vsn_max": "3",
		}
		if m.Role == "consul" {
			tags["raft_vsn"] = "3"
			if m.Port != 0 {
				tags["port"] = strconv.Itoa(m.Port)
			}
		}
		if m.VMeshRole != "" {
			tags["vmesh_role"] = m.VMeshRole
		}
		switch {
		case m.Name == a.NodeName:
			tags["id"], tags["build"] = a.NodeID, a.Version
		case ids[m.Name] != "":
			tags["id"] = ids[m.Name]
		}
		out = append(out, wireMember{
			Name: m.Name, Addr: m.Addr, Port: uint16(m.Port), Status: m.Status, Tags: tags,
			ProtocolMin: 1, ProtocolMax: 5, ProtocolCur: 2, DelegateMin: 2, DelegateMax: 5, DelegateCur: 4,
		})
	}
	return out
}

// nodeIDs maps the catalog's node names to their node IDs.
func (a *API) nodeIDs() map[string]string {
	ids := map[string]string{}
	_, nodes, _ := a.Store.Nodes(nil) // memdb errors only on a bad index name
	for _, n := range nodes {
		ids[n.Name] = n.ID
	}
	return ids
}

// selfMember is this agent's own entry of the member list.
func (a *API) selfMember() wireMember {
	ms := a.members()
	for _, m := range ms {
		if m.Name == a.NodeName {
			return m
		}
	}
	return ms[0]
}

// agentMembers lists the members whose node the token may read.
func (a *API) agentMembers(w http.ResponseWriter, r *http.Request) {
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	ms, filtered := keep(a.members(), func(m wireMember) bool { return nodeReadable(authz, m.Name) })
	setFiltered(w, filtered)
	writeJSON(w, ms)
}
