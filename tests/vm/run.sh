#!/usr/bin/env bash
# End to end with the real clients a KVM cloud uses: libvirt's virsh drives guestd, installed
# from the project's .deb and started by its systemd unit, inside a debootstrapped Debian 12
# guest (systemd as PID 1) under QEMU TCG, over the virtio-serial channel
# org.qemu.guest_agent.0 — what `virsh guestinfo`, `domfsfreeze`, `set-user-password`,
# `shutdown --mode agent` and friends send, answered by guestd under Type=notify, Restart=always
# and the unit's hardening. The host looks inside the guest through a root shell on its serial
# console (tests/vm/console.py).
#
#   tests/vm/run.sh      installs what it needs (apt), prints "N passed, N failed, N skipped"
#                        last; exit 0 only if nothing failed
#
# libvirtd is private to the test: started by it in its own mount namespace (unshare -m) where
# /etc/libvirt is the test's config, /run, /var/lib, /var/log and /var/cache are overlays
# whose writes land in the work directory, and /etc/passwd has a libvirt-qemu user if this
# machine has none; it is stopped at the end. Nothing on this machine is changed and nothing
# is left running.
#
# Environment: GUESTD_VM_KEEP=1 keeps the work directory (console log, libvirtd and QEMU logs,
# the guest's disk images); GUESTD_QEMU_CACHE is the kernel cache shared with tests/qemu;
# GUESTD_VM_DEB=FILE installs that .deb instead of building one; GUESTD_VM_AGENT=qemu-ga runs
# the same checks against Debian's qemu-guest-agent instead of guestd (to check the checks:
# the guestd-specific ones, its unit and its [qga] configuration, fail there by design).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
W=$(mktemp -d /tmp/guestd-vm.XXXXXX)
T0=$(date +%s)
note() { printf '[vm-e2e %4ss] %s\n' $(($(date +%s) - T0)) "$*"; }

DOM=guestd-vmtest
AGENT=${GUESTD_VM_AGENT:-guestd}
case "$AGENT" in
  guestd) UNIT=guestd
    ENABLE_EXEC='mkdir -p /etc/guestd/conf.d && mv /etc/guestd/vmtest-exec.toml /etc/guestd/conf.d/50-vmtest-exec.toml && systemctl restart guestd';;
  qemu-ga) UNIT=qemu-guest-agent
    ENABLE_EXEC="sed -i '/^block-rpcs=/d' /etc/qemu/qemu-ga.conf && systemctl restart qemu-guest-agent";;
  *) echo "GUESTD_VM_AGENT: guestd or qemu-ga, not '$AGENT'"; exit 2;;
esac
LV=$W/libvirt
URI="qemu+unix:///system?socket=$LV/sock/libvirt-sock"
LVPID=
vsh() { virsh -c "$URI" "$@"; }

cleanup() {
  set +e
  if [ -n "$LVPID" ] && kill -0 "$LVPID" 2>/dev/null; then
    vsh destroy "$DOM" >/dev/null 2>&1
    kill "$LVPID"; wait "$LVPID" 2>/dev/null
  fi
  # A QEMU that outlived libvirtd (libvirtd leaves domains running when it stops).
  for f in "$LV"/ovl/run/upper/libvirt/qemu/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null && kill "$p"
  done
  if [ "${GUESTD_VM_KEEP:-0}" = 1 ]; then note "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

# ---- host tools ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || { echo "tests/vm/run.sh runs libvirtd, chroot and unshare: run it as root"; exit 1; }
need=()
for p in qemu-system-x86 busybox-static cpio e2fsprogs debootstrap python3 \
         libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients openssl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  note "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
note "$(qemu-system-x86_64 --version | head -1); $(libvirtd --version)"

# ---- kernel (shared with tests/qemu) and guestd's .deb ---------------------------------------
. "$REPO/tests/qemu/kernel.sh"
DEB=${GUESTD_VM_DEB:-}
if [ "$AGENT" = guestd ] && [ -z "$DEB" ]; then
  note "packaging/build-packages"
  (cd "$REPO" && packaging/build-packages >"$W/build-packages.log" 2>&1) \
    || { tail -30 "$W/build-packages.log"; exit 1; }
  DEB=$(ls "$REPO"/target/packages/guestd_*_amd64.deb | tail -1)
fi
GUESTCTL=
if [ "$AGENT" = guestd ]; then
  # The native channel's host side (configure): guestctl over the port's chardev socket.
  (cd "$REPO" && cargo build -q --locked -p guestd-ctl --bin guestctl)
  GUESTCTL=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/guestctl
fi

# ---- the guest's root file system -------------------------------------------------------------
BASE=$("$HERE/guest-root.sh")
R=$W/root
cp -a "$BASE" "$R"
mkdir -p "$R/lib/modules"
cp -a "$KROOT/lib/modules/$KVER" "$R/lib/modules/"
chroot "$R" depmod "$KVER"
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
if [ "$AGENT" = guestd ]; then
  note "installing $(basename "$DEB")"
  cp "$DEB" "$R/tmp/guestd.deb"
  chroot "$R" dpkg -i /tmp/guestd.deb >"$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log"; exit 1; }
  rm -f "$R/tmp/guestd.deb"
  test -L "$R/etc/systemd/system/multi-user.target.wants/guestd.service" \
    || { echo "the .deb did not enable guestd.service"; exit 1; }
else
  note "installing Debian's qemu-guest-agent (reference run)"
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  unshare -m --propagation private -- sh -ec 'mount -t proc proc "$1/proc"
    chroot "$1" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$1" apt-get install -y -qq --no-install-recommends qemu-guest-agent
    chroot "$1" apt-get clean' sh "$R" >"$W/apt.log" 2>&1 || { tail -20 "$W/apt.log"; exit 1; }
  rm -rf "$R/etc/resolv.conf" "$R/var/lib/apt/lists/"*
  # qemu-ga runs fsfreeze hooks only when told where the hook is; exec and file commands are
  # blocked the way the checks expect by default (phase 2 of those checks drops the block list).
  printf '[general]\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\nblock-rpcs=%s\n' \
    guest-exec,guest-exec-status,guest-file-open,guest-file-close,guest-file-read,guest-file-write,guest-file-seek,guest-file-flush \
    > "$R/etc/qemu/qemu-ga.conf"
  mkdir -p "$R/etc/guestd"
fi
rm -f "$R/usr/sbin/policy-rc.d"

MAC=52:54:00:4a:67:01
GUEST_HOSTNAME=vmtest-guest
GUEST_TZ=Europe/Berlin
echo "$GUEST_HOSTNAME" > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$GUEST_HOSTNAME" > "$R/etc/hosts"
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$R/etc/machine-id"; echo >> "$R/etc/machine-id"
ln -sf "/usr/share/zoneinfo/$GUEST_TZ" "$R/etc/localtime"; echo "$GUEST_TZ" > "$R/etc/timezone"
mkdir -p "$R/data" "$R/var/lib/vmtest"
cat > "$R/etc/fstab" <<'EOF'
/dev/vda  /      ext4  rw,relatime  0 0
/dev/vdb  /data  ext4  rw,relatime  0 0
EOF
# The NIC gets a fixed address from systemd-networkd (QEMU's user network is 10.0.2.0/24), so
# that the agent has an address to report and the host's network is not involved.
cat > "$R/etc/systemd/network/10-vmtest.network" <<EOF
[Match]
MACAddress=$MAC
[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
EOF
chroot "$R" systemctl enable -q systemd-networkd.service
ln -sf /lib/systemd/system/multi-user.target "$R/etc/systemd/system/default.target"
# A fast boot under TCG: no getty, no timers, no first-boot questions.
for u in getty@tty1.service serial-getty@ttyS0.service systemd-firstboot.service \
         apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
         e2scrub_reap.service fstrim.timer; do
  ln -sf /dev/null "$R/etc/systemd/system/$u"
done
# The host's way in: a root shell on ttyS0, no echo, no prompt (console.py reads exactly the
# command's output). Its utmp record (UtmpMode=user) is the login session guest-get-users sees.
cat > "$R/etc/systemd/system/vmtest-console.service" <<'EOF'
[Unit]
Description=Root shell on ttyS0 for tests/vm/run.sh
After=systemd-user-sessions.service
[Service]
ExecStartPre=/bin/dmesg -n 1
ExecStart=/bin/sh -c 'stty -echo -onlcr; exec /bin/sh -i'
Environment=PS1= PS2= HOME=/root
StandardInput=tty-force
StandardOutput=tty
TTYPath=/dev/ttyS0
TTYReset=yes
UtmpIdentifier=ttyS0
UtmpMode=user
Restart=always
# An interactive shell ignores SIGTERM; without these, shutdown would wait 90 s for it.
KillSignal=SIGHUP
TimeoutStopSec=5
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/vmtest-console.service "$R/etc/systemd/system/multi-user.target.wants/"
chroot "$R" useradd -m -s /bin/sh cloud
# A backup tool's fsfreeze hook, as qemu-ga runs them: /etc/qemu/fsfreeze-hook.d/*, with
# "freeze" before the freeze and "thaw" after the thaw. It records each call in /run (tmpfs,
# never frozen).
mkdir -p "$R/etc/qemu/fsfreeze-hook.d"
cat > "$R/etc/qemu/fsfreeze-hook.d/vmtest-hook.sh" <<'EOF'
#!/bin/sh
echo "$1" >> /run/vmtest-fsfreeze-hook.log
EOF
chmod 755 "$R/etc/qemu/fsfreeze-hook.d/vmtest-hook.sh"
# Phase 2 of the exec/file checks turns guest-exec and guest-file-* on with this drop-in
# (moved into /etc/guestd/conf.d/ then). The [qga] keys are the ones guestd defines for them:
# executables guest-exec may run, path prefixes guest-file-* may open.
cat > "$R/etc/guestd/vmtest-exec.toml" <<'EOF'
[qga]
exec_allow = ["/bin/sh"]
file_allow = ["/var/lib/vmtest/"]
EOF

# configure (guestd only): a drop-in enabling it, the administrator's script in scripts_dir, and
# a local package repository (file:, no network) with a package that brings a systemd unit.
if [ "$AGENT" = guestd ]; then
  mkdir -p "$R/etc/guestd/conf.d" "$R/etc/guestd/scripts" "$R/srv/local-repo"
  cat > "$R/etc/guestd/conf.d/50-vmtest-configure.toml" <<'EOF'
[configure]
kinds = ["file", "user", "group", "package", "service", "run"]
EOF
  cat > "$R/etc/guestd/scripts/vmtest-setup.sh" <<'EOF'
#!/bin/sh
set -eu
printf '%s\n' "$VMTEST_MESSAGE" > /var/lib/vmtest/configure.out
EOF
  chmod 755 "$R/etc/guestd/scripts/vmtest-setup.sh"
  P=$W/demo-deb
  mkdir -p "$P/DEBIAN" "$P/lib/systemd/system"
  printf 'Package: vmtest-demo\nVersion: 1.0\nArchitecture: all\nMaintainer: guestd tests <tests@example.invalid>\nDescription: configure test package\n' \
    > "$P/DEBIAN/control"
  printf '[Unit]\nDescription=configure demo\n[Service]\nEnvironmentFile=/etc/vmtest-demo.conf\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n' \
    > "$P/lib/systemd/system/vmtest-demo.service"
  pkg=$R/srv/local-repo/vmtest-demo_1.0_all.deb
  dpkg-deb --root-owner-group --build "$P" "$pkg" >/dev/null
  printf 'Package: vmtest-demo\nVersion: 1.0\nArchitecture: all\nMaintainer: guestd tests <tests@example.invalid>\nFilename: ./%s\nSize: %s\nSHA256: %s\nDescription: configure test package\n\n' \
    "$(basename "$pkg")" "$(stat -c %s "$pkg")" "$(sha256sum "$pkg" | cut -d' ' -f1)" > "$R/srv/local-repo/Packages"
  echo 'deb [trusted=yes] file:/srv/local-repo ./' > "$R/etc/apt/sources.list"
  rm -f "$R/etc/apt/sources.list.d/"*
  unshare -m --propagation private -- sh -ec 'mount -t proc proc "$1/proc"; chroot "$1" apt-get update -qq' \
    sh "$R" >"$W/apt-local.log" 2>&1 || { cat "$W/apt-local.log"; exit 1; }
fi

mke2fs -q -t ext4 -L vmroot -d "$R" "$W/root.img" 1G >/dev/null
mke2fs -q -t ext4 -L vmdata "$W/data.img" 64M >/dev/null
rm -rf "$R"
note "disk images made ($(du -sh "$W/root.img" | cut -f1) used)"

# ---- initramfs: busybox, the virtio block driver, switch_root ---------------------------------
I=$W/initramfs
mkdir -p "$I"/{bin,proc,sys,dev,newroot,lib/modules}
cp /bin/busybox "$I/bin/busybox"
cp "$HERE/initrd-init" "$I/init"; chmod 755 "$I/init"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  f=$(find "$KROOT/lib/modules/$KVER" \( -name "$m.ko" -o -name "$m.ko.xz" \) | head -1)
  [ -n "$f" ] || { echo "module $m not in $KPKG"; exit 1; }
  case "$f" in *.xz) xz -dc "$f" > "$I/lib/modules/$m.ko";; *) cp "$f" "$I/lib/modules/";; esac
done
(cd "$I" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$W/initrd.gz"
rm -rf "$I"

# ---- a private libvirtd -----------------------------------------------------------------------
mkdir -p "$LV"/{etc,sock,log}
for d in run var-lib var-log var-cache; do mkdir -p "$LV/ovl/$d"/{upper,work}; done
cat > "$LV/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$LV/sock"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_level = 3
log_filters = "1:qemu.qemu_agent"
log_outputs = "1:file:$LV/log/libvirtd.log"
EOF
# QEMU runs as root with no security driver, no cgroups and no private /dev: nothing to set up
# on this machine (no libvirt-qemu user, no AppArmor profile, no machine cgroup).
cat > "$LV/etc/qemu.conf" <<'EOF'
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
# libvirtd resolves its built-in QEMU user (libvirt-qemu) before it reads qemu.conf: where this
# machine has no such user, libvirtd's namespace gets a copy of /etc/passwd and /etc/group
# that has one (QEMU still runs as root, per qemu.conf).
if ! getent passwd libvirt-qemu >/dev/null; then
  uid=64055
  while getent passwd "$uid" >/dev/null || getent group "$uid" >/dev/null; do uid=$((uid + 1)); done
  { cat /etc/passwd; echo "libvirt-qemu:x:$uid:$uid:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin"; } > "$LV/passwd"
  { cat /etc/group; echo "libvirt-qemu:x:$uid:"; } > "$LV/group"
fi
unshare -m --propagation private -- sh -ec '
  lv=$1
  mount --bind "$lv/etc" /etc/libvirt
  if [ -f "$lv/passwd" ]; then mount --bind "$lv/passwd" /etc/passwd; mount --bind "$lv/group" /etc/group; fi
  for m in run:/run var-lib:/var/lib var-log:/var/log var-cache:/var/cache; do
    d=${m%%:*}; p=${m#*:}
    mount -t overlay overlay -o "lowerdir=$p,upperdir=$lv/ovl/$d/upper,workdir=$lv/ovl/$d/work" "$p"
  done
  exec libvirtd --config /etc/libvirt/libvirtd.conf --pid-file "$lv/libvirtd.pid"
' sh "$LV" >"$LV/log/libvirtd.out" 2>&1 &
LVPID=$!
for _ in $(seq 100); do
  [ -S "$LV/sock/libvirt-sock" ] && vsh version >/dev/null 2>&1 && break
  kill -0 "$LVPID" 2>/dev/null || break
  sleep 0.2
done
vsh version >/dev/null 2>&1 || { echo "libvirtd did not start:"; cat "$LV/log/libvirtd.out" "$LV/log/libvirtd.log"; exit 1; }
note "private libvirtd $LVPID up"

# ---- the domain ---------------------------------------------------------------------------------
cat > "$W/domain.xml" <<EOF
<domain type='qemu'>
  <name>$DOM</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$KERNEL</kernel>
    <initrd>$W/initrd.gz</initrd>
    <cmdline>console=ttyS0 root=/dev/vda rw quiet systemd.show_status=false panic=-1</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$W/root.img'/>
      <target dev='vda' bus='virtio'/>
      <serial>vmtest-root</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$W/data.img'/>
      <target dev='vdb' bus='virtio'/>
      <serial>vmtest-data</serial>
    </disk>
    <interface type='user'>
      <mac address='$MAC'/>
      <model type='virtio'/>
    </interface>
    <serial type='unix'>
      <source mode='bind' path='$W/console.sock'/>
      <log file='$W/console.log'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='$W/native.sock'/>
      <target type='virtio' name='org.openstack.guest_agent.0'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
vsh define "$W/domain.xml" >/dev/null
vsh start "$DOM" >/dev/null
TBOOT=$(date +%s)
note "domain $DOM started (work dir $W)"

# ---- helpers for the checks ---------------------------------------------------------------------
PASSED=0; FAILED=0; SKIPPED=0
pass() { PASSED=$((PASSED + 1)); note "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); note "FAIL $1: $2"; }
skip() { SKIPPED=$((SKIPPED + 1)); note "skip $1: $2"; }
# con CMD [TIMEOUT]: CMD's output from the guest's console shell, its exit status.
con() { python3 "$HERE/console.py" "$W/console.sock" "$1" "${2:-60}"; }
# agent JSON: the agent's whole reply ({"return": ...}); an error reply fails, its text on stderr.
agent() { vsh qemu-agent-command "$DOM" --timeout 60 "$1"; }
# js EXPR: evaluate a Python expression over the JSON on stdin (bound to r), print the result.
js() { python3 -c 'import json,sys; r=json.load(sys.stdin); v=eval(sys.argv[1]); print(v if isinstance(v,str) else json.dumps(v))' "$1"; }
# kv KEY: the value of KEY in `virsh guestinfo` output on stdin ("key : value" lines).
kv() { awk -v k="$1" '{ i = index($0, " : "); if (i && substr($0, 1, i - 1) ~ "^"k" *$") { print substr($0, i + 3); exit } }'; }
matches_password() {  # PASSWORD HASH: the crypt(3) hash is of that password
  python3 -W ignore -c 'import crypt,sys; sys.exit(0 if crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2] else 1)' "$1" "$2"
}
guest_journal() { con "journalctl -b -u $UNIT --no-pager -o short-monotonic | tail -n 25" 2>&1 | sed 's/^/    /'; }
wait_ping() {  # SECONDS: until the agent answers guest-ping through libvirt
  local deadline=$(($(date +%s) + $1)) out
  while :; do
    out=$(vsh qemu-agent-command "$DOM" --timeout 5 '{"execute":"guest-ping"}' 2>&1) && [ "$out" = '{"return":{}}' ] && return 0
    [ "$(vsh domstate "$DOM" 2>/dev/null)" = running ] || { echo "domain not running"; return 1; }
    ! grep -qE 'initrd: cannot mount|Kernel panic' "$W/console.log" 2>/dev/null || { echo "the guest did not boot"; return 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$out"; return 1; }
    sleep 2
  done
}
unit_prop() { con "systemctl show -p $1 --value $UNIT"; }

# ---- boot ---------------------------------------------------------------------------------------
if out=$(wait_ping 300); then
  pass "boot: the agent answers guest-ping through libvirt ($(($(date +%s) - TBOOT))s after start)"
else
  fail "boot" "no answer to guest-ping: $out"
  note "console log:"; tail -40 "$W/console.log" || true
  python3 "$HERE/console.py" "$W/console.sock" --ready 20 2>/dev/null && guest_journal
  echo "vm e2e: $PASSED passed, $((FAILED)) failed, $SKIPPED skipped ($(($(date +%s) - T0))s)"
  exit 1
fi
python3 "$HERE/console.py" "$W/console.sock" --ready 180 || { fail "console" "no shell on ttyS0"; exit 1; }
note "guest: $(con 'systemd-analyze time 2>&1 | head -1; systemctl list-jobs --no-legend 2>&1 | head -5' | tr '\n' ' ')"

# ---- the unit -----------------------------------------------------------------------------------
show=$(con "systemctl show -p ActiveState -p SubState -p Type -p NRestarts -p MainPID $UNIT")
if grep -qx ActiveState=active <<<"$show" && grep -qx SubState=running <<<"$show" && grep -qx Type=notify <<<"$show"; then
  pass "$UNIT.service active (running), Type=notify: READY=1 reached systemd ($(tr '\n' ' ' <<<"$show"))"
else
  fail "$UNIT.service active (running), Type=notify" "$(tr '\n' ' ' <<<"$show")"
fi
GPID=$(sed -n 's/^MainPID=//p' <<<"$show")
status=$(con "grep -E '^(Seccomp|CapEff):' /proc/$GPID/status; readlink /proc/$GPID/ns/mnt /proc/1/ns/mnt" || true)
seccomp=$(awk '/^Seccomp:/ {print $2}' <<<"$status")
capeff=$(awk '/^CapEff:/ {print $2}' <<<"$status")
mntns=$(grep -c '^mnt:' <<<"$status" || true)
if [ "$seccomp" = 2 ] && [ -n "$capeff" ] && [ $(( (0x$capeff >> 16) & 1 )) = 0 ] \
   && [ "$(grep '^mnt:' <<<"$status" | sort -u | wc -l)" = 2 ] && [ "$mntns" = 2 ]; then
  pass "the unit's hardening applies to $AGENT (seccomp filter, no CAP_SYS_MODULE, own mount namespace)"
else
  fail "hardening" "$(tr '\n' ' ' <<<"$status")"
fi

# ---- guestinfo, all groups and each one ---------------------------------------------------------
if all=$(vsh guestinfo "$DOM" 2>&1); then
  missing=()
  for k in user.count os.id timezone.offset hostname fs.count disk.count if.count; do
    [ -n "$(kv "$k" <<<"$all")" ] || missing+=("$k")
  done
  if [ ${#missing[@]} -eq 0 ]; then pass "virsh guestinfo: every group reported"
  else fail "virsh guestinfo" "groups missing (${missing[*]}): libvirt skips what the agent does not answer"; fi
else
  fail "virsh guestinfo" "$all"
fi

group() {  # NAME: `virsh guestinfo --NAME` output in $out, or fail
  out=$(vsh guestinfo "$DOM" "--$1" 2>&1) && return 0
  fail "virsh guestinfo --$1" "$out"; return 1
}
if group user; then
  n=$(kv user.count <<<"$out"); names=$(grep -E '^user\.[0-9]+\.name ' <<<"$out" | sed 's/.* : //' | tr '\n' ' ')
  if [ "${n:-0}" -ge 1 ] && grep -qw root <<<"$names" && grep -qE '^user\.[0-9]+\.login-time +: [0-9]+' <<<"$out"; then
    pass "virsh guestinfo --user: $n user(s): $names(the console's utmp session)"
  else
    fail "virsh guestinfo --user" "want root logged in on ttyS0: $(tr '\n' ' ' <<<"$out")"
  fi
fi
if group os; then
  if [ "$(kv os.id <<<"$out")" = debian ] && [ "$(kv os.version-id <<<"$out")" = 12 ] \
     && [ "$(kv os.kernel-release <<<"$out")" = "$KVER" ] && [ "$(kv os.machine <<<"$out")" = x86_64 ]; then
    pass "virsh guestinfo --os: debian 12, kernel $KVER, x86_64"
  else
    fail "virsh guestinfo --os" "$(tr '\n' ' ' <<<"$out")"
  fi
fi
if group timezone; then
  want=$(con 'date +"%Z %z"')  # e.g. "CET +0100"
  wzone=${want% *}; woff=${want#* }
  wsec=$(( (10#${woff:1:2} * 3600 + 10#${woff:3:2} * 60) * (${woff:0:1}1) ))
  if [ "$(kv timezone.name <<<"$out")" = "$wzone" ] && [ "$(kv timezone.offset <<<"$out")" = "$wsec" ]; then
    pass "virsh guestinfo --timezone: $wzone, offset $wsec s ($GUEST_TZ)"
  else
    fail "virsh guestinfo --timezone" "want name $wzone offset $wsec; got $(tr '\n' ' ' <<<"$out")"
  fi
fi
if group hostname; then
  if [ "$(kv hostname <<<"$out")" = "$GUEST_HOSTNAME" ]; then pass "virsh guestinfo --hostname: $GUEST_HOSTNAME"
  else fail "virsh guestinfo --hostname" "$(tr '\n' ' ' <<<"$out")"; fi
fi
# A mount point's filesystem entry: its index in `guestinfo --filesystem` output.
fs_index() { grep -E '^fs\.[0-9]+\.mountpoint +: '"$2"'$' <<<"$1" | sed -E 's/^fs\.([0-9]+)\..*/\1/'; }
if group filesystem; then
  bad=()
  for m in /:vda:vmtest-root /data:vdb:vmtest-data; do
    mp=${m%%:*}; rest=${m#*:}; alias=${rest%%:*}; serial=${rest#*:}
    i=$(fs_index "$out" "$mp")
    if [ -z "$i" ]; then bad+=("$mp missing"); continue; fi
    [ "$(kv "fs.$i.fstype" <<<"$out")" = ext4 ] || bad+=("$mp fstype")
    [ "$(kv "fs.$i.disk.0.alias" <<<"$out")" = "$alias" ] || bad+=("$mp disk alias (want $alias: the PCI address)")
    [ "$(kv "fs.$i.disk.0.serial" <<<"$out")" = "$serial" ] || bad+=("$mp disk serial")
    [ -n "$(kv "fs.$i.total-bytes" <<<"$out")" ] && [ -n "$(kv "fs.$i.used-bytes" <<<"$out")" ] || bad+=("$mp sizes")
  done
  if [ ${#bad[@]} -eq 0 ]; then pass "virsh guestinfo --filesystem: / on vda, /data on vdb (ext4, serials, sizes)"
  else fail "virsh guestinfo --filesystem" "${bad[*]}: $(tr '\n' ' ' <<<"$out")"; fi
fi
if group disk; then
  bad=()
  for d in vda:vmtest-root vdb:vmtest-data; do
    i=$(grep -E '^disk\.[0-9]+\.name +: /dev/'"${d%%:*}"'$' <<<"$out" | sed -E 's/^disk\.([0-9]+)\..*/\1/')
    if [ -z "$i" ]; then bad+=("/dev/${d%%:*} missing"); continue; fi
    [ "$(kv "disk.$i.alias" <<<"$out")" = "${d%%:*}" ] || bad+=("${d%%:*} alias")
    [ "$(kv "disk.$i.serial" <<<"$out")" = "${d#*:}" ] || bad+=("${d%%:*} serial")
  done
  if [ ${#bad[@]} -eq 0 ]; then pass "virsh guestinfo --disk: /dev/vda and /dev/vdb with their aliases and serials"
  else fail "virsh guestinfo --disk" "${bad[*]}: $(tr '\n' ' ' <<<"$out")"; fi
fi
IFNAME=$(con "ip -o link | awk -v m=$MAC '\$0 ~ m {sub(/:\$/, \"\", \$2); print \$2}'")
if group interface; then
  i=$(grep -E '^if\.[0-9]+\.name +: '"$IFNAME"'$' <<<"$out" | sed -E 's/^if\.([0-9]+)\..*/\1/')
  if [ -n "$i" ] && [ "$(kv "if.$i.hwaddr" <<<"$out")" = "$MAC" ] \
     && grep -qE "^if\.$i\.addr\.[0-9]+\.addr +: 10\.0\.2\.15$" <<<"$out"; then
    pass "virsh guestinfo --interface: $IFNAME $MAC 10.0.2.15"
  else
    fail "virsh guestinfo --interface" "want $IFNAME/$MAC/10.0.2.15: $(tr '\n' ' ' <<<"$out")"
  fi
fi

# ---- domhostname, domifaddr, domfsinfo ----------------------------------------------------------
if out=$(vsh domhostname "$DOM" --source agent 2>&1) && [ "$out" = "$GUEST_HOSTNAME" ]; then
  pass "virsh domhostname --source agent: $out"
else
  fail "virsh domhostname --source agent" "$out"
fi
if out=$(vsh domifaddr "$DOM" --source agent --full 2>&1) \
   && grep -qE "^ *$IFNAME +$MAC +ipv4 +10\.0\.2\.15/24$" <<<"$out" \
   && grep -qE '^ *lo +00:00:00:00:00:00 +ipv4 +127\.0\.0\.1/8$' <<<"$out"; then
  pass "virsh domifaddr --source agent: $IFNAME $MAC 10.0.2.15/24, lo 127.0.0.1/8"
else
  fail "virsh domifaddr --source agent" "$out"
fi
if out=$(vsh domfsinfo "$DOM" 2>&1) && grep -qE '^ */ +[^ ]+ +ext4 +vda$' <<<"$out" \
   && grep -qE '^ */data +[^ ]+ +ext4 +vdb$' <<<"$out"; then
  pass "virsh domfsinfo: / ext4 on vda, /data ext4 on vdb"
else
  fail "virsh domfsinfo" "$out"
fi

# ---- time ---------------------------------------------------------------------------------------
near() { [ -n "$1" ] && [ "$1" -eq "$1" ] 2>/dev/null && [ $(( $1 - $2 )) -le "$3" ] && [ $(( $2 - $1 )) -le "$3" ]; }
gtime() { vsh domtime "$DOM" 2>&1 | sed -n 's/^Time: //p'; }
t=$(gtime)
if near "$t" "$(date +%s)" 60; then pass "virsh domtime: guest clock within 60 s of the host's ($t)"
else fail "virsh domtime" "guest '$t', host $(date +%s)"; fi
# Set a clock an hour ahead (guest-set-time with a time: system clock and RTC), move the system
# clock back behind the agent's back, then --sync (guest-set-time without a time: system clock
# from the RTC) must bring back the hour: proof that the RTC was written and read.
ahead=$(( $(date +%s) + 3600 ))
if out=$(vsh domtime "$DOM" --time "$ahead" 2>&1) && near "$(gtime)" "$ahead" 30; then
  pass "virsh domtime --time: guest clock set an hour ahead"
else
  fail "virsh domtime --time" "$out; guest now $(gtime), want ~$ahead"
fi
con "date -s @$(date +%s) >/dev/null" >/dev/null || true
if out=$(vsh domtime "$DOM" --sync 2>&1) && near "$(gtime)" $(( $(date +%s) + 3600 )) 30; then
  pass "virsh domtime --sync: system clock read back from the RTC the agent wrote"
else
  fail "virsh domtime --sync" "${out:-no error}; guest now $(gtime), want ~$(( $(date +%s) + 3600 )) (the RTC set by --time)"
fi
if out=$(vsh domtime "$DOM" --now 2>&1) && near "$(gtime)" "$(date +%s)" 30; then
  pass "virsh domtime --now: guest clock back to the host's"
else
  fail "virsh domtime --now" "$out; guest now $(gtime), host $(date +%s)"
  con "date -s @$(date +%s) >/dev/null; hwclock -w" >/dev/null || true
fi

# ---- passwords ----------------------------------------------------------------------------------
for user in root cloud; do
  pw="vm-$RANDOM-$RANDOM-Pw"
  out=$(vsh set-user-password "$DOM" "$user" "$pw" 2>&1) || true
  hash=$(con "grep '^$user:' /etc/shadow | cut -d: -f2")
  if matches_password "$pw" "$hash"; then
    pass "virsh set-user-password $user: the shadow hash matches the new password (${hash:0:3}...)"
  else
    fail "virsh set-user-password $user" "$out / shadow hash '${hash:0:12}...'"
  fi
done
pw="vm-$RANDOM-crypted"
want=$(openssl passwd -6 -salt "vmtest$RANDOM" "$pw")
out=$(vsh set-user-password "$DOM" cloud "$want" --encrypted 2>&1) || true
hash=$(con "grep '^cloud:' /etc/shadow | cut -d: -f2")
if [ "$hash" = "$want" ]; then pass "virsh set-user-password --encrypted: the hash is stored as given"
else fail "virsh set-user-password --encrypted" "$out / shadow hash '${hash:0:12}...'"; fi

# ---- fsfreeze / fsthaw --------------------------------------------------------------------------
# A write to a frozen filesystem blocks until the thaw; the probe writes in the background and
# leaves a mark in /run (tmpfs, not frozen) once its write went through.
probe() { con "rm -f /run/vmtest-$2; (echo x > $1/.vmtest-probe && touch /run/vmtest-$2) >/dev/null 2>&1 &" >/dev/null; }
probe_done() { con "test -e /run/vmtest-$1" >/dev/null; }
hook_log() { con 'cat /run/vmtest-fsfreeze-hook.log 2>/dev/null | tr "\n" " "'; }
fsstatus() { agent '{"execute":"guest-fsfreeze-status"}' 2>&1; }
con 'rm -f /run/vmtest-fsfreeze-hook.log' >/dev/null
if out=$(vsh domfsfreeze "$DOM" 2>&1) && grep -q 'Froze 2 filesystem(s)' <<<"$out"; then
  probe /data all; sleep 2
  st=$(fsstatus)
  if [ "$st" = '{"return":"frozen"}' ] && ! probe_done all; then
    pass "virsh domfsfreeze: 2 filesystems frozen (status frozen, a write to /data blocks)"
  else
    fail "virsh domfsfreeze" "status $st, write to /data $(probe_done all && echo 'went through' || echo blocked)"
  fi
else
  fail "virsh domfsfreeze" "$out"
  guest_journal
fi
if out=$(vsh domfsthaw "$DOM" 2>&1) && grep -q 'Thawed 2 filesystem(s)' <<<"$out"; then
  sleep 1
  if probe_done all && [ "$(fsstatus)" = '{"return":"thawed"}' ]; then
    pass "virsh domfsthaw: 2 filesystems thawed (the blocked write went through)"
  else
    fail "virsh domfsthaw" "status $(fsstatus), write $(probe_done all && echo done || echo 'still blocked')"
  fi
else
  fail "virsh domfsthaw" "$out"
  vsh domfsthaw "$DOM" >/dev/null 2>&1 || true
fi
if [ "$(hook_log)" = "freeze thaw " ]; then
  pass "fsfreeze hook: /etc/qemu/fsfreeze-hook.d/vmtest-hook.sh ran with freeze, then thaw"
else
  fail "fsfreeze hook" "/run/vmtest-fsfreeze-hook.log holds '$(hook_log)', want 'freeze thaw'"
fi
if out=$(vsh domfsfreeze "$DOM" --mountpoint /data 2>&1) && grep -q 'Froze 1 filesystem(s)' <<<"$out"; then
  probe /data one; probe /root rootfs; sleep 2
  if ! probe_done one && probe_done rootfs; then
    pass "virsh domfsfreeze --mountpoint /data: /data frozen, / still writable"
  else
    fail "virsh domfsfreeze --mountpoint /data" "/data write $(probe_done one && echo 'went through' || echo blocked), / write $(probe_done rootfs && echo 'went through' || echo blocked)"
  fi
else
  fail "virsh domfsfreeze --mountpoint /data" "$out"
fi
# (libvirt itself refuses `domfsthaw --mountpoint`: "specifying mountpoints is not supported";
# guest-fsfreeze-thaw takes no list, it thaws what the freeze froze.)
if out=$(vsh domfsthaw "$DOM" 2>&1) && grep -q 'Thawed 1 filesystem(s)' <<<"$out"; then
  sleep 1
  if probe_done one; then pass "virsh domfsthaw after --mountpoint /data: 1 filesystem thawed, the blocked write went through"
  else fail "virsh domfsthaw after --mountpoint /data" "the write to /data is still blocked"; fi
else
  fail "virsh domfsthaw after --mountpoint /data" "$out"
  vsh domfsthaw "$DOM" >/dev/null 2>&1 || true
fi
[ "$(fsstatus)" = '{"return":"thawed"}' ] || { note "still frozen after the checks: thawing"; vsh domfsthaw "$DOM" >/dev/null 2>&1 || true; }
# Restarted or killed while frozen, the agent must not leave the guest frozen: a stop thaws
# (then the hook runs with thaw); after a SIGKILL the unit's ExecStopPost (guestd --thaw) thaws
# from /run/guestd/fsfreeze.json, so that Restart=always can start it again (systemd cannot set
# up the unit's mount namespace on a frozen root). qemu-ga thaws on SIGTERM, not after a SIGKILL.
frozen_then() {  # TAG NAME CMD: freeze everything, block a write to /data, run CMD in the guest
  con 'rm -f /run/vmtest-fsfreeze-hook.log' >/dev/null
  if ! out=$(vsh domfsfreeze "$DOM" 2>&1) || ! grep -q 'Froze 2 filesystem(s)' <<<"$out"; then
    fail "$2" "domfsfreeze: $out"; return
  fi
  probe /data "$1"; sleep 1
  if probe_done "$1"; then fail "$2" "the write to /data went through while frozen"; return; fi
  con "$3" 120 >/dev/null || true
  sleep 3
  if out=$(wait_ping 60) && [ "$(fsstatus)" = '{"return":"thawed"}' ] && probe_done "$1" \
     && [ "$(hook_log)" = "freeze thaw " ]; then
    pass "$2: thawed (the blocked write went through, the hook ran with thaw), the agent answers"
  else
    fail "$2" "${out:-} status $(fsstatus), write $(probe_done "$1" && echo done || echo 'still blocked'), hook log '$(hook_log)'"
    guest_journal
    vsh domfsthaw "$DOM" >/dev/null 2>&1 || true
  fi
}
frozen_then restart "systemctl restart $UNIT while frozen" "systemctl restart $UNIT"
frozen_then killed "$AGENT killed (SIGKILL) while frozen, thawed after it stopped" "kill -9 \$(systemctl show -p MainPID --value $UNIT)"

# ---- exec and file commands ---------------------------------------------------------------------
EXEC_CMDS=(guest-exec guest-exec-status guest-file-open guest-file-close guest-file-read
           guest-file-write guest-file-seek guest-file-flush)
info=$(agent '{"execute":"guest-info"}' 2>&1) || true
listed() { js "[c['enabled'] for c in r['return']['supported_commands'] if c['name'] == '$1']" <<<"$info" 2>/dev/null; }
# Phase 1, the default: listed as disabled, and refused with qemu-ga's error (what qemu-ga does
# with them blocked, as RHEL's qemu-ga configuration blocks exactly these eight).
bad=()
for c in "${EXEC_CMDS[@]}"; do
  case "$(listed "$c")" in '[false]') ;; '[]') bad+=("$c not listed");; *) bad+=("$c listed as $(listed "$c")");; esac
done
if [ ${#bad[@]} -eq 0 ]; then pass "guest-info lists guest-exec, guest-exec-status and guest-file-* as disabled by default"
else fail "guest-info: exec and file commands disabled by default" "${bad[*]}"; fi
bad=()
for req in '{"execute":"guest-exec","arguments":{"path":"/bin/true"}}' \
           '{"execute":"guest-exec-status","arguments":{"pid":1}}' \
           '{"execute":"guest-file-open","arguments":{"path":"/etc/hostname","mode":"r"}}' \
           '{"execute":"guest-file-read","arguments":{"handle":1000}}' \
           '{"execute":"guest-file-write","arguments":{"handle":1000,"buf-b64":""}}' \
           '{"execute":"guest-file-seek","arguments":{"handle":1000,"offset":0,"whence":"set"}}' \
           '{"execute":"guest-file-flush","arguments":{"handle":1000}}' \
           '{"execute":"guest-file-close","arguments":{"handle":1000}}'; do
  c=$(js 'r["execute"]' <<<"$req")
  if out=$(agent "$req" 2>&1); then bad+=("$c ran: $out")
  elif ! grep -q "Command $c has been disabled" <<<"$out"; then bad+=("$c: $(tail -1 <<<"$out")"); fi
done
if [ ${#bad[@]} -eq 0 ]; then pass "guest-exec, guest-exec-status and guest-file-* refused by default with qemu-ga's error (Command ... has been disabled)"
else fail "exec and file commands refused by default with qemu-ga's error" "$(printf '%s; ' "${bad[@]}")"; fi
# Phase 2: turned on through [qga] configuration.
if [ "$(listed guest-exec)" = '[]' ]; then
  skip "guest-exec and guest-file-* enabled by [qga] configuration" "guest-exec not implemented yet (not in guest-info)"
else
  con "$ENABLE_EXEC" 120 >/dev/null || true
  if ! out=$(wait_ping 60); then
    fail "guestd with exec enabled" "no answer after restart: $out"; guest_journal
  else
    info=$(agent '{"execute":"guest-info"}' 2>&1) || true
    if [ "$(listed guest-exec)" = '[true]' ] && [ "$(listed guest-file-open)" = '[true]' ]; then
      pass "with the [qga] drop-in guest-info lists guest-exec and guest-file-open as enabled"
    else
      fail "exec enabled by configuration" "guest-exec $(listed guest-exec), guest-file-open $(listed guest-file-open)"
    fi
    exec_wait() {  # PID: guest-exec-status once it has exited
      local st
      for _ in $(seq 60); do
        st=$(agent '{"execute":"guest-exec-status","arguments":{"pid":'"$1"'}}' 2>&1) || { echo "$st"; return 1; }
        [ "$(js 'r["return"]["exited"]' <<<"$st")" = true ] && { echo "$st"; return 0; }
        sleep 1
      done
      echo "not exited after 60 s: $st"; return 1
    }
    b64() { printf '%s' "$1" | base64 -w0; }
    if pid=$(agent '{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","echo out; echo err >&2; exit 3"],"capture-output":true}}' 2>&1 | js 'r["return"]["pid"]') \
       && st=$(exec_wait "$pid") \
       && [ "$(js 'r["return"]["exitcode"]' <<<"$st")" = 3 ] \
       && [ "$(js 'r["return"].get("out-data")' <<<"$st")" = "$(b64 $'out\n')" ] \
       && [ "$(js 'r["return"].get("err-data")' <<<"$st")" = "$(b64 $'err\n')" ]; then
      pass "guest-exec /bin/sh + guest-exec-status: exit code 3, stdout and stderr captured"
    else
      fail "guest-exec + guest-exec-status" "pid '${pid:-}', status ${st:-}"
    fi
    if pid=$(agent '{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","cat"],"input-data":"'"$(b64 vmtest-input)"'","capture-output":true}}' 2>&1 | js 'r["return"]["pid"]') \
       && st=$(exec_wait "$pid") && [ "$(js 'r["return"].get("out-data")' <<<"$st")" = "$(b64 vmtest-input)" ]; then
      pass "guest-exec with input-data: the program read it"
    else
      fail "guest-exec input-data" "pid '${pid:-}', status ${st:-}"
    fi
    if out=$(agent '{"execute":"guest-exec","arguments":{"path":"/usr/bin/id"}}' 2>&1); then
      fail "guest-exec outside the allow list" "it ran: $out"
    else
      pass "guest-exec of a program outside the allow list refused ($(tail -1 <<<"$out"))"
    fi
    f=/var/lib/vmtest/file.txt
    if h=$(agent '{"execute":"guest-file-open","arguments":{"path":"'$f'","mode":"w+"}}' 2>&1 | js 'r["return"]') \
       && w=$(agent '{"execute":"guest-file-write","arguments":{"handle":'"$h"',"buf-b64":"'"$(b64 'written by virsh')"'"}}' 2>&1) \
       && [ "$(js 'r["return"]["count"]' <<<"$w")" = 16 ] \
       && agent '{"execute":"guest-file-seek","arguments":{"handle":'"$h"',"offset":0,"whence":"set"}}' >/dev/null 2>&1 \
       && rd=$(agent '{"execute":"guest-file-read","arguments":{"handle":'"$h"',"count":100}}' 2>&1) \
       && [ "$(js 'r["return"]["buf-b64"]' <<<"$rd")" = "$(b64 'written by virsh')" ] \
       && agent '{"execute":"guest-file-close","arguments":{"handle":'"$h"'}}' >/dev/null 2>&1 \
       && [ "$(con "cat $f")" = 'written by virsh' ]; then
      pass "guest-file-open/write/seek/read/close under an allowed prefix (content checked in the guest)"
    else
      fail "guest-file-*" "open '${h:-}', write '${w:-}', read '${rd:-}', guest file '$(con "cat $f" 2>&1)'"
    fi
    if out=$(agent '{"execute":"guest-file-open","arguments":{"path":"/etc/shadow","mode":"r"}}' 2>&1); then
      fail "guest-file-open outside the allowed prefixes" "opened: $out"
    else
      pass "guest-file-open of /etc/shadow (outside the allowed prefixes) refused ($(tail -1 <<<"$out"))"
    fi
  fi
fi

# ---- configure over the native channel, with systemd running ---------------------------------------
# guestd serves org.openstack.guest_agent.0 by itself; guestctl sends a document that creates
# a group and a user, installs a package from the local repository, writes the service's
# configuration file, enables and starts its unit (restarted when the file changes) and runs
# the administrator's script after that. The same document again changes nothing; a changed
# file restarts the service and runs the script again.
if [ "$AGENT" = guestd ]; then
  cfg() { timeout 900 "$GUESTCTL" --connect "serial:$W/native.sock" --timeout 600 configure "$1"; }
  statuses() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join(x["status"] for x in r["resources"]))'; }
  doc() {  # GREETING
    cat <<EOF
{"resources": [
  {"name": "group", "kind": "group", "group": "vmdemo", "gid": 2600},
  {"name": "user", "kind": "user", "user": "vmdemo", "uid": 2600, "group": "vmdemo", "after": ["group"]},
  {"name": "package", "kind": "package", "package": "vmtest-demo", "version": "1.0"},
  {"name": "conf", "kind": "file", "path": "/etc/vmtest-demo.conf", "content": "GREETING=$1\\n",
   "mode": "0640", "group": "vmdemo", "after": ["group"]},
  {"name": "service", "kind": "service", "service": "vmtest-demo.service", "enabled": true,
   "state": "restarted", "after": ["package", "conf"]},
  {"name": "setup", "kind": "run", "script": "vmtest-setup.sh", "refresh": true,
   "params": {"VMTEST_MESSAGE": "configured, greeting $1"}, "after": ["service"]}
]}
EOF
  }
  demo_pid() { con 'systemctl show -p MainPID --value vmtest-demo.service'; }
  doc hello > "$W/configure.json"
  first=$(cfg "$W/configure.json" 2>"$W/cfg.err" | statuses 2>&1) || true
  got=$(con 'systemctl is-active vmtest-demo.service; systemctl is-enabled vmtest-demo.service; id -u vmdemo; dpkg -s vmtest-demo | sed -n "s/^Version: //p"; stat -c "%a %G" /etc/vmtest-demo.conf; cat /var/lib/vmtest/configure.out')
  want=$(printf 'active\nenabled\n2600\n1.0\n640 vmdemo\nconfigured, greeting hello')
  if [ "$first" = "changed changed changed changed changed changed" ] && [ "$got" = "$want" ]; then
    pass "configure over org.openstack.guest_agent.0: group, user, package from a local repository, file, unit enabled and started by systemd, script with parameters"
  else
    fail "configure" "statuses '$first' $(cat "$W/cfg.err") / guest has: $got"; guest_journal
  fi
  pid1=$(demo_pid)
  again=$(cfg "$W/configure.json" 2>"$W/cfg.err" | statuses 2>&1) || true
  if [ "$again" = "unchanged unchanged unchanged unchanged unchanged unchanged" ] && [ "$(demo_pid)" = "$pid1" ]; then
    pass "configure again: every resource unchanged, the service not restarted (pid $pid1)"
  else
    fail "configure again" "statuses '$again' $(cat "$W/cfg.err"), pid $pid1 -> $(demo_pid)"
  fi
  doc bonjour > "$W/configure.json"
  third=$(cfg "$W/configure.json" 2>"$W/cfg.err" | statuses 2>&1) || true
  pid2=$(demo_pid)
  if [ "$third" = "unchanged unchanged unchanged changed changed changed" ] && [ "$pid2" != "$pid1" ] \
     && [ "$(con 'cat /var/lib/vmtest/configure.out')" = "configured, greeting bonjour" ]; then
    pass "a changed configuration file restarts the service (pid $pid1 -> $pid2) and runs the script again"
  else
    fail "configure restart on change" "statuses '$third' $(cat "$W/cfg.err"), pid $pid1 -> $pid2"
  fi
fi

# ---- restarts -----------------------------------------------------------------------------------
old=$(unit_prop MainPID)
con "systemctl restart $UNIT" 120 >/dev/null || true
if out=$(wait_ping 60) && new=$(unit_prop MainPID) && [ "$new" != "$old" ] && [ "$(unit_prop ActiveState)" = active ]; then
  pass "systemctl restart $UNIT: active again (pid $old -> $new), the agent answers libvirt"
else
  fail "systemctl restart $UNIT" "${out:-} pid $old -> ${new:-?}, $(unit_prop ActiveState)"; guest_journal
fi
old=$(unit_prop MainPID); restarts=$(unit_prop NRestarts)
con "kill -9 $old" >/dev/null || true
sleep 3
if out=$(wait_ping 60) && new=$(unit_prop MainPID) && [ "$new" != "$old" ] && [ "$(unit_prop NRestarts)" = $((restarts + 1)) ]; then
  pass "$AGENT killed (SIGKILL): Restart=always brought it back (pid $old -> $new), the agent answers"
else
  fail "Restart=always" "${out:-} pid $old -> ${new:-?}, NRestarts $restarts -> $(unit_prop NRestarts)"; guest_journal
fi

# ---- shutdown, last -------------------------------------------------------------------------------
if [ "$FAILED" -gt 0 ]; then note "$UNIT's journal (tail):"; guest_journal; fi
if out=$(vsh shutdown "$DOM" --mode agent 2>&1); then
  st=
  for _ in $(seq 120); do st=$(vsh domstate "$DOM" 2>&1); [ "$st" = "shut off" ] && break; sleep 1; done
  if [ "$st" = "shut off" ]; then pass "virsh shutdown --mode agent: the guest powered off"
  else fail "virsh shutdown --mode agent" "domain still '$st' after 120 s"; fi
else
  fail "virsh shutdown --mode agent" "$out"
fi

echo "vm e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped ($(($(date +%s) - T0))s)"
[ "$FAILED" -eq 0 ]
