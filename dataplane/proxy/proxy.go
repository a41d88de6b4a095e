package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Proxy.
type Config struct {
	// XDSAddr is the xDS server, as a gRPC target: "unix:///run/vmesh/xds.sock"
	// or "127.0.0.1:18000".
	XDSAddr string
	// Node is the node ID the proxy presents: a catalog node's name makes
	// it that host's mesh proxy.
	Node string
	// DrainTimeout bounds how long the connections of a listener that
	// disappeared may live on (default 30 s).
	DrainTimeout time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (default 1 s, 30 s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Metrics receives the proxy's measurements (nil: none are kept).
	Metrics *Metrics
	// Mark, when not zero, is set as SO_MARK on every socket the proxy
	// dials, so traffic capture can exclude the proxy's own traffic.
	Mark int
	// MaxConnections bounds the downstream connections the proxy holds
	// at once, its listeners together (0: DefaultMaxConnections).
	// MaxListenerConnections bounds one listener's (0: half of
	// MaxConnections, so a flood on one listener leaves the others
	// room). A connection over either is closed as it is accepted.
	MaxConnections, MaxListenerConnections int
	// TracerProvider, when set, gives every HTTP request a span and
	// carries its trace on (trace.go); nil: no tracing, at no cost.
	TracerProvider trace.TracerProvider
	// AccessLogDir is the only directory file access logs may be written
	// in: a logger whose path (cleaned) is elsewhere is turned off with a
	// warn line, and files are opened beneath it without leaving it by a
	// symbolic link or "..". The host decides it, not the xDS server
	// (accesslog_dir.go). Empty: no file access log is written.
	AccessLogDir string
}

// Proxy is the data plane: an ADS client and the listeners it configures.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	node *core.Node

	// cur is the configuration being served; connections read it once,
	// when they are accepted.
	cur atomic.Pointer[snapshot]

	// mu guards the xDS state and the running listeners.
	mu      sync.Mutex
	st      *state
	types   map[string]*typeState
	status  map[string]*TypeStatus
	running map[string]*runningListener
	// changed is closed when running changes (inbound.go).
	changed chan struct{}
	// refused rate-limits each inbound listener's refusal log
	// (inbound.go); listener names are bounded by the config.
	refused sync.Map

	// sinks write the access logs; refusals rate-limits the warn lines
	// of refused requests (accesslog.go).
	sinks    logSinks
	refusals refusals
	// tracer makes the request spans (nil: tracing is off).
	tracer trace.Tracer
	// applied is what the proxy applied, as received (introspect.go; p.mu).
	applied appliedConfig
	// streams counts the ADS streams opened (introspect.go: readiness).
	streams atomic.Int64
	// logDirWarned is when each refused access log path was last warned
	// about (p.mu; accesslog_dir.go).
	logDirWarned map[string]time.Time

	ctx    context.Context // the connections' (ends at Close)
	wg     sync.WaitGroup
	drain  sync.WaitGroup
	limits connLimits
}

// New prepares a proxy; Run does the work.
func New(cfg Config) (*Proxy, error) {
	if cfg.XDSAddr == "" || cfg.Node == "" {
		return nil, fmt.Errorf("%w: an xDS address and a node ID are required", ErrInvalid)
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxConnections < 0 || cfg.MaxListenerConnections < 0 {
		return nil, fmt.Errorf("%w: connection limits must not be negative", ErrInvalid)
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections()
	}
	if cfg.MaxListenerConnections == 0 {
		cfg.MaxListenerConnections = max(cfg.MaxConnections/2, 1)
	}
	p := &Proxy{
		cfg: cfg, log: cfg.Logger, node: newNode(cfg.Node),
		st:    &state{listeners: map[string]*listenerSpec{}, clusters: map[string]*clusterSpec{}, endpoints: map[string]*endpointsSpec{}, secrets: map[string]*secretSpec{}},
		types: newTypes(), status: newStatus(), running: map[string]*runningListener{},
	}
	if cfg.TracerProvider != nil {
		p.tracer = cfg.TracerProvider.Tracer(tracerName)
	}
	p.limits.global, p.limits.perListener = int64(cfg.MaxConnections), int64(cfg.MaxListenerConnections)
	if cfg.Metrics != nil {
		cfg.Metrics.clusters.proxy.Store(p) // the latest proxy of these metrics reports its clusters
	}
	p.cur.Store(&snapshot{listeners: map[string]*listenerRT{}, clusters: map[string]*clusterRT{}})
	return p, nil
}

// Run follows the xDS server until ctx ends, then stops every listener and
// waits for their connections to drain (at most DrainTimeout). It returns
// nil on a clean stop.
func (p *Proxy) Run(ctx context.Context) error {
	p.ctx = ctx
	p.runADS(ctx)
	p.mu.Lock()
	for name, rl := range p.running {
		delete(p.running, name)
		p.stop(rl)
	}
	p.mu.Unlock()
	p.drain.Wait()
	p.sinks.close()
	p.wg.Wait()
	return nil
}

// Status reports, per resource type URL, the last version accepted and the
// NACKs.
func (p *Proxy) Status() map[string]TypeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]TypeStatus{}
	for t, s := range p.status {
		out[t] = *s
	}
	return out
}

// ListenerAddrs maps each listener the proxy accepts on to its bound
// address (a configured port 0 shows the port picked).
func (p *Proxy) ListenerAddrs() map[string]net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]net.Addr{}
	for name, rl := range p.running {
		out[name] = rl.ln.Addr()
	}
	return out
}

// runningListener is a bound socket and the connections it accepted.
type runningListener struct {
	name string
	addr netip.AddrPort // as configured
	ln   net.Listener

	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	closed bool
}

// apply binds the listeners snap adds, then makes snap current and stops
// the listeners it dropped (p.mu held). A listener that cannot bind fails
// the whole update and nothing changes.
func (p *Proxy) apply(snap *snapshot) error {
	byAddr := map[netip.AddrPort]*runningListener{}
	for _, rl := range p.running {
		byAddr[rl.addr] = rl
	}
	names := make([]string, 0, len(snap.listeners))
	for name := range snap.listeners {
		names = append(names, name)
	}
	sort.Strings(names)
	bound := map[string]net.Listener{}
	taken := map[netip.AddrPort]bool{}
	var err error
	for _, name := range names {
		addr := snap.listeners[name].spec.addr
		if addr.Port() != 0 && taken[addr] {
			err = fmt.Errorf("%w: listener %s: address %s is taken by another listener", ErrInvalid, name, addr)
			break
		}
		taken[addr] = true
		if rl := p.running[name]; rl != nil && rl.addr == addr {
			continue
		}
		if rl := byAddr[addr]; rl != nil && addr.Port() != 0 {
			continue // moved from another name: rebound once that one stops
		}
		ln, lerr := net.Listen("tcp", addr.String())
		if lerr != nil {
			err = fmt.Errorf("listener %s: binding %s: %w", name, addr, lerr)
			break
		}
		bound[name] = ln
	}
	if err != nil {
		for _, ln := range bound {
			ln.Close()
		}
		return err
	}
	p.cur.Store(snap)
	// Stop what is gone, start what is new.
	next := map[string]*runningListener{}
	kept := map[*runningListener]bool{}
	for _, name := range names {
		if rl := p.running[name]; rl != nil && rl.addr == snap.listeners[name].spec.addr {
			next[name] = rl
			kept[rl] = true
		}
	}
	for _, rl := range p.running {
		if !kept[rl] {
			p.stop(rl)
		}
	}
	for _, name := range names {
		addr := snap.listeners[name].spec.addr
		if next[name] != nil {
			continue
		}
		ln := bound[name]
		if ln == nil {
			// The address moved from a listener stopped just above.
			var lerr error
			if ln, lerr = net.Listen("tcp", addr.String()); lerr != nil {
				p.log.Error("rebinding a listener", "listener", name, "addr", addr, "err", lerr)
				continue
			}
		}
		rl := &runningListener{name: name, addr: addr, ln: ln, conns: map[*proxyConn]struct{}{}}
		next[name] = rl
		p.wg.Add(1)
		go p.acceptLoop(rl)
	}
	p.running = next
	p.listenersChanged()
	return nil
}

// stop ends a listener: it accepts no more, and its connections drain
// for at most DrainTimeout.
func (p *Proxy) stop(rl *runningListener) {
	rl.mu.Lock()
	if rl.closed {
		rl.mu.Unlock()
		return
	}
	rl.closed = true
	rl.mu.Unlock()
	rl.ln.Close()
	p.drain.Add(1)
	go func() {
		defer p.drain.Done()
		deadline := time.NewTimer(p.cfg.DrainTimeout)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			rl.mu.Lock()
			n := len(rl.conns)
			rl.mu.Unlock()
			if n == 0 {
				return
			}
			select {
			case <-deadline.C:
				rl.mu.Lock()
				for c := range rl.conns {
					c.abort()
				}
				rl.mu.Unlock()
				return
			case <-tick.C:
			}
		}
	}()
}

func (p *Proxy) acceptLoop(rl *runningListener) {
	defer p.wg.Done()
	for {
		c, err := rl.ln.Accept()
		if err != nil {
			rl.mu.Lock()
			closed := rl.closed
			rl.mu.Unlock()
			var ne net.Error
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.log.Error("accepting", "listener", rl.name, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		rl.mu.Lock()
		if rl.closed {
			rl.mu.Unlock()
			c.Close()
			return
		}
		if limit := p.limits.admit(len(rl.conns)); limit != "" {
			rl.mu.Unlock()
			reset(c)
			p.cfg.Metrics.ConnRefused(rl.name, limit)
			if p.limits.warnDue(time.Now()) {
				p.log.Warn("refusing downstream connections: connection limit reached", "listener", rl.name, "limit", limit,
					"max_connections", p.cfg.MaxConnections, "max_listener_connections", p.cfg.MaxListenerConnections)
			}
			continue
		}
		pc := &proxyConn{down: c}
		rl.conns[pc] = struct{}{}
		rl.mu.Unlock()
		p.cfg.Metrics.ConnOpened(rl.name)
		opened := time.Now()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.limits.release()
			defer p.cfg.Metrics.ConnClosed(rl.name, opened)
			defer func() {
				rl.mu.Lock()
				delete(rl.conns, pc)
				rl.mu.Unlock()
			}()
			p.serve(rl, pc)
		}()
	}
}

func randInt63n(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return rand.Int64N(n)
}
