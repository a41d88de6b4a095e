package xds

import (
	"net/netip"
	"sort"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/vmesh/vmesh/discovery"
)

// Default ports and addresses of a host's proxy: every listener on
// loopback, on the ports Envoy-based meshes use, so operators find them
// where they expect.
const (
	DefaultOutboundAddr = "127.0.0.1"
	DefaultOutboundPort = 15001
	DefaultMeshPort     = discovery.MeshPort // sidecar records name it too
)

// Options are the translation settings that do not come from the catalog.
type Options struct {
	// OutboundAddr:OutboundPort is the transparent outbound listener that
	// capture redirects to.
	OutboundAddr string
	OutboundPort int
	// MeshPort is where every host's proxy accepts mTLS from its peers.
	MeshPort int
	// VIPs are fixed virtual IPs by service name. NewView adds the VIPs
	// the raft leader allocated in the catalog (vips.go); these win.
	VIPs map[string]VIP
	// IntentionsDefaultAllow is the agent's intentions_default: whether a
	// connection no intention matches is allowed (intentions.go).
	IntentionsDefaultAllow bool
	// UserPortBase is the first per-user outbound port (sourced.go,
	// UserPorts): capture sends the connections of a service's user there,
	// and they leave with that service's identity. Default 15100.
	UserPortBase int
	// ReservedPorts are never given to a user (the agent's own ports),
	// besides OutboundPort, MeshPort and the node's upstream ports.
	ReservedPorts []int
	// Host is what the agent's own host says about itself (host.go):
	// the service its unattributed traffic belongs to, and the inbound
	// ports capture sends to the inbound capture listener.
	Host HostOptions
}

// VIP is a service's virtual IP and, optionally, the ports it answers on
// (none: every port).
type VIP struct {
	IP    string
	Ports []uint32
}

func (o Options) withDefaults() Options {
	if o.OutboundAddr == "" {
		o.OutboundAddr = DefaultOutboundAddr
	}
	if o.OutboundPort == 0 {
		o.OutboundPort = DefaultOutboundPort
	}
	if o.MeshPort == 0 {
		o.MeshPort = DefaultMeshPort
	}
	if o.UserPortBase == 0 {
		o.UserPortBase = DefaultUserPortBase
	}
	if o.Host.InboundPort == 0 {
		o.Host.InboundPort = DefaultInboundPort
	}
	return o
}

// Meta keys that mark an instance as not running behind a vmesh proxy.
const (
	// MetaExternalSource on an instance (Consul's convention for services
	// synced from elsewhere) marks it external.
	MetaExternalSource = "external-source"
	// MetaExternalNode = "true" on a node (Consul ESM's convention) marks
	// every instance on it external.
	MetaExternalNode = "external-node"
)

// View is the catalog as the translator reads it. NewView builds it once per
// catalog change; every node's Build shares it and must not modify it.
type View struct {
	// Index is the raft index the view was read at: the snapshot version.
	Index uint64
	opts  Options
	nodes map[string]*discovery.Node
	// services by key (lower-case name: the catalog matches service names
	// case-insensitively, so the data plane does too).
	services map[string]*service
	keys     []string // sorted keys of services
	// byNode lists each node's instances, sorted by ID.
	byNode map[string][]*instance
	// intentions (highest precedence first) and the CA's trust domain
	// authorize inbound connections (intentions.go).
	intentions  []*discovery.Intention
	trustDomain string
	// accessLogs is proxy-defaults' AccessLogs (nil: none).
	accessLogs *discovery.AccessLogs
}

type service struct {
	key       string
	protocol  string
	instances []*instance // sorted by node, then ID
	defaults  *discovery.ServiceDefaults
	router    *discovery.ServiceRouter
	splitter  *discovery.ServiceSplitter
	resolver  *discovery.ServiceResolver
}

type instance struct {
	*discovery.Instance
	node   *discovery.Node // nil if the node is gone
	health string
	// external instances are reached at their own address, never through
	// a peer's mesh port.
	external bool
}

// serviceKey is how the data plane names a service.
func serviceKey(name string) string { return strings.ToLower(name) }

// NewView indexes a catalog read for translation. st is not modified.
func NewView(st *discovery.MeshState, opts Options) *View {
	v := &View{
		Index: st.Index, opts: opts.withDefaults(),
		nodes: map[string]*discovery.Node{}, services: map[string]*service{}, byNode: map[string][]*instance{},
	}
	for _, n := range st.Nodes {
		v.nodes[n.Name] = n
	}
	svc := func(name string) *service {
		k := serviceKey(name)
		if k == "" {
			return nil
		}
		s := v.services[k]
		if s == nil {
			s = &service{key: k}
			v.services[k] = s
		}
		return s
	}
	// Checks bearing on an instance: its node's own and its own.
	type nodeID struct{ node, id string }
	nodeChecks := map[string][]*discovery.Check{}
	instChecks := map[nodeID][]*discovery.Check{}
	for _, c := range st.Checks {
		if c.ServiceID == "" {
			nodeChecks[c.Node] = append(nodeChecks[c.Node], c)
		} else {
			k := nodeID{c.Node, c.ServiceID}
			instChecks[k] = append(instChecks[k], c)
		}
	}
	for _, in := range st.Instances {
		n := v.nodes[in.Node]
		checks := append(append([]*discovery.Check(nil), nodeChecks[in.Node]...), instChecks[nodeID{in.Node, in.ID}]...)
		i := &instance{Instance: in, node: n, health: discovery.AggregatedStatus(checks)}
		// A node /v1/catalog/register made (Node.External) runs no vmesh
		// proxy either.
		i.external = in.Meta[MetaExternalSource] != "" || n == nil || n.Meta[MetaExternalNode] == "true" || n.External
		if s := svc(in.Service); s != nil {
			s.instances = append(s.instances, i)
		}
		v.byNode[in.Node] = append(v.byNode[in.Node], i)
	}
	for _, e := range st.ConfigEntries {
		if e.Proxy != nil {
			// Mesh-wide, not a service's (accesslogs.go).
			v.accessLogs = e.Proxy.AccessLogs
			continue
		}
		s := svc(e.Name)
		if s == nil {
			continue
		}
		switch {
		case e.Defaults != nil:
			s.defaults = e.Defaults
		case e.Router != nil:
			s.router = e.Router
		case e.Splitter != nil:
			s.splitter = e.Splitter
		case e.Resolver != nil:
			s.resolver = e.Resolver
		}
	}
	// Services that are only referenced still get a cluster, so that every
	// route and listener that names one resolves; it fills in when instances
	// register.
	var refs []string
	for _, s := range v.services {
		if s.router != nil {
			for _, r := range s.router.Routes {
				if r.Destination != nil {
					refs = append(refs, r.Destination.Service)
				}
			}
		}
		if s.splitter != nil {
			for _, sp := range s.splitter.Splits {
				refs = append(refs, sp.Service)
			}
		}
		if s.resolver != nil && s.resolver.Redirect != nil {
			refs = append(refs, s.resolver.Redirect.Service)
		}
	}
	for _, in := range st.Instances {
		for _, u := range in.Upstreams {
			refs = append(refs, u.DestinationName)
		}
	}
	for _, r := range refs {
		svc(r)
	}
	for k, s := range v.services {
		sort.Slice(s.instances, func(i, j int) bool {
			a, b := s.instances[i], s.instances[j]
			return a.Node < b.Node || (a.Node == b.Node && a.ID < b.ID)
		})
		s.protocol = effectiveProtocol(s)
		v.keys = append(v.keys, k)
	}
	sort.Strings(v.keys)
	v.opts.VIPs = withCatalogVIPs(v, st.VIPs, v.opts.VIPs) // vips.go
	v.intentions, v.trustDomain = st.Intentions, st.TrustDomain
	for _, insts := range v.byNode {
		sort.Slice(insts, func(i, j int) bool { return insts[i].ID < insts[j].ID })
	}
	return v
}

// effectiveProtocol: a service-defaults entry wins (central config is the
// operator's word, as in Consul); otherwise the protocol the instances that
// name one agree on; tcp when none names one or they disagree, because L4
// proxying works for every protocol while a wrong L7 guess breaks traffic.
func effectiveProtocol(s *service) string {
	if s.defaults != nil && s.defaults.Protocol != "" {
		return s.defaults.Protocol
	}
	p := ""
	for _, in := range s.instances {
		switch {
		case in.Protocol == "":
		case p == "":
			p = in.Protocol
		case p != in.Protocol:
			return discovery.ProtocolTCP
		}
	}
	if p == "" {
		return discovery.ProtocolTCP
	}
	return p
}

// NodeInfo says who an xDS client is, which decides what it is served.
type NodeInfo struct {
	// ID is the client's xDS node ID.
	ID string
	// Node is the catalog node whose mesh proxy this client is: the
	// in-process proxy or an Envoy from `vmesh envoy bootstrap`. Empty for
	// any other client (a proxyless gRPC app, a user's own Envoy), which is
	// served the instances' own addresses, no mesh port and no TLS.
	Node string
	// Proxyless marks a gRPC library client: policies it does not
	// implement (random, maglev) are served as their nearest equivalent
	// instead of being NACKed.
	Proxyless bool
	// MeshTLS marks a client that is not a host's proxy but asked, in its
	// bootstrap's node metadata (MetaMeshMTLS: true), to reach mesh
	// instances as a proxy does: at their host's mesh port, over mTLS with
	// SNI, presenting secrets it brings itself (SecretNodeCert,
	// SecretRoots). A user's Envoy at the edge is the case.
	MeshTLS bool
}

// MetaMeshMTLS is the node metadata key with which a client that is not a
// host's proxy asks for mesh endpoints and mTLS.
const MetaMeshMTLS = "vmesh_mesh_mtls"

// meshEndpoints reports whether the client reaches mesh instances through
// their host's mesh port with mTLS.
func (n NodeInfo) meshEndpoints() bool { return n.Mesh() || n.MeshTLS }

// Mesh reports whether the client is a host's mesh proxy.
func (n NodeInfo) Mesh() bool { return n.Node != "" }

// NodeInfo classifies an xDS client: a node ID that names a catalog node is
// that host's mesh proxy; anything else is a plain xDS client. A user agent
// that starts with "gRPC" (grpc-go, grpc-java, grpc-c++ all send one) is a
// proxyless gRPC client.
func (v *View) NodeInfo(n *core.Node) NodeInfo {
	info := NodeInfo{ID: n.GetId(), Proxyless: strings.HasPrefix(n.GetUserAgentName(), "gRPC")}
	if _, ok := v.nodes[info.ID]; ok && !info.Proxyless {
		info.Node = info.ID
	}
	if f, ok := n.GetMetadata().GetFields()[MetaMeshMTLS]; ok && !info.Mesh() && !info.Proxyless {
		// gRPC's own xDS client has no SDS, so a proxyless client cannot
		// take this up; it keeps the instances' own addresses.
		info.MeshTLS = f.GetBoolValue() || f.GetStringValue() == "true"
	}
	return info
}

// ipAddr returns s as an IP address, or false: Envoy's endpoints and static
// clusters take IP addresses only, never host names.
func ipAddr(s string) (string, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", false
	}
	return a.Unmap().String(), true
}
