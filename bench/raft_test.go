package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/raft"
	bolt "go.etcd.io/bbolt"
)

// benchNode is the node every registered instance lives on.
const benchNode = "bench-node"

// registerCmd is instance i as PUT /v1/agent/service/register with
// {"ID":"svc-<i>","Name":"svc","Port":8080,"Tags":["a"]} builds it, so that
// BenchmarkHTTPRegister differs from BenchmarkRaftApply only by HTTP.
func registerCmd(i int) discovery.RegisterServiceRequest {
	return discovery.RegisterServiceRequest{Instance: discovery.Instance{
		Node: benchNode, ID: fmt.Sprintf("svc-%d", i), Service: "svc", Tags: []string{"a"},
		Port: 8080, Weights: discovery.Weights{Passing: 1, Warning: 1}, Source: "api",
	}}
}

// openRaft bootstraps a single-node raft with its bbolt log in a fresh temp
// dir, waits for it to lead and registers benchNode. The caller closes it.
func openRaft(b *testing.B) *raft.Server {
	b.Helper()
	srv, err := raft.Open(raft.Config{
		NodeID: "bench-node-id", Addr: "127.0.0.1:7400", DataDir: b.TempDir(),
		Bootstrap: true, Logger: testkit.Logger(b, slog.LevelError),
	}, discovery.NewStore())
	if err != nil {
		b.Fatalf("opening raft: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.WaitLeader(ctx); err != nil {
		srv.Close()
		b.Fatal(err)
	}
	node := discovery.Node{ID: "bench-node-id", Name: benchNode, Address: "127.0.0.1"}
	if _, err := srv.Apply(ctx, discovery.RegisterNodeRequest{Node: node}); err != nil {
		srv.Close()
		b.Fatalf("registering %s: %v", benchNode, err)
	}
	return srv
}

// BenchmarkRaftApply measures one register command through raft.Server.Apply:
// encode, append to the bbolt log (fsync), commit, apply to the catalog.
func BenchmarkRaftApply(b *testing.B) {
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			srv := openRaft(b)
			defer func() {
				if err := srv.Close(); err != nil {
					b.Errorf("closing raft: %v", err)
				}
			}()
			ctx := context.Background()
			sink := watchBatches(b)
			lat := runWriters(b, writers, func(i int) error {
				_, err := srv.Apply(ctx, registerCmd(i))
				return err
			})
			reportLatency(b, lat, "applies/s")
			sink.report(b)
		})
	}
}

// baselineValueSize is the size of the raft-boltdb log entry for
// registerCmd (the msgpack-encoded hraft.Log around the command): 238 bytes
// for "svc-1", a few more for longer IDs, as read back from raft.db.
const baselineValueSize = 240

// BenchmarkBoltFsyncBaseline is the floor under BenchmarkRaftApply: one
// bbolt transaction per operation putting one value under the next
// big-endian uint64 key (as raft-boltdb stores a log entry), fsync on.
// Concurrent writers each run their own Update; bbolt serializes them, so
// nothing is grouped.
func BenchmarkBoltFsyncBaseline(b *testing.B) {
	bucket := []byte("logs")
	value := make([]byte, baselineValueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	for _, writers := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "bolt.db"), 0o600, nil)
			if err != nil {
				b.Fatalf("opening bbolt: %v", err)
			}
			defer func() {
				if err := db.Close(); err != nil {
					b.Errorf("closing bbolt: %v", err)
				}
			}()
			if err := db.Update(func(tx *bolt.Tx) error {
				_, err := tx.CreateBucketIfNotExists(bucket)
				return err
			}); err != nil {
				b.Fatalf("creating bucket: %v", err)
			}
			var next atomic.Uint64
			lat := runWriters(b, writers, func(int) error {
				return db.Update(func(tx *bolt.Tx) error {
					key := binary.BigEndian.AppendUint64(nil, next.Add(1))
					return tx.Bucket(bucket).Put(key, value)
				})
			})
			reportLatency(b, lat, "txns/s")
		})
	}
}

// batchSink counts raft-boltdb's StoreLogs calls (one bbolt transaction,
// hence one fsync, each) and the entries and bytes they wrote, from the
// samples it emits through the global go-metrics. This is how a run shows
// whether concurrent applies were grouped.
type batchSink struct {
	metrics.BlackholeSink
	txns, entries, bytes atomic.Int64
}

// watchBatches installs a fresh batchSink as the global metrics sink until
// the benchmark ends.
func watchBatches(b *testing.B) *batchSink {
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics = false, false
	s := &batchSink{}
	if _, err := metrics.NewGlobal(cfg, s); err != nil {
		b.Fatalf("installing metrics sink: %v", err)
	}
	b.Cleanup(func() { metrics.NewGlobal(cfg, &metrics.BlackholeSink{}) })
	return s
}

func (s *batchSink) AddSample(key []string, val float32) { s.AddSampleWithLabels(key, val, nil) }

func (s *batchSink) AddSampleWithLabels(key []string, val float32, _ []metrics.Label) {
	if len(key) != 3 || key[0] != "raft" || key[1] != "boltdb" {
		return
	}
	switch key[2] {
	case "logsPerBatch":
		s.txns.Add(1)
		s.entries.Add(int64(val))
	case "logSize":
		s.bytes.Add(int64(val))
	}
}

// report adds entries/txn (mean entries per log write) and entry-bytes
// (mean encoded entry size). Without samples (raft built against another
// metrics package) it reports nothing rather than zeros.
func (s *batchSink) report(b *testing.B) {
	txns, entries := s.txns.Load(), s.entries.Load()
	if txns == 0 || entries == 0 {
		return
	}
	b.ReportMetric(float64(entries)/float64(txns), "entries/txn")
	b.ReportMetric(float64(s.bytes.Load())/float64(entries), "entry-bytes")
}
