#!/usr/bin/env bash
# lab/traffic.sh: drives requests through a running lab's mesh, from
# inside its VMs, and prints one line per call: who called whom, which app
# on which VM answered, the HTTP status, and the evidence that the call
# went through the mesh. Exits 1 if any call failed.
#
#   lab/traffic.sh --netns --vms N        the netns lab (lab/netns.sh traffic runs this)
#   lab/traffic.sh --vagrant [--vms 3]    the Vagrant lab (lab/vagrant.sh traffic runs this;
#                                         ssh with LAB_SSH_CONFIG, else 'vagrant ssh' from lab/)
#   --wait SECONDS                        how long a call may keep failing before it
#                                         counts as failed (default 20: a mesh that
#                                         just started converges within seconds)
#   --timeout SECONDS                     how long one request may take (default 10;
#                                         emulated VMs are slow: lab/vagrant.sh raises it)
#
# The calls: the monolith calls orders and users (its /call/* endpoints
# ask http://orders.mesh... like any app), the microservices call the
# monolith's /inventory, and plain curl on a VM asks orders.mesh. A call
# went through the mesh when the caller's connection went to the service's
# VIP (240.0.0.0/4: the name resolved to a VIP and capture took it) and the
# answering app, which listens on 127.0.0.1 only, saw a loopback peer: its
# host's proxy, which took the call off mTLS.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$LAB_DIR/common.sh"

MODE="" VMS="" WAIT=20 TIMEOUT=10
while [ $# -gt 0 ]; do
	case $1 in
	--netns) MODE=netns; shift ;;
	--vagrant) MODE=vagrant; shift ;;
	--vms) VMS=$2; shift 2 ;;
	--wait) WAIT=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	*) die "unknown argument $1 (--netns | --vagrant, --vms N, --wait SECONDS, --timeout SECONDS)" ;;
	esac
done
case $MODE in
netns) [[ $VMS =~ ^[0-9]+$ ]] || die "--netns needs --vms N" ;;
vagrant) VMS=${VMS:-3} ;;
*) die "say which lab: --netns or --vagrant" ;;
esac
[[ $WAIT =~ ^[0-9]+$ ]] || die "--wait: '$WAIT' is not a number of seconds"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout: '$TIMEOUT' is not a number of seconds"

# vm_sh I CMD: runs the shell command CMD on VM I.
vm_sh() {
	case $MODE in
	netns) ip netns exec "vmesh-lab-$1" bash -c "$2" ;;
	vagrant)
		# LAB_SSH_CONFIG (lab/vagrant.sh sets it): 'vagrant ssh-config' saved,
		# plain ssh; a Vagrant process per call costs seconds.
		if [ -n "${LAB_SSH_CONFIG:-}" ]; then
			ssh -F "$LAB_SSH_CONFIG" -q -o ConnectTimeout=10 "vm$1" "$2" </dev/null
		else
			(cd "$LAB_DIR" && vagrant ssh "vm$1" --no-tty -c "$2" -- -q)
		fi
		;;
	esac
}

# field KEY JSON: a string (unescaped) or number field of a flat JSON
# object, as the demo apps write them.
field() {
	local v
	v=$(sed -nE "s/.*\"$1\":\"(([^\"\\\\]|\\\\.)*)\".*/\1/p; s/.*\"$1\":([0-9]+).*/\1/p" <<<"$2" | head -n 1)
	printf '%s\n' "${v//\\\"/\"}"
}

# node_of APP: the node that runs APP, from the catalog (asked on VM 1),
# asked again until --wait runs out.
node_of() {
	local deadline=$((SECONDS + WAIT)) n
	while :; do
		n=$(vm_sh 1 "curl -sf -m $TIMEOUT http://127.0.0.1:8500/v1/catalog/service/$1" | grep -o '"Node":"[^"]*"' | head -n 1 | cut -d'"' -f4) || true
		if [ -n "$n" ] || [ $SECONDS -ge $deadline ]; then
			echo "$n"
			return
		fi
		sleep 1
	done
}

is_vip() { [[ ${1%:*} =~ ^(24[0-9]|25[0-5])\. ]]; }
is_loopback() { [[ ${1%:*} =~ ^127\. ]]; }

# NODE_<app>: where each app runs, as the catalog says (no associative
# arrays: macOS's bash 3.2 runs this for the Vagrant lab).
node() { local v="NODE_$1"; echo "${!v}"; }
for app in $LAB_APPS; do
	printf -v "NODE_$app" '%s' "$(node_of "$app")"
	[ -n "$(node "$app")" ] || die "the catalog has no instance of $app; is the lab up?"
done
vm_of() { local n; n=$(node "$1"); echo "${n#vm}"; }

# The plain client: the highest-numbered VM that does not run orders.
CLIENT=$VMS
if [ "vm$CLIENT" = "$(node orders)" ]; then CLIENT=$((CLIENT - 1)); fi

FAILED=0 CALLS=0

# attempt FROM_LABEL VM URL TO EXPECT_HOST KIND: one try; sets LINE, returns
# 0 when the call went through the mesh to the expected app.
attempt() {
	local from=$1 vm=$2 url=$3 to=$4 want_host=$5 kind=$6 out body code via app host peer err
	if [ "$kind" = curl ]; then
		out=$(vm_sh "$vm" "curl -sS --noproxy '*' -m $TIMEOUT -w '\n%{http_code} %{remote_ip}:%{remote_port}' '$url'" 2>&1) || true
		body=$(head -n 1 <<<"$out")
		read -r code via <<<"$(tail -n 1 <<<"$out")"
		app=$(field app "$body") host=$(field host "$body") peer=$(field peer "$body") err=""
		[ "$code" = 200 ] || err=$(sed '$d' <<<"$out" | tr '\n' ' ')
	else
		out=$(vm_sh "$vm" "curl -sS --noproxy '*' -m $TIMEOUT -w '\n%{http_code}' '$url'" 2>&1) || true
		body=$(head -n 1 <<<"$out")
		code=$(tail -n 1 <<<"$out")
		via=$(field via "$body") app=$(field answer_app "$body") host=$(field answer_host "$body")
		peer=$(field answer_peer "$body") err=$(field error "$body")
		[ "$code" = 200 ] || [ -n "$err" ] || err=$(sed '$d' <<<"$out" | tr '\n' ' ')
	fi
	local target problem=""
	target=$(app_url "$to")
	target=${target#http://}
	if [ "$code" != 200 ]; then
		problem="error: ${err:-no answer}"
	elif [ "$app" != "$to" ] || [ "$host" != "$want_host" ]; then
		problem="answered by $app@$host, expected $to@$want_host"
	elif ! is_vip "$via"; then
		problem="NOT through the mesh: the connection went to $via, not a VIP"
	elif ! is_loopback "$peer"; then
		problem="NOT through the mesh: the app saw peer $peer, not its proxy on loopback"
	fi
	if [ -z "$problem" ]; then
		LINE=$(printf '%-14s -> %-18s HTTP %s  answered by %-12s mesh: dialed VIP %s; %s saw %s (%s'"'"'s proxy)' \
			"$from" "$target" "$code" "$to@$host" "$via" "$to" "$peer" "$host")
		return 0
	fi
	LINE=$(printf '%-14s -> %-18s HTTP %s  FAILED: %s' "$from" "$target" "${code:-000}" "$problem")
	return 1
}

# call ...: attempt until it succeeds or --wait runs out; prints one line.
call() {
	local deadline=$((SECONDS + WAIT)) tries=1
	CALLS=$((CALLS + 1))
	until attempt "$@"; do
		if [ $SECONDS -ge $deadline ]; then
			echo "$LINE"
			FAILED=$((FAILED + 1))
			return
		fi
		tries=$((tries + 1))
		sleep 1
	done
	if [ $tries -gt 1 ]; then LINE="$LINE  [after $tries tries]"; fi
	echo "$LINE"
}

# call_app FROM TO: app FROM calls app TO through its /call/TO endpoint.
call_app() {
	local from=$1 to=$2 vm
	vm=$(vm_of "$from")
	call "$from@vm$vm" "$vm" "http://127.0.0.1:$(app_port "$from")/call/$to" "$to" "$(node "$to")" app
}

echo "traffic through the $MODE lab's mesh ($VMS VMs, protocol $LAB_PROTOCOL):"
call_app monolith orders
call_app monolith users
call_app orders monolith
call_app users monolith
call "curl@vm$CLIENT" "$CLIENT" "$(app_url orders)/orders" orders "$(node orders)" curl
echo
if [ $FAILED -gt 0 ]; then
	echo "$FAILED of $CALLS calls FAILED"
	exit 1
fi
echo "all $CALLS calls went through the mesh"
