package xds

import (
	"cmp"
	"slices"
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
// gives that user a port of its own (UserPorts); capture redirects the
// user's connections there instead of to the outbound port (the iptables
// owner match), and the listener on that port — vmesh/outbound/user/<user>,
// the transparent listener's filter chains built for the service — sends
// them through sourced clusters. The agent computes the same ports from
// the same catalog for its rules, so both sides agree without talking.

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
const DefaultUserPortBase = 15100

// UserListenerPrefix + user names a per-user outbound listener.
const UserListenerPrefix = "vmesh/outbound/user/"

// UserPort is the outbound port of one Unix user of a node: its captured
// connections leave with Service's identity.
type UserPort struct {
	User    string // as the registration spells it (a name or a UID)
	Service string // the service key
	Port    int
}

// UserPorts gives every user named by node's instances a port, from
// UserPortBase up, skipping OutboundPort, MeshPort, ReservedPorts and every
// port an upstream of the node binds. Users are taken in the order their
// first instance was registered (CreateIndex, then user name), so a user
// added later never moves the ports of those before it. A user named by
// instances of two services (registration refuses that, but a catalog may
// hold it) belongs to the first registered. The xDS builder (the per-user
// listeners) and the agent (the iptables rules) both call it on the same
// catalog, which is what keeps them in step.
func (o Options) UserPorts(node string, insts []*discovery.Instance) []UserPort {
	o = o.withDefaults()
	type first struct {
		idx     uint64
		service string
	}
	byUser := map[string]first{}
	reserved := map[int]bool{o.OutboundPort: true, o.MeshPort: true}
	for _, p := range o.ReservedPorts {
		reserved[p] = true
	}
	for _, in := range insts {
		if in.Node != node {
			continue
		}
		for _, u := range in.Upstreams {
			reserved[u.LocalBindPort] = true
		}
		k := serviceKey(in.Service)
		if in.User == "" || k == "" {
			continue
		}
		if f, ok := byUser[in.User]; !ok || in.CreateIndex < f.idx || in.CreateIndex == f.idx && k < f.service {
			byUser[in.User] = first{in.CreateIndex, k}
		}
	}
	users := make([]string, 0, len(byUser))
	for u := range byUser {
		users = append(users, u)
	}
	slices.SortFunc(users, func(a, b string) int {
		return cmp.Or(cmp.Compare(byUser[a].idx, byUser[b].idx), cmp.Compare(a, b))
	})
	var out []UserPort
	port := o.UserPortBase
	for _, u := range users {
		for reserved[port] {
			port++
		}
		if port > 65535 {
			break
		}
		out = append(out, UserPort{User: u, Service: byUser[u].service, Port: port})
		port++
	}
	return out
}
