package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

const (
	listenerTypeURL = "type.googleapis.com/envoy.config.listener.v3.Listener"
	claTypeURL      = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	secretTypeURL   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// TestMetricsSeries: each hook moves exactly the series it names, with the
// labels read from its arguments, and the exposition is well-formed.
func TestMetricsSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)

	m.ConnOpened("vmesh/inbound")
	m.ConnOpened("vmesh/inbound")
	m.ConnOpened("vmesh/upstream/127.0.0.1:9000")
	m.ConnClosed("vmesh/inbound", time.Now())
	m.Bytes("vmesh/inbound", "inbound_orders", "local/orders", 100, 2000)
	m.Bytes("vmesh/inbound", "inbound_orders", "local/orders", 1, 2)
	m.Bytes("vmesh/upstream/127.0.0.1:9000", "upstream_db", "db", 7, -1) // a negative count is ignored
	m.RequestDone("vmesh/outbound", "outbound_orders", "orders", 200, 3*time.Millisecond)
	m.RequestDone("vmesh/outbound", "outbound_orders", "orders", 200, 40*time.Millisecond)
	m.RequestDone("vmesh/outbound", "outbound_orders", "", 503, 0)
	m.RequestDone("custom", "my_stat", "x", 404, time.Second)
	m.TLSHandshakeFailed("downstream", "vmesh/inbound")
	m.TLSHandshakeFailed("upstream", "orders")
	m.TLSHandshakeFailed("upstream", "orders")
	m.XDSUpdate(listenerTypeURL)
	m.XDSUpdate(listenerTypeURL)
	m.XDSUpdate(claTypeURL)
	m.XDSNack(secretTypeURL)

	want := `
# HELP vmesh_active_connections Downstream connections a listener holds open.
# TYPE vmesh_active_connections gauge
vmesh_active_connections{listener="vmesh/inbound"} 1
vmesh_active_connections{listener="vmesh/upstream/127.0.0.1:9000"} 1
# HELP vmesh_connections_total Downstream connections a listener accepted.
# TYPE vmesh_connections_total counter
vmesh_connections_total{listener="vmesh/inbound"} 2
vmesh_connections_total{listener="vmesh/upstream/127.0.0.1:9000"} 1
# HELP vmesh_received_bytes_total Bytes received from the downstream (the client side of the proxy).
# TYPE vmesh_received_bytes_total counter
vmesh_received_bytes_total{direction="inbound",listener="vmesh/inbound",service="orders",upstream="local/orders"} 101
vmesh_received_bytes_total{direction="upstream",listener="vmesh/upstream/127.0.0.1:9000",service="db",upstream="db"} 7
# HELP vmesh_sent_bytes_total Bytes sent to the downstream (the client side of the proxy).
# TYPE vmesh_sent_bytes_total counter
vmesh_sent_bytes_total{direction="inbound",listener="vmesh/inbound",service="orders",upstream="local/orders"} 2002
vmesh_sent_bytes_total{direction="upstream",listener="vmesh/upstream/127.0.0.1:9000",service="db",upstream="db"} 0
# HELP vmesh_requests_total HTTP requests (gRPC calls included) the proxy answered, by the HTTP status sent downstream.
# TYPE vmesh_requests_total counter
vmesh_requests_total{code="200",direction="outbound",listener="vmesh/outbound",service="orders",upstream="orders"} 2
vmesh_requests_total{code="503",direction="outbound",listener="vmesh/outbound",service="orders",upstream=""} 1
vmesh_requests_total{code="404",direction="",listener="custom",service="my_stat",upstream="x"} 1
# HELP vmesh_tls_handshake_failures_total Failed TLS handshakes: side "downstream" names the listener, "upstream" the cluster dialed.
# TYPE vmesh_tls_handshake_failures_total counter
vmesh_tls_handshake_failures_total{name="vmesh/inbound",side="downstream"} 1
vmesh_tls_handshake_failures_total{name="orders",side="upstream"} 2
# HELP vmesh_xds_updates_total xDS responses the proxy accepted (ACKed), by resource type.
# TYPE vmesh_xds_updates_total counter
vmesh_xds_updates_total{type="ClusterLoadAssignment"} 1
vmesh_xds_updates_total{type="Listener"} 2
# HELP vmesh_xds_nacks_total xDS responses the proxy rejected (NACKed) and kept its previous config, by resource type.
# TYPE vmesh_xds_nacks_total counter
vmesh_xds_nacks_total{type="Secret"} 1
`
	names := []string{
		"vmesh_active_connections", "vmesh_connections_total", "vmesh_received_bytes_total", "vmesh_sent_bytes_total",
		"vmesh_requests_total", "vmesh_tls_handshake_failures_total", "vmesh_xds_updates_total", "vmesh_xds_nacks_total",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
}

// TestMetricsLatencyHistogram: RequestDone observes seconds into the
// histogram of its labels, in the buckets the docs promise.
func TestMetricsLatencyHistogram(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	m.RequestDone("vmesh/outbound", "outbound_orders", "orders", 200, 300*time.Microsecond)
	m.RequestDone("vmesh/outbound", "outbound_orders", "orders", 500, 2*time.Second)
	m.RequestDone("vmesh/outbound", "outbound_orders", "orders", 200, time.Minute)
	m.RequestDone("vmesh/inbound", "inbound_orders", "local/orders", 200, time.Millisecond)

	h := histogram(t, reg, "vmesh_request_duration_seconds", map[string]string{
		"direction": "outbound", "service": "orders", "listener": "vmesh/outbound", "upstream": "orders",
	})
	if got := h.GetSampleCount(); got != 3 {
		t.Errorf("sample count %d, want 3 (the inbound request is another series)", got)
	}
	if got, want := h.GetSampleSum(), 0.0003+2+60; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("sample sum %v, want %v", got, want)
	}
	var bounds []float64
	cum := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		cum[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	if len(bounds) != len(LatencyBuckets) || bounds[0] != 0.0005 || bounds[len(bounds)-1] != 30 {
		t.Errorf("buckets %v, want 0.5 ms .. 30 s (%v)", bounds, LatencyBuckets)
	}
	// 300 µs lands in the first bucket, 2 s by 2.5 s, a minute in none.
	for le, want := range map[float64]uint64{0.0005: 1, 1: 1, 2.5: 2, 30: 2} {
		if cum[le] != want {
			t.Errorf("bucket le=%v: %d, want %d", le, cum[le], want)
		}
	}
}

func histogram(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) *dto.Histogram {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetHistogram()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}

// TestMetricsNil: a nil *Metrics records nothing and does not panic, which
// is what lets the proxy call it unconditionally.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.RequestDone("l", "inbound_a", "u", 200, time.Millisecond)
	m.ConnOpened("l")
	m.ConnClosed("l", time.Now())
	m.Bytes("l", "inbound_a", "u", 1, 1)
	m.TLSHandshakeFailed("downstream", "l")
	m.XDSUpdate(listenerTypeURL)
	m.XDSNack(listenerTypeURL)
}

// TestMetricsRegisterTwice: a second NewMetrics on the same registry shares
// the first one's series rather than panicking on the duplicate names.
func TestMetricsRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewMetrics(reg)
	b := NewMetrics(reg)
	a.ConnOpened("l")
	b.ConnOpened("l")
	if got := testutil.ToFloat64(a.conns.WithLabelValues("l")); got != 2 {
		t.Errorf("vmesh_connections_total{listener=l} = %v, want 2 (both counted in one series)", got)
	}
	if n, err := testutil.GatherAndCount(reg, "vmesh_connections_total"); err != nil || n != 1 {
		t.Errorf("%d vmesh_connections_total series (%v), want 1", n, err)
	}
	// Unregistered metrics still count, for a proxy nobody scrapes.
	c := NewMetrics(nil)
	c.XDSNack(listenerTypeURL)
	if got := testutil.ToFloat64(c.xdsNacks.WithLabelValues("Listener")); got != 1 {
		t.Errorf("unregistered XDSNack: %v, want 1", got)
	}
}

func TestSplitStatPrefix(t *testing.T) {
	for _, tc := range []struct{ stat, dir, svc string }{
		{"inbound_orders", "inbound", "orders"},
		{"outbound_orders", "outbound", "orders"},
		{"upstream_orders", "upstream", "orders"},
		{"inbound_my_svc", "inbound", "my_svc"},
		{"inbound", "", "inbound"},
		{"inboundorders", "", "inboundorders"},
		{"passthrough", "", "passthrough"},
		{"", "", ""},
	} {
		if dir, svc := splitStatPrefix(tc.stat); dir != tc.dir || svc != tc.svc {
			t.Errorf("splitStatPrefix(%q) = %q, %q; want %q, %q", tc.stat, dir, svc, tc.dir, tc.svc)
		}
	}
}

func TestMetricType(t *testing.T) {
	for in, want := range map[string]string{
		listenerTypeURL: "Listener",
		claTypeURL:      "ClusterLoadAssignment",
		secretTypeURL:   "Secret",
		"type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RouteConfiguration",
		"Cluster": "Cluster",
	} {
		if got := metricType(in); got != want {
			t.Errorf("metricType(%q) = %q, want %q", in, got, want)
		}
	}
}
