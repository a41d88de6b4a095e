package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/metrics"
)

// Metrics are the xDS server's Prometheus series (docs/metrics.md). A nil
// *Metrics records nothing.
//
// The type label is the resource type's message name ("Listener",
// "Cluster", ...). Type URLs come from clients, so one the server does not
// serve is counted as "other": a client cannot grow the series.
type Metrics struct {
	clients     prometheus.Gauge
	streams     prometheus.Gauge
	responses   *prometheus.CounterVec
	acks        *prometheus.CounterVec
	nacks       *prometheus.CounterVec
	buildErrors prometheus.Counter
}

// NewMetrics creates the xDS server's metrics and registers them with reg
// (none when reg is nil). A second NewMetrics on the same reg shares the
// first one's series.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vmesh_xds_server_connected_clients",
			Help: "xDS clients (distinct node IDs) with at least one open stream.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vmesh_xds_server_streams",
			Help: "Open xDS streams (SotW and delta) that have identified their node.",
		}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_xds_server_responses_total",
			Help: "xDS responses pushed to clients, by resource type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_xds_server_acks_total",
			Help: "ACKs received from clients, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vmesh_xds_server_nacks_total",
			Help: "NACKs (rejected responses) received from clients, by resource type.",
		}, []string{"type"}),
		buildErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vmesh_xds_server_build_errors_total",
			Help: "Snapshot builds that failed; the clients concerned keep their previous config.",
		}),
	}
	if reg != nil {
		m.clients = metrics.Register("xds", reg, m.clients)
		m.streams = metrics.Register("xds", reg, m.streams)
		m.responses = metrics.Register("xds", reg, m.responses)
		m.acks = metrics.Register("xds", reg, m.acks)
		m.nacks = metrics.Register("xds", reg, m.nacks)
		m.buildErrors = metrics.Register("xds", reg, m.buildErrors)
	}
	return m
}

// metricTypes are the type label values of the types the server serves.
var metricTypes = map[string]string{
	resource.ListenerType: "Listener",
	resource.ClusterType:  "Cluster",
	resource.EndpointType: "ClusterLoadAssignment",
	resource.RouteType:    "RouteConfiguration",
	resource.SecretType:   "Secret",
}

func metricType(typeURL string) string {
	if t, ok := metricTypes[typeURL]; ok {
		return t
	}
	return "other"
}

// connected sets the client and stream gauges (s.mu held by the caller).
func (m *Metrics) connected(clients, streams int) {
	if m == nil {
		return
	}
	m.clients.Set(float64(clients))
	m.streams.Set(float64(streams))
}

func (m *Metrics) response(typeURL string) {
	if m == nil {
		return
	}
	m.responses.WithLabelValues(metricType(typeURL)).Inc()
}

func (m *Metrics) answer(typeURL string, nack bool) {
	if m == nil {
		return
	}
	if nack {
		m.nacks.WithLabelValues(metricType(typeURL)).Inc()
	} else {
		m.acks.WithLabelValues(metricType(typeURL)).Inc()
	}
}

func (m *Metrics) buildFailed() {
	if m == nil {
		return
	}
	m.buildErrors.Inc()
}
