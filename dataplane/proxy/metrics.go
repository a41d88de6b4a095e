package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/metrics"
)

// Metrics receives the proxy's measurements. A nil *Metrics records
// nothing, so every call site may use it unconditionally.
//
// Labels (Prometheus names in the style of Istio/Linkerd, docs/metrics.md):
// listener is the xDS listener's name; stat is the stat_prefix of the
// filter that served the traffic ("inbound_orders", "outbound_orders",
// "upstream_orders"), from which the direction and the service are read;
// upstream is the cluster the traffic went to ("" when none was picked).
// Every label value comes from the xDS config, never from request data, so
// the number of series is bounded by the config.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	active      *prometheus.GaugeVec
	conns       *prometheus.CounterVec
	received    *prometheus.CounterVec
	sent        *prometheus.CounterVec
	tlsFailures *prometheus.CounterVec
	mismatches  *prometheus.CounterVec
	refused     *prometheus.CounterVec
	protoErrors *prometheus.CounterVec
	xdsUpdates  *prometheus.CounterVec
	xdsNacks    *prometheus.CounterVec
	inbound     *inboundMetrics // inbound.go
	sizes       sizeMetrics     // collector.go
	conn        *connMetrics    // collector.go
	clusters    *clusterCollector

	// traffic caches the request and byte series of each label tuple,
	// so a request does not hash its labels into every vector again
	// (copy on write: read without a lock on every request; the tuples
	// are bounded by the config, as the series are).
	trafficMu sync.Mutex
	traffic   atomic.Pointer[map[trafficKey]*trafficSeries]
}

type trafficKey struct{ listener, stat, upstream string }

// trafficSeries are the series of one label tuple, each made on first
// use (a tuple that only counted requests has no byte series, as
// before).
type trafficSeries struct {
	m                                    *Metrics
	labels                               [4]string // direction, service, listener, upstream
	durationOnce, receivedOnce, sentOnce sync.Once
	duration                             prometheus.Observer
	received, sent                       prometheus.Counter
	sizesOnce                            sync.Once
	reqSize, respSize                    prometheus.Observer

	codesMu sync.Mutex
	codes   atomic.Pointer[map[int]prometheus.Counter]
}

// LatencyBuckets are the request duration histogram's upper bounds, in
// seconds: from half a millisecond (a local reply, a hop on one host) to
// 30 s (the longest default timeouts).
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// trafficLabels are the labels of request and byte series.
var trafficLabels = []string{"direction", "service", "listener", "upstream"}

// NewMetrics creates the proxy's metrics and registers them with reg (none
// when reg is nil). Registering a second Metrics with the same reg shares
// the first one's series instead of failing, so a proxy restarted in one
// process keeps counting where it was.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_requests_total",
			Help: "HTTP requests (gRPC calls included) the proxy answered, by the HTTP status sent downstream.",
		}, []string{"direction", "service", "listener", "upstream", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vmesh_request_duration_seconds",
			Help:    "HTTP request latency from the request's arrival to the end of the response.",
			Buckets: LatencyBuckets,
		}, trafficLabels),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vmesh_active_connections",
			Help: "Downstream connections a listener holds open.",
		}, []string{"listener"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_connections_total",
			Help: "Downstream connections a listener accepted.",
		}, []string{"listener"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_received_bytes_total",
			Help: "Bytes received from the downstream (the client side of the proxy).",
		}, trafficLabels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_sent_bytes_total",
			Help: "Bytes sent to the downstream (the client side of the proxy).",
		}, trafficLabels),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_tls_handshake_failures_total",
			Help: `Failed TLS handshakes: side "downstream" names the listener, "upstream" the cluster dialed.`,
		}, []string{"side", "name"}),
		mismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_upstream_peer_mismatch_total",
			Help: "Upstream TLS connections refused because the endpoint's verified certificate names none of the identities the cluster expects (counted in vmesh_tls_handshake_failures_total too).",
		}, []string{"cluster"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_connections_refused_total",
			Help: `Downstream connections closed at accept because a connection limit was reached: limit "listener" (the listener's own) or "global" (the proxy's).`,
		}, []string{"listener", "limit"}),
		protoErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_downstream_protocol_errors_total",
			Help: "Downstream HTTP connections cut for abusing the protocol (HTTP/2 rapid reset or CONTINUATION flood) or requests refused with 400 for ambiguous HTTP/1 framing, by reason.",
		}, []string{"listener", "reason"}),
		xdsUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_xds_updates_total",
			Help: "xDS responses the proxy accepted (ACKed), by resource type.",
		}, []string{"type"}),
		xdsNacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_xds_nacks_total",
			Help: "xDS responses the proxy rejected (NACKed) and kept its previous config, by resource type.",
		}, []string{"type"}),
	}
	if reg != nil {
		m.requests = metrics.Register("proxy", reg, m.requests)
		m.duration = metrics.Register("proxy", reg, m.duration)
		m.active = metrics.Register("proxy", reg, m.active)
		m.conns = metrics.Register("proxy", reg, m.conns)
		m.received = metrics.Register("proxy", reg, m.received)
		m.sent = metrics.Register("proxy", reg, m.sent)
		m.tlsFailures = metrics.Register("proxy", reg, m.tlsFailures)
		m.mismatches = metrics.Register("proxy", reg, m.mismatches)
		m.refused = metrics.Register("proxy", reg, m.refused)
		m.protoErrors = metrics.Register("proxy", reg, m.protoErrors)
		m.xdsUpdates = metrics.Register("proxy", reg, m.xdsUpdates)
		m.xdsNacks = metrics.Register("proxy", reg, m.xdsNacks)
	}
	m.inbound = newInboundMetrics(reg)
	m.sizes = newSizeMetrics(reg)
	m.conn = newConnMetrics(reg)
	m.clusters = newClusterCollector(reg)
	return m
}

// splitStatPrefix reads the direction and the service from a stat prefix:
// "inbound_orders" is inbound traffic to orders. Any other prefix is a
// service of no known direction.
func splitStatPrefix(stat string) (direction, service string) {
	for _, d := range []string{"inbound", "outbound", "upstream"} {
		if s, ok := strings.CutPrefix(stat, d+"_"); ok {
			return d, s
		}
	}
	return "", stat
}

// metricType is the resource type's message name:
// "type.googleapis.com/envoy.config.listener.v3.Listener" is "Listener".
func metricType(typeURL string) string {
	return typeURL[strings.LastIndexAny(typeURL, "./")+1:]
}

// RequestDone counts one HTTP request (gRPC calls included) and observes
// its latency, from the request's arrival to the end of the response.
// code is the HTTP status sent downstream (a local reply's too).
func (m *Metrics) RequestDone(listener, stat, upstream string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.series(listener, stat, upstream).requestDone(code, d)
}

// series is the cached series of a label tuple.
func (m *Metrics) series(listener, stat, upstream string) *trafficSeries {
	k := trafficKey{listener, stat, upstream}
	if mp := m.traffic.Load(); mp != nil {
		if ts := (*mp)[k]; ts != nil {
			return ts
		}
	}
	m.trafficMu.Lock()
	defer m.trafficMu.Unlock()
	var cur map[trafficKey]*trafficSeries
	if mp := m.traffic.Load(); mp != nil {
		if ts := (*mp)[k]; ts != nil {
			return ts
		}
		cur = *mp
	}
	dir, svc := splitStatPrefix(stat)
	ts := &trafficSeries{m: m, labels: [4]string{dir, svc, listener, upstream}}
	next := make(map[trafficKey]*trafficSeries, len(cur)+1)
	for key, v := range cur {
		next[key] = v
	}
	next[k] = ts
	m.traffic.Store(&next)
	return ts
}

func (ts *trafficSeries) requestDone(code int, d time.Duration) {
	ts.code(code).Inc()
	ts.durationOnce.Do(func() { ts.duration = ts.m.duration.WithLabelValues(ts.labels[:]...) })
	ts.duration.Observe(d.Seconds())
}

func (ts *trafficSeries) code(code int) prometheus.Counter {
	if mp := ts.codes.Load(); mp != nil {
		if c := (*mp)[code]; c != nil {
			return c
		}
	}
	ts.codesMu.Lock()
	defer ts.codesMu.Unlock()
	var cur map[int]prometheus.Counter
	if mp := ts.codes.Load(); mp != nil {
		if c := (*mp)[code]; c != nil {
			return c
		}
		cur = *mp
	}
	l := ts.labels
	c := ts.m.requests.WithLabelValues(l[0], l[1], l[2], l[3], strconv.Itoa(code))
	next := make(map[int]prometheus.Counter, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[code] = c
	ts.codes.Store(&next)
	return c
}

func (ts *trafficSeries) bytes(in, out int64) {
	ts.receivedOnce.Do(func() { ts.received = ts.m.received.WithLabelValues(ts.labels[:]...) })
	ts.sentOnce.Do(func() { ts.sent = ts.m.sent.WithLabelValues(ts.labels[:]...) })
	ts.received.Add(float64(max(in, 0)))
	ts.sent.Add(float64(max(out, 0)))
}

// streamDone is RequestDone and Bytes of one request, with one lookup.
func (m *Metrics) streamDone(listener, stat, upstream string, code int, d time.Duration, in, out int64) {
	if m == nil {
		return
	}
	ts := m.series(listener, stat, upstream)
	ts.requestDone(code, d)
	ts.bytes(in, out)
	ts.sizes(in, out)
}

// ConnOpened and ConnClosed track a listener's active downstream
// connections.
func (m *Metrics) ConnOpened(listener string) {
	if m == nil {
		return
	}
	m.conns.WithLabelValues(listener).Inc()
	m.active.WithLabelValues(listener).Inc()
}

// ConnClosed: see ConnOpened. opened is when the connection was
// accepted (connection duration).
func (m *Metrics) ConnClosed(listener string, opened time.Time) {
	if m == nil {
		return
	}
	m.active.WithLabelValues(listener).Dec()
	m.conn.closed(listener, time.Since(opened))
}

// Bytes adds the bytes received from (in) and sent to (out) the
// downstream of a connection or request.
func (m *Metrics) Bytes(listener, stat, upstream string, in, out int64) {
	if m == nil {
		return
	}
	m.series(listener, stat, upstream).bytes(in, out)
}

// TLSHandshakeFailed counts a failed TLS handshake: side "downstream"
// (a client of listener name) or "upstream" (the proxy dialing an
// endpoint of cluster name).
func (m *Metrics) TLSHandshakeFailed(side, name string) {
	if m == nil {
		return
	}
	m.tlsFailures.WithLabelValues(side, name).Inc()
}

// UpstreamPeerMismatch counts an upstream connection of cluster refused
// for the identity its endpoint presented.
func (m *Metrics) UpstreamPeerMismatch(cluster string) {
	if m == nil {
		return
	}
	m.mismatches.WithLabelValues(cluster).Inc()
}

// ConnRefused counts a downstream connection of listener closed at accept
// because limit ("listener" or "global") was reached.
func (m *Metrics) ConnRefused(listener, limit string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(listener, limit).Inc()
}

// ProtocolError counts a downstream HTTP connection cut, or request
// refused, for reason (a fixed set: edge.go).
func (m *Metrics) ProtocolError(listener, reason string) {
	if m == nil {
		return
	}
	m.protoErrors.WithLabelValues(listener, reason).Inc()
}

// XDSUpdate counts an accepted xDS response of type typeURL; XDSNack a
// rejected one.
func (m *Metrics) XDSUpdate(typeURL string) {
	if m == nil {
		return
	}
	m.xdsUpdates.WithLabelValues(metricType(typeURL)).Inc()
}

// XDSNack: see XDSUpdate.
func (m *Metrics) XDSNack(typeURL string) {
	if m == nil {
		return
	}
	m.xdsNacks.WithLabelValues(metricType(typeURL)).Inc()
}
