#!/usr/bin/env bash
# The Debian 12 root the VM test boots, before guestd is installed: packaging/debootstrap-base's
# minbase root plus systemd as PID 1, udev, kmod, iproute2 and D-Bus (which systemd recommends
# and every Debian cloud image has: logind needs it, and so does `shutdown +0`). Built once per checkout under
# target/debootstrap/bookworm-vm-<key> (the key changes with the package list, so an edit here
# builds a fresh one) and copied for every run, never changed. Prints the root's path.
#
# apt runs chrooted inside a private mount namespace (unshare -m), so the /proc it needs is
# never mounted on this machine's side.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGES=(systemd systemd-sysv udev kmod iproute2 dbus)
# Files taken from packages that are not installed: Debian's qemu-guest-agent ships
# /etc/qemu/fsfreeze-hook, the dispatcher of /etc/qemu/fsfreeze-hook.d/* that qemu-ga (and
# guestd, by default) runs around a freeze; guestd's package does not ship it.
EXTRACT=(qemu-guest-agent:./etc/qemu/fsfreeze-hook)
key=$(printf '%s\n' "${PACKAGES[@]}" "${EXTRACT[@]}" | sha256sum | cut -c1-12)
cache=target/debootstrap
root="$PWD/$cache/bookworm-vm-$key"
if [ ! -x "$root/lib/systemd/systemd" ]; then
  base=$(packaging/debootstrap-base)
  rm -rf "$root.tmp"
  cp -a "$base" "$root.tmp"
  cp /etc/resolv.conf "$root.tmp/etc/resolv.conf"
  # Services never start inside the root while it is being built.
  printf '#!/bin/sh\nexit 101\n' > "$root.tmp/usr/sbin/policy-rc.d"; chmod +x "$root.tmp/usr/sbin/policy-rc.d"
  if ! EXTRACT="${EXTRACT[*]}" unshare -m --propagation private -- sh -ec '
      r=$1; shift
      mount -t proc proc "$r/proc"
      chroot "$r" apt-get update -qq
      DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get install -y -qq --no-install-recommends "$@"
      for e in $EXTRACT; do
        pkg=${e%%:*}; file=${e#*:}
        chroot "$r" sh -ec "cd /tmp && apt-get download -qq $pkg && dpkg-deb --fsys-tarfile ${pkg}_*.deb | tar -x -C / $file && rm -f ${pkg}_*.deb"
      done
      chroot "$r" apt-get clean' sh "$root.tmp" "${PACKAGES[@]}" >"$cache/vm-root.log" 2>&1; then
    tail -20 "$cache/vm-root.log" >&2
    exit 1
  fi
  rm -f "$root.tmp/usr/sbin/policy-rc.d" "$root.tmp/etc/resolv.conf"
  rm -rf "$root.tmp/var/lib/apt/lists/"*
  find "$cache" -maxdepth 1 -name 'bookworm-vm-*' ! -name '*.tmp' -exec rm -rf {} +  # older keys
  mv "$root.tmp" "$root"
fi
echo "$root"
