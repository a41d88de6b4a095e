package xds

import (
	"net/netip"
	"slices"

	"github.com/vmesh/vmesh/discovery"
)

// CaptureTargets is what a node's traffic capture must steer, read from
// the same view its proxy's configuration is built from, so the kernel and
// the proxy never disagree: the services' virtual IPs (which vmesh0 holds
// and the outbound listener answers) and the per-user outbound ports of
// the node's service users (which capture redirects by owner and the
// proxy listens on with that service's identity).
type CaptureTargets struct {
	// Index is the raft index of the view.
	Index uint64
	// VIPs are every service VIP, sorted and unique.
	VIPs []netip.Addr
	// Users are node's service users and their ports (UserPorts).
	Users []UserPort
}

// Capture is the capture targets of node in v. It is pure: the same view
// gives the same targets.
func (v *View) Capture(node string) CaptureTargets {
	t := CaptureTargets{Index: v.Index}
	for _, vip := range v.opts.VIPs {
		if a, err := netip.ParseAddr(vip.IP); err == nil {
			t.VIPs = append(t.VIPs, a)
		}
	}
	slices.SortFunc(t.VIPs, netip.Addr.Compare)
	t.VIPs = slices.Compact(t.VIPs)
	local := v.byNode[node]
	insts := make([]*discovery.Instance, 0, len(local))
	for _, in := range local {
		insts = append(insts, in.Instance)
	}
	t.Users = v.opts.UserPorts(node, insts)
	return t
}
