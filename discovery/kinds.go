package discovery

import (
	"slices"
	"strings"
)

// Consul's service kinds that vmesh keeps as catalog records only. vmesh's
// node proxy fronts every mesh service of its node, so a registration of
// a Consul proxy or gateway (an Envoy the operator runs beside vmesh, or a
// record a tool writes) is served back by the catalog, health and agent
// endpoints exactly as registered, and left out of the mesh: no VIP, no
// leaf certificate, no xDS listener, route or cluster, no capture, no
// <name>.mesh name (InMesh).
const (
	KindTypical            = ""
	KindConnectProxy       = "connect-proxy"
	KindMeshGateway        = "mesh-gateway"
	KindTerminatingGateway = "terminating-gateway"
	KindIngressGateway     = "ingress-gateway"
	KindAPIGateway         = "api-gateway"
)

// recordKinds are the kinds a registration may name besides typical.
var recordKinds = []string{KindConnectProxy, KindMeshGateway, KindTerminatingGateway, KindIngressGateway}

// KindNeedsPort says whether a record of kind must have a port, as Consul
// requires: a proxy and a mesh or terminating gateway do; an ingress or
// API gateway listens on the ports of its config entry.
func KindNeedsPort(kind string) bool {
	return kind != KindTypical && kind != KindIngressGateway && kind != KindAPIGateway
}

// InMesh says whether the instance is a mesh service: a typical service
// registered by a user, not a server's own "consul" instance nor a
// Consul proxy or gateway record.
func (in *Instance) InMesh() bool {
	return !in.Inert() && !in.IsServerService()
}

// buildKind validates a registration's Kind and, for a proxy or gateway
// record, its Proxy block, as Consul does; it returns the kind to store
// ("" for typical). Only a record kind may carry a top-level Proxy, and
// such a record may not ask anything of vmesh's data plane (upstreams of
// the node proxy, a per-user identity).
func (reg *ServiceRegistration) buildKind(bad func(field, format string, args ...any)) string {
	kind := reg.Kind
	if kind == "typical" {
		kind = KindTypical
	}
	if kind == KindTypical {
		if reg.Proxy != nil {
			// A top-level Proxy belongs to a proxy or gateway record.
			for _, f := range setFields("Proxy.", reg.Proxy) {
				bad(f, "is only for Kind %s: a typical service's proxy is the node's, set with Connect.SidecarService.Proxy.Upstreams", strings.Join(recordKinds, ", "))
			}
		}
		return kind
	}
	if !slices.Contains(recordKinds, kind) {
		bad("Kind", "%q is not supported; one of typical, %s", reg.Kind, strings.Join(recordKinds, ", "))
		return kind
	}
	if KindNeedsPort(kind) && reg.Port == 0 && reg.SocketPath == "" {
		bad("Port", "a %s must have a port", kind)
	}
	if kind == KindConnectProxy && (reg.Proxy == nil || strings.TrimSpace(reg.Proxy.DestinationServiceName) == "") {
		bad("Proxy.DestinationServiceName", "a connect-proxy must name the service it fronts")
	}
	if reg.Connect != nil && (reg.Connect.Native || reg.Connect.SidecarService != nil) {
		bad("Connect", "a %s has no Connect block of its own", kind)
	}
	if _, ok := reg.Meta[MetaUser]; ok {
		bad("Meta."+MetaUser, "a %s record is not a mesh service: it has no per-user identity", kind)
	}
	if reg.Name == ServerServiceName {
		return kind // refused by Build already
	}
	if reg.Proxy != nil && reg.Proxy.DestinationServiceName == ServerServiceName {
		bad("Proxy.DestinationServiceName", "%q is the servers' own service, not a mesh service", ServerServiceName)
	}
	return kind
}

// recordProxy is the Proxy block a record keeps, as registered (nil for a
// typical service).
func recordProxy(kind string, p *ConnectProxyConfig) *ConnectProxyConfig {
	if kind == KindTypical || p == nil {
		return nil
	}
	c := *p
	c.Upstreams = slices.Clone(p.Upstreams)
	return &c
}
