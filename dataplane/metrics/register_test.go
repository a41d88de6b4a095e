package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterSharesTheFirstSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "vmesh_test_total", Help: "test"}
	first := Register("test", reg, prometheus.NewCounterVec(opts, []string{"type"}))
	second := Register("test", reg, prometheus.NewCounterVec(opts, []string{"type"}))
	if first != second {
		t.Fatal("the second registration got a collector of its own, not the first one's")
	}
	second.WithLabelValues("a").Inc()
	if got := first.WithLabelValues("a"); got == nil {
		t.Fatal("no series")
	}
}

func TestRegisterPanicsOnAConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	Register("test", reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "vmesh_test_total", Help: "test"}))
	defer func() {
		r := recover()
		if msg, _ := r.(string); !strings.HasPrefix(msg, "test: registering metrics: ") {
			t.Fatalf("recovered %v, want a panic naming the component", r)
		}
	}()
	Register("test", reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "vmesh_test_total", Help: "other help"}))
}
