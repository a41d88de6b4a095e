package mesh

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	gometrics "github.com/armon/go-metrics"
	gmprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	if sink, err := goMetricsSink(); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	} else if err := reg.Register(sink); err != nil {
		a.logger.Warn("raft metrics are not exported", "err", err)
	}
	reg.MustRegister(raftCollector{a})
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

var goMetrics struct {
	once sync.Once
	sink *gmprom.PrometheusSink
	err  error
}

// goMetricsSink installs, once per process, a Prometheus sink as the global
// of github.com/armon/go-metrics, which is where hashicorp/raft and
// raft-boltdb send their metrics (through hashicorp/go-metrics/compat,
// built without the hashicorpmetrics tag). The global is process-wide, so
// the sink is too: every agent's registry collects the same sink, and
// several agents in one process (tests) see each other's raft_* series.
// Series never expire, so a counter that stops moving keeps its value for
// rate().
func goMetricsSink() (*gmprom.PrometheusSink, error) {
	goMetrics.once.Do(func() {
		// NewPrometheusSinkFrom insists on registering the sink somewhere;
		// the agents' registries are where it is scraped from.
		sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{
			Name: "vmesh_go_metrics_sink", Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			goMetrics.err = fmt.Errorf("creating the go-metrics sink: %w", err)
			return
		}
		cfg := gometrics.DefaultConfig("")
		// No host name in keys, no extra runtime poller (the Go collector
		// covers that, and it would be a goroutine that never ends).
		cfg.HostName, cfg.EnableHostname, cfg.EnableRuntimeMetrics = "", false, false
		if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
			goMetrics.err = fmt.Errorf("installing the go-metrics sink: %w", err)
			return
		}
		goMetrics.sink = sink
	})
	return goMetrics.sink, goMetrics.err
}

// raftCollector reports this agent's raft state at scrape time, from
// raft's own statistics; nothing before the agent has a cluster.
type raftCollector struct{ a *Agent }

var (
	raftStateDesc = prometheus.NewDesc("vmesh_raft_state",
		"1 for this node's raft state (follower, candidate, leader, shutdown), 0 for the others.", []string{"state"}, nil)
	raftLeaderDesc = prometheus.NewDesc("vmesh_raft_leader",
		"1 when this node is the raft leader.", nil, nil)
	raftTermDesc = prometheus.NewDesc("vmesh_raft_term",
		"The current raft term.", nil, nil)
	raftPeersDesc = prometheus.NewDesc("vmesh_raft_peers",
		"Other voters in this node's latest raft configuration.", nil, nil)
	raftLastContactDesc = prometheus.NewDesc("vmesh_raft_last_contact_seconds",
		"Since this node last heard from the leader (0 on the leader).", nil, nil)
	raftIndexDescs = []struct {
		stat string
		desc *prometheus.Desc
	}{
		{"last_log_index", prometheus.NewDesc("vmesh_raft_last_log_index", "The index of the last entry in this node's raft log.", nil, nil)},
		{"commit_index", prometheus.NewDesc("vmesh_raft_commit_index", "The highest raft index this node knows is committed.", nil, nil)},
		{"applied_index", prometheus.NewDesc("vmesh_raft_applied_index", "The highest raft index applied to this node's catalog.", nil, nil)},
		{"last_snapshot_index", prometheus.NewDesc("vmesh_raft_last_snapshot_index", "The raft index of this node's latest snapshot.", nil, nil)},
		{"first_log_index", prometheus.NewDesc("vmesh_raft_first_log_index", "The first raft index still in the log (compaction).", nil, nil)},
	}
	catalogIndexDesc = prometheus.NewDesc("vmesh_catalog_index",
		"The highest raft index of any catalog table on this node.", nil, nil)
)

var raftStates = []string{"follower", "candidate", "leader", "shutdown"}

func (raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{raftStateDesc, raftLeaderDesc, raftTermDesc, raftPeersDesc, raftLastContactDesc, catalogIndexDesc} {
		ch <- d
	}
	for _, d := range raftIndexDescs {
		ch <- d.desc
	}
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	if st := c.a.store; st != nil {
		ch <- prometheus.MustNewConstMetric(catalogIndexDesc, prometheus.GaugeValue, float64(st.LastIndex()))
	}
	srv := c.a.ref.get()
	if srv == nil {
		return
	}
	stats := srv.Stats()
	state := strings.ToLower(stats["state"])
	for _, s := range raftStates {
		ch <- prometheus.MustNewConstMetric(raftStateDesc, prometheus.GaugeValue, boolFloat(s == state), s)
	}
	ch <- prometheus.MustNewConstMetric(raftLeaderDesc, prometheus.GaugeValue, boolFloat(state == "leader"))
	ch <- prometheus.MustNewConstMetric(raftLastContactDesc, prometheus.GaugeValue, srv.LastContact().Seconds())
	gauge := func(d *prometheus.Desc, stat string) {
		if v, err := strconv.ParseUint(stats[stat], 10, 64); err == nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
		}
	}
	gauge(raftTermDesc, "term")
	gauge(raftPeersDesc, "num_peers")
	for _, d := range raftIndexDescs {
		gauge(d.desc, d.stat)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
