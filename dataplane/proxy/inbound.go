package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/metrics"
)

// Inbound listeners (traffic_direction INBOUND) take connections from
// other hosts: the mesh port, and the inbound capture listener that
// iptables redirects a host's inbound_ports to. A connection on one that
// is not mesh mTLS (its filter chain terminates no TLS, or no chain takes
// it) is counted and, when refused, logged: in strict mode that is
// plaintext that tried to bypass mTLS, and an operator wants to see it.
//
// On a listener with original_dst, such a connection is passed on only
// when iptables redirected it: one made straight to the listener's own
// port has no original destination, and a chain that passes it to "the
// app on its port" could send it back to the listener itself.

// Inbound decisions, the action label.
const (
	inboundRefused = "refused"
	inboundPassed  = "passed"
)

// admitInbound decides, counts and logs a connection on an inbound
// listener that is not mesh mTLS; it admits every other connection
// (mesh TLS is decided after its handshake, by the chain's RBAC).
func (p *Proxy) admitInbound(rl *runningListener, spec *listenerSpec, chain *chainSpec, raw net.Conn) bool {
	if spec.src.GetTrafficDirection() != core.TrafficDirection_INBOUND || (chain != nil && chain.tls != nil) {
		return true
	}
	why := ""
	switch {
	case chain == nil:
		why = "no filter chain takes it"
	case !chain.rbac.allowed(nil):
		why = "refused by the filter chain's RBAC (" + chain.name + ")"
	case spec.origDst && !redirected(raw):
		why = "not redirected by capture (no original destination)"
	}
	if why == "" {
		p.cfg.Metrics.inboundNonMesh(rl.name, inboundPassed)
		return true
	}
	p.cfg.Metrics.inboundNonMesh(rl.name, inboundRefused)
	p.refusedLog(rl.name).log(p, rl.name, raw, why)
	return false
}

// redirected says whether iptables redirected c: its original
// destination is known and is not the socket's own address (with
// conntrack loaded, a connection made straight to the listener has an
// entry too, naming the listener itself).
func redirected(c net.Conn) bool {
	od, err := originalDst(c)
	if err != nil {
		return false
	}
	local, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return false
	}
	return netip.AddrPortFrom(od.Addr().Unmap(), od.Port()) != netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
}

// refusedLogEvery bounds how often a listener logs a refused connection:
// a scan must not flood the log. The count of those not logged is in the
// next line, and every one is in the metric.
const refusedLogEvery = 10 * time.Second

// refusedLogger rate-limits one listener's refusal log lines.
type refusedLogger struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (p *Proxy) refusedLog(listener string) *refusedLogger {
	l, _ := p.refused.LoadOrStore(listener, &refusedLogger{})
	return l.(*refusedLogger)
}

func (l *refusedLogger) log(p *Proxy, listener string, c net.Conn, why string) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < refusedLogEvery {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	p.log.Warn("refused an inbound connection that is not mesh mTLS", "listener", listener,
		"remote", c.RemoteAddr().String(), "local", c.LocalAddr().String(), "why", why, "refused_since_last_line", suppressed)
}

// inboundMetrics count the connections on inbound listeners that are
// not mesh mTLS.
type inboundMetrics struct {
	nonMesh *prometheus.CounterVec
	// series caches the two series of each listener.
	series sync.Map // listener name -> *[2]prometheus.Counter (refused, passed)
}

func newInboundMetrics(reg prometheus.Registerer) *inboundMetrics {
	m := &inboundMetrics{nonMesh: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vmesh_inbound_plaintext_connections_total",
		Help: `Connections on an inbound listener that are not mesh mTLS (plaintext, or TLS for no local service): action "refused" (reset: strict mode, or not for a captured port) or "passed" (to the app: permissive mode).`,
	}, []string{"listener", "action"})}
	if reg != nil {
		m.nonMesh = metrics.Register("proxy", reg, m.nonMesh)
	}
	return m
}

func (m *Metrics) inboundNonMesh(listener, action string) {
	if m == nil || m.inbound == nil {
		return
	}
	s, ok := m.inbound.series.Load(listener)
	if !ok {
		s, _ = m.inbound.series.LoadOrStore(listener, &[2]prometheus.Counter{
			m.inbound.nonMesh.WithLabelValues(listener, inboundRefused),
			m.inbound.nonMesh.WithLabelValues(listener, inboundPassed),
		})
	}
	pair := s.(*[2]prometheus.Counter)
	if action == inboundRefused {
		pair[0].Inc()
	} else {
		pair[1].Inc()
	}
}

// listenersChanged wakes whoever waits on ListenersChanged (p.mu held):
// the set of bound listeners may have changed.
func (p *Proxy) listenersChanged() {
	if p.changed != nil {
		close(p.changed)
	}
	p.changed = make(chan struct{})
}

// ListenersChanged is closed at the next change of the proxy's bound
// listeners (ListenerAddrs): the agent keeps the inbound capture redirect
// only while the listener it sends to is bound.
func (p *Proxy) ListenersChanged() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}
