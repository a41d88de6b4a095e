package xds

import (
	"sort"

	"github.com/vmesh/vmesh/discovery"
)

// Explicit upstreams, and captured connections of a service's Unix user,
// carry the identity of that service.
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
//
// Per-user capture does the same for transparent traffic: an instance
// whose registration names the Unix user its app runs as (Instance.User)
// gives that user a port of its own (UserPorts), chosen once when the
// instance is registered and kept while the user has an instance, so a
// port never passes from one living user to another; capture redirects the
// user's connections there instead of to the outbound port (the iptables
// owner match), and the listener on that port — vmesh/outbound/user/<user>,
// the transparent listener's filter chains built for the service — sends
// them through sourced clusters. The agent reads the same ports from the
// same catalog for its rules, so both sides agree without talking.

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

// DefaultUserPortBase is the first per-user outbound port.
const DefaultUserPortBase = discovery.DefaultUserPortBase

// UserListenerPrefix + user names a per-user outbound listener.
const UserListenerPrefix = "vmesh/outbound/user/"

// UserPort is the outbound port of one Unix user of a node: its captured
// connections leave with Service's identity.
type UserPort = discovery.UserPort

// UserPortPolicy is where the per-user ports of o's node come from: from
// UserPortBase up, never OutboundPort, MeshPort or ReservedPorts (nor,
// discovery adds, a port an upstream of the node binds). The agent's
// registrations choose ports with it (discovery.UserPortAllocator), and
// UserPorts reads them back with it.
func (o Options) UserPortPolicy() discovery.UserPortPolicy {
	o = o.withDefaults()
	return discovery.UserPortPolicy{
		Base:     o.UserPortBase,
		Reserved: append([]int{o.OutboundPort, o.MeshPort}, o.ReservedPorts...),
	}
}

// UserPorts gives every user named by node's instances its port: the one
// its registration stored (Instance.UserPort), which stays the user's for
// as long as an instance of it exists, or, for an instance stored before
// ports were, one computed after the stored ones
// (discovery.UserPortPolicy.Ports). The xDS builder (the per-user
// listeners) and the agent (the iptables rules) both call it on the same
// catalog, which is what keeps them in step; since a port never passes
// from one living user to another, the two updating at different moments
// cannot send one user's connections to another user's listener.
func (o Options) UserPorts(node string, insts []*discovery.Instance) []UserPort {
	return o.UserPortPolicy().Ports(node, insts)
}
