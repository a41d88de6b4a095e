package mesh

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/raft"
)

// newRegistry is a fresh Prometheus registry with the Go runtime and
// process collectors. Each agent (and `vmesh proxy`) has its own rather
// than the global default, so several agents in one test process do not
// collide.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// newAgentRegistry is the agent's registry: the runtime and process, raft's
// own metrics (the process-wide go-metrics sink) and this agent's raft
// state. The xDS server and the in-process proxy register theirs when they
// start.
func newAgentRegistry(a *Agent) *prometheus.Registry {
	reg := newRegistry()
	if sink, err := raft.MetricsSink(); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	} else if err := reg.Register(sink); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	}
	reg.MustRegister(raft.NewCollector(a.ref.get, func() *discovery.Store { return a.store }))
	return reg
}

// metricsHandler serves reg in the Prometheus text format (or OpenMetrics,
// when the scraper asks). A collector that fails costs its own series, not
// the scrape.
func metricsHandler(reg *prometheus.Registry, logger *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: true,
	})
}
