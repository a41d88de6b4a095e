#!/usr/bin/env bash
# Runs the control-plane benchmarks and prints the results as ratios to
# their baselines: raft apply vs a bare bbolt fsync, and HTTP register vs
# raft apply, for 1 and 64 writers. About a minute on a 2-core VM.
#
#   bench/run.sh                      # BENCHTIME=30000x COUNT=1
#   BENCHTIME=2000x bench/run.sh      # quick look
#   COUNT=3 bench/run.sh              # ratios of the means of 3 runs
set -euo pipefail

cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
benchtime=${BENCHTIME:-30000x}
count=${COUNT:-1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

cmd=(go test -run '^$' -bench . -benchtime="$benchtime" -count "$count" ./bench/)
echo "\$ go test -run '^\$' -bench . -benchtime=$benchtime -count $count ./bench/"
if ! "${cmd[@]}" 2>&1 | tee "$out"; then
	echo "run.sh: go test failed; no ratios" >&2
	exit 1
fi

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
