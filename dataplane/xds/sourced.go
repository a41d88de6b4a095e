package xds

import (
	"sort"

	"github.com/vmesh/vmesh/discovery"
)

// Explicit upstreams carry the identity of the service that declared them.
//
// A connection captured transparently does not say which local service
// opened it, so the shared service clusters present the host's
// certificate (vmesh/node). An explicit upstream listener belongs to one
// local service, so its traffic can present that service's certificate
// (vmesh/svc/<source>) and exact-source intentions can apply to it. Its
// filter chain therefore names "sourced" copies of the clusters and of the
// RouteConfiguration it uses: vmesh/from/<source>/<name>, identical to the
// shared ones except for the client certificate. A sourced cluster takes
// its endpoints from the shared ClusterLoadAssignment (EDS service_name),
// so endpoints are sent once.

// sourcedPrefix starts the name of a sourced cluster or route.
const sourcedPrefix = "vmesh/from/"

func sourcedName(source, name string) string { return sourcedPrefix + source + "/" + name }

// sourcedRef is a cluster or route wanted for a source service.
type sourcedRef struct{ source, name string }

// clusterRef is the cluster a listener or route being built sends to for
// cluster c: c itself, or, while building for a source service (b.from),
// its sourced copy. UDP has no TLS, so it never needs one.
func (b *builder) clusterRef(c string) string {
	s := b.v.services[c]
	if b.from == "" || s == nil || s.protocol == discovery.ProtocolUDP {
		return c
	}
	if b.sourcedClusters == nil {
		b.sourcedClusters = map[sourcedRef]bool{}
	}
	b.sourcedClusters[sourcedRef{b.from, c}] = true
	return sourcedName(b.from, c)
}

// routeRef is the RouteConfiguration an HTTP connection manager being
// built takes for service key (see clusterRef).
func (b *builder) routeRef(key string) string {
	if b.from == "" {
		return key
	}
	if b.sourcedRoutes == nil {
		b.sourcedRoutes = map[sourcedRef]bool{}
	}
	b.sourcedRoutes[sourcedRef{b.from, key}] = true
	return sourcedName(b.from, key)
}

func sortedRefs(m map[sourcedRef]bool) []sourcedRef {
	out := make([]sourcedRef, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].source < out[j].source || (out[i].source == out[j].source && out[i].name < out[j].name)
	})
	return out
}

// sourcedResources builds the sourced routes the listeners named, then the
// sourced clusters that listeners and those routes named.
func (b *builder) sourcedResources() {
	for _, r := range sortedRefs(b.sourcedRoutes) {
		b.from = r.source
		rc := b.routeConfig(b.v.services[r.name])
		rc.Name = sourcedName(r.source, r.name)
		b.routes = append(b.routes, rc)
	}
	b.from = ""
	for _, r := range sortedRefs(b.sourcedClusters) {
		s := b.v.services[r.name]
		c := b.serviceCluster(s)
		c.Name = sourcedName(r.source, r.name)
		c.EdsClusterConfig.ServiceName = s.key
		for _, m := range c.TransportSocketMatches {
			m.TransportSocket = b.upstreamTLS(s, ServiceSecret(r.source))
		}
		b.clusters = append(b.clusters, c)
	}
}
