package xds

import (
	"context"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// TestServerMetrics: a SotW client that connects, ACKs a cluster response
// and NACKs the next one moves the connected gauges and the per-type
// counters; once it leaves, the gauges are back to zero.
func TestServerMetrics(t *testing.T) {
	st := newTestStore(t)
	st.register(t, discovery.Instance{ID: "web-1", Service: "web", Port: 8080})
	reg := prometheus.NewPedanticRegistry()
	srv, err := NewServer(Config{Store: st.Store, TCPAddr: "127.0.0.1:0", Logger: testkit.Logger(t), Metrics: NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	m := srv.cfg.Metrics

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := dial(t, srv.Addrs()[0].String()).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := &core.Node{Id: "envoy-1", UserAgentName: "envoy"}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	first := recv(t, 2*time.Second, stream.Recv)
	if got := testutil.ToFloat64(m.clients); got != 1 {
		t.Errorf("connected clients = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.streams); got != 1 {
		t.Errorf("streams = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.responses.WithLabelValues("Cluster")); got != 1 {
		t.Errorf(`responses{type="Cluster"} = %v, want 1`, got)
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 2*time.Second, "the ACK to be counted", func() bool {
		return testutil.ToFloat64(m.acks.WithLabelValues("Cluster")) == 1
	})

	st.register(t, discovery.Instance{ID: "api-1", Service: "api", Port: 9090})
	second := recv(t, 2*time.Second, stream.Recv)
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{
		TypeUrl: resource.ClusterType, VersionInfo: first.VersionInfo, ResponseNonce: second.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "cluster api: bad config"},
	}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 2*time.Second, "the NACK to be counted", func() bool {
		return testutil.ToFloat64(m.nacks.WithLabelValues("Cluster")) == 1
	})
	// A type URL the server does not serve cannot add a series.
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{
		TypeUrl: "type.googleapis.com/made.up.Thing", ResponseNonce: "x",
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "nope"},
	}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 2*time.Second, "the made-up NACK to be counted as other", func() bool {
		return testutil.ToFloat64(m.nacks.WithLabelValues("other")) == 1
	})

	want := `
# HELP vmesh_xds_server_acks_total ACKs received from clients, by resource type.
# TYPE vmesh_xds_server_acks_total counter
vmesh_xds_server_acks_total{type="Cluster"} 1
# HELP vmesh_xds_server_nacks_total NACKs (rejected responses) received from clients, by resource type.
# TYPE vmesh_xds_server_nacks_total counter
vmesh_xds_server_nacks_total{type="Cluster"} 1
vmesh_xds_server_nacks_total{type="other"} 1
# HELP vmesh_xds_server_responses_total xDS responses pushed to clients, by resource type.
# TYPE vmesh_xds_server_responses_total counter
vmesh_xds_server_responses_total{type="Cluster"} 2
# HELP vmesh_xds_server_build_errors_total Snapshot builds that failed; the clients concerned keep their previous config.
# TYPE vmesh_xds_server_build_errors_total counter
vmesh_xds_server_build_errors_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"vmesh_xds_server_acks_total", "vmesh_xds_server_nacks_total", "vmesh_xds_server_responses_total", "vmesh_xds_server_build_errors_total"); err != nil {
		t.Error(err)
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}

	cancel()
	testkit.WaitFor(t, 2*time.Second, "the gauges to drop to zero", func() bool {
		return testutil.ToFloat64(m.clients) == 0 && testutil.ToFloat64(m.streams) == 0
	})
}

// TestServerMetricsNil: a nil *Metrics records nothing, and a second
// NewMetrics on one registry shares the series.
func TestServerMetricsNil(t *testing.T) {
	var m *Metrics
	m.connected(1, 1)
	m.response(resource.ClusterType)
	m.answer(resource.ClusterType, true)
	m.buildFailed()

	reg := prometheus.NewRegistry()
	a, b := NewMetrics(reg), NewMetrics(reg)
	a.answer(resource.ListenerType, false)
	b.answer(resource.ListenerType, false)
	if got := testutil.ToFloat64(a.acks.WithLabelValues("Listener")); got != 2 {
		t.Errorf("acks = %v, want 2 (one series)", got)
	}
}
