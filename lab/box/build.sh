#!/usr/bin/env bash
# lab/box/build.sh: builds the Vagrant lab's box, a Debian 12 vagrant-libvirt
# box, from Debian's packages only (no Vagrant Cloud), and caches it.
#
#   lab/box/build.sh [--force]    build unless the cache holds a box of the same inputs
#   lab/box/build.sh --print-path print the box file's path (built or not) and exit
#
# Needs root, mmdebstrap, e2fsprogs (mke2fs -d), qemu-utils and
# openssh-client; lab/vagrant.sh deps installs them. No loop device, no
# mount: 'mke2fs -d' writes the root filesystem from a directory.
#
# The disk (qcow2) is one ext4 filesystem, no partition table and no
# bootloader: the box carries the image's kernel and initrd beside it, and
# its Vagrantfile boots them directly (libvirt.kernel, initrd, cmd_line
# root=UUID=...). A BIOS bootloader was tried first: syslinux stops with
# "KVM internal error" under nested KVM, where direct boot has no real-mode
# code to run. A kernel upgraded inside a VM is not booted (the lab never
# upgrades one). QEMU reads the kernel from the box's directory, so that
# directory must be readable by libvirt's QEMU user (lab/vagrant.sh keeps
# VAGRANT_HOME under lab/.work, not in /root).
#
# Inside: systemd-networkd runs DHCP on every en* interface (so Vagrant
# finds the VM on libvirt's management network and reaches it over SSH);
# Vagrant's own .network files for its private networks sort first and
# win. User vagrant (password-less sudo) logs in with a key made for this
# box, which the box's Vagrantfile names (config.ssh.private_key_path).
# Each VM makes its own machine-id (and so its own DHCP client identity)
# and SSH host keys at its first boot.
#
# The cache: $VMESH_LAB_CACHE (default lab/.work/box) holds
# vmesh-debian12-local.box and inputs.sha256, the hash of every file of
# lab/box/ (this script and the package list). A box whose inputs match
# is reused; --force rebuilds. The box's metadata.json carries the hash
# too, so lab/vagrant.sh can tell an added box of other inputs.
set -Eeuo pipefail

BOX_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_DIR=$(cd "$BOX_DIR/.." && pwd)
CACHE=${VMESH_LAB_CACHE:-$LAB_DIR/.work/box}
BOX_FILE=$CACHE/vmesh-debian12-local.box
SUITE=bookworm
DISK_GB=4    # the disk's virtual size; qcow2 stores only what is written

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}
log() { echo "==> box: $*"; }

# inputs_hash: the hash of everything that shapes the box: each file of
# lab/box/, by name and content.
inputs_hash() {
	(cd "$BOX_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}

# packages: the package list, comments and blank lines dropped, comma-joined.
packages() {
	sed -e 's/#.*//' -e 's/[[:space:]]//g' "$BOX_DIR/packages" | grep -v '^$' | paste -sd,
}

# apt_sources: the host's Debian sources for bookworm, so the box comes
# from the same mirror the host uses; deb.debian.org otherwise.
apt_sources() {
	local f
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
		if [ -f "$f" ] && grep -q "$SUITE" "$f"; then
			echo "$f"
			return
		fi
	done
	echo "http://deb.debian.org/debian"
}

FORCE=0
case ${1:-} in
--force) FORCE=1 ;;
--print-path) echo "$BOX_FILE"; exit 0 ;;
"") ;;
*) die "unknown argument $1 (--force | --print-path)" ;;
esac

HASH=$(inputs_hash)
if [ $FORCE = 0 ] && [ -f "$BOX_FILE" ] && [ "$(cat "$CACHE/inputs.sha256" 2>/dev/null)" = "$HASH" ]; then
	log "cached: $BOX_FILE (inputs $HASH)"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap in root mode, file ownership in the image)"
for t in mmdebstrap mke2fs qemu-img ssh-keygen; do
	command -v "$t" >/dev/null || die "needs $t: lab/vagrant.sh deps installs what the box build needs"
done

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
chmod 0755 "$WORK" # apt downloads as _apt
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root

log "building (inputs $HASH) in $WORK"
SECONDS=0

# The key Vagrant logs in with; the box's Vagrantfile names it.
ssh-keygen -q -t ed25519 -N '' -C "vmesh lab box $HASH" -f "$WORK/lab_key"

ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)

# The customize hook runs on the host with the image's root as $1, after
# every package is installed.
cat >"$WORK/customize.sh" <<EOF
#!/bin/sh
set -eu
r=\$1

# vagrant: password-less sudo, the box's key.
chroot "\$r" useradd --create-home --shell /bin/bash --user-group vagrant
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"\$r/etc/sudoers.d/vagrant"
chmod 0440 "\$r/etc/sudoers.d/vagrant"
install -d -m 0700 -o "\$(chroot "\$r" id -u vagrant)" -g "\$(chroot "\$r" id -g vagrant)" "\$r/home/vagrant/.ssh"
install -m 0600 -o "\$(chroot "\$r" id -u vagrant)" -g "\$(chroot "\$r" id -g vagrant)" "$WORK/lab_key.pub" "\$r/home/vagrant/.ssh/authorized_keys"

# DHCP on every en* interface; Vagrant's 50-vagrant-*.network sort first.
cat >"\$r/etc/systemd/network/99-lab-dhcp.network" <<'NET'
# vmesh lab box (lab/box/build.sh): DHCP on every Ethernet interface, so
# Vagrant finds the VM on libvirt's management network. Vagrant's own
# files for private networks (50-vagrant-*.network) sort first and win.
[Match]
Name=en*

[Network]
DHCP=ipv4
NET
chroot "\$r" systemctl enable systemd-networkd.service systemd-resolved.service ssh.service
ln -sf /run/systemd/resolve/stub-resolv.conf "\$r/etc/resolv.conf"

# SSH host keys: made by each VM at its first boot, not shared by all;
# ed25519 only (an RSA key takes minutes to make on an emulated CPU).
rm -f "\$r"/etc/ssh/ssh_host_*
cat >"\$r/etc/systemd/system/lab-ssh-host-keys.service" <<'UNIT'
# vmesh lab box (lab/box/build.sh): each VM makes its own SSH host key.
[Unit]
Description=Make the SSH host key (vmesh lab box)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
UNIT
chroot "\$r" systemctl enable lab-ssh-host-keys.service
# The one host key; no DNS lookup of the client's address at each login.
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n' >"\$r/etc/ssh/sshd_config.d/lab.conf"

printf 'UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1\n' >"\$r/etc/fstab"
echo debian12 >"\$r/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian12\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"\$r/etc/hosts"
# Each VM makes its own machine-id at its first boot.
: >"\$r/etc/machine-id"
rm -f "\$r/var/lib/dbus/machine-id"
# Nothing to download at boot, and a smaller image.
chroot "\$r" apt-get clean
rm -rf "\$r"/var/lib/apt/lists/* "\$r"/var/log/*.log
EOF
chmod +x "$WORK/customize.sh"

log "mmdebstrap $SUITE: $(packages | tr ',' ' ')"
mmdebstrap --mode=root --variant=apt --format=directory \
	--include="$(packages)" \
	--customize-hook="$WORK/customize.sh \"\$1\"" \
	"$SUITE" "$ROOT" "$(apt_sources)"

KERNEL=$(cd "$ROOT/boot" && find . -name "vmlinuz-*" -printf "%f\n" | sort -V | tail -n 1)
INITRD=initrd.img-${KERNEL#vmlinuz-}
[ -f "$ROOT/boot/$INITRD" ] || die "no initrd for $KERNEL in the image"
log "kernel $KERNEL"

# The disk is the root filesystem itself, ext4 with no partition table,
# written from the directory; the kernel and initrd go beside it in the
# box and are booted directly (no bootloader).
mke2fs -q -t ext4 -L vmesh-root -U "$ROOT_UUID" -d "$ROOT" "$WORK/disk.raw" "${DISK_GB}G" >/dev/null
mkdir "$WORK/box"
install -m 0644 "$ROOT/boot/$KERNEL" "$WORK/box/vmlinuz"
install -m 0644 "$ROOT/boot/$INITRD" "$WORK/box/initrd.img"
rm -rf "$ROOT"

log "qcow2"
qemu-img convert -f raw -O qcow2 "$WORK/disk.raw" "$WORK/box/box.img"
rm -f "$WORK/disk.raw"
install -m 0600 "$WORK/lab_key" "$WORK/box/lab_key"
cat >"$WORK/box/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $DISK_GB, "vmesh_lab_inputs": "$HASH"}
EOF
cat >"$WORK/box/Vagrantfile" <<'EOF'
# The vmesh lab's Debian 12 box (lab/box/build.sh). Vagrant logs in as
# vagrant with the key made for this box, which ships beside this file.
Vagrant.configure("2") do |config|
  config.ssh.username = "vagrant"
  config.ssh.private_key_path = File.join(File.dirname(__FILE__), "lab_key")
  config.ssh.insert_key = false
  config.vm.provider "libvirt" do |lv|
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
    # Direct kernel boot: the image has no bootloader.
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    lv.cmd_line = "root=UUID=ROOT_UUID ro console=tty0 console=ttyS0,115200n8 net.ifnames=1"
  end
end
EOF
sed -i "s/ROOT_UUID/$ROOT_UUID/" "$WORK/box/Vagrantfile"
tar -C "$WORK/box" -cf "$WORK/box.tar" metadata.json Vagrantfile lab_key vmlinuz initrd.img box.img
mv "$WORK/box.tar" "$BOX_FILE"
echo "$HASH" >"$CACHE/inputs.sha256"
log "built $BOX_FILE ($(du -h "$BOX_FILE" | cut -f1), ${SECONDS}s)"
