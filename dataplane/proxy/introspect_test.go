package proxy_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestIntrospection: the proxy reports its readiness (PRE_INITIALIZING
// before any stream, LIVE once listeners and clusters are applied), its
// listeners, its clusters with each host's counters after traffic, the
// config it applied with the ACKed version, and the cluster series in
// Prometheus, lint-clean.
func TestIntrospection(t *testing.T) {
	a := namedServer(t, "a")
	cp := startControlPlane(t)
	reg := prometheus.NewRegistry()
	cfg := proxy.Config{XDSAddr: cp.addr, Node: "node-x", MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard(), Metrics: proxy.NewMetrics(reg)}
	idle, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := idle.State(); got != proxy.StatePreInitializing {
		t.Errorf("before Run: state %s, want %s", got, proxy.StatePreInitializing)
	}
	cp.set(t, "7", []types.Resource{tcpListener(t, "l1", "127.0.0.1:0", "c")}, []types.Resource{staticCluster("c", a)})
	p := startProxy(t, cfg)
	testkit.WaitFor(t, 5*time.Second, "LIVE", func() bool { return p.State() == proxy.StateLive })
	if st := p.Status(); st[resource.ListenerType].Acked != "7" {
		t.Fatalf("LIVE before version 7 was ACKed: %+v", st)
	}

	ls := p.Listeners()
	if len(ls) != 1 || ls[0].Name != "l1" || ls[0].Address != "127.0.0.1:0" || ls[0].Bound == "" {
		t.Fatalf("Listeners() = %+v; want l1 configured on 127.0.0.1:0 and bound", ls)
	}
	for i := range 3 {
		c, err := net.DialTimeout("tcp", ls[0].Bound, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := roundTrip(c, bufio.NewReader(c), "x"); err != nil || got != "a:x" {
			t.Fatalf("connection %d = %q, %v", i, got, err)
		}
		c.Close()
	}
	cs := p.Clusters()
	if len(cs) != 1 || cs[0].Name != "c" || len(cs[0].Hosts) != 1 {
		t.Fatalf("Clusters() = %+v; want c with one host", cs)
	}
	h := cs[0].Hosts[0]
	if h.Address != a || h.HealthFlags != "healthy" || h.Ejected || h.Stats["rq_total"] != 3 || h.Stats["rq_success"] != 3 || h.Stats["cx_total"] != 3 {
		t.Errorf("host = %+v; want %s healthy with 3 requests and connections", h, a)
	}
	if s := cs[0].Stats; s["upstream_rq_total"] != 3 || s["upstream_cx_total"] != 3 || cs[0].Thresholds["max_connections"] != 1024 {
		t.Errorf("cluster stats %v, thresholds %v", s, cs[0].Thresholds)
	}
	if got := proxy.CounterValue(t, reg, "vmesh_upstream_requests_total", map[string]string{"cluster": "c", "outcome": "success"}); got != 3 {
		t.Errorf("vmesh_upstream_requests_total{cluster=c,outcome=success} = %v, want 3", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}

	dump := p.ConfigDump()
	js, err := protojson.Marshal(dump)
	if err != nil {
		t.Fatal(err)
	}
	var ld adminv3.ListenersConfigDump
	var found bool
	for _, c := range dump.GetConfigs() {
		if c.MessageIs(&ld) {
			found = true
			if err := c.UnmarshalTo(&ld); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !found || ld.GetVersionInfo() != "7" || len(ld.GetDynamicListeners()) != 1 ||
		ld.GetDynamicListeners()[0].GetActiveState().GetVersionInfo() != "7" || ld.GetDynamicListeners()[0].GetActiveState().GetLastUpdated() == nil {
		t.Errorf("listeners dump = %v; want l1 active at version 7", &ld)
	}
	if !strings.Contains(string(js), `"name":"l1"`) || !strings.Contains(string(js), "ClustersConfigDump") {
		t.Errorf("config dump JSON lacks l1 or the clusters: %s", js)
	}
}
