#!/usr/bin/env bash
# One idle agent's memory: a bootstrap `vmesh agent -dev -proxy` with
# nothing registered, measured after IDLE seconds (default 10): VmRSS and
# its two parts, RssAnon (the Go heap, stacks, runtime metadata) and
# RssFile (the binary's pages it touched), in MiB, and its thread count.
# docs/BENCHMARKS.md ("Memory") reads it.
#
#   bench/agent-rss.sh                        # builds vmesh from the tree
#   VMESH_BIN=./vmesh bench/agent-rss.sh      # a built binary
#   IP=127.0.77.2 IDLE=30 GOGC=50 bench/agent-rss.sh
#
# Binds IP's ports 8500, 7400, 8600, 15001 and 15443 (default 127.0.66.2);
# stops the agent and removes its temp data dir on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
IP=${IP:-127.0.66.2}
IDLE=${IDLE:-10}
tmp=$(mktemp -d /tmp/vmesh-agent-rss.XXXXXX)
pid=
cleanup() {
	[[ -z $pid ]] || { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; } || true
	rm -rf "$tmp"
}
trap cleanup EXIT
bin=${VMESH_BIN:-}
if [[ -z $bin ]]; then
	go build -o "$tmp/vmesh" .
	bin=$tmp/vmesh
fi
unset RUNTIME_DIRECTORY
"$bin" agent -dev -bootstrap -proxy -node idle -bind "$IP" -client "$IP" -data-dir "$tmp/data" \
	-services-dir "" -log-level warn >"$tmp/agent.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	curl -sf "http://$IP:8500/v1/status/leader" | grep -q 7400 && break
	kill -0 "$pid" 2>/dev/null || { cat "$tmp/agent.log" >&2; exit 1; }
	sleep 0.3
done
sleep "$IDLE"
awk -v threads="$(ls "/proc/$pid/task" | wc -l)" '
	/^(VmRSS|RssAnon|RssFile):/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }
	END { print "threads: " threads }' "/proc/$pid/status"
