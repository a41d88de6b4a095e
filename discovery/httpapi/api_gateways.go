package httpapi

import (
	"net/http"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/acl"
	"github.com/vmesh/vmesh/discovery"
)

// registerGateways adds the views Consul derives from its gateway config
// entries. vmesh runs no gateways; it stores the entries and serves these
// for Consul's tools (discovery/gateways.go).
func (a *API) registerGateways(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/catalog/gateway-services/{gateway}", a.catalogGatewayServices)
	mux.HandleFunc("GET /v1/health/ingress/{name}", a.healthIngress)
}

// catalogGatewayServices serves /v1/catalog/gateway-services/:gateway:
// service:read on the gateway (403 without), then only the linked
// services the token may read, as Consul filters them. Blocking.
func (a *API) catalogGatewayServices(w http.ResponseWriter, r *http.Request) {
	gateway := r.PathValue("gateway")
	authz, ok := a.allow(w, r, func(z *acl.Authorizer) error { return z.ServiceRead(gateway) })
	if !ok {
		return
	}
	var out []*discovery.GatewayService
	if !a.read(w, r, func(ws memdb.WatchSet) (uint64, error) {
		idx, links, err := a.Store.GatewayServices(ws, gateway)
		var filtered bool
		out, filtered = keep(links, func(g *discovery.GatewayService) bool { return serviceReadable(authz, g.Service.Name) })
		setFiltered(w, filtered)
		return idx, err
	}) {
		return
	}
	writeJSON(w, nonNil(out))
}

// healthIngress serves /v1/health/ingress/:service: the ingress gateways
// that expose the service, with their checks, as /v1/health/service
// serves a service (filters, ?passing, blocking, each entry needing
// node:read and service:read on the gateway). Without service:read on
// :service the answer is empty, not a 403, as Consul's.
func (a *API) healthIngress(w http.ResponseWriter, r *http.Request) {
	authz, ok := a.allow(w, r, nil)
	if !ok {
		return
	}
	if !serviceReadable(authz, r.PathValue("name")) {
		a.healthServiceNodes(w, r, func(ws memdb.WatchSet, _ string, _ []string, _ bool) (uint64, []discovery.ServiceEntry, error) {
			idx, _, err := a.Store.IngressCheckServiceNodes(ws, "", nil, false)
			return idx, nil, err
		})
		return
	}
	a.healthServiceNodes(w, r, a.Store.IngressCheckServiceNodes)
}
