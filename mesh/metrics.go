package mesh

import (
	"github.com/prometheus/client_golang/prometheus"
	vmetrics "github.com/vmesh/vmesh/dataplane/metrics"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/raft"
)

// newAgentRegistry is the agent's registry: the runtime and process, raft's
// own metrics (the process-wide go-metrics sink) and this agent's raft
// state. The xDS server and the in-process proxy register theirs when they
// start.
func newAgentRegistry(a *Agent) *prometheus.Registry {
	reg := vmetrics.NewRegistry()
	if sink, err := raft.MetricsSink(); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	} else if err := reg.Register(sink); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	}
	reg.MustRegister(raft.NewCollector(a.member.Server, a.member.Client, func() *discovery.Store { return a.store }))
	return reg
}
