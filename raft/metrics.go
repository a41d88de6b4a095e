package raft

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	gometrics "github.com/armon/go-metrics"
	gmprom "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/discovery"
)

var goMetrics struct {
	once sync.Once
	sink *summarySink
	reg  *prometheus.Registry // the sink's, gathered by MetricsGatherer
	err  error
}

// MetricsSink installs, once per process, a Prometheus sink as the global
// of github.com/armon/go-metrics, which is where hashicorp/raft and
// raft-boltdb send their metrics (through hashicorp/go-metrics/compat,
// built without the hashicorpmetrics tag), and returns it as a collector.
// The global is process-wide, so the sink is too: every agent's registry
// collects the same sink, and several agents in one process (tests) see
// each other's raft_* series. Series never expire, so a counter that stops
// moving keeps its value for rate().
func MetricsSink() (prometheus.Collector, error) {
	goMetrics.once.Do(func() {
		// NewPrometheusSinkFrom insists on registering the sink somewhere:
		// a registry of its own, never gathered. The agents' registries
		// collect summarySink (metrics_summary.go), which wraps it, and
		// reg is MetricsGatherer's.
		inner, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{
			Name: "vmesh_go_metrics_sink", Registerer: prometheus.NewRegistry(),
		})
		if err != nil {
			goMetrics.err = fmt.Errorf("creating the go-metrics sink: %w", err)
			return
		}
		sink, reg := &summarySink{PrometheusSink: inner}, prometheus.NewRegistry()
		if err := reg.Register(sink); err != nil {
			goMetrics.err = fmt.Errorf("registering the go-metrics sink: %w", err)
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
		goMetrics.sink, goMetrics.reg = sink, reg
	})
	if goMetrics.err != nil {
		return nil, goMetrics.err
	}
	return goMetrics.sink, nil
}

// NewCollector reports a node's raft state at scrape time, from raft's own
// statistics, and its catalog's index. Both are read through functions
// because the collector is registered before either exists (so raft's
// first metrics, the election, are kept) and the server is replaced when
// the node joins a cluster; a nil server or store reports nothing of it.
// On a client, client gives its replica's staleness instead.
func NewCollector(server func() *Server, client func() *Client, catalog func() *discovery.Store) prometheus.Collector {
	return collector{server: server, client: client, catalog: catalog}
}

type collector struct {
	server  func() *Server
	client  func() *Client
	catalog func() *discovery.Store
}

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
	replicaLastContactDesc = prometheus.NewDesc("vmesh_replica_last_contact_seconds",
		"On a client: since a server was last heard on the replica stream (how stale the replica may be); -1 before the first contact.", nil, nil)
	replicaIndexDesc = prometheus.NewDesc("vmesh_replica_index",
		"On a client: the raft index the replica holds.", nil, nil)
	replicaSnapshotsDesc = prometheus.NewDesc("vmesh_replica_snapshots_total",
		"On a client: full snapshots received (the first, and each resume a server could not serve from its history).", nil, nil)
)

var raftStates = []string{"follower", "candidate", "leader", "shutdown"}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{raftStateDesc, raftLeaderDesc, raftTermDesc, raftPeersDesc, raftLastContactDesc, catalogIndexDesc,
		replicaLastContactDesc, replicaIndexDesc, replicaSnapshotsDesc} {
		ch <- d
	}
	for _, d := range raftIndexDescs {
		ch <- d.desc
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if st := c.catalog(); st != nil {
		ch <- prometheus.MustNewConstMetric(catalogIndexDesc, prometheus.GaugeValue, float64(st.LastIndex()))
	}
	if cl := c.clientOrNil(); cl != nil {
		r := cl.Replica()
		since := -1.0
		if lc := r.LastContact(); !lc.IsZero() {
			since = time.Since(lc).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(replicaLastContactDesc, prometheus.GaugeValue, since)
		ch <- prometheus.MustNewConstMetric(replicaIndexDesc, prometheus.GaugeValue, float64(r.LastIndex()))
		ch <- prometheus.MustNewConstMetric(replicaSnapshotsDesc, prometheus.CounterValue, float64(r.Snapshots()))
	}
	srv := c.server()
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

func (c collector) clientOrNil() *Client {
	if c.client == nil {
		return nil
	}
	return c.client()
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
