# Sourced by tests/qemu/run.sh and tests/vm/run.sh: the Debian cloud kernel both VMs boot, the
# current ABI package linux-image-cloud-amd64 depends on, downloaded once and unpacked into
# $CACHE (GUESTD_QEMU_CACHE, default /tmp/guestd-qemu-cache). Sets KPKG, KROOT (the unpacked
# package), KERNEL (its vmlinuz) and KVER (its module directory name). Needs the caller's note().
CACHE=${GUESTD_QEMU_CACHE:-/tmp/guestd-qemu-cache}
mkdir -p "$CACHE"
kpkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
KPKG=$(kpkg)
# A fresh machine (or container) may have no package lists yet.
if [ -z "$KPKG" ]; then
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
  KPKG=$(kpkg)
fi
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-cloud-amd64 (apt sources?)"; exit 1; }
KROOT=$CACHE/$KPKG
if ! ls "$KROOT"/boot/vmlinuz-* >/dev/null 2>&1; then
  note "downloading $KPKG"
  (cd "$CACHE" && apt-get download -q "$KPKG" >/dev/null)
  rm -rf "$KROOT.tmp"; dpkg -x "$CACHE/${KPKG}"_*.deb "$KROOT.tmp"; mv "$KROOT.tmp" "$KROOT"
fi
KERNEL=$(ls "$KROOT"/boot/vmlinuz-* | head -1)
KVER=$(ls "$KROOT/lib/modules" | head -1)
note "kernel $KERNEL"
