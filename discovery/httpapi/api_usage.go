package httpapi

import (
	"net/http"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
)

// usage serves GET /v1/operator/usage (operator:read): the catalog's
// nodes, services and instances in this datacenter, as Consul counts
// them (discovery.Usage). vmesh has no partitions or namespaces, so the
// per-namespace maps hold the default ones only.
func (a *API) usage(w http.ResponseWriter, r *http.Request) {
	if err := a.checkDC(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	type serviceUsage struct {
		discovery.Usage
		PartitionNamespaceServices                 map[string]map[string]int
		PartitionNamespaceServiceInstances         map[string]map[string]int
		PartitionNamespaceConnectServiceInstances  map[string]map[string]map[string]int
		PartitionNamespaceBillableServiceInstances map[string]map[string]int
	}
	var u discovery.Usage
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, got, err := a.Store.Usage(ws)
		u = got
		return idx, err
	}) {
		return
	}
	one := func(n int) map[string]map[string]int { return map[string]map[string]int{"default": {"default": n}} }
	writeJSON(w, map[string]any{"Usage": map[string]serviceUsage{a.Datacenter: {
		Usage:                                      u,
		PartitionNamespaceServices:                 one(u.Services),
		PartitionNamespaceServiceInstances:         one(u.ServiceInstances),
		PartitionNamespaceConnectServiceInstances:  map[string]map[string]map[string]int{"default": {"default": u.ConnectServiceInstances}},
		PartitionNamespaceBillableServiceInstances: one(u.BillableServiceInstances),
	}}})
}
