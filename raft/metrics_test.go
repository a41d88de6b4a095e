package raft

import (
	"time"

	"context"
	"testing"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vmesh/vmesh/discovery"
)

// gauges gathers reg into name -> value. Of a family with labels it sums
// the series that carry label=value; a family without labels counts as is.
func gauges(t *testing.T, reg *prometheus.Registry, label, value string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) > 0 && !hasLabel(m, label, value) {
				continue
			}
			out[mf.GetName()] += m.GetGauge().GetValue()
		}
	}
	return out
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestCollector: before a server or a catalog exists the collector reports
// nothing (and does not fail the scrape); once a single bootstrapped node
// has led and applied a write, it reports leader state, indexes and the
// catalog's index.
func TestCollector(t *testing.T) {
	var (
		srv   *Server
		store *discovery.Store
	)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() *Server { return srv }, nil, func() *discovery.Store { return store }))
	if got := gauges(t, reg, "", ""); len(got) != 0 {
		t.Fatalf("with no server and no catalog: %v, want nothing", got)
	}

	store = discovery.NewStore()
	s := openServer(t, t.TempDir(), store, serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	idx, err := s.Apply(context.Background(), kvCmd("k", "v"))
	if err != nil {
		t.Fatal(err)
	}
	srv = s

	// raft publishes its applied index a moment after the FSM applied.
	testkit.WaitFor(t, 5*time.Second, "vmesh_raft_applied_index to reach the write", func() bool {
		return gauges(t, reg, "state", "leader")["vmesh_raft_applied_index"] >= float64(idx)
	})
	got := gauges(t, reg, "state", "leader")
	for name, want := range map[string]float64{
		"vmesh_raft_state":                1,
		"vmesh_raft_leader":               1,
		"vmesh_raft_last_contact_seconds": 0,
		"vmesh_raft_peers":                0,
		"vmesh_catalog_index":             float64(store.LastIndex()),
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v := got["vmesh_raft_applied_index"]; v < float64(idx) {
		t.Errorf("vmesh_raft_applied_index = %v, want >= %d (the write's index)", v, idx)
	}
	if v := got["vmesh_raft_term"]; v < 1 {
		t.Errorf("vmesh_raft_term = %v, want >= 1", v)
	}
}

// TestMetricsSinkIsOnePerProcess: the go-metrics global is process-wide,
// so every caller gets the same sink and it carries raft's own series.
func TestMetricsSinkIsOnePerProcess(t *testing.T) {
	a, err := MetricsSink()
	if err != nil {
		t.Fatal(err)
	}
	b, err := MetricsSink()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("two sinks in one process")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(a)
	s := openServer(t, t.TempDir(), discovery.NewStore(), serverOpts{})
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)
	if _, err := s.Apply(context.Background(), kvCmd("k", "v")); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "raft_apply" {
			return
		}
	}
	t.Error("no raft_apply series after an apply")
}
