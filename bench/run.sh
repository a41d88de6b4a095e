#!/usr/bin/env bash
# Runs the benchmarks and prints the results as ratios to their baselines:
#   - control-plane writes: raft apply vs a bare bbolt fsync, and HTTP
#     register vs raft apply, for 1 and 64 writers;
#   - cluster propagation: register-to-visible-on-every-agent for 3, 5 and
#     10 in-process agents, vs the register call alone.
# About two and a half minutes on a 2-core VM (70 s + 65 s).
#
#   bench/run.sh                           # BENCHTIME=30000x PROP_BENCHTIME=100x COUNT=1
#   BENCHTIME=2000x PROP_BENCHTIME=20x bench/run.sh   # quick look
#   COUNT=3 bench/run.sh                   # ratios of the means of 3 runs
#
# The two sets run as separate go test commands because they need very
# different iteration counts: a write costs ~0.5 ms, a propagation ~0.1 s.
set -euo pipefail

cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
benchtime=${BENCHTIME:-30000x}
prop_benchtime=${PROP_BENCHTIME:-100x}
count=${COUNT:-1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

writes='^Benchmark(BoltFsyncBaseline|RaftApply|HTTPRegister)$'
prop='^BenchmarkClusterPropagation$'
echo "\$ go test -run '^\$' -bench '$writes' -benchtime=$benchtime -count $count ./bench/"
if ! go test -run '^$' -bench "$writes" -benchtime="$benchtime" -count "$count" ./bench/ 2>&1 | tee "$out"; then
	echo "run.sh: go test failed; no ratios" >&2
	exit 1
fi
echo "\$ go test -run '^\$' -bench '$prop' -benchtime=$prop_benchtime -count $count ./bench/"
if ! go test -run '^$' -bench "$prop" -benchtime="$prop_benchtime" -count "$count" ./bench/ 2>&1 | tee -a "$out"; then
	echo "run.sh: go test failed; no ratios" >&2
	exit 1
fi
# xDS: raw numbers only; docs/BENCHMARKS.md reads them against the read
# baseline (build / read) and clients=1.
for x in "BenchmarkXDSBuild 20x" "BenchmarkXDSPropagation 100x"; do
	set -- $x
	echo "\$ go test -run '^\$' -bench '^$1\$' -benchtime $2 ./bench/"
	if ! go test -run '^$' -bench "^$1\$" -benchtime "$2" ./bench/; then
		echo "run.sh: go test failed" >&2
		exit 1
	fi
done

# A result line is: name iterations value unit value unit ...; the order of
# the extra metrics is go test's, so look each one up by its unit.
awk '
/^Benchmark[^ ]*\/writers=[0-9]+/ && NF >= 4 {
	name = $1
	sub(/-[0-9]+$/, "", name)            # GOMAXPROCS suffix
	split(name, parts, "/writers=")
	key = parts[1] SUBSEP parts[2]
	for (i = 4; i <= NF; i += 2) {
		if ($i ~ /\/s$/)     { rate[key] += $(i-1); unit[parts[1]] = $i }
		if ($i == "p50-ms")  p50[key] += $(i-1)
		if ($i == "p99-ms")  p99[key] += $(i-1)
	}
	n[key]++
}
function mean(a, k) { return (k in n) ? a[k] / n[k] : "" }
function ratio(x, y) { return (x == "" || y == "" || y == 0) ? "n/a" : sprintf("%.2f", x / y) }
END {
	split("BenchmarkBoltFsyncBaseline BenchmarkRaftApply BenchmarkHTTPRegister", names, " ")
	printf "\n| benchmark | writers | ops/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|\n"
	for (i = 1; i <= 3; i++) for (w = 1; w <= 64; w += 63) {
		k = names[i] SUBSEP w
		if (!(k in n)) continue
		printf "| %s | %d | %.0f %s | %.3f | %.3f |\n", names[i], w, mean(rate, k), unit[names[i]], mean(p50, k), mean(p99, k)
	}
	printf "\nthroughput ratio > 1: faster than the baseline; latency ratio > 1: slower.\n"
	printf "\n| comparison | writers | throughput | p50 | p99 |\n|---|---:|---:|---:|---:|\n"
	for (w = 1; w <= 64; w += 63) {
		for (p = 1; p <= 2; p++) {
			a = (p == 1) ? "BenchmarkRaftApply" : "BenchmarkHTTPRegister"
			b = (p == 1) ? "BenchmarkBoltFsyncBaseline" : "BenchmarkRaftApply"
			label = (p == 1) ? "raft apply / bolt fsync" : "HTTP register / raft apply"
			ka = a SUBSEP w; kb = b SUBSEP w
			printf "| %s | %d | %s | %s | %s |\n", label, w,
				ratio(mean(rate, ka), mean(rate, kb)), ratio(mean(p50, ka), mean(p50, kb)), ratio(mean(p99, ka), mean(p99, kb))
		}
	}
}
' "$out"

# Cluster propagation: one row per cluster size and agent written to; the
# ratio is "visible on every agent" over "the register call returned".
awk '
/^BenchmarkClusterPropagation\/agents=[0-9]+/ && NF >= 4 {
	name = $1
	sub(/-[0-9]+$/, "", name)
	split(name, parts, "/agents=")
	a = parts[2] + 0
	agents[a] = 1
	for (i = 4; i <= NF; i += 2) v[a, $i] += $(i-1)
	n[a]++
}
function m(a, unit) { return v[a, unit] / n[a] }
function ratio(x, y) { return (y == 0) ? "n/a" : sprintf("%.2f", x / y) }
END {
	if (length(n) == 0) exit
	printf "\n| agents | written on | visible everywhere p50 ms | p99 ms | mean ms | register call p50 ms | p99 ms | mean ms | ratio p50 | ratio p99 | ratio mean |\n"
	printf "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
	for (a = 1; a <= 1000; a++) {
		if (!(a in n)) continue
		for (o = 1; o <= 2; o++) {
			p = (o == 1) ? "" : "leader-"
			label = (o == 1) ? "a follower" : "the leader"
			printf "| %d | %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %s | %s | %s |\n", a, label,
				m(a, p "p50-ms"), m(a, p "p99-ms"), m(a, p "mean-ms"),
				m(a, p "reg-p50-ms"), m(a, p "reg-p99-ms"), m(a, p "reg-mean-ms"),
				ratio(m(a, p "p50-ms"), m(a, p "reg-p50-ms")), ratio(m(a, p "p99-ms"), m(a, p "reg-p99-ms")),
				ratio(m(a, p "mean-ms"), m(a, p "reg-mean-ms"))
		}
	}
}
' "$out"
