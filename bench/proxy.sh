#!/usr/bin/env bash
# The proxy benchmark: on one box, side by side in the same run,
#   direct       the load generator straight to the backend
#   vmesh-1hop   one `vmesh proxy` (plaintext), fed by a minimal xDS server
#   vmesh-mesh   client -> agent A's proxy -> mTLS -> agent B's proxy -> backend,
#                two `vmesh agent -proxy` on 127.0.55.2 and 127.0.55.3
#   nginx        nginx -> mutual TLS -> nginx (http proxy_pass / grpc_pass)
#   haproxy      HAProxy -> mutual TLS -> HAProxy (mode http, h2 for gRPC)
#   nginx-l4     nginx -> mutual TLS -> nginx (stream)
#   haproxy-l4   HAProxy -> mutual TLS -> HAProxy (mode tcp)
# measuring HTTP/1.1 (1 KB responses) at a fixed 1,000 req/s over 16
# connections, gRPC unary at the same rate, closed-loop max req/s with the
# proxies' CPU time, one TCP stream's throughput, and the proxies' RSS.
# Each measurement is repeated RUNS times, the paths interleaved within a
# round; the report gives medians and ranges, and ratios to nginx and
# HAProxy. docs/BENCHMARKS.md ("Proxy") explains what is measured and how.
#
#   bench/proxy.sh                    # or: make bench-proxy (~15 min on 2 vCPUs)
#   RUNS=1 LAT_SECONDS=3 MAX_SECONDS=2 bench/proxy.sh     # quick look
#   VMESH_PROTO=l7 bench/proxy.sh     # vmesh services as http and grpc (L7)
#   PATHS="direct vmesh-mesh nginx-l4" bench/proxy.sh     # a subset
#   RESULTS=/tmp/proxy.jsonl bench/proxy.sh               # keep the raw results
#   VMESH_BIN=./vmesh KEEP_TMP=1 bench/proxy.sh           # a built binary; keep configs and logs
#   PROFILE=/tmp/prof bench/proxy.sh  # perf profiles of the vmesh proxies under closed-loop HTTP;
#                                     # perf script -i /tmp/prof/vmesh-mesh-1.perf | bench/perfsplit.py
#
# Needs Linux, Go, curl and root (or nginx, libnginx-mod-stream and haproxy
# already installed: they are installed with apt-get only when missing).
# nginx and HAProxy run as this script's own processes with configs in a
# temp dir, not as system services. Everything it starts is stopped and
# every temp file removed on exit, Ctrl-C included.
set -euo pipefail

cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
unset RUNTIME_DIRECTORY # the agents keep their xDS sockets in their data dirs

RUNS=${RUNS:-3}
LAT_SECONDS=${LAT_SECONDS:-10}
MAX_SECONDS=${MAX_SECONDS:-5}
QPS=${QPS:-1000}
CONNS=${CONNS:-16}
SIZE=${SIZE:-1024}
TPUT_BYTES=${TPUT_BYTES:-1073741824}
VMESH_PROTO=${VMESH_PROTO:-tcp}
NET=${BENCH_NET:-127.0.55}
BASE=${PORT_BASE:-19000}
PATHS=${PATHS:-direct vmesh-1hop vmesh-mesh nginx haproxy nginx-l4 haproxy-l4}

case $VMESH_PROTO in
tcp) web_proto=tcp ping_proto=tcp ;;
l7) web_proto=http ping_proto=grpc ;;
*)
	echo "proxy.sh: VMESH_PROTO=$VMESH_PROTO: want tcp or l7" >&2
	exit 2
	;;
esac
for p in $PATHS; do
	case $p in
	direct | vmesh-1hop | vmesh-mesh | nginx | haproxy | nginx-l4 | haproxy-l4) ;;
	*)
		echo "proxy.sh: PATHS: unknown path $p" >&2
		exit 2
		;;
	esac
done
has() { [[ " $PATHS " == *" $1 "* ]]; }

ip1=$NET.1 # the one-hop proxy and its xDS server
ipA=$NET.2 # host A: the client side (agent A, every first hop)
ipB=$NET.3 # host B: the backend, agent B, every second hop
be_http=$((BASE + 11)) be_grpc=$((BASE + 12)) be_tcp=$((BASE + 13))

tmp=$(mktemp -d /tmp/vmesh-proxybench.XXXXXX)
chmod 755 "$tmp" # nginx workers run as nobody and open their temp paths
pids=()
names=()
declare -A pid # by name, for the processes whose CPU and memory are measured
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill -TERM "${pids[i]}" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [[ -n ${KEEP_TMP:-} ]]; then echo "proxy.sh: kept $tmp (configs, logs)" >&2; else rm -rf "$tmp"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'proxy.sh: %s\n' "$*" >&2
	exit 1
}

# start NAME CMD...: runs CMD in the background, logging to $tmp/NAME.log,
# and remembers its pid for cleanup.
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	names+=("$name")
	pid[$name]=$!
}

# alive: every process started so far still runs, or the script stops
# with the log of the one that died.
alive() {
	local i
	for i in "${!pids[@]}"; do
		kill -0 "${pids[i]}" 2>/dev/null ||
			die "${names[i]} exited; the end of $tmp/${names[i]}.log:
$(tail -5 "$tmp/${names[i]}.log")"
	done
}

# wait_port HOST PORT [SECONDS]: until something accepts there.
wait_port() {
	local deadline=$((SECONDS + ${3:-30}))
	until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
		alive
		((SECONDS < deadline)) || die "nothing listens on $1:$2 after ${3:-30}s"
		sleep 0.2
	done
}

# until_ok SECONDS WHAT CMD...: retries CMD until it succeeds.
until_ok() {
	local secs=$1 what=$2
	local deadline=$((SECONDS + secs))
	shift 2
	until "$@" >/dev/null 2>&1; do
		alive
		((SECONDS < deadline)) || die "$what: still failing after ${secs}s: $*"
		sleep 0.3
	done
}

# ---------------------------------------------------------------- install
need=()
if has nginx || has nginx-l4; then
	command -v nginx >/dev/null || need+=(nginx)
	[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
fi
if has haproxy || has haproxy-l4; then
	command -v haproxy >/dev/null || need+=(haproxy)
fi
[[ -z ${PROFILE:-} ]] || command -v perf >/dev/null || need+=(linux-perf)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
	say "apt-get install ${need[*]}"
	[[ $(id -u) == 0 ]] || die "needs root to install ${need[*]} (or install them first)"
	# The packages' maintainer scripts must not start system services.
	printf '#!/bin/sh\nexit 101\n' >"$tmp/policy-rc.d"
	chmod +x "$tmp/policy-rc.d"
	policy_created=
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		cp "$tmp/policy-rc.d" /usr/sbin/policy-rc.d
		policy_created=1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >"$tmp/apt.log" 2>&1 ||
		{
			cat "$tmp/apt.log" >&2
			[[ -n $policy_created ]] && rm -f /usr/sbin/policy-rc.d
			die "apt-get install failed"
		}
	[[ -n $policy_created ]] && rm -f /usr/sbin/policy-rc.d
fi

# ---------------------------------------------------------------- build
say "building vmesh, proxybench and loadgen into $tmp/bin"
mkdir -p "$tmp/bin"
if [[ -n ${VMESH_BIN:-} ]]; then
	cp "$VMESH_BIN" "$tmp/bin/vmesh" # a vmesh built elsewhere
else
	go build -o "$tmp/bin/vmesh" .
fi
go build -o "$tmp/bin/proxybench" ./bench/proxybench
(cd bench/proxybench/loadgen && go build -o "$tmp/bin/loadgen" .)
vmesh=$tmp/bin/vmesh lg=$tmp/bin/loadgen pb=$tmp/bin/proxybench
"$pb" certs -dir "$tmp/certs"
certs=$tmp/certs

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
machine="$(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(go version | cut -d' ' -f3)"
command -v nginx >/dev/null && machine+=", $(nginx -v 2>&1 | sed 's/.*: //')"
command -v haproxy >/dev/null && machine+=", HAProxy $(haproxy -v | awk 'NR==1 {print $3}')"
say "machine: $machine; load average $load_before"

# ---------------------------------------------------------------- backend
start backend "$lg" server -http "$ipB:$be_http" -grpc "$ipB:$be_grpc" -tcp "$ipB:$be_tcp"
for p in $be_http $be_grpc $be_tcp; do wait_port "$ipB" "$p"; done

# Each path: "HTTP-URL GRPC-ADDR TCP-ADDR" (TCP-ADDR "-" when the path has
# no TCP route) and the pids whose CPU time and memory are the proxy's.
declare -A url grpc tcp procs
url[direct]="http://$ipB:$be_http/echo?size=$SIZE" grpc[direct]=$ipB:$be_grpc tcp[direct]=$ipB:$be_tcp

# ---------------------------------------------------------------- vmesh one hop
if has vmesh-1hop; then
	say "vmesh-1hop: vmesh proxy against proxybench xds ($web_proto/$ping_proto)"
	xds_port=$((BASE + 100))
	start xds "$pb" xds -addr "$ip1:$xds_port" -node bench \
		-route "$ip1:$((BASE + 101))=$ipB:$be_http/$web_proto" \
		-route "$ip1:$((BASE + 102))=$ipB:$be_grpc/$ping_proto" \
		-route "$ip1:$((BASE + 103))=$ipB:$be_tcp/tcp"
	wait_port "$ip1" "$xds_port"
	start proxy1 "$vmesh" proxy --xds "$ip1:$xds_port" --node bench
	deadline=$((SECONDS + 30))
	until (exec 3<>"/dev/tcp/$ip1/$((BASE + 103))") 2>/dev/null; do
		alive
		grep -q NACK "$tmp/xds.log" && die "vmesh proxy refused the one-hop config: $(grep NACK "$tmp/xds.log" | head -1)"
		((SECONDS < deadline)) || die "vmesh proxy: no listener after 30s; see its log: $(tail -3 "$tmp/proxy1.log")"
		sleep 0.2
	done
	url[vmesh-1hop]="http://$ip1:$((BASE + 101))/echo?size=$SIZE" grpc[vmesh-1hop]=$ip1:$((BASE + 102)) tcp[vmesh-1hop]=$ip1:$((BASE + 103))
	procs[vmesh-1hop]=${pid[proxy1]}
fi

# ---------------------------------------------------------------- vmesh mesh
if has vmesh-mesh; then
	say "vmesh-mesh: two agents with -proxy; services web=$web_proto ping=$ping_proto bulk=tcp"
	agent() { # name ip extra...
		local name=$1 ip=$2
		shift 2
		mkdir -p "$tmp/$name"
		start "$name" "$vmesh" agent -node "bench-$name" -bind "$ip" -client "$ip" -data-dir "$tmp/$name" \
			-services-dir "" -proxy -log-level warn "$@"
	}
	# ACLs are on, deny by default, as on every non-dev agent: A's first
	# term creates the management token, which B also uses as its agent
	# token (a bench shortcut; the lab gives each agent its own).
	mgmt=$(cat /proc/sys/kernel/random/uuid)
	printf 'acl {\n  tokens {\n    initial_management = "%s"\n  }\n}\n' "$mgmt" >"$tmp/agentA.hcl"
	printf 'acl {\n  tokens {\n    agent = "%s"\n  }\n}\n' "$mgmt" >"$tmp/agentB.hcl"
	chmod 600 "$tmp/agentA.hcl" "$tmp/agentB.hcl"
	agent agentA "$ipA" -bootstrap -config "$tmp/agentA.hcl"
	until_ok 30 "agent A elects itself" sh -c "curl -sf http://$ipA:8500/v1/status/leader | grep -q 7400"
	until_ok 30 "agent A makes the management token" env VMESH_HTTP_TOKEN="$mgmt" "$vmesh" acl token list -http-addr "$ipA:8500"
	join_token=$(VMESH_HTTP_TOKEN=$mgmt "$vmesh" token create -ttl 1h -http-addr "$ipA:8500") || die "vmesh token create failed"
	VMESH_JOIN_TOKEN=$join_token agent agentB "$ipB" -join "$ipA:7400" -config "$tmp/agentB.hcl"
	until_ok 30 "agent B joins" sh -c "curl -sf http://$ipB:8500/v1/status/leader | grep -q 7400"
	put() { curl -sf -X PUT -H "X-Consul-Token: $mgmt" "$1" -d "$2" >/dev/null || die "PUT $1 $2 failed"; }
	put "http://$ipB:8500/v1/agent/service/register" "{\"ID\":\"web-1\",\"Name\":\"web\",\"Address\":\"$ipB\",\"Port\":$be_http,\"Meta\":{\"protocol\":\"$web_proto\"}}"
	put "http://$ipB:8500/v1/agent/service/register" "{\"ID\":\"ping-1\",\"Name\":\"ping\",\"Address\":\"$ipB\",\"Port\":$be_grpc,\"Meta\":{\"protocol\":\"$ping_proto\"}}"
	put "http://$ipB:8500/v1/agent/service/register" "{\"ID\":\"bulk-1\",\"Name\":\"bulk\",\"Address\":\"$ipB\",\"Port\":$be_tcp,\"Meta\":{\"protocol\":\"tcp\"}}"
	ups=""
	for u in "web 1" "ping 2" "bulk 3"; do
		read -r svc n <<<"$u"
		ups+="${ups:+,}{\"DestinationName\":\"$svc\",\"LocalBindAddress\":\"$ipA\",\"LocalBindPort\":$((BASE + n))}"
	done
	put "http://$ipA:8500/v1/agent/service/register" "{\"ID\":\"loadgen-1\",\"Name\":\"loadgen\",\"Port\":1,\"Connect\":{\"SidecarService\":{\"Proxy\":{\"Upstreams\":[$ups]}}}}"
	mesh_url="http://$ipA:$((BASE + 1))/echo?size=$SIZE"
	deadline=$((SECONDS + 30))
	until (exec 3<>"/dev/tcp/$ipA/$((BASE + 1))") 2>/dev/null; do
		grep -h "rejecting xDS update" "$tmp/agentA.log" "$tmp/agentB.log" >&2 && die "a vmesh proxy refused its config (above)"
		alive
		((SECONDS < deadline)) || die "agent A's upstream listener did not come up"
		sleep 0.2
	done
	# Default deny: until the intentions exist, B's inbound refuses the
	# connection, which shows the traffic really goes A -> mTLS -> B.
	if curl -sf -m 2 -o /dev/null "$mesh_url"; then
		die "the mesh path answered before any allow intention: it does not go through B's inbound"
	fi
	for d in web ping bulk; do
		put "http://$ipA:8500/v1/connect/intentions/exact?source=loadgen&destination=$d" '{"Action":"allow"}'
	done
	until_ok 30 "the mesh path answers once allowed" curl -sf -m 2 -o /dev/null "$mesh_url"
	url[vmesh-mesh]=$mesh_url grpc[vmesh-mesh]=$ipA:$((BASE + 2)) tcp[vmesh-mesh]=$ipA:$((BASE + 3))
	procs[vmesh-mesh]="${pid[agentA]} ${pid[agentB]}"
fi

# mtls_check PATH PORT: hop 2 of an nginx or HAProxy path (on $ipB:PORT,
# HTTP behind it) refuses a client without a certificate and answers hop
# 1's, so the comparison with the mesh's mTLS is like for like.
mtls_check() {
	local c=(curl -sf -m 3 -o /dev/null --cacert "$certs/ca.pem" --resolve "hop2.bench:$2:$ipB" "https://hop2.bench:$2/echo?size=1")
	"${c[@]}" && die "$1: hop 2 ($ipB:$2) answered a client without a certificate"
	until_ok 10 "$1: hop 2 ($ipB:$2) with hop 1's certificate" "${c[@]}" --cert "$certs/hop1.pem" --key "$certs/hop1-key.pem"
}

# ---------------------------------------------------------------- nginx
# ngx <name> <body>: one nginx instance, in the foreground (master and
# workers), with every path it writes under $tmp/<name>.
ngx() {
	local name=$1 body=$2 d=$tmp/$1
	mkdir -p "$d"
	chmod 755 "$d"
	cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes auto;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
$body
EOF
	start "$name" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
}
ngx_http_common="access_log off;
	client_body_temp_path $tmp/ngx_tmp; proxy_temp_path $tmp/ngx_tmp; fastcgi_temp_path $tmp/ngx_tmp;
	uwsgi_temp_path $tmp/ngx_tmp; scgi_temp_path $tmp/ngx_tmp;
	keepalive_requests 1000000; keepalive_timeout 300s;"
# Upstream TLS of hop 1 (client certificate, hop 2's checked), for
# proxy_ (http), grpc_ and stream proxy_ directives.
ngx_upstream_tls() {
	echo "$1_ssl_certificate $certs/hop1.pem; $1_ssl_certificate_key $certs/hop1-key.pem;
		$1_ssl_trusted_certificate $certs/ca.pem; $1_ssl_verify on;
		$1_ssl_name hop2.bench; $1_ssl_server_name on; $1_ssl_session_reuse on;"
}
ngx_server_tls="ssl_certificate $certs/hop2.pem; ssl_certificate_key $certs/hop2-key.pem;
		ssl_client_certificate $certs/ca.pem; ssl_verify_client on;"
upstream() { # name addr
	echo "upstream $1 { server $2; keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s; }"
}
mkdir -p "$tmp/ngx_tmp"
chmod 777 "$tmp/ngx_tmp"

if has nginx; then
	say "nginx: two instances, http + grpc, mutual TLS between them"
	h1=$((BASE + 201)) h2=$((BASE + 211)) g1=$((BASE + 202)) g2=$((BASE + 212))
	ngx nginx1 "http { $ngx_http_common
	$(upstream hop2_http "$ipB:$h2") $(upstream hop2_grpc "$ipB:$g2")
	server { listen $ipA:$h1;
		location / { proxy_pass https://hop2_http; proxy_http_version 1.1; proxy_set_header Connection \"\";
			$(ngx_upstream_tls proxy) } }
	server { listen $ipA:$g1 http2;
		location / { grpc_pass grpcs://hop2_grpc; $(ngx_upstream_tls grpc) } }
}"
	ngx nginx2 "http { $ngx_http_common
	$(upstream be_http "$ipB:$be_http") $(upstream be_grpc "$ipB:$be_grpc")
	server { listen $ipB:$h2 ssl; $ngx_server_tls
		location / { proxy_pass http://be_http; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
	server { listen $ipB:$g2 ssl http2; $ngx_server_tls
		location / { grpc_pass grpc://be_grpc; } }
}"
	url[nginx]="http://$ipA:$h1/echo?size=$SIZE" grpc[nginx]=$ipA:$g1 tcp[nginx]=-
	for p in $h1 $g1; do wait_port "$ipA" "$p"; done
	for p in $h2 $g2; do wait_port "$ipB" "$p"; done
	mtls_check nginx "$h2"
	procs[nginx]="${pid[nginx1]} ${pid[nginx2]}"
fi
if has nginx-l4; then
	say "nginx-l4: two instances, stream, mutual TLS between them"
	s=""
	s2=""
	for i in 1 2 3; do
		case $i in 1) be=$be_http ;; 2) be=$be_grpc ;; 3) be=$be_tcp ;; esac
		s+="server { listen $ipA:$((BASE + 300 + i)); proxy_pass $ipB:$((BASE + 310 + i)); proxy_ssl on; $(ngx_upstream_tls proxy) }
	"
		s2+="server { listen $ipB:$((BASE + 310 + i)) ssl; $ngx_server_tls proxy_pass $ipB:$be; }
	"
	done
	ngx nginx1l4 "stream { $s }"
	ngx nginx2l4 "stream { $s2 }"
	url[nginx-l4]="http://$ipA:$((BASE + 301))/echo?size=$SIZE" grpc[nginx-l4]=$ipA:$((BASE + 302)) tcp[nginx-l4]=$ipA:$((BASE + 303))
	for i in 1 2 3; do wait_port "$ipA" $((BASE + 300 + i)) && wait_port "$ipB" $((BASE + 310 + i)); done
	mtls_check nginx-l4 $((BASE + 311))
	procs[nginx-l4]="${pid[nginx1l4]} ${pid[nginx2l4]}"
fi

# ---------------------------------------------------------------- HAProxy
# hap <name> <mode> <body>: one HAProxy process in the foreground (-db),
# threads as many as CPUs (its default).
hap() {
	mkdir -p "$tmp/$1"
	cat >"$tmp/$1/haproxy.cfg" <<EOF
global
	maxconn 4096
	pidfile $tmp/$1/haproxy.pid
defaults
	mode $2
	timeout connect 5s
	timeout client 300s
	timeout server 300s
$3
EOF
	haproxy -c -q -f "$tmp/$1/haproxy.cfg" || die "haproxy config $tmp/$1/haproxy.cfg is invalid"
	start "$1" haproxy -db -f "$tmp/$1/haproxy.cfg"
}
hap_up="ssl verify required ca-file $certs/ca.pem crt $certs/hop1-bundle.pem sni str(hop2.bench) verifyhost hop2.bench"
hap_bind="ssl crt $certs/hop2-bundle.pem ca-file $certs/ca.pem verify required"
if has haproxy; then
	say "haproxy: two processes, mode http (h2 for gRPC), mutual TLS between them"
	h1=$((BASE + 401)) h2=$((BASE + 411)) g1=$((BASE + 402)) g2=$((BASE + 412))
	hap haproxy1 http "
frontend http_in
	bind $ipA:$h1
	default_backend hop2_http
backend hop2_http
	server hop2 $ipB:$h2 $hap_up
frontend grpc_in
	bind $ipA:$g1 proto h2
	default_backend hop2_grpc
backend hop2_grpc
	server hop2 $ipB:$g2 $hap_up alpn h2"
	hap haproxy2 http "
frontend http_in
	bind $ipB:$h2 $hap_bind
	default_backend be_http
backend be_http
	server be $ipB:$be_http
frontend grpc_in
	bind $ipB:$g2 $hap_bind alpn h2
	default_backend be_grpc
backend be_grpc
	server be $ipB:$be_grpc proto h2"
	url[haproxy]="http://$ipA:$h1/echo?size=$SIZE" grpc[haproxy]=$ipA:$g1 tcp[haproxy]=-
	for p in $h1 $g1; do wait_port "$ipA" "$p"; done
	for p in $h2 $g2; do wait_port "$ipB" "$p"; done
	mtls_check haproxy "$h2"
	procs[haproxy]="${pid[haproxy1]} ${pid[haproxy2]}"
fi
if has haproxy-l4; then
	say "haproxy-l4: two processes, mode tcp, mutual TLS between them"
	c1="" c2=""
	for i in 1 2 3; do
		case $i in 1) be=$be_http ;; 2) be=$be_grpc ;; 3) be=$be_tcp ;; esac
		c1+="
listen l$i
	bind $ipA:$((BASE + 500 + i))
	server hop2 $ipB:$((BASE + 510 + i)) $hap_up"
		c2+="
listen l$i
	bind $ipB:$((BASE + 510 + i)) $hap_bind
	server be $ipB:$be"
	done
	hap haproxy1l4 tcp "$c1"
	hap haproxy2l4 tcp "$c2"
	url[haproxy-l4]="http://$ipA:$((BASE + 501))/echo?size=$SIZE" grpc[haproxy-l4]=$ipA:$((BASE + 502)) tcp[haproxy-l4]=$ipA:$((BASE + 503))
	for i in 1 2 3; do wait_port "$ipA" $((BASE + 500 + i)) && wait_port "$ipB" $((BASE + 510 + i)); done
	mtls_check haproxy-l4 $((BASE + 511))
	procs[haproxy-l4]="${pid[haproxy1l4]} ${pid[haproxy2l4]}"
fi

# Every path answers before anything is measured.
for p in $PATHS; do
	until_ok 20 "$p: HTTP through ${url[$p]}" curl -sf -m 2 -o /dev/null "${url[$p]}"
	until_ok 20 "$p: gRPC through ${grpc[$p]}" "$lg" grpc -addr "${grpc[$p]}" -qps 20 -c 1 -t 0.2s
	if [[ ${tcp[$p]} != - ]]; then
		until_ok 20 "$p: TCP through ${tcp[$p]}" "$lg" tput -addr "${tcp[$p]}" -bytes 1000000
	fi
done

# ---------------------------------------------------------------- measure
# allpids PIDS: the processes and their children (nginx's workers).
allpids() {
	local p
	for p in $1; do
		echo "$p"
		pgrep -P "$p" || true
	done
}
hz=$(getconf CLK_TCK)
# cpu_ticks PIDS: user + system time of the processes, in clock ticks
# (/proc/PID/stat fields 14 and 15, counted after the ")" of the name).
cpu_ticks() {
	local t=0 p f
	for p in $(allpids "$1"); do
		read -r -a f <<<"$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null)" || continue
		((${#f[@]} > 12)) || continue
		t=$((t + f[11] + f[12]))
	done
	echo "$t"
}
# mem_kb PIDS FIELD: the sum of VmRSS or VmHWM over the processes.
mem_kb() {
	local p
	for p in $(allpids "$1"); do cat "/proc/$p/status" 2>/dev/null || true; done |
		awk -v f="$2:" '$1 == f {s += $2} END {print s + 0}'
}

# busy_pct: how busy the machine is without us, in % of all its CPUs:
# sampled from /proc/stat for one second while nothing of ours runs.
busy_pct() {
	local a b
	a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); d = (y[1] - x[1]) + (y[2] - x[2]);
		printf "%.1f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0)}'
}

RESULTS=${RESULTS:-$tmp/results.jsonl}
: >"$RESULTS"
emit() { printf '%s\n' "$1" >>"$RESULTS"; }
emit "{\"meta\":{\"mode\":\"$VMESH_PROTO\",\"runs\":$RUNS,\"machine\":\"$machine\",\"load_before\":\"$load_before\",\"load_after\":\"pending\"}}"

# Idle memory: configured and answering, before any load.
for p in $PATHS; do
	[[ -z ${procs[$p]:-} ]] || emit "{\"path\":\"$p\",\"test\":\"rss_idle\",\"run\":1,\"rss_kb\":$(mem_kb "${procs[$p]}" VmRSS)}"
done

say "measuring: $RUNS rounds of [$PATHS]; ${LAT_SECONDS}s at $QPS req/s, ${MAX_SECONDS}s closed loop, ${CONNS} connections"
start_s=$SECONDS
for ((run = 1; run <= RUNS; run++)); do
	for p in $PATHS; do
		busy=$(busy_pct)
		emit "{\"path\":\"$p\",\"test\":\"busy\",\"run\":$run,\"busy_pct\":$busy}"
		say "round $run/$RUNS: $p (the machine, without us: $busy% busy; load average $(cut -d' ' -f1-3 /proc/loadavg))"
		"$lg" http -url "${url[$p]}" -qps "$QPS" -c "$CONNS" -t "${LAT_SECONDS}s" >"$tmp/http.json" &
		lg_pid=$!
		if [[ -n ${procs[$p]:-} ]]; then
			sleep "$(awk -v s="$LAT_SECONDS" 'BEGIN {print s / 2}')" # RSS halfway through the fixed rate
			emit "{\"path\":\"$p\",\"test\":\"rss_rate\",\"run\":$run,\"rss_kb\":$(mem_kb "${procs[$p]}" VmRSS)}"
		fi
		wait "$lg_pid" || die "loadgen http through ${url[$p]} failed"
		emit "{\"path\":\"$p\",\"test\":\"http\",\"run\":$run,\"result\":$(cat "$tmp/http.json")}"
		out=$("$lg" grpc -addr "${grpc[$p]}" -payload "$SIZE" -qps "$QPS" -c "$CONNS" -t "${LAT_SECONDS}s")
		emit "{\"path\":\"$p\",\"test\":\"grpc\",\"run\":$run,\"result\":$out}"
		perf_pid=
		if [[ -n ${PROFILE:-} && $p == vmesh-* ]]; then
			# perf samples the proxies' own processes only; the load
			# generator and the backend stay out of the profile.
			mkdir -p "$PROFILE"
			perf record -q -F 999 -g -o "$PROFILE/$p-$run.perf" -p "$(echo "${procs[$p]}" | tr ' ' ,)" \
				-- sleep "$MAX_SECONDS" >"$tmp/perf.log" 2>&1 &
			perf_pid=$!
		fi
		c0=$(cpu_ticks "${procs[$p]:-}")
		out=$("$lg" http -url "${url[$p]}" -qps 0 -c "$CONNS" -t "${MAX_SECONDS}s")
		c1=$(cpu_ticks "${procs[$p]:-}")
		[[ -z $perf_pid ]] || wait "$perf_pid" || die "perf record failed: $(tail -3 "$tmp/perf.log")"
		cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN {printf "%.3f", (b - a) / hz}')
		emit "{\"path\":\"$p\",\"test\":\"maxqps\",\"run\":$run,\"cpu_s\":$cpu,\"result\":$out}"
		if [[ ${tcp[$p]} != - ]]; then
			out=$("$lg" tput -addr "${tcp[$p]}" -bytes "$TPUT_BYTES")
			emit "{\"path\":\"$p\",\"test\":\"tput\",\"run\":$run,\"result\":$out}"
		fi
		if [[ -n ${procs[$p]:-} ]]; then
			emit "{\"path\":\"$p\",\"test\":\"rss\",\"run\":$run,\"rss_kb\":$(mem_kb "${procs[$p]}" VmRSS),\"hwm_kb\":$(mem_kb "${procs[$p]}" VmHWM)}"
		fi
	done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
sed -i "s/\"load_after\":\"pending\"/\"load_after\":\"$load_after\"/" "$RESULTS"
say "measured in $((SECONDS - start_s))s; load average $load_after"

for f in "$tmp"/agentA.log "$tmp"/agentB.log "$tmp"/proxy1.log; do
	[[ -e $f ]] && grep -h "rejecting xDS update" "$f" >&2 && die "a vmesh proxy refused a config during the run (above)"
done

echo
"$pb" report -in "$RESULTS"
[[ $RESULTS == "$tmp"/* ]] || say "raw results kept in $RESULTS"
