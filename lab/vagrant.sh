#!/usr/bin/env bash
# lab/vagrant.sh: the Vagrant lab. Three Debian 12 VMs under libvirt
# (lab/Vagrantfile), each with a vmesh agent and the demo apps as systemd
# units, configured by lab/provision.sh as the netns lab's namespaces are.
# Needs root, Go, and the packages 'deps' installs. See docs/lab.md.
#
#   lab/vagrant.sh deps          install the host's packages (apt), start libvirtd if
#                                nothing runs it, let libvirt's QEMU use /dev/kvm
#   lab/vagrant.sh up            build the binaries and the box (cached), boot vm1..vm3;
#                                vm1 bootstraps, vm2 and vm3 join; waits until all serve
#   lab/vagrant.sh traffic       the netns lab's five calls through the mesh (lab/traffic.sh)
#   lab/vagrant.sh reboot VM     reboot VM for real and wait until its agent is back in
#                                the cluster by itself
#   lab/vagrant.sh status        the VMs and the cluster's members
#   lab/vagrant.sh down [--box]  destroy the VMs, the lab's libvirt networks, pool and
#                                volumes; --box also removes the box and its cache
#   lab/vagrant.sh vagrant ARGS  run vagrant in the lab's environment (vagrant ssh vm2)
#   lab/vagrant.sh why-no-kvm    say why KVM cannot be used here; nothing when it may
#
# Vagrant's state: lab/.vagrant (machines) and lab/.work/vagrant/home
# (VAGRANT_HOME: the box). The box cache: lab/.work/box, or
# $VMESH_LAB_CACHE. Each VM's serial console: lab/.work/vagrant/console-vmI.log.
set -Eeuo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$LAB_DIR/common.sh"

REPO=$(cd "$LAB_DIR/.." && pwd)
WORK=$LAB_DIR/.work
BIN=$WORK/bin
STATE=$WORK/vagrant
VMS=3
SERVERS=1 # vm1 (lab/Vagrantfile); vm2 and vm3 are clients
BOX_NAME=vmesh/debian12-local
POOL=vmesh-lab
POOL_DIR=/var/lib/libvirt/$POOL
DOMAIN_PREFIX=vmesh-lab-
NETWORKS="vmesh-lab vmesh-lab-mgmt"
URI=qemu:///system

# Vagrant's environment: its own home (QEMU must be able to read the box's
# kernel, which /root would hide), libvirt, no calls to Vagrant Cloud.
export VAGRANT_HOME=${VMESH_LAB_VAGRANT_HOME:-$STATE/home}
export VAGRANT_CWD=$LAB_DIR
export VAGRANT_DEFAULT_PROVIDER=libvirt
export VAGRANT_CHECKPOINT_DISABLE=1
export VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export VAGRANT_NO_PARALLEL=1
export LIBVIRT_DEFAULT_URI=$URI
export VMESH_LAB_BOX=$BOX_NAME
export VMESH_LAB_POOL=$POOL
export VMESH_LAB_CONSOLE_DIR=$STATE

log() { echo "==> $(date +%H:%M:%S) $*"; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (libvirt's system instance, the box build)"; }
vm_name() { [[ $1 =~ ^vm[1-$VMS]$ ]] || die "no VM '$1' (vm1..vm$VMS)"; }

# vm_sh VM CMD: runs the shell command CMD on VM over SSH, with the
# options 'vagrant ssh-config' gave (ssh_config); a Vagrant process per
# call costs seconds. A connection that fails (ssh's exit 255: a loaded,
# emulated VM's sshd may not answer within ConnectTimeout) is tried
# twice more.
vm_sh() {
	local try rc
	for try in 1 2 3; do
		rc=0
		ssh -F "$STATE/ssh_config" -q -o ConnectTimeout=10 "$1" "$2" </dev/null || rc=$?
		[ "$rc" = 255 ] || return "$rc"
		[ "$try" = 3 ] || sleep 2
	done
	return 255
}

# ssh_config: Vagrant's SSH options for every VM, for vm_sh and traffic.sh.
# A VM that is not up is left out.
ssh_config() {
	local i
	for i in $(seq 1 $VMS); do
		vagrant ssh-config "vm$i" 2>/dev/null || true
	done >"$STATE/ssh_config.new"
	mv "$STATE/ssh_config.new" "$STATE/ssh_config"
}

# slow N: N seconds, times ten on an emulated CPU.
slow() { if [ "${VMESH_LAB_DRIVER:-kvm}" = kvm ]; then echo "$1"; else echo $(($1 * 10)); fi; }

# ---- deps --------------------------------------------------------------------

# The host's packages: Vagrant with vagrant-libvirt, libvirt with QEMU and
# its networks (dnsmasq), and what lab/box/build.sh runs. No recommends:
# what is listed is what the lab uses.
HOST_PACKAGES="vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
qemu-system-x86 qemu-utils dnsmasq-base iptables rsync openssh-client mmdebstrap e2fsprogs curl"

libvirt_up() { virsh -c "$URI" uri >/dev/null 2>&1; }

cmd_deps() {
	need_root deps
	local p missing=()
	for p in $HOST_PACKAGES; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	if ! libvirt_up; then
		if [ -d /run/systemd/system ]; then
			systemctl start virtlogd.socket libvirtd.service
		else
			# No systemd (a container, a CI runner): the daemons, detached.
			log "starting virtlogd and libvirtd (no systemd here)"
			pgrep -x virtlogd >/dev/null || virtlogd -d
			pgrep -x libvirtd >/dev/null || libvirtd -d
		fi
		local deadline=$((SECONDS + 30))
		until libvirt_up; do
			[ $SECONDS -lt $deadline ] || die "libvirtd does not answer at $URI"
			sleep 0.5
		done
	fi
	kvm_access
	log "deps: vagrant $(vagrant --version | cut -d' ' -f2), libvirt $(virsh -c "$URI" version | awk '/Using library/ { print $4 }'), driver $(driver)"
}

# kvm_access: libvirt runs QEMU as its own user (libvirt-qemu, group kvm),
# which opens /dev/kvm. Where no udev gave /dev/kvm its usual group and
# mode (root:kvm 0660), give them.
kvm_access() {
	[ -c /dev/kvm ] || return 0
	getent group kvm >/dev/null || return 0
	if [ "$(stat -c %G /dev/kvm)" != kvm ] || [ $(($(stat -c '0%a' /dev/kvm) & 8#060)) != $((8#060)) ]; then
		log "/dev/kvm: root:kvm 0660, as udev sets it (libvirt's QEMU runs in group kvm)"
		chgrp kvm /dev/kvm
		chmod 0660 /dev/kvm
	fi
}

# driver: kvm when KVM can be used (why_no_kvm says nothing) and it runs
# the box's kernel (kvm_boots), qemu (emulation) otherwise.
# VMESH_LAB_DRIVER overrides.
driver() {
	if [ -n "${VMESH_LAB_DRIVER:-}" ]; then
		echo "$VMESH_LAB_DRIVER"
	elif [ -z "$(why_no_kvm)" ] && kvm_boots; then
		echo kvm
	else
		echo qemu
	fi
}

# why_no_kvm: one line saying why KVM cannot be used, empty when it may.
why_no_kvm() {
	if [ ! -c /dev/kvm ]; then
		echo "/dev/kvm does not exist (no hardware virtualization, or it is not passed to this machine)"
	elif ! { : <>/dev/kvm; } 2>/dev/null; then
		echo "/dev/kvm cannot be opened by $(id -un)"
	elif [ -d /sys/module/kvm_pvm ]; then
		# PVM (pagetable-based virtual machines) runs only guest kernels
		# built for it; a stock kernel hangs before its first line.
		echo "/dev/kvm is PVM (kvm_pvm), which runs only PVM guest kernels, not Debian's"
	elif libvirt_up && ! virsh -c "$URI" domcapabilities --virttype kvm >/dev/null 2>&1; then
		echo "libvirt offers no KVM domains"
	fi
}

# kvm_boots: the box's kernel, started under KVM with no disk, prints its
# first line within 20 seconds (some nested hypervisors offer a /dev/kvm
# that cannot run it). Needs the box added.
kvm_boots() {
	local dir out
	dir=$(box_dir)
	[ -f "$dir/vmlinuz" ] || return 1
	out=$(timeout 20 qemu-system-x86_64 -enable-kvm -m 256 -nographic -no-reboot -kernel "$dir/vmlinuz" \
		-append "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 root=/dev/null" -serial stdio -monitor none 2>&1 </dev/null || true)
	grep -q 'Linux version' <<<"$out"
}

# ---- up ----------------------------------------------------------------------

build() {
	log "building vmesh and the demo app (linux/amd64, static) into $BIN"
	mkdir -p "$BIN"
	# Without symbols: a third less to copy into each VM.
	(cd "$REPO" && GOTOOLCHAIN=local GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -ldflags="-s -w" -o "$BIN/vmesh" . &&
		GOTOOLCHAIN=local GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go build -ldflags="-s -w" -o "$BIN/demoapp" ./lab/demoapp)
}

box_dir() { echo "$VAGRANT_HOME/boxes/${BOX_NAME//\//-VAGRANTSLASH-}/0/libvirt"; }
# box_volumes: the pool's volumes made from the box (vagrant-libvirt's names).
box_volumes() {
	virsh -c "$URI" vol-list "$POOL" 2>/dev/null | awk 'NR > 2 && $1 != "" { print $1 }' |
		grep "^${BOX_NAME//\//-VAGRANTSLASH-}_vagrant_box_image_" || true
}

# box: build the box (lab/box/build.sh caches it) and add it to Vagrant
# unless the added one has the same inputs.
box() {
	"$LAB_DIR/box/build.sh"
	local file want have
	file=$("$LAB_DIR/box/build.sh" --print-path)
	want=$(cat "$(dirname "$file")/inputs.sha256")
	have=$(sed -n 's/.*"vmesh_lab_inputs": *"\([0-9a-f]*\)".*/\1/p' "$(box_dir)/metadata.json" 2>/dev/null || true)
	if [ "$have" != "$want" ]; then
		log "adding box $BOX_NAME (inputs $want)"
		vagrant box add --force --name "$BOX_NAME" "$file"
		# A volume of an older box would be used in its place.
		remove_box_volumes
	fi
	# QEMU (libvirt's user) reads the kernel and initrd from the box.
	if id libvirt-qemu >/dev/null 2>&1 && ! runuser -u libvirt-qemu -- test -r "$(box_dir)/vmlinuz"; then
		die "libvirt's QEMU user cannot read $(box_dir)/vmlinuz: put VMESH_LAB_VAGRANT_HOME on a path every user may traverse"
	fi
}

remove_box_volumes() {
	local v
	for v in $(box_volumes); do
		virsh -c "$URI" vol-delete --pool "$POOL" "$v" >/dev/null && log "deleted volume $v"
	done
}

pool() {
	if ! virsh -c "$URI" pool-info "$POOL" >/dev/null 2>&1; then
		log "storage pool $POOL in $POOL_DIR"
		virsh -c "$URI" pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
		virsh -c "$URI" pool-build "$POOL" >/dev/null
	fi
	virsh -c "$URI" pool-info "$POOL" | grep -q 'State:.*running' || virsh -c "$URI" pool-start "$POOL" >/dev/null
}

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds.
wait_until() {
	local secs=$1 what=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [ $SECONDS -ge $deadline ]; then
			echo "timed out after ${secs}s waiting for $what" >&2
			return 1
		fi
		sleep 2
	done
}

# members_ok FROM: the agent on VM FROM sees all VMs alive, SERVERS of
# them in raft (voter, nonvoter or leader: not "none"; the others are
# clients), and knows a leader.
members_ok() {
	vm_sh "$1" "m=\$(curl -sf -m 3 http://127.0.0.1:8500/v1/vmesh/members) || exit 1; a=\$(printf '%s' \"\$m\" | grep -o '\"Status\":\"alive\"' | wc -l); s=\$(printf '%s' \"\$m\" | grep -o '\"Role\":\"[a-z]*\",\"Status\":\"alive\"' | grep -vc '\"Role\":\"none\"'); [ \"\$a\" -eq $VMS ] && [ \"\$s\" -eq $SERVERS ] && [ -n \"\$(curl -sf -m 3 http://127.0.0.1:8500/v1/status/leader | tr -d '\"')\" ]"
}
# member_alive FROM NODE: the agent on VM FROM lists NODE alive.
member_alive() {
	vm_sh "$1" "curl -sf -m 3 http://127.0.0.1:8500/v1/vmesh/members | grep -o '\"Name\":\"$2\"[^}]*' | grep -q '\"Status\":\"alive\"'"
}
# apps_ready: every app passes its check (seen from vm1), and every VM
# resolves every <app>.mesh to a VIP it holds on vmesh0.
apps_ready() {
	local i
	vm_sh vm1 "for a in $LAB_APPS; do curl -sf -m 10 \"http://127.0.0.1:8500/v1/health/service/\$a?passing\" | grep -q '\"Service\":{' || exit 1; done" || return 1
	for i in $(seq 1 $VMS); do
		vm_sh "vm$i" "for a in $LAB_APPS; do v=\$(getent ahostsv4 \$a.mesh | awk 'NR == 1 { print \$1 }'); [ -n \"\$v\" ] && ip -o -4 addr show dev vmesh0 | grep -q \"inet \$v/\" || exit 1; done" || return 1
	done
}

show_diagnostics() {
	local i f
	vagrant status 2>&1 | grep -E '^vm[0-9]+ ' >&2 || true
	for i in $(seq 1 $VMS); do
		f=$STATE/console-vm$i.log
		[ -s "$f" ] && { echo "---- vm$i's console (last 15 lines)" >&2; tail -n 15 "$f" >&2; }
		vm_sh "vm$i" "sudo journalctl -u vmesh -n 20 --no-pager" 2>/dev/null | sed "s/^/vm$i: /" >&2 || true
	done
}

cmd_up() {
	need_root up
	{ command -v vagrant && command -v virsh; } >/dev/null || die "needs vagrant and libvirt: lab/vagrant.sh deps"
	libvirt_up || die "libvirtd does not answer at $URI: lab/vagrant.sh deps starts it"
	vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt || die "needs vagrant-libvirt: lab/vagrant.sh deps"
	if [ -n "$(our_domains)" ]; then
		die "a Vagrant lab is already up (or half up): $(our_domains | tr '\n' ' ')— lab/vagrant.sh down first"
	fi
	kvm_access
	trap 'echo "up failed; lab/vagrant.sh status shows what runs, lab/vagrant.sh down removes everything" >&2; show_diagnostics' ERR
	local t0=$SECONDS
	mkdir -p "$STATE"
	build
	box
	pool
	VMESH_LAB_DRIVER=$(driver)
	export VMESH_LAB_DRIVER
	echo "$VMESH_LAB_DRIVER" >"$STATE/driver"
	if [ "$VMESH_LAB_DRIVER" = qemu ]; then
		local why
		why=$(why_no_kvm)
		[ -n "$why" ] || why="KVM does not run the box's kernel"
		log "no KVM ($why): plain QEMU emulation, many times slower (docs/lab.md)"
	fi
	log "vagrant up: vm1 (bootstraps), vm2 and vm3 (join), driver $VMESH_LAB_DRIVER"
	# Without the progress bars of the box's upload.
	vagrant up --no-parallel 2>&1 | stdbuf -oL tr '\r' '\n' | grep --line-buffered -v 'Progress: \|^==> vm[0-9]*:  -- '
	ssh_config
	log "waiting for the cluster and the demo apps"
	wait_until "$(slow 120)" "all $VMS VMs to be members" members_ok vm1
	wait_until "$(slow 120)" "the apps to pass their checks and every VM to hold their VIPs" apps_ready
	trap - ERR
	log "up in $((SECONDS - t0))s"
	cmd_status
	echo
	echo "Next: lab/vagrant.sh traffic    (and: lab/vagrant.sh vagrant ssh vm1 -c 'curl -s $(app_url orders)/orders')"
}

# ---- traffic, reboot, status -------------------------------------------------

need_up() { [ -n "$(our_domains)" ] || die "no Vagrant lab is up; run 'lab/vagrant.sh up' first"; }

cmd_traffic() {
	need_root traffic
	need_up
	export VMESH_LAB_DRIVER
	VMESH_LAB_DRIVER=$(cat "$STATE/driver" 2>/dev/null || driver)
	[ -f "$STATE/ssh_config" ] || ssh_config
	# Emulated VMs answer slowly: give each call longer (--wait) unless told.
	local opts=()
	[[ " $* " == *" --wait "* ]] || opts+=(--wait "$(slow 20)")
	[[ " $* " == *" --timeout "* ]] || opts+=(--timeout "$(slow 10)")
	export LAB_SSH_CONFIG=$STATE/ssh_config
	exec "$LAB_DIR/traffic.sh" --vagrant --vms "$VMS" "${opts[@]}" "$@"
}

boot_id() { vm_sh "$1" "cat /proc/sys/kernel/random/boot_id"; }

cmd_reboot() {
	need_root reboot
	[ $# = 1 ] || die "usage: lab/vagrant.sh reboot VM"
	local vm=$1 witness old new t0=$SECONDS
	vm_name "$vm"
	need_up
	VMESH_LAB_DRIVER=$(cat "$STATE/driver" 2>/dev/null || driver)
	export VMESH_LAB_DRIVER
	# Another VM's agent watches the rebooted one come back.
	witness=vm1
	[ "$vm" = vm1 ] && witness=vm2
	old=$(boot_id "$vm") || die "cannot reach $vm over SSH"
	log "rebooting $vm (boot $old); $witness watches"
	vm_sh "$vm" "sudo systemctl reboot" || true
	[ -f "$STATE/ssh_config" ] || ssh_config
	# Back when SSH answers with another boot ID.
	local deadline=$((SECONDS + $(slow 300)))
	while :; do
		new=$(boot_id "$vm" 2>/dev/null || true)
		[ -n "$new" ] && [ "$new" != "$old" ] && break
		[ $SECONDS -lt $deadline ] || die "$vm did not come back from its reboot in $(slow 300)s"
		sleep 2
	done
	log "$vm is up again (boot $new) after $((SECONDS - t0))s; waiting for its agent to rejoin by itself"
	wait_until "$(slow 180)" "$vm's agent to be alive in the cluster again" member_alive "$witness" "$vm"
	wait_until "$(slow 120)" "all $VMS VMs to be members" members_ok "$witness"
	wait_until "$(slow 120)" "the apps to pass their checks and every VM to hold their VIPs" apps_ready
	log "$vm rebooted and rejoined in $((SECONDS - t0))s: $(vm_sh "$vm" "systemctl show vmesh -p ActiveEnterTimestamp --value | sed 's/^/vmesh.service active since /'")"
	vm_sh "$witness" "vmesh members"
}

cmd_status() {
	need_root status
	vagrant status 2>&1 | grep -E '^vm[0-9]+ ' || true
	if [ -n "$(our_domains)" ]; then
		[ -f "$STATE/ssh_config" ] || ssh_config
		vm_sh vm1 "vmesh members" || true
	fi
}

# ---- down --------------------------------------------------------------------

our_domains() { virsh -c "$URI" list --all --name 2>/dev/null | grep "^$DOMAIN_PREFIX" || true; }

cmd_down() {
	need_root down
	local remove_box=0
	case ${1:-} in
	--box) remove_box=1 ;;
	"") ;;
	*) die "down: unknown argument $1 (--box)" ;;
	esac
	if command -v vagrant >/dev/null && [ -d "$LAB_DIR/.vagrant/machines" ] && libvirt_up; then
		log "vagrant destroy"
		vagrant destroy -f || echo "warning: vagrant destroy failed; removing the lab's domains with virsh" >&2
	fi
	if libvirt_up; then
		local d n
		for d in $(our_domains); do
			virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
			virsh -c "$URI" undefine "$d" --remove-all-storage --nvram >/dev/null 2>&1 ||
				virsh -c "$URI" undefine "$d" >/dev/null
			log "removed domain $d"
		done
		for n in $NETWORKS; do
			virsh -c "$URI" net-info "$n" >/dev/null 2>&1 || continue
			virsh -c "$URI" net-destroy "$n" >/dev/null 2>&1 || true
			virsh -c "$URI" net-undefine "$n" >/dev/null 2>&1 || true
			log "removed network $n"
		done
		if virsh -c "$URI" pool-info "$POOL" >/dev/null 2>&1; then
			virsh -c "$URI" pool-start "$POOL" >/dev/null 2>&1 || true
			virsh -c "$URI" pool-refresh "$POOL" >/dev/null 2>&1 || true
			local v
			for v in $(virsh -c "$URI" vol-list "$POOL" 2>/dev/null | awk 'NR > 2 && $1 != "" { print $1 }'); do
				virsh -c "$URI" vol-delete --pool "$POOL" "$v" >/dev/null && log "deleted volume $v"
			done
			virsh -c "$URI" pool-destroy "$POOL" >/dev/null 2>&1 || true
			virsh -c "$URI" pool-undefine "$POOL" >/dev/null
			log "removed storage pool $POOL"
		fi
	fi
	rm -rf "$POOL_DIR" "$LAB_DIR/.vagrant" "$STATE"/console-vm*.log "$STATE/driver" "$STATE/ssh_config"
	if [ $remove_box = 1 ]; then
		if command -v vagrant >/dev/null && vagrant box list 2>/dev/null | grep -q "^$BOX_NAME "; then
			vagrant box remove --force --all "$BOX_NAME"
		fi
		local file
		file=$("$LAB_DIR/box/build.sh" --print-path)
		rm -f "$file" "$(dirname "$file")/inputs.sha256"
		rmdir "$(dirname "$file")" 2>/dev/null || true
		log "removed the box $BOX_NAME and its cache"
	fi
	log "the Vagrant lab is down"
}

main() {
	local cmd=${1:-}
	[ $# -gt 0 ] && shift
	case $cmd in
	deps) cmd_deps "$@" ;;
	up) cmd_up "$@" ;;
	traffic) cmd_traffic "$@" ;;
	reboot) cmd_reboot "$@" ;;
	status) cmd_status "$@" ;;
	down) cmd_down "$@" ;;
	why-no-kvm) why_no_kvm ;;
	vagrant)
		VMESH_LAB_DRIVER=$(cat "$STATE/driver" 2>/dev/null || driver)
		export VMESH_LAB_DRIVER
		exec vagrant "$@"
		;;
	*) die "usage: lab/vagrant.sh deps | up | traffic | reboot VM | status | down [--box] | vagrant ARGS" ;;
	esac
}

main "$@"
