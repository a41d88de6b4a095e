package raft

import (
	"regexp"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// go-metrics names its series after hashicorp/raft's and raft-boltdb's
// keys: camelCase ("raft_boltdb_logSize"), counters without _total, times
// in milliseconds, no vmesh_ prefix, and some with a peer's ID in the
// name. MetricsGatherer serves them renamed to Prometheus' conventions
// (promlint-clean); docs/metrics.md lists the renames.

// MetricsGatherer gathers raft's go-metrics series (the process-wide
// sink, MetricsSink) under their vmesh names.
func MetricsGatherer() (prometheus.Gatherer, error) {
	if _, err := MetricsSink(); err != nil {
		return nil, err
	}
	return renamedGatherer{goMetrics.reg}, nil
}

type renamedGatherer struct{ g prometheus.Gatherer }

func (r renamedGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := r.g.Gather()
	out := mfs[:0]
	for _, mf := range mfs {
		if mf = renameFamily(mf); mf != nil {
			out = append(out, mf)
		}
	}
	return out, err
}

// perPeer are go-metrics keys that repeat a labelled series with the
// peer's ID in the name (one name per peer, unbounded): the labelled
// ones are kept.
var perPeer = []string{"raft_replication_heartbeat_", "raft_replication_installSnapshot_",
	"raft_replication_appendEntries_rpc_", "raft_replication_appendEntries_logs_"}

// notTimes are samples (summaries) that are not durations; the rest
// (MeasureSince) are milliseconds. bytes are sizes.
var (
	notTimes = map[string]string{
		"raft_fsm_applyBatchNum": "", "raft_boltdb_logsPerBatch": "", "raft_boltdb_writeCapacity": "",
		"raft_thread_main_saturation": "", "raft_thread_fsm_saturation": "",
		"raft_boltdb_logSize": "_bytes", "raft_boltdb_logBatchSize": "_bytes",
	}
	// msGauges are gauges in milliseconds.
	msGauges = map[string]bool{"raft_fsm_lastRestoreDuration": true, "raft_log_oldestLogAge": true}
	// dropped collide with vmesh's own raft collector (vmesh_raft_peers
	// counts the other voters, this one every server).
	dropped = map[string]bool{"raft_peers": true}
)

// renameFamily is mf under its vmesh name, its values in base units (nil:
// dropped).
func renameFamily(mf *dto.MetricFamily) *dto.MetricFamily {
	name := mf.GetName()
	if dropped[name] {
		return nil
	}
	for _, p := range perPeer {
		if strings.HasPrefix(name, p) {
			return nil
		}
	}
	newName, scale := RenameGoMetric(name, mf.GetType())
	if newName == name && scale == 1 && !camelLabels(mf) {
		return mf
	}
	mf = proto.Clone(mf).(*dto.MetricFamily)
	mf.Name = proto.String(newName)
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			l.Name = proto.String(snake(l.GetName())) // "rpcType" is rpc_type
		}
	}
	if scale != 1 {
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				g.Value = proto.Float64(g.GetValue() * scale)
			}
			if s := m.GetSummary(); s != nil {
				s.SampleSum = proto.Float64(s.GetSampleSum() * scale)
				for _, q := range s.GetQuantile() {
					q.Value = proto.Float64(q.GetValue() * scale)
				}
			}
		}
	}
	return mf
}

func camelLabels(mf *dto.MetricFamily) bool {
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if snake(l.GetName()) != l.GetName() {
				return true
			}
		}
	}
	return false
}

// RenameGoMetric is the vmesh name of a go-metrics series of type typ,
// and the factor that brings its values to base units (milliseconds to
// seconds): "raft_commitTime" (summary) is vmesh_raft_commit_time_seconds
// ×0.001, "raft_apply" (counter) vmesh_raft_apply_total.
func RenameGoMetric(name string, typ dto.MetricType) (string, float64) {
	base := name
	scale := 1.0
	n := "vmesh_" + snake(strings.TrimPrefix(name, "vmesh_"))
	switch typ {
	case dto.MetricType_COUNTER:
		if !strings.HasSuffix(n, "_total") {
			n += "_total"
		}
	case dto.MetricType_SUMMARY, dto.MetricType_HISTOGRAM:
		if unit, ok := notTimes[base]; ok {
			n += unit
		} else {
			n, scale = n+"_seconds", 0.001
		}
	case dto.MetricType_GAUGE:
		if msGauges[base] {
			n, scale = n+"_seconds", 0.001
		}
	}
	return n, scale
}

var (
	lowerUpper = regexp.MustCompile(`([a-z0-9])([A-Z])`)
	acronym    = regexp.MustCompile(`([A-Z]+)([A-Z][a-z])`)
)

// snake is s in snake_case: "getRPCType" is "get_rpc_type".
func snake(s string) string {
	s = acronym.ReplaceAllString(s, "${1}_${2}")
	s = lowerUpper.ReplaceAllString(s, "${1}_${2}")
	return strings.ToLower(s)
}
