package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmesh/vmesh/discovery"
)

// A check runs with the agent's network position: from its host, to
// anything the host reaches, and its output is stored in the catalog
// where others read it. So whoever may register a check may not point it
// at the agent's own listeners (its HTTP API, admin, xDS, cluster and DNS
// ports, the proxy's listeners): that would read the agent's endpoints
// from its own host and publish the answer, or reach the mesh through
// the proxy with the host's identity. Guard refuses such a target when
// the check is registered (a clear error naming the check and the
// listener), and, for HTTP and TCP probes, again when the probe dials,
// after name resolution, so a name that later resolves to the agent is
// refused too. (gRPC's own dialer also dials unix sockets; its checks are
// refused at registration only.) Operators who
// want it anyway set checks { allow_agent_targets = true }.

// ErrAgentTarget marks a check whose target is one of the agent's own
// listeners. CheckTarget's errors wrap discovery.ErrInvalid too (a 400
// from the API).
var ErrAgentTarget = errors.New("checks: the target is one of this agent's own listeners")

// targetError is a refused check target: ErrAgentTarget and
// discovery.ErrInvalid.
type targetError struct{ msg string }

func (e *targetError) Error() string { return e.msg }
func (e *targetError) Is(target error) bool {
	return target == ErrAgentTarget || target == discovery.ErrInvalid
}

// Listener is one of the agent's listeners, as the guard knows it.
type Listener struct {
	Addr netip.AddrPort // an unspecified address: every address of the host
	Name string         // what it is ("HTTP API", "proxy listener vmesh/outbound")
}

// Guard keeps HTTP, TCP and gRPC checks off the agent's own listeners.
// A nil *Guard allows everything.
type Guard struct {
	// Listeners returns the agent's listeners now.
	Listeners func() []Listener
	// LocalAddrs lists the host's addresses (nil: its interfaces'), which
	// a listener on an unspecified address answers on.
	LocalAddrs func() ([]netip.Addr, error)
	// Resolve looks a host name up at registration (nil: the system
	// resolver, for at most 2 s). A name that does not resolve is let
	// through: the dial-time check still applies.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)

	mu     sync.Mutex
	local  map[netip.Addr]bool
	listed time.Time
}

// resolveTimeout bounds a registration's lookup of a check's host.
const resolveTimeout = 2 * time.Second

// CheckTarget refuses a check whose HTTP, TCP or gRPC target is one of
// the agent's listeners; the error names the check and the listener.
func (g *Guard) CheckTarget(name string, def discovery.CheckDefinition) error {
	if g == nil {
		return nil
	}
	kind, target, host, port := "", "", "", ""
	switch {
	case def.HTTP != "":
		kind, target = "HTTP", def.HTTP
		u, err := url.Parse(def.HTTP)
		if err != nil {
			return nil // Build refuses it
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
	case def.TCP != "":
		kind, target = "TCP", def.TCP
		host, port, _ = net.SplitHostPort(def.TCP)
	case def.GRPC != "":
		kind, target = "gRPC", def.GRPC
		addr, _, _ := strings.Cut(def.GRPC, "/")
		host, port, _ = net.SplitHostPort(addr)
	default:
		return nil
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if host != "" {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		ips, _ = g.resolve(ctx, host)
		cancel()
	} else {
		ips = []netip.Addr{netip.IPv4Unspecified()} // ":8500" dials this host
	}
	for _, ip := range ips {
		if l, ok := g.agentListener(netip.AddrPortFrom(ip, uint16(p))); ok {
			return &targetError{fmt.Sprintf("check %q: %s target %s is this agent's %s (%s): a check may not probe the agent's own listeners; set checks { allow_agent_targets = true } to allow it",
				name, kind, target, l.Name, l.Addr)}
		}
	}
	return nil
}

func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if g.Resolve != nil {
		return g.Resolve(ctx, host)
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// agentListener is the listener of the agent a connection to target
// would reach.
func (g *Guard) agentListener(target netip.AddrPort) (Listener, bool) {
	if g == nil || g.Listeners == nil {
		return Listener{}, false
	}
	ip := target.Addr().Unmap()
	for _, l := range g.Listeners() {
		la := l.Addr.Addr().Unmap()
		if l.Addr.Port() != target.Port() {
			continue
		}
		switch {
		case la == ip, ip.IsUnspecified(): // 0.0.0.0 dials this host
			return l, true
		case la.IsUnspecified() && (ip.IsLoopback() || g.isLocal(ip)):
			return l, true
		}
	}
	return Listener{}, false
}

// isLocal says whether ip is one of the host's addresses, listing them
// again at most once a second.
func (g *Guard) isLocal(ip netip.Addr) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.local[ip] {
		return true
	}
	if now := time.Now(); now.Sub(g.listed) >= time.Second {
		g.listed = now
		list := g.LocalAddrs
		if list == nil {
			list = hostAddrs
		}
		if as, err := list(); err == nil {
			g.local = map[netip.Addr]bool{}
			for _, a := range as {
				g.local[a.Unmap()] = true
			}
		}
	}
	return g.local[ip]
}

func hostAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range as {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// control is a net.Dialer's Control: it refuses to connect a probe to
// one of the agent's listeners, whatever name or redirect led there.
func (g *Guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil
	}
	if l, ok := g.agentListener(ap); ok {
		return fmt.Errorf("refused: %s is this agent's %s: a check may not probe the agent's own listeners (checks { allow_agent_targets = true } allows it)", address, l.Name)
	}
	return nil
}

// dialer is a probe's dialer: guarded when g is not nil.
func (g *Guard) dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if g != nil {
		d.Control = g.control
	}
	return d
}
