#!/usr/bin/env bash
# lab/netns.sh: the netns lab. Each "VM" is a network namespace on a
# bridge, with its own vmesh agent (capture and the in-process proxy on)
# and demo apps, configured by lab/provision.sh as the Vagrant lab's VMs
# are. Needs root, Go, iproute2, iptables and curl. See docs/lab.md.
#
#   lab/netns.sh up N      N VMs (2..32): vmesh-lab-1..N, 10.201.0.11.., bridge vmlab0
#   lab/netns.sh traffic   calls through the mesh; prints what went where (lab/traffic.sh)
#   lab/netns.sh status    the VMs, their processes and the cluster's members
#   lab/netns.sh down      stops and removes everything up made; safe to repeat
#
# Work dir: lab/.work (binaries in bin/, per-VM roots, logs and PIDs in
# netns/vmI/). LAB_WORK overrides it.
set -Eeuo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$LAB_DIR/common.sh"

REPO=$(cd "$LAB_DIR/.." && pwd)
WORK=${LAB_WORK:-$LAB_DIR/.work}
BIN=$WORK/bin
STATE=$WORK/netns
MGMT_TOKEN=$STATE/management-token # 0600; see cmd_up
AGENT_TOKENS=$STATE/agent-tokens    # vmI: each agent's token secret, 0600
NS_PREFIX=vmesh-lab-
BRIDGE=vmlab0
SUBNET=10.201.0
MAX_VMS=32
FWD_COMMENT="vmesh-lab: bridge vmlab0"

ns() { echo "$NS_PREFIX$1"; }
vm_ip() { echo "$SUBNET.$((10 + $1))"; }
vm_dir() { echo "$STATE/vm$1"; }
in_vm() {
	local i=$1
	shift
	ip netns exec "$(ns "$i")" "$@"
}
log() { echo "==> $*"; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (network namespaces, iptables)"; }
need_tools() {
	local t
	for t in "$@"; do command -v "$t" >/dev/null || die "needs $t (apt-get install iproute2 iptables curl; Go for the build)"; done
}

# ---- up --------------------------------------------------------------------

build() {
	log "building vmesh and the demo app into $BIN"
	mkdir -p "$BIN"
	(cd "$REPO" && GOTOOLCHAIN=local go build -o "$BIN/vmesh" . && GOTOOLCHAIN=local go build -o "$BIN/demoapp" ./lab/demoapp)
}

# forward_needed: bridged frames go through the host's iptables FORWARD
# chain when br_netfilter is on; a FORWARD chain that may drop them (a
# policy other than ACCEPT, or any rule: Docker's) needs our accept rule.
forward_needed() {
	[ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)" = 1 ] || return 1
	local f
	f=$(iptables-save -t filter 2>/dev/null) || return 1
	grep -q '^:FORWARD DROP\|^:FORWARD REJECT\|^-A FORWARD ' <<<"$f"
}

# start NAME I CMD...: runs CMD in VM I, logs to NAME.log, PID to NAME.pid.
start() {
	local name=$1 i=$2 dir
	shift 2
	dir=$(vm_dir "$i")
	ip netns exec "$(ns "$i")" "$@" </dev/null >"$dir/log/$name.log" 2>&1 &
	echo $! >"$dir/pid/$name.pid"
}

# wait_for SECONDS WHAT CMD...: polls CMD until it succeeds; gives up at
# once when a process up started has exited.
wait_for() {
	local secs=$1 what=$2 deadline f
	shift 2
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		for f in "$STATE"/vm*/pid/*.pid; do
			[ -f "$f" ] || continue
			if ! alive "$(cat "$f")"; then
				echo "$(basename "$(dirname "$(dirname "$f")")")'s $(basename "$f" .pid) exited while waiting for $what" >&2
				return 1
			fi
		done
		if [ $SECONDS -ge $deadline ]; then
			echo "timed out after ${secs}s waiting for $what" >&2
			return 1
		fi
		sleep 0.3
	done
}

agent_up() { in_vm "$1" curl -sf -m 2 http://127.0.0.1:8500/v1/status/leader; }
has_leader() { [ -n "$(in_vm "$1" curl -sf -m 2 http://127.0.0.1:8500/v1/status/leader | tr -d '"')" ]; }
# all_members N: vm1 sees N members, all alive: min(N, 3) in raft (voter,
# nonvoter or leader), the others clients.
all_members() {
	local out servers alive
	out=$(in_vm 1 curl -sf -m 2 http://127.0.0.1:8500/v1/vmesh/members || true)
	alive=$(grep -o '"Status":"alive"' <<<"$out" | wc -l)
	servers=$(grep -o '"Role":"[a-z]*","Status":"alive"' <<<"$out" | grep -vc '"Role":"none"' || true)
	[ "$alive" -eq "$1" ] && [ "$servers" -eq $(("$1" < 3 ? "$1" : 3)) ]
}
# app_ready APP: an instance of APP passes its checks (seen from VM 1).
app_ready() { in_vm 1 curl -sf -m 2 "http://127.0.0.1:8500/v1/health/service/$1?passing" | grep -q '"Service":{'; }
# vip_ready I APP: VM I resolves APP.mesh and holds the VIP on vmesh0.
vip_ready() {
	local vip
	vip=$(in_vm "$1" getent ahostsv4 "$2.mesh" | awk 'NR == 1 { print $1 }')
	[ -n "$vip" ] && in_vm "$1" ip -o -4 addr show dev vmesh0 | grep -q "inet $vip/"
}

show_logs() {
	local f
	for f in "$STATE"/vm*/log/*.log; do
		[ -f "$f" ] || continue
		echo "---- ${f#"$STATE"/} (last 15 lines)" >&2
		tail -n 15 "$f" >&2
	done
}

cmd_up() {
	local n=${1:-}
	if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 2 ] || [ "$n" -gt $MAX_VMS ]; then
		die "up N: N is the number of VMs, 2..$MAX_VMS (got '$n')"
	fi
	need_root "up"
	need_tools ip iptables iptables-save curl getent go
	if [ -e "$STATE" ] || ip netns list | grep -q "^$NS_PREFIX" || ip link show "$BRIDGE" >/dev/null 2>&1; then
		die "a lab is already up (or half up); run 'lab/netns.sh down' first"
	fi
	trap 'echo "up failed; the logs are in $STATE (lab/netns.sh down removes everything)" >&2; show_logs' ERR
	build
	mkdir -p "$STATE"
	echo "$n" >"$STATE/vms"
	# The management token the first leader creates (acl.tokens.
	# initial_management), kept 0600 in the lab's state dir.
	(umask 077 && cat /proc/sys/kernel/random/uuid >"$MGMT_TOKEN")

	log "network: bridge $BRIDGE, $n namespaces on $SUBNET.0/24"
	ip link add "$BRIDGE" type bridge
	ip link set "$BRIDGE" up
	if forward_needed; then
		iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FWD_COMMENT" -j ACCEPT
		echo "iptables FORWARD accept rule added (br_netfilter is on and FORWARD may drop)"
	fi
	local i
	for i in $(seq 1 "$n"); do
		ip netns add "$(ns "$i")"
		ip link add "$BRIDGE-$i" type veth peer name eth0 netns "$(ns "$i")"
		ip link set "$BRIDGE-$i" master "$BRIDGE" up
		in_vm "$i" ip link set lo up
		in_vm "$i" ip addr add "$(vm_ip "$i")/24" dev eth0
		in_vm "$i" ip link set eth0 up
		# ip netns exec bind-mounts /etc/netns/<ns>/* over /etc: each VM's
		# resolver is its agent.
		[ -d /etc/netns ] || { mkdir /etc/netns && touch "$STATE/created-etc-netns"; }
		mkdir -p "/etc/netns/$(ns "$i")"
		printf '# vmesh lab: the agent answers *.mesh\nnameserver 127.0.0.1\n' >"/etc/netns/$(ns "$i")/resolv.conf"
		mkdir -p "$(vm_dir "$i")/log" "$(vm_dir "$i")/pid"
		# The first three VMs are servers (vm1 bootstraps), the rest clients.
		local role=()
		if [ "$i" = 1 ]; then
			role=(--bootstrap --management-token-file "$MGMT_TOKEN")
		elif [ "$i" -le 3 ]; then
			role=(--server --management-token-file "$MGMT_TOKEN")
		fi
		(umask 077 && mkdir -p "$AGENT_TOKENS" && cat /proc/sys/kernel/random/uuid >"$AGENT_TOKENS/vm$i")
		"$LAB_DIR/provision.sh" config --root "$(vm_dir "$i")" --node "vm$i" --ip "$(vm_ip "$i")" --vms "$n" "${role[@]}" \
			--agent-token-file "$AGENT_TOKENS/vm$i"
	done

	log "vm1: agent (bootstrap)"
	start agent 1 "$BIN/vmesh" agent -config "$(vm_dir 1)/etc/vmesh/vmesh.hcl"
	wait_for 30 "vm1's agent to elect itself" has_leader 1
	# ACLs: vm1 made the management token; the anonymous token may read.
	in_vm 1 env VMESH_HTTP_TOKEN_FILE="$MGMT_TOKEN" "$LAB_DIR/provision.sh" acl --vms "$n" --agent-tokens "$AGENT_TOKENS" --vmesh "$BIN/vmesh"
	in_vm 1 env VMESH_HTTP_TOKEN_FILE="$MGMT_TOKEN" "$LAB_DIR/provision.sh" intentions --vmesh "$BIN/vmesh"
	for i in $(seq 2 "$n"); do
		local kind=client
		[ "$i" -le 3 ] && kind=server
		log "vm$i: agent ($kind), joining vm1"
		# The join token travels in a 0600 file, never on a command line;
		# the agent joins at start (an agent outside a cluster has no ACLs
		# to check a 'vmesh join' against).
		local token_file
		token_file="$(vm_dir "$i")/join-token"
		(umask 077 && in_vm 1 env VMESH_HTTP_TOKEN_FILE="$MGMT_TOKEN" "$BIN/vmesh" token create -ttl 10m >"$token_file" 2>>"$(vm_dir 1)/log/cli.log")
		start agent "$i" "$BIN/vmesh" agent -config "$(vm_dir "$i")/etc/vmesh/vmesh.hcl" -join "$(vm_ip 1):7400" -token-file "$token_file"
		wait_for 30 "vm$i's agent to join" has_leader "$i"
		rm -f "$token_file"
	done
	wait_for 60 "all $n VMs to be members" all_members "$n"

	local app
	for i in $(seq 1 "$n"); do
		for app in $(apps_on "$i" "$n"); do
			log "vm$i: demo app $app on 127.0.0.1:$(app_port "$app")"
			# shellcheck disable=SC2046 # the flags split on purpose
			start "$app" "$i" "$BIN/demoapp" -app "$app" -listen "127.0.0.1:$(app_port "$app")" -host "vm$i" $(app_upstream_flags "$app")
		done
	done
	for app in $LAB_APPS; do
		wait_for 60 "$app to pass its health check" app_ready "$app"
	done
	for i in $(seq 1 "$n"); do
		for app in $LAB_APPS; do
			wait_for 60 "vm$i to resolve $app.mesh and hold its VIP" vip_ready "$i" "$app"
		done
	done
	trap - ERR
	cmd_status
	echo
	echo "Next: lab/netns.sh traffic    (and: ip netns exec $(ns 1) curl $(app_url orders)/orders)"
}

# ---- traffic, status ---------------------------------------------------------

cmd_traffic() {
	need_root "traffic"
	[ -f "$STATE/vms" ] || die "no lab is up; run 'lab/netns.sh up 3' first"
	exec "$LAB_DIR/traffic.sh" --netns --vms "$(cat "$STATE/vms")" "$@"
}

cmd_status() {
	need_root "status"
	[ -f "$STATE/vms" ] || die "no lab is up"
	local n i app
	n=$(cat "$STATE/vms")
	for i in $(seq 1 "$n"); do
		local procs=""
		for app in agent $LAB_APPS; do
			local f
			f=$(vm_dir "$i")/pid/$app.pid
			[ -f "$f" ] && procs="$procs $app($(cat "$f"))"
		done
		printf 'vm%-3s %-12s %-14s%s\n' "$i" "$(ns "$i")" "$(vm_ip "$i")" "$procs"
	done
	echo
	in_vm 1 "$BIN/vmesh" members
}

# ---- down ------------------------------------------------------------------

# our_pids: every process down must stop: the PIDs up recorded (if still
# ours), every process in a lab namespace, and any process running one of
# the lab's binaries (a partial up may have lost a PID file).
our_pids() {
	local f pid nsname exe
	for f in "$STATE"/vm*/pid/*.pid; do
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
		case $exe in "$BIN"/vmesh | "$BIN"/demoapp) echo "$pid" ;; esac
	done
	for nsname in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^${NS_PREFIX}[0-9]*$" || true); do
		ip netns pids "$nsname" 2>/dev/null || true
	done
	for f in /proc/[0-9]*/exe; do
		exe=$(readlink "$f" 2>/dev/null || true)
		case $exe in "$BIN"/vmesh | "$BIN"/demoapp | "$BIN/vmesh (deleted)" | "$BIN/demoapp (deleted)")
			pid=${f#/proc/}
			echo "${pid%/exe}"
			;;
		esac
	done
}

# lab_links: the bridge and the host ends of the veths.
lab_links() {
	ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep "^$BRIDGE\(-[0-9]*\)\?$" | sort -V || true
}
no_lab_links() { [ -z "$(lab_links)" ]; }

# alive PID: running and not a zombie (a zombie waits for a parent that is
# not us, and is as good as gone).
alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

cmd_down() {
	need_root "down"
	local pids pid
	pids=$(our_pids | sort -un)
	if [ -n "$pids" ]; then
		log "stopping $(echo "$pids" | wc -w) processes (SIGTERM)"
		# shellcheck disable=SC2086
		kill -TERM $pids 2>/dev/null || true
		local deadline=$((SECONDS + 15))
		for pid in $pids; do
			while alive "$pid" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
		done
		for pid in $pids; do
			if alive "$pid"; then
				echo "pid $pid did not stop in 15s; SIGKILL"
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done
		for pid in $pids; do
			while alive "$pid"; do sleep 0.1; done
		done
	fi

	local nsname namespaces
	namespaces=$(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^${NS_PREFIX}[0-9]*$" | sort -V || true)
	for nsname in $namespaces; do
		# An agent killed before it could clean up leaves its capture rules
		# and vmesh0; they would go with the namespace, but remove them the
		# supported way first.
		if [ -x "$BIN/vmesh" ]; then
			ip netns exec "$nsname" "$BIN/vmesh" redirect remove >/dev/null 2>&1 ||
				echo "warning: vmesh redirect remove in $nsname failed" >&2
		fi
	done
	# The veths before the namespaces: deleting one end deletes its peer at
	# once, while a deleted namespace's links go away later, in the
	# background.
	local link
	for link in $(lab_links); do
		ip link del "$link" 2>/dev/null || true
		log "deleted link $link"
	done
	for nsname in $namespaces; do
		ip netns del "$nsname"
		log "deleted namespace $nsname"
	done
	wait_for 10 "the lab's links to disappear" no_lab_links || true
	while iptables -C FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FWD_COMMENT" -j ACCEPT 2>/dev/null; do
		iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$FWD_COMMENT" -j ACCEPT
		log "deleted the iptables FORWARD rule"
	done
	local d
	for d in /etc/netns/"$NS_PREFIX"*; do
		[ -e "$d" ] || continue
		rm -rf "$d"
	done
	if [ -f "$STATE/created-etc-netns" ]; then rmdir /etc/netns 2>/dev/null || true; fi
	# xDS sockets whose path would be too long live in the temp dir, named
	# after the data dir (mesh/xds.go); an agent that was killed leaves them.
	for d in "$STATE"/vm*/var/lib/vmesh; do
		[ -d "$d" ] || continue
		rm -rf "${TMPDIR:-/tmp}/vmesh-$(printf %s "$d" | sha256sum | cut -c1-12)"
	done
	rm -rf "$STATE"
	log "the netns lab is down"
}

main() {
	local cmd=${1:-}
	[ $# -gt 0 ] && shift
	case $cmd in
	up) cmd_up "$@" ;;
	traffic) cmd_traffic "$@" ;;
	status) cmd_status "$@" ;;
	down) cmd_down "$@" ;;
	*) die "usage: lab/netns.sh up N | traffic | status | down" ;;
	esac
}

main "$@"
