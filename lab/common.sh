# shellcheck shell=bash
# lab/common.sh: what the netns lab, the Vagrant lab and their scripts
# share. Sourced by netns.sh, provision.sh and traffic.sh; not run.

# The demo services' protocol (service definitions' `protocol`): http (the
# proxies route each request; every demo URL drops its port, since an http
# service's VIP also answers on 80), or tcp to show the same path at L4.
LAB_PROTOCOL=${LAB_PROTOCOL:-http}
case $LAB_PROTOCOL in
tcp | http) ;;
*)
	echo "LAB_PROTOCOL: '$LAB_PROTOCOL' is not tcp or http (the demo apps speak HTTP/1.1)" >&2
	exit 2
	;;
esac

# The demo apps: name and port. Each listens on 127.0.0.1 only, so the
# only way in from another VM is the mesh (the inbound proxy hands
# connections to the app on loopback).
LAB_APPS="monolith orders users"

app_port() {
	case $1 in
	monolith) echo 9080 ;;
	orders) echo 9081 ;;
	users) echo 9082 ;;
	*) echo "unknown app: $1" >&2; return 1 ;;
	esac
}

# app_url NAME: the app's base URL through the mesh, as its callers use it.
app_url() {
	if [ "$LAB_PROTOCOL" = http ]; then
		echo "http://$1.mesh"
	else
		echo "http://$1.mesh:$(app_port "$1")"
	fi
}

# app_vm NAME N: which VM (1..N) runs the app in a lab of N VMs: the
# monolith on VM 1, orders on VM 2, users on VM 3 (VM 2 when N = 2).
# VMs after the third run an agent and no app.
app_vm() {
	case $1 in
	monolith) echo 1 ;;
	orders) echo 2 ;;
	users) if [ "$2" -ge 3 ]; then echo 3; else echo 2; fi ;;
	esac
}

# apps_on I N: the apps VM I runs, space-separated.
apps_on() {
	local a out=""
	for a in $LAB_APPS; do
		[ "$(app_vm "$a" "$2")" = "$1" ] && out="$out $a"
	done
	echo "${out# }"
}

# app_upstream_flags NAME: the demoapp flags naming the apps NAME calls.
app_upstream_flags() {
	case $1 in
	monolith) echo "-orders $(app_url orders) -users $(app_url users)" ;;
	*) echo "-monolith $(app_url monolith)" ;;
	esac
}

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}
