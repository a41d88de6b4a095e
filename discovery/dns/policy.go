package dns

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Who may use the server, and how much.
//
// Recursion (forwarding a name outside .mesh and .consul to the
// recursors) is for clients on this host: loopback, or one of the host's
// own addresses (capture_dns redirects an app's query to port 53 of a
// nameserver elsewhere to the agent, and the query keeps the source
// address the route to that nameserver chose). Anyone else gets REFUSED
// unless Config.RecursionAllowed names its network: an agent whose DNS
// listens on a routable address must not be an open resolver that
// amplifies attacks on a spoofed victim. Names of our own zones are
// answered to every client.
//
// Every source but this host's own gets a token bucket (Config.RateLimit
// queries per second, Config.RateBurst at once; IPv6 sources by /64, a
// network one holder rotates in). A query over the limit is dropped over
// UDP, where its source may be spoofed and an answer would be reflected,
// and answered REFUSED over TCP, whose handshake proved its source. The
// host's own apps all share one source (127.0.0.1, or the host's address),
// so limiting them would throttle the whole host as one client.

// Defaults of the per-source rate limit.
const (
	DefaultRateLimit = 500  // queries per second per source
	DefaultRateBurst = 1000 // queries at once
	// maxSources bounds the sources tracked at once; past it, sources
	// not seen recently share one bucket (so a flood of spoofed sources
	// cannot grow the map without bound).
	maxSources = 10000
	// localAddrsRefresh is how often a source that is not a known local
	// address may make the server list the host's addresses again.
	localAddrsRefresh = time.Second
)

// Metrics count the queries the server refused or dropped. A nil
// *Metrics counts nothing.
type Metrics struct {
	recursionRefused prometheus.Counter
	rateLimited      *prometheus.CounterVec
}

// NewMetrics creates the DNS server's metrics and registers them with
// reg (none when reg is nil); a second call with the same reg shares the
// first one's series.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		recursionRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vmesh_dns_recursion_refused_total",
			Help: "Queries for names outside .mesh and .consul answered REFUSED: the client is not on this host nor in dns.recursor_allowed_cidrs.",
		}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_dns_rate_limited_total",
			Help: `Queries over their source's rate limit (dns.rate_limit): dropped over "udp", answered REFUSED over "tcp".`,
		}, []string{"transport"}),
	}
	if reg != nil {
		m.recursionRefused = register(reg, m.recursionRefused)
		m.rateLimited = register(reg, m.rateLimited)
	}
	return m
}

// register registers c, or returns the collector already registered in
// its place.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}

func (m *Metrics) refusedRecursion() {
	if m != nil {
		m.recursionRefused.Inc()
	}
}

func (m *Metrics) limited(transport string) {
	if m != nil {
		m.rateLimited.WithLabelValues(transport).Inc()
	}
}

// sourceOf is the client's address.
func sourceOf(a net.Addr) netip.Addr {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	default:
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return ap.Addr().Unmap()
}

// localAddrs knows the host's own addresses, listed again when a source
// it does not know asks, at most once per localAddrsRefresh.
type localAddrs struct {
	list func() ([]netip.Addr, error)

	mu      sync.Mutex
	addrs   map[netip.Addr]bool
	listed  time.Time
	listErr error
}

// interfaceAddrs lists the host's addresses (every interface's).
func interfaceAddrs() ([]netip.Addr, error) {
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

// local says whether a is one of this host's addresses (loopback is).
func (l *localAddrs) local(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs[a] {
		return true
	}
	if now := time.Now(); l.listed.IsZero() || now.Sub(l.listed) >= localAddrsRefresh {
		l.listed = now
		as, err := l.list()
		l.listErr = err
		if err == nil {
			l.addrs = map[netip.Addr]bool{}
			for _, x := range as {
				l.addrs[x] = true
			}
		}
	}
	return l.addrs[a]
}

// limiter is a token bucket per source.
type limiter struct {
	rate, burst float64

	mu       sync.Mutex
	buckets  map[netip.Addr]*bucket
	overflow bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	if rate <= 0 {
		return nil
	}
	b := float64(burst)
	if b < 1 {
		b = max(1, 2*rate)
	}
	return &limiter{rate: rate, burst: b, buckets: map[netip.Addr]*bucket{}}
}

// key is the bucket a source draws from: its address, or its /64.
func key(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allow takes a token from src's bucket at now; false: over the limit.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := key(src)
	b := l.buckets[k]
	if b == nil {
		if len(l.buckets) >= maxSources {
			l.sweep(now)
		}
		if len(l.buckets) >= maxSources {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[k] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep forgets the sources whose buckets have refilled: they have been
// quiet long enough to start again from a full bucket.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
}
