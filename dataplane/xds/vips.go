package xds

import (
	"slices"

	"github.com/vmesh/vmesh/discovery"
)

// withCatalogVIPs returns the VIPs the outbound listener serves: the
// catalog's allocations (discovery.VIP, chosen by the raft leader) with the
// ports each service answers on, then Options.VIPs, which win for a service
// named in both (tests, or an operator's fixed map).
//
// A VIP answers on every port its service's instances listen on, and on 80
// as well for an http service, so `http://orders.mesh/` works whatever port
// the instances use. A service with no instance port answers on every
// port (VIP.Ports empty).
func withCatalogVIPs(v *View, allocs []*discovery.VIP, static map[string]VIP) map[string]VIP {
	if len(allocs) == 0 {
		return static
	}
	out := make(map[string]VIP, len(allocs)+len(static))
	for _, a := range allocs {
		var ports []uint32
		if s := v.services[serviceKey(a.Service)]; s != nil {
			for _, in := range s.instances {
				if in.Port > 0 && in.Port <= 65535 {
					ports = append(ports, uint32(in.Port))
				}
			}
			if len(ports) > 0 && s.protocol == discovery.ProtocolHTTP {
				ports = append(ports, 80)
			}
		}
		slices.Sort(ports)
		out[a.Service] = VIP{IP: a.IP, Ports: slices.Compact(ports)}
	}
	for name, vip := range static {
		// Case-insensitive names are one service: a static entry replaces
		// the catalog's under any spelling.
		for k := range out {
			if serviceKey(k) == serviceKey(name) {
				delete(out, k)
			}
		}
		out[name] = vip
	}
	return out
}
