package httpapi

import (
	"net/http"
	"slices"

	"github.com/hashicorp/go-bexpr"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

func (a *API) catalogServices(w http.ResponseWriter, r *http.Request) {
	ev, err := requestFilter(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	meta, err := nodeMetaFilter(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out map[string][]string
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, tags, err := a.Store.ServiceTags(ws)
		out = tags
		if err != nil {
			return idx, err
		}
		// service:read per name, as Consul filters its service list.
		setFiltered(w, keepMap(tags, func(name string, _ []string) bool { return serviceReadable(authz, name) }))
		if ev != nil || meta != nil {
			out, err = a.matchingServiceTags(ws, tags, ev, meta)
		}
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

// matchingServiceTags is the names and tags of the instances that match
// the ?filter= and ?node-meta= of a service list, as Consul filters the
// service nodes before it sums them up.
func (a *API) matchingServiceTags(ws memdb.WatchSet, tags map[string][]string, ev *bexpr.Evaluator, meta map[string]string) (map[string][]string, error) {
	out := map[string][]string{}
	for name := range tags {
		_, entries, err := a.Store.ServiceNodes(ws, name, nil)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Node == nil || !metaMatches(e.Node.Meta, meta) {
				continue
			}
			cs := toCatalogService(e, a.Datacenter)
			if ev != nil {
				if ok, err := ev.Evaluate(cs); err != nil {
					return nil, badRequest("Failed to apply the filter: %v", err)
				} else if !ok {
					continue
				}
			}
			have := out[name]
			if have == nil {
				have = []string{}
			}
			for _, t := range cs.ServiceTags {
				if !slices.Contains(have, t) {
					have = append(have, t)
				}
			}
			out[name] = have
		}
	}
	return out, nil
}

// catalogDatacenters lists the one datacenter vmesh has (no WAN
// federation).
func (a *API) catalogDatacenters(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, []string{a.Datacenter})
}

func (a *API) catalogService(w http.ResponseWriter, r *http.Request) {
	tags := r.URL.Query()["tag"]
	ev, meta, err := listFilters(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*catalogService
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, entries, err := a.Store.ServiceNodes(ws, r.PathValue("name"), tags)
		entries, filtered := keep(entries, func(e discovery.ServiceEntry) bool { return entryReadable(authz, e.Instance) })
		setFiltered(w, filtered)
		out = make([]*catalogService, 0, len(entries))
		for _, e := range entries {
			if meta == nil || (e.Node != nil && metaMatches(e.Node.Meta, meta)) {
				out = append(out, toCatalogService(e, a.Datacenter))
			}
		}
		if err != nil {
			return idx, err
		}
		out, err = filterSlice(ev, out)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

func toCatalogService(e discovery.ServiceEntry, dc string) *catalogService {
	in := e.Instance
	cs := &catalogService{
		Node: in.Node, Datacenter: dc,
		ServiceID: in.ID, ServiceName: in.Service, ServiceAddress: in.Address, ServiceTags: nonNil(in.Tags),
		ServiceMeta: nonNilMap(in.Meta), ServicePort: in.Port, ServiceTaggedAddresses: in.TaggedAddresses,
		ServiceWeights:           wireWeights{Passing: in.Weights.Passing, Warning: in.Weights.Warning},
		ServiceEnableTagOverride: in.EnableTagOverride, CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex,
		NodeMeta: map[string]string{}, TaggedAddresses: map[string]string{}, ServiceLocality: in.Locality,
		ServiceKind: in.Kind, ServiceProxy: in.Proxy,
	}
	if n := e.Node; n != nil {
		cs.ID, cs.Address, cs.NodeMeta = n.ID, n.Address, nonNilMap(n.Meta)
		cs.TaggedAddresses = nodeTaggedAddresses(n)
	}
	return cs
}

func (a *API) catalogNodes(w http.ResponseWriter, r *http.Request) {
	ev, meta, err := listFilters(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*wireNode
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, nodes, err := a.Store.Nodes(ws)
		nodes, filtered := keep(nodes, func(n *discovery.Node) bool { return nodeReadable(authz, n.Name) })
		setFiltered(w, filtered)
		out = make([]*wireNode, 0, len(nodes))
		for _, n := range nodes {
			if metaMatches(n.Meta, meta) {
				out = append(out, toWireNode(n))
			}
		}
		if err != nil {
			return idx, err
		}
		out, err = filterSlice(ev, out)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

func (a *API) catalogNode(w http.ResponseWriter, r *http.Request) {
	type catalogNode struct {
		Node     *wireNode
		Services map[string]*agentService
	}
	ev, err := requestFilter(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out *catalogNode
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, n, insts, err := a.readableNode(ws, w, authz, r.PathValue("node"))
		out = nil
		if n == nil || err != nil {
			return idx, err
		}
		out = &catalogNode{Node: toWireNode(n), Services: map[string]*agentService{}}
		for _, in := range insts {
			out.Services[in.ID] = toAgentService(in, a.Datacenter)
		}
		out.Services, err = filterMap(ev, out.Services)
		return idx, err
	}) {
		return
	}
	// Consul answers an unknown node with 200 and null.
	writeJSON(w, out)
}

func (a *API) healthService(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	_, passing := q["passing"]
	if v := q.Get("passing"); v == "false" || v == "0" {
		passing = false
	}
	ev, meta, err := listFilters(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*serviceEntry
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, entries, err := a.Store.CheckServiceNodes(ws, r.PathValue("name"), q["tag"], passing)
		entries, filtered := keep(entries, func(e discovery.ServiceEntry) bool { return entryReadable(authz, e.Instance) })
		setFiltered(w, filtered)
		out = make([]*serviceEntry, 0, len(entries))
		for _, e := range entries {
			if meta != nil && (e.Node == nil || !metaMatches(e.Node.Meta, meta)) {
				continue
			}
			out = append(out, &serviceEntry{
				Node: toWireNode(e.Node), Service: toAgentService(e.Instance, a.Datacenter),
				Checks: toHealthChecks(e.Checks),
			})
		}
		if err != nil {
			return idx, err
		}
		out, err = filterSlice(ev, out)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

func (a *API) checksReply(w http.ResponseWriter, r *http.Request, query func(ws memdb.WatchSet) (uint64, []*discovery.Check, error)) {
	ev, meta, err := listFilters(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out []*healthCheck
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, checks, err := query(ws)
		checks, filtered := keep(checks, func(c *discovery.Check) bool { return checkReadable(authz, c) })
		setFiltered(w, filtered)
		if meta != nil && err == nil {
			checks, err = a.checksOnNodesWithMeta(ws, checks, meta)
		}
		out = toHealthChecks(checks)
		if err != nil {
			return idx, err
		}
		out, err = filterSlice(ev, out)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

// checksOnNodesWithMeta keeps the checks whose node has every ?node-meta
// pair (the health endpoints' node-meta filter).
func (a *API) checksOnNodesWithMeta(ws memdb.WatchSet, checks []*discovery.Check, want map[string]string) ([]*discovery.Check, error) {
	match := map[string]bool{}
	out := checks[:0:0]
	for _, c := range checks {
		ok, seen := match[c.Node]
		if !seen {
			_, n, _, err := a.Store.Node(ws, c.Node)
			if err != nil {
				return nil, err
			}
			ok = n != nil && metaMatches(n.Meta, want)
			match[c.Node] = ok
		}
		if ok {
			out = append(out, c)
		}
	}
	return out, nil
}

func (a *API) healthChecks(w http.ResponseWriter, r *http.Request) {
	a.checksReply(w, r, func(ws memdb.WatchSet) (uint64, []*discovery.Check, error) {
		return a.Store.ServiceChecks(ws, r.PathValue("name"))
	})
}

func (a *API) healthState(w http.ResponseWriter, r *http.Request) {
	state := r.PathValue("state")
	if state != discovery.HealthAny && !discovery.ValidHealthState(state) {
		a.writeError(w, r, badRequest("Invalid check state %q: one of any, passing, warning, critical", state))
		return
	}
	a.checksReply(w, r, func(ws memdb.WatchSet) (uint64, []*discovery.Check, error) {
		return a.Store.ChecksInState(ws, state)
	})
}

func (a *API) healthNode(w http.ResponseWriter, r *http.Request) {
	a.checksReply(w, r, func(ws memdb.WatchSet) (uint64, []*discovery.Check, error) {
		return a.Store.NodeChecks(ws, r.PathValue("node"))
	})
}

// catalogNodeServices is a node and its services as a list (Consul's
// /v1/catalog/node-services/:node).
func (a *API) catalogNodeServices(w http.ResponseWriter, r *http.Request) {
	type nodeServices struct {
		Node     *wireNode
		Services []*agentService
	}
	ev, err := requestFilter(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	var out *nodeServices
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, n, insts, err := a.readableNode(ws, w, authz, r.PathValue("node"))
		out = nil
		if n == nil || err != nil {
			return idx, err
		}
		out = &nodeServices{Node: toWireNode(n), Services: []*agentService{}}
		for _, in := range insts {
			out.Services = append(out.Services, toAgentService(in, a.Datacenter))
		}
		out.Services, err = filterSlice(ev, out.Services)
		return idx, err
	}) {
		return
	}
	// Consul answers an unknown node with 200 and null.
	writeJSON(w, out)
}

// readableNode reads a node and its instances as authz may see them: no
// node (Consul's null) when it is missing or the token may not read it,
// and only the instances whose service it may read; it sets the
// filtered-by-ACLs header accordingly.
func (a *API) readableNode(ws memdb.WatchSet, w http.ResponseWriter, authz *acl.Authorizer, name string) (uint64, *discovery.Node, []*discovery.Instance, error) {
	idx, n, insts, err := a.Store.Node(ws, name)
	setFiltered(w, false)
	if n == nil || err != nil {
		return idx, nil, nil, err
	}
	if !nodeReadable(authz, n.Name) {
		setFiltered(w, true)
		return idx, nil, nil, nil
	}
	insts, filtered := keep(insts, func(in *discovery.Instance) bool { return serviceReadable(authz, in.Service) })
	setFiltered(w, filtered)
	return idx, n, insts, nil
}

// listFilters is a list endpoint's ?filter= and ?node-meta=.
func listFilters(r *http.Request) (*bexpr.Evaluator, map[string]string, error) {
	ev, err := requestFilter(r)
	if err != nil {
		return nil, nil, err
	}
	meta, err := nodeMetaFilter(r)
	return ev, meta, err
}
