// Package bench measures vmesh's control-plane write path against the floor
// it stands on, so that results read as ratios rather than absolute numbers
// that only mean something on the machine that produced them.
//
// Each benchmark runs with 1 and with 64 concurrent writers, splits b.N
// across them, records every operation's latency and reports p50-ms,
// p99-ms and a throughput metric:
//
//   - BenchmarkBoltFsyncBaseline: one bbolt db.Update per operation, each
//     writing a 240-byte value with fsync on, as raft-boltdb does for one
//     log entry. Concurrent writers each run their own Update, which bbolt
//     serializes: the floor with no grouping ("txns/s").
//   - BenchmarkRaftApply: register-service commands through raft.Server.Apply
//     on a bootstrapped single node with its real bbolt log ("applies/s").
//     Raft's BatchApplyCh may put many concurrent applies in one fsync:
//     "entries/txn", read from raft-boltdb's metrics, says how many it did,
//     and "entry-bytes" how big a log entry is.
//   - BenchmarkHTTPRegister: PUT /v1/agent/service/register, as consul/api
//     sends it, against an in-process agent ("regs/s"); its baseline is
//     BenchmarkRaftApply with the same number of writers.
//
// BenchmarkXDSBuild and BenchmarkXDSPropagation (xds_test.go) measure
// the xDS translation for 100 to 10,000 services against the catalog read
// it starts from, and change-to-client latency with 1 and 100 clients.
//
// BenchmarkClusterPropagation (cluster_test.go) measures how long a
// registration on one agent takes to be visible on every agent of a 3, 5
// and 10 agent cluster, against the register call's own latency.
//
// Every benchmark opens fresh state in b.TempDir() (on the disk that
// holds os.TempDir) and fails on the first error; none asserts anything
// about speed. Nothing here runs without -bench. The benchmarks want
// different iteration counts, so run them, and print the ratios, with
//
//	bench/run.sh      # or: make bench
//
// or one family by hand, e.g.
//
//	go test -run '^$' -bench '^Benchmark(BoltFsyncBaseline|RaftApply|HTTPRegister)$' -benchtime=30000x ./bench/
//	go test -run '^$' -bench '^BenchmarkClusterPropagation$' -benchtime=100x ./bench/
//	go test -run '^$' -bench '^BenchmarkXDS' ./bench/
//
// The proxy benchmark (the data plane against a direct connection, nginx
// and HAProxy) is not a Go benchmark: it runs vmesh agents, nginx and
// HAProxy as processes and measures them from outside, so it is a script,
//
//	bench/proxy.sh    # or: make bench-proxy
//
// with its Go helpers in bench/proxybench (a minimal xDS server for a
// standalone `vmesh proxy`, the nginx/HAProxy certificates, the report)
// and bench/proxybench/loadgen (the backend and the load, on fortio's
// packages; a module of its own, so fortio is not a dependency of vmesh).
//
// docs/BENCHMARKS.md records measured results and the machine they came
// from.
package bench
