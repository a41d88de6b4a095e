package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/metrics"
)

// The series that Istio's standard metrics map to (docs/metrics.md) and
// Envoy's cluster stats, made cheap for the request path: size histograms
// hang off the cached per-tuple series (metrics.go), connection series off
// a per-listener cache, and the cluster series are not vectors at all but
// read at scrape time from the counters the traffic policy bumps
// (stats.go).

// SizeBuckets are the request and response size histograms' bounds, in
// bytes: 64 B to 16 MiB by powers of 4.
var SizeBuckets = prometheus.ExponentialBuckets(64, 4, 10)

// DurationBuckets are the connection duration histogram's bounds, in
// seconds: from a short exchange to an hour-long stream.
var DurationBuckets = []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600}

type sizeMetrics struct {
	request, response *prometheus.HistogramVec
}

func newSizeMetrics(reg prometheus.Registerer) sizeMetrics {
	s := sizeMetrics{
		request: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vmesh_request_size_bytes",
			Help:    "HTTP request body sizes received from the downstream (Istio's istio_request_bytes).",
			Buckets: SizeBuckets,
		}, trafficLabels),
		response: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vmesh_response_size_bytes",
			Help:    "HTTP response body sizes sent to the downstream (Istio's istio_response_bytes).",
			Buckets: SizeBuckets,
		}, trafficLabels),
	}
	if reg != nil {
		s.request = metrics.Register("proxy", reg, s.request)
		s.response = metrics.Register("proxy", reg, s.response)
	}
	return s
}

func (ts *trafficSeries) sizes(in, out int64) {
	ts.sizesOnce.Do(func() {
		ts.reqSize = ts.m.sizes.request.WithLabelValues(ts.labels[:]...)
		ts.respSize = ts.m.sizes.response.WithLabelValues(ts.labels[:]...)
	})
	ts.reqSize.Observe(float64(max(in, 0)))
	ts.respSize.Observe(float64(max(out, 0)))
}

// connMetrics are the per-listener connection series beyond the active
// gauge: closed connections and how long they lived.
type connMetrics struct {
	closedVec *prometheus.CounterVec
	duration  *prometheus.HistogramVec

	mu    sync.Mutex
	cache atomic.Pointer[map[string]*connSeries] // copy on write, as the traffic series
}

type connSeries struct {
	closed   prometheus.Counter
	duration prometheus.Observer
}

func newConnMetrics(reg prometheus.Registerer) *connMetrics {
	c := &connMetrics{
		closedVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_connections_closed_total",
			Help: "Downstream connections a listener accepted that have ended (Istio's istio_tcp_connections_closed_total).",
		}, []string{"listener"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vmesh_connection_duration_seconds",
			Help:    "How long downstream connections lived, from accept to close.",
			Buckets: DurationBuckets,
		}, []string{"listener"}),
	}
	if reg != nil {
		c.closedVec = metrics.Register("proxy", reg, c.closedVec)
		c.duration = metrics.Register("proxy", reg, c.duration)
	}
	return c
}

func (c *connMetrics) closed(listener string, d time.Duration) {
	s := c.series(listener)
	s.closed.Inc()
	s.duration.Observe(d.Seconds())
}

func (c *connMetrics) series(listener string) *connSeries {
	if mp := c.cache.Load(); mp != nil {
		if s := (*mp)[listener]; s != nil {
			return s
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var cur map[string]*connSeries
	if mp := c.cache.Load(); mp != nil {
		if s := (*mp)[listener]; s != nil {
			return s
		}
		cur = *mp
	}
	s := &connSeries{closed: c.closedVec.WithLabelValues(listener), duration: c.duration.WithLabelValues(listener)}
	next := make(map[string]*connSeries, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[listener] = s
	c.cache.Store(&next)
	return s
}

// clusterCollector reports the current proxy's clusters at scrape time.
type clusterCollector struct {
	proxy atomic.Pointer[Proxy]
}

func newClusterCollector(reg prometheus.Registerer) *clusterCollector {
	c := &clusterCollector{}
	if reg != nil {
		c = metrics.Register("proxy", reg, c)
	}
	return c
}

var (
	clusterLabels  = []string{"cluster"}
	upstreamRqDesc = prometheus.NewDesc("vmesh_upstream_requests_total",
		`Requests (or TCP connections) sent to a cluster's endpoints, retries included, by outcome: "success", or "error" (a 5xx or no response).`,
		[]string{"cluster", "outcome"}, nil)
	upstreamRetryDesc = prometheus.NewDesc("vmesh_upstream_retries_total",
		"Retries the proxy sent to a cluster (Envoy's upstream_rq_retry).", clusterLabels, nil)
	upstreamCxDesc = prometheus.NewDesc("vmesh_upstream_connections_total",
		"Connections the proxy opened to a cluster's endpoints (Envoy's upstream_cx_total).", clusterLabels, nil)
	upstreamCxFailDesc = prometheus.NewDesc("vmesh_upstream_connect_failures_total",
		"Connections to a cluster's endpoints that failed to open, TLS handshake included (Envoy's upstream_cx_connect_fail).", clusterLabels, nil)
	upstreamCxActiveDesc = prometheus.NewDesc("vmesh_upstream_active_connections",
		"Connections open to a cluster's endpoints.", clusterLabels, nil)
	upstreamRqActiveDesc = prometheus.NewDesc("vmesh_upstream_active_requests",
		"Requests in flight to a cluster.", clusterLabels, nil)
	ejectionsDesc = prometheus.NewDesc("vmesh_outlier_ejections_total",
		"Endpoints outlier detection took out of rotation (Envoy's outlier_detection.ejections_enforced_total).", clusterLabels, nil)
	ejectedDesc = prometheus.NewDesc("vmesh_outlier_ejected_hosts",
		"Endpoints of a cluster ejected now.", clusterLabels, nil)
	overflowDesc = prometheus.NewDesc("vmesh_circuit_breaker_overflows_total",
		"Connections, requests or retries refused because a circuit breaker of the cluster was open, by breaker (max_connections, max_pending_requests, max_requests, max_retries).",
		[]string{"cluster", "breaker"}, nil)
	hostsDesc = prometheus.NewDesc("vmesh_upstream_hosts",
		`Endpoints of a cluster in rotation, by health ("healthy", "degraded").`, []string{"cluster", "health"}, nil)
)

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upstreamRqDesc, upstreamRetryDesc, upstreamCxDesc, upstreamCxFailDesc, upstreamCxActiveDesc,
		upstreamRqActiveDesc, ejectionsDesc, ejectedDesc, overflowDesc, hostsDesc} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.proxy.Load()
	if p == nil {
		return
	}
	now := monoNanos(time.Now())
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v int64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), l...)
	}
	for name, cl := range p.cur.Load().clusters {
		s := &cl.st.stats
		counter(upstreamRqDesc, s.rqSuccess.Load(), name, "success")
		counter(upstreamRqDesc, s.rqError.Load(), name, "error")
		counter(upstreamRetryDesc, s.rqRetry.Load(), name)
		counter(upstreamCxDesc, s.cxTotal.Load(), name)
		counter(upstreamCxFailDesc, s.cxConnectFail.Load(), name)
		gauge(upstreamCxActiveDesc, max(cl.st.conns.Load(), 0), name)
		gauge(upstreamRqActiveDesc, max(cl.st.requests.Load(), 0), name)
		counter(ejectionsDesc, s.ejections.Load(), name)
		for b, n := range breakerNames {
			counter(overflowDesc, s.overflow[b].Load(), name, n)
		}
		var ejected, healthy, degraded int64
		for _, h := range cl.hosts {
			if h.st.ejected(now) {
				ejected++
			}
			if h.healthy {
				healthy++
			} else {
				degraded++
			}
		}
		gauge(ejectedDesc, ejected, name)
		gauge(hostsDesc, healthy, name, "healthy")
		gauge(hostsDesc, degraded, name, "degraded")
	}
}
