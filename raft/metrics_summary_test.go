package raft

import (
	"math"
	"testing"
	"time"

	gometrics "github.com/armon/go-metrics"
	gmprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func newTestSummarySink(t *testing.T) (*summarySink, *prometheus.Registry) {
	t.Helper()
	inner, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Name: "test_sink", Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s := &summarySink{PrometheusSink: inner}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	return s, reg
}

// A sample key becomes the summary series armon's sink made of it: the
// key's parts joined and cleaned, the labels, the 0.5/0.9/0.99 quantiles
// of the last 10 s and the count and sum of every sample; gauges and
// counters still go through armon's sink.
func TestSummarySinkSeries(t *testing.T) {
	s, reg := newTestSummarySink(t)
	now := time.Now()
	labels := []gometrics.Label{{Name: "peer", Value: "n2"}}
	for i := 1; i <= 100; i++ {
		s.observe([]string{"raft", "replication.append-entries"}, float64(i), labels, now.Add(-5*time.Second))
	}
	s.IncrCounter([]string{"raft", "apply"}, 3)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	if c := byName["raft_apply"]; c == nil || c.GetMetric()[0].GetCounter().GetValue() != 3 {
		t.Errorf("counter raft_apply = %v, want 3", c)
	}
	mf := byName["raft_replication_append_entries"]
	if mf == nil || mf.GetType() != dto.MetricType_SUMMARY || len(mf.GetMetric()) != 1 {
		t.Fatalf("summary family = %v", mf)
	}
	m := mf.GetMetric()[0]
	if !hasLabel(m, "peer", "n2") {
		t.Errorf("labels %v, want peer=n2", m.GetLabel())
	}
	sum := m.GetSummary()
	if sum.GetSampleCount() != 100 || sum.GetSampleSum() != 5050 {
		t.Errorf("count %d, sum %v; want 100, 5050", sum.GetSampleCount(), sum.GetSampleSum())
	}
	want := map[float64]float64{0.5: 50, 0.9: 90, 0.99: 99}
	if len(sum.GetQuantile()) != len(want) {
		t.Fatalf("quantiles %v, want %v", sum.GetQuantile(), want)
	}
	for _, q := range sum.GetQuantile() {
		if want[q.GetQuantile()] != q.GetValue() {
			t.Errorf("quantile %v = %v, want %v", q.GetQuantile(), q.GetValue(), want[q.GetQuantile()])
		}
	}
}

// Samples leave the window after 10 s (quantiles NaN, count and sum
// kept), and an empty window holds no slots; a busy series keeps at most
// summaryMaxSamples, the newest.
func TestWindowSummaryWindow(t *testing.T) {
	var w windowSummary
	w.desc = prometheus.NewDesc("x", "x", nil, nil)
	t0 := time.Now()
	w.observe(7, t0)
	if len(w.ring) != 8 {
		t.Errorf("one sample holds %d slots, want 8", len(w.ring))
	}
	m, err := w.metric(t0.Add(summaryMaxAge + time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.GetSummary().GetSampleCount() != 1 || d.GetSummary().GetSampleSum() != 7 {
		t.Errorf("count %d sum %v after the window, want 1 and 7", d.GetSummary().GetSampleCount(), d.GetSummary().GetSampleSum())
	}
	for _, q := range d.GetSummary().GetQuantile() {
		if !math.IsNaN(q.GetValue()) {
			t.Errorf("quantile %v = %v with no sample in the window, want NaN", q.GetQuantile(), q.GetValue())
		}
	}
	if w.ring != nil || w.n != 0 {
		t.Errorf("an expired window holds %d slots and %d samples", len(w.ring), w.n)
	}

	for i := range summaryMaxSamples + 500 {
		w.observe(float64(i), t0.Add(time.Duration(i)*time.Microsecond))
	}
	if w.n != summaryMaxSamples || len(w.ring) != summaryMaxSamples {
		t.Fatalf("n %d, slots %d; want %d", w.n, len(w.ring), summaryMaxSamples)
	}
	if oldest := w.ring[w.head].val; oldest != 500 {
		t.Errorf("oldest kept sample %v, want 500", oldest)
	}
}

func TestQuantile(t *testing.T) {
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
	for _, c := range []struct {
		vals []float64
		q    float64
		want float64
	}{{[]float64{3}, 0.99, 3}, {[]float64{1, 2}, 0.5, 1}, {[]float64{1, 2, 3, 4}, 0.9, 4}, {[]float64{1, 2, 3, 4}, 0.5, 2}} {
		if got := quantile(c.vals, c.q); got != c.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.vals, c.q, got, c.want)
		}
	}
}
