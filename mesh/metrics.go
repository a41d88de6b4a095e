package mesh

import (
	"github.com/prometheus/client_golang/prometheus"
	vmetrics "github.com/vmesh/vmesh/dataplane/metrics"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/mesh/cli"
	"github.com/vmesh/vmesh/raft"
)

// newAgentRegistry is the agent's registry: the runtime and process, and
// this agent's raft state; raft's own metrics (the process-wide go-metrics
// sink, renamed) are gathered beside it (gatherer). The xDS server and the in-process proxy register theirs when they
// start.
func newAgentRegistry(a *Agent) *prometheus.Registry {
	reg := vmetrics.NewRegistry()
	if g, err := raft.MetricsGatherer(); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	} else {
		a.raftMetrics = g
	}
	reg.MustRegister(raft.NewCollector(a.member.Server, a.member.Client, func() *discovery.Store { return a.store }))
	reg.MustRegister(buildInfoGauge(cli.Build()))
	return reg
}

// buildInfoGauge is vmesh_build_info, 1 with the build in its labels
// (the node_exporter/Prometheus convention), so a dashboard can join a
// node's series with the version it runs.
func buildInfoGauge(b cli.BuildInfo) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "vmesh_build_info",
		Help:        "Always 1; the labels name the build: version, VCS revision (\"unknown\" when not stamped) and Go version.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}

// gatherer is everything /metrics serves: the registry and raft's
// go-metrics series under their vmesh names.
func (a *Agent) gatherer() prometheus.Gatherer {
	if a.raftMetrics == nil {
		return a.metrics
	}
	return prometheus.Gatherers{a.metrics, a.raftMetrics}
}
