package httpapi

import (
	"net/http"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

func (a *API) catalogServices(w http.ResponseWriter, r *http.Request) {
	var out map[string][]string
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, tags, err := a.Store.ServiceTags(ws)
		out = tags
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

func (a *API) catalogService(w http.ResponseWriter, r *http.Request) {
	tags := r.URL.Query()["tag"]
	var out []*catalogService
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, entries, err := a.Store.ServiceNodes(ws, r.PathValue("name"), tags)
		out = make([]*catalogService, 0, len(entries))
		for _, e := range entries {
			out = append(out, toCatalogService(e, a.Datacenter))
		}
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
		ServiceMeta: nonNilMap(in.Meta), ServicePort: in.Port,
		ServiceWeights:           wireWeights{Passing: in.Weights.Passing, Warning: in.Weights.Warning},
		ServiceEnableTagOverride: in.EnableTagOverride, CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex,
		NodeMeta: map[string]string{}, TaggedAddresses: map[string]string{},
	}
	if n := e.Node; n != nil {
		cs.ID, cs.Address, cs.NodeMeta = n.ID, n.Address, nonNilMap(n.Meta)
		cs.TaggedAddresses = map[string]string{"lan": n.Address, "wan": n.Address}
	}
	return cs
}

func (a *API) catalogNodes(w http.ResponseWriter, r *http.Request) {
	var out []*wireNode
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, nodes, err := a.Store.Nodes(ws)
		out = make([]*wireNode, 0, len(nodes))
		for _, n := range nodes {
			out = append(out, toWireNode(n))
		}
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
	var out *catalogNode
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, n, insts, err := a.Store.Node(ws, r.PathValue("node"))
		out = nil
		if n != nil {
			out = &catalogNode{Node: toWireNode(n), Services: map[string]*agentService{}}
			for _, in := range insts {
				out.Services[in.ID] = toAgentService(in, a.Datacenter)
			}
		}
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
	var out []*serviceEntry
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, entries, err := a.Store.CheckServiceNodes(ws, r.PathValue("name"), q["tag"], passing)
		out = make([]*serviceEntry, 0, len(entries))
		for _, e := range entries {
			out = append(out, &serviceEntry{
				Node: toWireNode(e.Node), Service: toAgentService(e.Instance, a.Datacenter),
				Checks: toHealthChecks(e.Checks),
			})
		}
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
}

func (a *API) checksReply(w http.ResponseWriter, r *http.Request, query func(ws memdb.WatchSet) (uint64, []*discovery.Check, error)) {
	var out []*healthCheck
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, checks, err := query(ws)
		out = toHealthChecks(checks)
		return idx, err
	}) {
		return
	}
	writeJSON(w, out)
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
