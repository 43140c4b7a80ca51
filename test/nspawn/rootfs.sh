#!/usr/bin/env bash
# Builds the Debian 12 root file system that test/nspawn.test.ts boots with
# systemd-nspawn, once, into DIR (atomically: a half-built tree is never
# left under DIR). Usage: rootfs.sh DIR
#
# debootstrap's minbase plus systemd as PID 1, dbus, iproute2 and procps for
# the assertions, libbpf1 (the package's dependency) and Node.js >= 20,
# which Debian 12 does not ship (it has 18): the host's nodejs package is
# repacked with dpkg-repack and installed, so the container needs no
# registry at test time. The mirror is the one apt on this host uses.
set -euo pipefail
dir=${1:?usage: rootfs.sh DIR}
suite=bookworm
include=systemd,systemd-sysv,dbus,libbpf1,iproute2,procps,python3,ca-certificates,libstdc++6

# First deb URI of a sources file that serves bookworm main (deb822 or one-line form).
mirror=${TCPRESET_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u ~ /debian\/?$/ {print u; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1=="deb" && $3=="bookworm" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

node_ver=$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null) || { echo "rootfs.sh: the host has no nodejs package to repack (Node.js >= 20 is needed in the container)" >&2; exit 1; }
dpkg --compare-versions "${node_ver#*:}" ge 20 || { echo "rootfs.sh: host nodejs $node_ver is older than 20" >&2; exit 1; }

tmp="$dir.tmp.$$"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
rm -rf "$tmp"
mkdir -p "$(dirname "$dir")"
t0=$(date +%s)
echo "rootfs.sh: debootstrap $suite from $mirror into $tmp" >&2
debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 || {
  tail -30 "$tmp.log" >&2; rm -f "$tmp.log"; echo "rootfs.sh: debootstrap failed (mirror $mirror)" >&2; exit 1; }
rm -f "$tmp.log"
t1=$(date +%s)

# Node.js from the host's package database, as a .deb installed with dpkg
# (uncompressed: xz on 190 MB takes minutes and the file is deleted at once).
repack=$(mktemp -d)
(cd "$repack" && dpkg-repack --deb-option=-Znone nodejs >/dev/null 2>&1) || { echo "rootfs.sh: dpkg-repack nodejs failed" >&2; rm -rf "$repack"; exit 1; }
cp "$repack"/nodejs_*.deb "$tmp/root/"
rm -rf "$repack"
chroot "$tmp" sh -c 'dpkg -i /root/nodejs_*.deb >/dev/null && rm /root/nodejs_*.deb'
chroot "$tmp" node --version >/dev/null

# A booted container that idles: no console login, no machine-id yet (made
# at each boot, so every ephemeral boot is a new machine), apt's caches gone.
chroot "$tmp" systemctl mask -q console-getty.service getty@.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
chroot "$tmp" systemctl set-default -q multi-user.target
: >"$tmp/etc/machine-id"
echo tcpreset-test >"$tmp/etc/hostname"
chroot "$tmp" apt-get clean
rm -rf "$tmp"/var/lib/apt/lists/*
echo "built $(date -u +%FT%TZ) debootstrap=$((t1 - t0))s total=$(( $(date +%s) - t0 ))s mirror=$mirror nodejs=$node_ver" >"$tmp/.tcpreset-rootfs"

rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
cat "$dir/.tcpreset-rootfs" >&2
