package raft

import (
	"testing"
	"time"

	gometrics "github.com/armon/go-metrics"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func TestRenameGoMetric(t *testing.T) {
	for _, tc := range []struct {
		name  string
		typ   dto.MetricType
		want  string
		scale float64
	}{
		{"raft_apply", dto.MetricType_COUNTER, "vmesh_raft_apply_total", 1},
		{"raft_commitTime", dto.MetricType_SUMMARY, "vmesh_raft_commit_time_seconds", 0.001},
		{"raft_net_getRPCType", dto.MetricType_SUMMARY, "vmesh_raft_net_get_rpc_type_seconds", 0.001},
		{"raft_boltdb_logSize", dto.MetricType_SUMMARY, "vmesh_raft_boltdb_log_size_bytes", 1},
		{"raft_fsm_applyBatchNum", dto.MetricType_SUMMARY, "vmesh_raft_fsm_apply_batch_num", 1},
		{"raft_boltdb_freePageBytes", dto.MetricType_GAUGE, "vmesh_raft_boltdb_free_page_bytes", 1},
		{"raft_fsm_lastRestoreDuration", dto.MetricType_GAUGE, "vmesh_raft_fsm_last_restore_duration_seconds", 0.001},
		{"raft_state_follower", dto.MetricType_COUNTER, "vmesh_raft_state_follower_total", 1},
	} {
		if got, scale := RenameGoMetric(tc.name, tc.typ); got != tc.want || scale != tc.scale {
			t.Errorf("RenameGoMetric(%s, %v) = %s ×%v, want %s ×%v", tc.name, tc.typ, got, scale, tc.want, tc.scale)
		}
	}
}

// TestMetricsGathererLintClean: raft's kinds of go-metrics series, as the
// sink exports them, come out of MetricsGatherer promlint-clean, times in
// seconds, and without the per-peer names.
func TestMetricsGathererLintClean(t *testing.T) {
	g, err := MetricsGatherer()
	if err != nil {
		t.Fatal(err)
	}
	gometrics.IncrCounter([]string{"raft", "boltdb", "txstats", "cursorCount"}, 1)
	gometrics.MeasureSince([]string{"raft", "commitTime"}, time.Now().Add(-1500*time.Millisecond))
	gometrics.AddSample([]string{"raft", "boltdb", "logSize"}, 100)
	gometrics.SetGauge([]string{"raft", "peers"}, 3)
	gometrics.SetGauge([]string{"raft", "fsm", "lastRestoreDuration"}, 2000)
	gometrics.MeasureSince([]string{"raft", "replication", "heartbeat", "0a1b-peer"}, time.Now())
	gometrics.MeasureSinceWithLabels([]string{"raft", "net", "rpcDecode"}, time.Now(), []gometrics.Label{{Name: "rpcType", Value: "AppendEntries"}})
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	if mf := byName["vmesh_raft_commit_time_seconds"]; mf == nil || mf.GetMetric()[0].GetSummary().GetSampleSum() < 1.4 || mf.GetMetric()[0].GetSummary().GetSampleSum() > 100 {
		t.Errorf("vmesh_raft_commit_time_seconds = %v; want a sum of about 1.5 s", mf)
	}
	if mf := byName["vmesh_raft_fsm_last_restore_duration_seconds"]; mf == nil || mf.GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Errorf("vmesh_raft_fsm_last_restore_duration_seconds = %v; want 2", mf)
	}
	for _, name := range []string{"vmesh_raft_boltdb_txstats_cursor_count_total", "vmesh_raft_boltdb_log_size_bytes"} {
		if byName[name] == nil {
			t.Errorf("no %s among %v", name, keys(byName))
		}
	}
	for name := range byName {
		if name == "vmesh_raft_peers" || name == "raft_replication_heartbeat_0a1b_peer" || len(name) < 6 || name[:6] != "vmesh_" {
			t.Errorf("%s is exported", name)
		}
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
