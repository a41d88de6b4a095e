#!/usr/bin/env bash
# lab/provision.sh: sets up vmesh on one lab VM. Both labs use it: the
# netns lab (lab/netns.sh) for each namespace "VM", under a root dir of its
# own, and the Vagrant lab (lab/Vagrantfile) on each real VM, under /.
#
#   provision.sh config --root DIR --node NAME --ip IP --vms N [--bootstrap]
#           [--server] [--management-token-file F] [--agent-token-file F]
#           [--join ADDR --join-token-file F] [--recursor IP]...
#       write ROOT/etc/vmesh/vmesh.hcl (0600: it may hold the initial
#       management token read from F) and ROOT/etc/vmesh/services.d/<app>.hcl
#       for the demo apps this VM runs (lab/common.sh places them);
#       --bootstrap implies --server, without either the VM is a client;
#       --join: the agent joins ADDR at start with the token in file F
#   provision.sh acl [--vms N --agent-tokens DIR] [--vmesh BIN]
#       with the management token in VMESH_HTTP_TOKEN_FILE, once it works:
#       let the anonymous token read services, nodes, agents and members
#       (DNS answers with it), and make each VM's agent token (its node,
#       its services) with the secret in DIR/vmI; run once, on a server
#   provision.sh intentions [--vmesh BIN]
#       allow every mesh host to call each demo service ('*' => app); run
#       once, on any member
#   provision.sh join ADDR [--token-file F] [--vmesh BIN]
#       join the local agent to the cluster at ADDR, unless it is in one,
#       with the token in file F (mode 0600) or in VMESH_JOIN_TOKEN: never
#       on a command line, where ps shows it
#   provision.sh wait-leader [--vmesh BIN]
#       wait until the local agent knows a raft leader
#   provision.sh vagrant --node NAME --ip IP --vms N [--bootstrap]
#       a whole Vagrant VM, as root: packages, the binaries from
#       /vagrant/lab/.work/bin, 'vmesh install', the config, the resolver,
#       the demo apps' units; starts the apps. The bootstrap VM (the
#       server) makes the management token and every VM's agent token,
#       starts vmesh, sets up the ACLs and writes the intentions; another
#       VM starts vmesh only once it is in the cluster (vagrant-join)
#   provision.sh hand-tokens VM
#       on the bootstrap VM, as root: print VM's agent token and a fresh
#       join token (10 minutes, one use), a line each, for vagrant-join
#   provision.sh vagrant-join ADDR
#       on another Vagrant VM, as root, with hand-tokens' two lines on
#       stdin: keep the agent token (0600), start vmesh joining ADDR at
#       start with the join token (a 0600 file, deleted once joined);
#       nothing to join on a VM already in the cluster
#
# The layout is vmesh's own (docs/systemd.md): ROOT/etc/vmesh/vmesh.hcl,
# ROOT/etc/vmesh/services.d/, data in ROOT/var/lib/vmesh.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$LAB_DIR/common.sh"

VMESH=${VMESH:-vmesh}
HTTP_ADDR=127.0.0.1:8500

# config_file ROOT NODE IP BOOTSTRAP SERVER MGMT AGENT JOIN JOIN_TOKEN_FILE
# RECURSORS...: the agent's vmesh.hcl (MGMT: the initial management
# token's secret, servers only; AGENT: the agent token's secret; JOIN: the
# member to join at start, with the join token in JOIN_TOKEN_FILE).
config_file() {
	local root=$1 node=$2 ip=$3 bootstrap=$4 server=$5 mgmt=$6 agent=$7 join=$8 join_token_file=$9
	shift 9
	cat <<EOF
# The vmesh lab's agent on $node. Written by lab/provision.sh, which
# rewrites it; see docs/lab.md and docs/configuration.md.
node_name    = "$node"
data_dir     = "$root/var/lib/vmesh"
services_dir = "$root/etc/vmesh/services.d"
# The cluster port (7400) and the mesh port (15443) listen here; the HTTP
# API (8500) and the proxy's outbound listener (15001) on loopback.
bind_addr    = "$ip"
client_addr  = "127.0.0.1"
EOF
	if [ "$bootstrap" = 1 ]; then
		cat <<EOF
# This VM starts the cluster; the others join it with a token.
bootstrap    = true
EOF
	fi
	if [ -n "$join" ]; then
		cat <<EOF
# Join the cluster through $join at the first start, with a single-use
# join token from this file (0600; deleted, and these lines with it, once
# joined). A restart resumes the cluster from data_dir.
join         = "$join"
token_file   = "$join_token_file"
EOF
	fi
	if [ "$server" = 1 ]; then
		cat <<EOF
# A server: a raft member holding the whole state, the sealed CA key and
# the ACLs (the lab's first three VMs; the others are clients).
server       = true
EOF
	else
		cat <<EOF
# A client: no raft, a replica of the catalog streamed from a server.
EOF
	fi
	if [ -n "$mgmt$agent" ]; then
		cat <<EOF

# ACLs are on and deny by default (as on every non-dev agent). A server's
# first leader creates the initial management token; the agent token
# (its node and its services, made by 'provision.sh acl') goes with the
# agent's own writes, which the leader checks on top of its certificate.
acl {
  tokens {
EOF
		[ -z "$mgmt" ] || echo "    initial_management = \"$mgmt\""
		[ -z "$agent" ] || echo "    agent              = \"$agent\""
		cat <<EOF
  }
}
EOF
	fi
	cat <<EOF

# The VM's resolver points at 127.0.0.1, so apps resolve <svc>.mesh to
# the service's virtual IP with no change (docs/dns.md).
addresses {
  dns = "127.0.0.1:53"
}
EOF
	if [ $# -gt 0 ]; then
		local list="" r
		for r in "$@"; do list="$list, \"$r\""; done
		cat <<EOF
# Other names go to the VM's resolvers from before the lab.
dns {
  recursors = [${list#, }]
}
EOF
	fi
	cat <<EOF

# Connections to a VIP go into the in-process proxy, which carries them
# over mTLS to the proxy of the host that runs the service.
capture {
  enabled = true
}
proxy {
  enabled = true
}

# Nothing is allowed unless an intention says so; the lab allows
# '*' => each demo service (lab/provision.sh intentions).
intentions_default = "deny"
EOF
}

# service_file APP NODE: the demo app's service definition.
service_file() {
	local app=$1 node=$2 port
	port=$(app_port "$app")
	cat <<EOF
# The lab's $app demo app (lab/demoapp) on $node. Written by
# lab/provision.sh; protocol from LAB_PROTOCOL in lab/common.sh.
service {
  name     = "$app"
  id       = "$app-$node"
  port     = $port
  protocol = "$LAB_PROTOCOL"
  tags     = ["lab"]
  check {
    http     = "http://127.0.0.1:$port/health"
    interval = "2s"
    timeout  = "1s"
  }
}
EOF
}

cmd_config() {
	local root="" node="" ip="" vms="" bootstrap=0 server=0 mgmt="" agent="" join="" join_token_file="" recursors=()
	while [ $# -gt 0 ]; do
		case $1 in
		--root) root=${2%/}; shift 2 ;;
		--node) node=$2; shift 2 ;;
		--ip) ip=$2; shift 2 ;;
		--vms) vms=$2; shift 2 ;;
		--bootstrap) bootstrap=1; server=1; shift ;;
		--server) server=1; shift ;;
		--management-token-file) mgmt=$(cat "$2") || die "config: cannot read $2"; shift 2 ;;
		--agent-token-file) agent=$(cat "$2") || die "config: cannot read $2"; shift 2 ;;
		--join) join=$2; shift 2 ;;
		--join-token-file) join_token_file=$2; shift 2 ;;
		--recursor) recursors+=("$2"); shift 2 ;;
		*) die "config: unknown argument $1" ;;
		esac
	done
	[ -n "$node" ] || die "config: --node is required"
	[ -n "$ip" ] || die "config: --ip is required"
	[[ $vms =~ ^[0-9]+$ ]] || die "config: --vms N is required (a number), got '$vms'"
	[[ $node =~ ^vm([0-9]+)$ ]] || die "config: --node must be vm<N> (the labs name VMs so), got '$node'"
	[ -z "$join" ] || [ -n "$join_token_file" ] || die "config: --join needs --join-token-file F (never the token itself)"
	local i=${BASH_REMATCH[1]}

	local etc=$root/etc/vmesh
	mkdir -p "$etc/services.d"
	install -d -m 0700 "$root/var/lib/vmesh"
	(umask 077 && config_file "$root" "$node" "$ip" "$bootstrap" "$server" "$mgmt" "$agent" "$join" "$join_token_file" "${recursors[@]}" >"$etc/vmesh.hcl.new")
	mv "$etc/vmesh.hcl.new" "$etc/vmesh.hcl"
	local app mine
	mine=" $(apps_on "$i" "$vms") "
	for app in $LAB_APPS; do
		if [[ $mine == *" $app "* ]]; then
			service_file "$app" "$node" >"$etc/services.d/$app.hcl"
		else
			rm -f "$etc/services.d/$app.hcl"
		fi
	done
}

# leader prints the local agent's raft leader, "" when it has none or does
# not answer.
leader() {
	curl -sf -m 2 "http://$HTTP_ADDR/v1/status/leader" 2>/dev/null | tr -d '"' || true
}

cmd_wait_leader() {
	local deadline=$((SECONDS + ${WAIT:-60}))
	until [ -n "$(leader)" ]; do
		[ $SECONDS -lt $deadline ] || die "no raft leader at http://$HTTP_ADDR after ${WAIT:-60}s"
		sleep 0.5
	done
}

# cmd_acl: once the leader has made the management token (in
# VMESH_HTTP_TOKEN_FILE), let the anonymous token read services, nodes,
# agents and members: DNS answers with it, and the lab's scripts read
# health and membership without a token. Writes still need one.
cmd_acl() {
	[ -n "${VMESH_HTTP_TOKEN_FILE:-}" ] || die "acl: VMESH_HTTP_TOKEN_FILE (the management token) is required"
	local vms="" agents=""
	while [ $# -gt 0 ]; do
		case $1 in
		--vms) vms=$2; shift 2 ;;
		--agent-tokens) agents=${2%/}; shift 2 ;;
		*) die "acl: unknown argument $1" ;;
		esac
	done
	# The token goes in a 0600 header file, never on a command line.
	local hdr
	hdr=$(mktemp)
	trap 'rm -f "$hdr"; trap - RETURN' RETURN
	printf 'X-Consul-Token: %s\n' "$(cat "$VMESH_HTTP_TOKEN_FILE")" >"$hdr"
	local deadline=$((SECONDS + ${WAIT:-60}))
	until curl -sf -m 2 -H @"$hdr" "http://$HTTP_ADDR/v1/acl/token/self" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || die "the management token does not work at http://$HTTP_ADDR after ${WAIT:-60}s"
		sleep 0.5
	done
	if ! "$VMESH" acl policy read -name lab-read -http-addr "$HTTP_ADDR" >/dev/null 2>&1; then
		"$VMESH" acl policy create -name lab-read -description "lab: anyone reads services, nodes and members" \
			-rules 'service_prefix "" { policy = "read" } node_prefix "" { policy = "read" } agent_prefix "" { policy = "read" } operator = "read"' \
			-http-addr "$HTTP_ADDR" >/dev/null
	fi
	"$VMESH" acl token update -id anonymous -policy-name lab-read -http-addr "$HTTP_ADDR" >/dev/null
	# Each VM's agent token: its node and the services of its files
	# (AGENTS/vmI holds its secret, which its config names).
	if [ -n "$agents" ]; then
		local i app ids
		for i in $(seq 1 "$vms"); do
			[ -f "$agents/vm$i" ] || continue
			ids=""
			for app in $(apps_on "$i" "$vms"); do ids="$ids,{\"ServiceName\":\"$app\"}"; done
			printf '{"Description":"vm%s agent","SecretID":"%s","NodeIdentities":[{"NodeName":"vm%s","Datacenter":"dc1"}],"ServiceIdentities":[%s]}' \
				"$i" "$(cat "$agents/vm$i")" "$i" "${ids#,}" |
				curl -sf -m 5 -X PUT -H @"$hdr" --data-binary @- "http://$HTTP_ADDR/v1/acl/token" >/dev/null ||
				die "acl: creating vm$i's agent token"
		done
	fi
	echo "acl: the anonymous token reads services, nodes and members; each agent has its token; writes need the management token"
}

cmd_intentions() {
	local app
	for app in $LAB_APPS; do
		"$VMESH" intention create -allow -description "lab: any mesh host may call $app" '*' "$app" -http-addr "$HTTP_ADDR" >/dev/null
	done
	echo "intentions: '*' => $LAB_APPS allowed"
}

cmd_join() {
	local addr="" token_file=""
	while [ $# -gt 0 ]; do
		case $1 in
		--token) die "join: --token puts the token in argv, where ps shows it; use --token-file F or VMESH_JOIN_TOKEN" ;;
		--token-file) token_file=$2; shift 2 ;;
		-*) die "join: unknown flag $1" ;;
		*) [ -z "$addr" ] || die "join: one address only"; addr=$1; shift ;;
		esac
	done
	[ -n "$addr" ] || die "join: ADDR (a member's cluster address, IP:7400) is required"
	if [ -n "$(leader)" ]; then
		echo "already in a cluster (leader $(leader)); not joining"
		return
	fi
	if [ -n "$token_file" ]; then
		"$VMESH" join "$addr" -token-file "$token_file" -http-addr "$HTTP_ADDR"
	else
		[ -n "${VMESH_JOIN_TOKEN:-}" ] || die "join: --token-file F or VMESH_JOIN_TOKEN is required"
		"$VMESH" join "$addr" -http-addr "$HTTP_ADDR"
	fi
	cmd_wait_leader
}

# ---- the Vagrant VM ------------------------------------------------------

# original_resolvers: the VM's resolvers before the lab pointed it at the
# agent; remembered in /etc/vmesh/lab-recursors at the first provisioning.
original_resolvers() {
	local saved=/etc/vmesh/lab-recursors
	if [ ! -f "$saved" ]; then
		awk '$1 == "nameserver" && $2 !~ /^127\./ && $2 != "::1" { print $2 }' /etc/resolv.conf >"$saved"
	fi
	cat "$saved"
}

# point_resolver: send the VM's lookups to the agent's DNS (127.0.0.1:53).
# With systemd-resolved, only the mesh zones go there; otherwise
# resolv.conf names the agent, which forwards other names to the original
# resolvers, and dhclient is kept from rewriting it.
point_resolver() {
	if systemctl is-active --quiet systemd-resolved; then
		mkdir -p /etc/systemd/resolved.conf.d
		printf '[Resolve]\nDNS=127.0.0.1\nDomains=~mesh ~consul\n' >/etc/systemd/resolved.conf.d/vmesh-lab.conf
		systemctl restart systemd-resolved
		return
	fi
	mkdir -p /etc/dhcp/dhclient-enter-hooks.d
	printf '# vmesh lab: the agent (127.0.0.1:53) is the resolver; keep it.\nmake_resolv_conf() { :; }\n' \
		>/etc/dhcp/dhclient-enter-hooks.d/vmesh-lab
	rm -f /etc/resolv.conf # may be a symlink
	printf '# vmesh lab: the agent answers *.mesh and forwards the rest\nnameserver 127.0.0.1\n' >/etc/resolv.conf
}

# The lab's state on a Vagrant VM. Secrets are root's, 0600, in a 0700
# dir: the management token (on the bootstrap VM only), every VM's agent
# token there (agent-tokens/vmI), this VM's own (agent-token) elsewhere,
# and a join token until the agent has joined.
LAB_ETC=/etc/vmesh-lab
TOKENS=$LAB_ETC/tokens
MGMT_TOKEN=$TOKENS/management-token
AGENT_TOKENS=$TOKENS/agent-tokens
AGENT_TOKEN=$TOKENS/agent-token
JOIN_TOKEN=$TOKENS/join-token

# new_secret FILE: a random secret in FILE (0600), unless FILE has one.
new_secret() {
	[ -s "$1" ] || (umask 077 && cat /proc/sys/kernel/random/uuid >"$1")
}

# in_cluster: the local agent has a cluster identity (it bootstrapped or
# joined); a restart resumes the cluster.
in_cluster() { [ -f /var/lib/vmesh/tls/ca.pem ]; }

# vagrant_config [ARGS]: /etc/vmesh/vmesh.hcl for this VM (from
# $LAB_ETC/node.env, which cmd_vagrant writes) with the tokens it has, and
# ARGS for cmd_config. 0600 root: it holds secrets, and the lab's agent
# runs as root (the lab-capture drop-in).
vagrant_config() {
	local NODE IP VMS BOOTSTRAP
	# shellcheck source=/dev/null
	. "$LAB_ETC/node.env"
	local args=(--root "" --node "$NODE" --ip "$IP" --vms "$VMS") r
	if [ "$BOOTSTRAP" = 1 ]; then
		args+=(--bootstrap --management-token-file "$MGMT_TOKEN" --agent-token-file "$AGENT_TOKENS/$NODE")
	elif [ -s "$AGENT_TOKEN" ]; then
		args+=(--agent-token-file "$AGENT_TOKEN")
	fi
	for r in $(original_resolvers); do args+=(--recursor "$r"); done
	cmd_config "${args[@]}" "$@"
	chown root:root /etc/vmesh/vmesh.hcl
	chmod 0600 /etc/vmesh/vmesh.hcl
	chown root:vmesh /etc/vmesh/services.d/*.hcl 2>/dev/null || true
}

cmd_vagrant() {
	local node="" ip="" vms="" bootstrap=0
	while [ $# -gt 0 ]; do
		case $1 in
		--node) node=$2; shift 2 ;;
		--ip) ip=$2; shift 2 ;;
		--vms) vms=$2; shift 2 ;;
		--bootstrap) bootstrap=1; shift ;;
		*) die "vagrant: unknown argument $1" ;;
		esac
	done
	[ "$(id -u)" = 0 ] || die "vagrant: run as root"
	if [ -z "$node" ] || [ -z "$ip" ] || ! [[ $vms =~ ^[0-9]+$ ]]; then
		die "vagrant: --node, --ip and --vms N are required"
	fi
	local bin=$LAB_DIR/.work/bin
	for b in vmesh demoapp; do
		[ -x "$bin/$b" ] || die "$bin/$b is missing: build it on the host first (docs/lab.md):
  GOOS=linux go build -o lab/.work/bin/vmesh . && GOOS=linux go build -o lab/.work/bin/demoapp ./lab/demoapp
then 'vagrant reload --provision' (or 'vagrant rsync' and 'vagrant provision')"
	done

	local missing=()
	command -v iptables >/dev/null || missing+=(iptables)
	command -v curl >/dev/null || missing+=(curl)
	if [ ${#missing[@]} -gt 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi

	# A VM that is still booting (minutes, on an emulated CPU) is slow to
	# answer systemctl.
	timeout 900 systemctl is-system-running --wait >/dev/null 2>&1 || true

	# The binaries; then vmesh install: user, /etc/vmesh, the unit (each
	# systemctl call may take minutes on an emulated CPU: install allows
	# them 5 by default).
	install -m 0755 "$bin/vmesh" /usr/local/bin/vmesh
	install -m 0755 "$bin/demoapp" /usr/local/bin/vmesh-demoapp
	VMESH=/usr/local/bin/vmesh
	"$VMESH" install

	# Capture under the unit: on Debian 12 both iptables backends are
	# installed, and the unit's ExecStopPost (as root) loads the legacy
	# ip_tables module; the unprivileged agent then cannot clear the legacy
	# backend. docs/capture.md's drop-in for such hosts: root, bounded.
	mkdir -p /etc/systemd/system/vmesh.service.d
	cat >/etc/systemd/system/vmesh.service.d/lab-capture.conf <<'EOF'
# vmesh lab (lab/provision.sh): the agent applies capture as root, bounded
# to these capabilities; see docs/capture.md, "Privileges".
[Service]
User=root
Group=root
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW
ReadWritePaths=-/run/xtables.lock
EOF

	install -d -m 0755 "$LAB_ETC"
	install -d -m 0700 "$TOKENS"
	printf 'NODE=%s\nIP=%s\nVMS=%s\nBOOTSTRAP=%s\n' "$node" "$ip" "$vms" "$bootstrap" >"$LAB_ETC/node.env"
	if [ "$bootstrap" = 1 ]; then
		# The server makes the management token (its first leader turns
		# acl.tokens.initial_management into it) and every VM's agent
		# token; they stay here, root's, 0600. hand-tokens gives each
		# other VM its own.
		new_secret "$MGMT_TOKEN"
		install -d -m 0700 "$AGENT_TOKENS"
		local j
		for j in $(seq 1 "$vms"); do new_secret "$AGENT_TOKENS/vm$j"; done
	fi
	vagrant_config
	point_resolver

	# The demo apps, one instance of the template unit each.
	install -m 0644 "$LAB_DIR/units/vmesh-demo@.service" /etc/systemd/system/vmesh-demo@.service
	local i=${node#vm} app
	for app in $LAB_APPS; do
		systemctl disable --now "vmesh-demo@$app.service" >/dev/null 2>&1 || true
	done
	for app in $(apps_on "$i" "$vms"); do
		printf 'LISTEN=127.0.0.1:%s\nUPSTREAMS=%s\n' "$(app_port "$app")" "$(app_upstream_flags "$app")" >"$LAB_ETC/demo-$app.env"
	done
	systemctl daemon-reload
	for app in $(apps_on "$i" "$vms"); do
		systemctl enable --now "vmesh-demo@$app.service"
	done

	systemctl enable vmesh.service
	if [ "$bootstrap" = 1 ]; then
		systemctl restart vmesh.service
		cmd_wait_leader
		# As in the netns lab: the anonymous token reads, each VM's agent
		# token is made, the intentions are written with the management
		# token (read from its file, never on a command line).
		VMESH_HTTP_TOKEN_FILE=$MGMT_TOKEN cmd_acl --vms "$vms" --agent-tokens "$AGENT_TOKENS"
		VMESH_HTTP_TOKEN_FILE=$MGMT_TOKEN cmd_intentions
		echo "$node: the server; vmesh and the demo apps ($(apps_on "$i" "$vms")) are running"
	elif in_cluster; then
		systemctl restart vmesh.service
		echo "$node: vmesh (in the cluster) and the demo apps ($(apps_on "$i" "$vms")) are running"
	else
		echo "$node: the demo apps ($(apps_on "$i" "$vms")) are running; vmesh starts when vm1 hands this VM its tokens (provision.sh vagrant-join)"
	fi
}

# cmd_hand_tokens VM: on the bootstrap VM, VM's agent token and a fresh
# single-use join token, a line each on stdout, for the channel that
# carries them to VM (the Vagrantfile's trigger: SSH, stdin to stdin).
cmd_hand_tokens() {
	[ "$(id -u)" = 0 ] || die "hand-tokens: run as root"
	if [ $# != 1 ] || ! [[ $1 =~ ^vm[0-9]+$ ]]; then
		die "hand-tokens: want one VM name (vm2), got '$*'"
	fi
	[ -s "$AGENT_TOKENS/$1" ] || die "hand-tokens: no agent token for $1 in $AGENT_TOKENS: is this the bootstrap VM, provisioned?"
	VMESH=${VMESH:-vmesh}
	cat "$AGENT_TOKENS/$1"
	VMESH_HTTP_TOKEN_FILE=$MGMT_TOKEN "$VMESH" token create -ttl 10m -http-addr "$HTTP_ADDR" | tr -d '[:space:]'
	echo
}

# cmd_vagrant_join ADDR: on another VM, with hand-tokens' two lines on
# stdin: the agent token goes in AGENT_TOKEN and the config; vmesh starts
# with join = ADDR and the join token in a 0600 file; once it has joined,
# the file and the join lines go (a restart resumes from the data dir).
cmd_vagrant_join() {
	[ "$(id -u)" = 0 ] || die "vagrant-join: run as root"
	[ $# = 1 ] || die "vagrant-join: want ADDR (vm1's cluster address, IP:7400)"
	[ -f "$LAB_ETC/node.env" ] || die "vagrant-join: $LAB_ETC/node.env is missing: run 'provision.sh vagrant' first"
	local addr=$1 agent join
	IFS= read -r agent || true
	IFS= read -r join || true
	[[ $agent =~ ^[0-9a-f-]{36}$ ]] || die "vagrant-join: the first line on stdin must be this VM's agent token (from hand-tokens on vm1)"
	[ -n "$join" ] || die "vagrant-join: the second line on stdin must be a join token (from hand-tokens on vm1)"
	(umask 077 && printf '%s\n' "$agent" >"$AGENT_TOKEN.new") && mv "$AGENT_TOKEN.new" "$AGENT_TOKEN"
	if in_cluster; then
		vagrant_config
		systemctl restart vmesh.service
		cmd_wait_leader
		echo "already in the cluster; not joining (the join token is left unused; it expires)"
		return
	fi
	(umask 077 && printf '%s\n' "$join" >"$JOIN_TOKEN")
	vagrant_config --join "$addr" --join-token-file "$JOIN_TOKEN"
	systemctl restart vmesh.service
	WAIT=${WAIT:-300} cmd_wait_leader
	rm -f "$JOIN_TOKEN"
	vagrant_config
	echo "joined the cluster through $addr; vmesh is running (a restart resumes the cluster)"
}

main() {
	[ $# -gt 0 ] || die "usage: provision.sh config|acl|intentions|join|wait-leader|vagrant|hand-tokens|vagrant-join ... (see the top of the file)"
	local cmd=$1
	shift
	# --vmesh BIN anywhere: the vmesh binary to run.
	local args=()
	while [ $# -gt 0 ]; do
		case $1 in
		--vmesh) VMESH=$2; shift 2 ;;
		*) args+=("$1"); shift ;;
		esac
	done
	set -- "${args[@]}"
	case $cmd in
	config) cmd_config "$@" ;;
	intentions) cmd_intentions "$@" ;;
	join) cmd_join "$@" ;;
	acl) cmd_acl "$@" ;;
	wait-leader) cmd_wait_leader "$@" ;;
	vagrant) cmd_vagrant "$@" ;;
	hand-tokens) cmd_hand_tokens "$@" ;;
	vagrant-join) cmd_vagrant_join "$@" ;;
	*) die "unknown command $cmd (config, acl, intentions, join, wait-leader, vagrant, hand-tokens, vagrant-join)" ;;
	esac
}

main "$@"
