package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// FdsPerConnection is fdsPerConnection, for the external tests.
const FdsPerConnection = fdsPerConnection

// counterValue is the value of counter name in reg whose series has every
// one of labels (0 when there is none). CounterValue exports it to the
// external tests.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// CounterValue is counterValue for the external tests.
var CounterValue = counterValue

// SetHTTPHeaderTimeout sets the request header timeout until the test
// ends (set it before the proxy starts).
func SetHTTPHeaderTimeout(t *testing.T, d time.Duration) {
	old := httpHeaderTimeout
	httpHeaderTimeout = d
	t.Cleanup(func() { httpHeaderTimeout = old })
}
