#!/usr/bin/env bash
# End-to-end test in a real VM: Debian's cloud kernel under QEMU (TCG), a busybox initramfs with
# a static guestd, virtio-serial ports org.openstack.guest_agent.0 (native protocol) and
# org.qemu.guest_agent.0 (the qemu-guest-agent dialect) and a virtio-net NIC.
# The host drives guestd with guestctl over the port's chardev socket, the way a KVM host does,
# and looks inside the guest through a shell on the serial console.
#
#   tests/qemu/run.sh        installs what it needs (apt, rustup target), prints
#                            "N passed, N failed, N skipped" last; exit 0 only if nothing failed
#
# Environment: GUESTD_QEMU_CACHE (kernel cache, default /tmp/guestd-qemu-cache),
# GUESTD_QEMU_KEEP=1 (keep the work directory with the console and guestd logs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
W=$(mktemp -d /tmp/guestd-qemu.XXXXXX)
T0=$(date +%s)
note() { printf '[qemu-e2e %4ss] %s\n' $(($(date +%s) - T0)) "$*"; }

QPID=
cleanup() {
  if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
    kill "$QPID" 2>/dev/null || true
    wait "$QPID" 2>/dev/null || true
  fi
  if [ "${GUESTD_QEMU_KEEP:-0}" = 1 ]; then note "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

# ---- host tools ---------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v python3 >/dev/null || need+=(python3)
command -v musl-gcc >/dev/null || need+=(musl-tools)
if [ ${#need[@]} -gt 0 ]; then
  note "apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl >/dev/null
note "$(qemu-system-x86_64 --version | head -1)"

# ---- kernel: the current ABI package linux-image-cloud-amd64 depends on ----------------------
. "$HERE/kernel.sh"

# ---- binaries ---------------------------------------------------------------------------------
note "cargo build guestd (static, musl) and guestctl"
(cd "$REPO" && cargo build -q --locked --release --target x86_64-unknown-linux-musl -p guestd-daemon)
(cd "$REPO" && cargo build -q --locked -p guestd-ctl --bin guestctl)
TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
GUESTD=$TARGET_DIR/x86_64-unknown-linux-musl/release/guestd
GUESTCTL=$TARGET_DIR/debug/guestctl
file -L "$GUESTD" | grep -Eq 'statically linked|static-pie' || { echo "$GUESTD is not static"; exit 1; }

# ---- initramfs --------------------------------------------------------------------------------
R=$W/initramfs
mkdir -p "$R"/{bin,sbin,lib/modules,proc,sys,dev,tmp,run,root,etc/guestd,etc/network}
cp /bin/busybox "$R/bin/busybox"
cp "$GUESTD" "$R/bin/guestd"
cp "$HERE/init.sh" "$R/init"; chmod 755 "$R/init"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console \
         failover net_failover virtio_net; do
  f=$(find "$KROOT/lib/modules/$KVER" \( -name "$m.ko" -o -name "$m.ko.xz" \) | head -1)
  [ -n "$f" ] || { echo "module $m not in $KPKG"; exit 1; }
  case "$f" in *.xz) xz -dc "$f" > "$R/lib/modules/$m.ko";; *) cp "$f" "$R/lib/modules/";; esac
done
# Just enough of a Debian system for guestd's OS detection and account handling.
cat > "$R/etc/os-release" <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
EOF
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:*:19000:0:99999:7:::\n' > "$R/etc/shadow"; chmod 600 "$R/etc/shadow"
printf 'root:x:0:\n' > "$R/etc/group"
printf 'e2e-before\n' > "$R/etc/hostname"
printf '127.0.0.1 localhost\n' > "$R/etc/hosts"
printf 'auto lo\niface lo inet loopback\n' > "$R/etc/network/interfaces"
# configure: the kinds a busybox guest can do, a script its administrator put in scripts_dir
# (root's, 0755) and a tarball already on it; the host only names them (step 5).
cat > "$R/etc/guestd/guestd.toml" <<'EOF'
[configure]
kinds = ["file", "directory", "user", "group", "archive", "run"]
EOF
mkdir -p "$R/etc/guestd/scripts" "$R/var/lib/guestd-demo" "$R/srv"
cat > "$R/etc/guestd/scripts/demo-setup.sh" <<'EOF'
#!/bin/sh
set -eu
printf 'greeting=%s\nport=%s\n' "$DEMO_GREETING" "$DEMO_PORT" > /srv/demo-site/setup.out
EOF
chmod 0755 "$R/etc/guestd/scripts/demo-setup.sh"
mkdir -p "$W/site/assets"
printf '<h1>hello</h1>\n' > "$W/site/index.html"
printf 'h1 { color: teal }\n' > "$W/site/assets/style.css"
tar -C "$W/site" --owner=0 --group=0 -czf "$R/var/lib/guestd-demo/site.tar.gz" .
(cd "$R" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1) > "$W/initramfs.gz"
note "initramfs $(du -h "$W/initramfs.gz" | cut -f1)"

# ---- boot -------------------------------------------------------------------------------------
MAC=52:54:00:12:34:56
qemu-system-x86_64 -nodefaults -no-user-config -accel tcg -M pc -m 256 -smp 1 \
  -display none -monitor none -no-reboot \
  -kernel "$KERNEL" -initrd "$W/initramfs.gz" -append 'console=ttyS0 quiet panic=-1' \
  -chardev "socket,id=con0,path=$W/console.sock,server=on,wait=off,logfile=$W/console.log" \
  -serial chardev:con0 \
  -device virtio-serial \
  -chardev "socket,id=ch0,path=$W/agent.sock,server=on,wait=off" \
  -device virtserialport,chardev=ch0,name=org.openstack.guest_agent.0 \
  -chardev "socket,id=qga0,path=$W/qga.sock,server=on,wait=off" \
  -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0 \
  -netdev user,id=n0,restrict=on -device "virtio-net-pci,netdev=n0,romfile=,mac=$MAC" \
  >"$W/qemu.log" 2>&1 &
QPID=$!
note "qemu pid $QPID, work dir $W"

# ---- checks -----------------------------------------------------------------------------------
PASSED=0; FAILED=0; SKIPPED=0
pass() { PASSED=$((PASSED + 1)); note "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); note "FAIL $1: $2"; }
skip() { SKIPPED=$((SKIPPED + 1)); note "SKIP $1: $2"; }
ctl() { "$GUESTCTL" --connect "serial:$W/agent.sock" --timeout "${CTL_TIMEOUT:-30}" "$@"; }
con() { timeout 90 python3 "$HERE/hostio.py" console "$W/console.sock" "$1"; }
io() { timeout 180 python3 "$HERE/hostio.py" "$1" "$W/agent.sock" "${@:2}"; }
has_subcommand() { "$GUESTCTL" help 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

WANT_VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml")

# 1. guestd found the port by itself (no --listen, no udev) and answers; the request may be
#    written before the guest is up (QEMU holds it until the port opens).
if v=$("$GUESTCTL" --connect "serial:$W/agent.sock" --timeout 120 version 2>"$W/ctl.err"); then
  if [ "$v" = "$WANT_VERSION" ]; then pass "version over virtio-serial ($v, $(($(date +%s) - T0))s after start)"
  else fail "version" "got '$v', want '$WANT_VERSION'"; fi
else
  fail "version" "$(cat "$W/ctl.err")"
  note "console:"; cat "$W/console.log" || true
fi

FEATURES=$(ctl features 2>"$W/ctl.err" || true)
if echo ",$FEATURES," | grep -q ',version,' && echo ",$FEATURES," | grep -q ',features,'; then
  pass "features ($FEATURES)"
else
  fail "features" "got '$FEATURES' $(cat "$W/ctl.err")"
fi
has_feature() { echo ",$FEATURES," | grep -q ",$1,"; }

GUESTD_PID=$(con 'pidof guestd' | tail -1)
case "$GUESTD_PID" in ''|*[!0-9]*) fail "console" "no guestd pid from the guest console: '$GUESTD_PID'"; GUESTD_PID=1;; esac
if con 'grep -o "transport=serial:[^ ]*" /tmp/guestd.log | head -1' | grep -q '/dev/vport'; then
  pass "port auto-detected through /sys/class/virtio-ports (pid $GUESTD_PID)"
else
  fail "auto-detection" "$(con 'cat /tmp/guestd.log' | tail -20)"
fi

# 2. Host disconnects in the middle of a session.
ok=1
for i in 1 2 3 4 5; do
  io stale "stale-$i" || ok=0
  v=$(ctl version 2>&1) && [ "$v" = "$WANT_VERSION" ] || { ok=0; note "after stale $i: $v"; }
done
[ $ok = 1 ] && pass "host disconnects before its reply (x5): next command answered correctly" \
  || fail "stale replies" "see above"

if io half && v=$(ctl version 2>&1) && [ "$v" = "$WANT_VERSION" ]; then
  pass "half a request then disconnect: next command answered correctly"
else
  fail "half line" "$v"
fi

if out=$(io retry 2>&1) && con 'grep -c "remembered reply" /tmp/guestd.log' | tail -1 | grep -qv '^0$'; then
  pass "same request id (keyinit) on a new connection: remembered reply, command not run again"
else
  fail "safe retry" "$out"
fi

# 3. While the host is away guestd does not wake up (edge-triggered wait, no polling).
ticks() { con "cat /proc/$GUESTD_PID/stat | cut -d' ' -f14,15; cat /proc/$GUESTD_PID/task/*/status | grep ctxt_switches | awk '{s+=\$2} END {print s}'" | tr '\n' ' '; }
sleep 1
before=$(ticks); sleep 5; after=$(ticks)
read -r u1 s1 c1 <<<"$before"; read -r u2 s2 c2 <<<"$after"
cpu=$(( (u2 + s2) - (u1 + s1) )); sw=$(( c2 - c1 ))
if [ "$cpu" -le 2 ] && [ "$sw" -le 3 ]; then
  pass "host away 5 s: guestd used $cpu CPU ticks, $sw context switches"
else
  fail "idle while host away" "$cpu CPU ticks, $sw context switches in 5 s"
fi
if v=$(ctl version 2>&1) && [ "$v" = "$WANT_VERSION" ]; then pass "host back after 5 s: answered"
else fail "reconnect after absence" "$v"; fi

# 4. Bad input on the real port: 10 MB without a newline.
if out=$(io flood 2>&1); then pass "10 MB without newline: one error, then the next request answered"
else fail "flood" "$out"; fi

# The hostile-request corpus (tests/hostile) over the real port, each case followed by a probe.
if out=$(io hostile "$REPO/tests/hostile" 2>&1); then pass "hostile corpus over virtio-serial ($out): every case answered as expected, in step"
else fail "hostile corpus" "$out"; fi

# 5. Commands with effects, when this guestd has them.
if has_feature injectfile; then
  printf 'injected by the host\nsecond line, with a comma\n' > "$W/inject.txt"
  if has_subcommand inject-file; then
    out=$(ctl inject-file "$W/inject.txt" /root/e2e-inject.txt 2>&1) || true
  else
    out=$(ctl raw injectfile "$(printf '/root/e2e-inject.txt,%s' "$(cat "$W/inject.txt")" | base64 -w0)" 2>&1) || true
  fi
  got=$(con 'cat /root/e2e-inject.txt')
  if [ "$got" = "$(cat "$W/inject.txt")" ]; then pass "file injection (checked in the guest)"
  else fail "file injection" "$out / guest has: $got"; fi
else
  skip "file injection" "this guestd has no injectfile command (features: $FEATURES)"
fi

if has_feature password && has_subcommand set-password; then
  PW="e2e-$RANDOM-Pass"
  out=$(printf '%s\n' "$PW" | ctl set-password --user root --password-stdin 2>&1) || true
  hash=$(con 'grep "^root:" /etc/shadow | cut -d: -f2')
  if python3 -c 'import crypt,sys; sys.exit(0 if crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2] else 1)' "$PW" "$hash" 2>/dev/null; then
    pass "password change (root's shadow hash matches the new password)"
  else
    fail "password change" "$out / shadow hash '${hash:0:12}...'"
  fi
else
  skip "password change" "needs the password command and guestctl set-password (features: $FEATURES)"
fi

if has_feature resetnetwork && has_subcommand reset-network; then
  cat > "$W/net.json" <<EOF
{"hostname": "e2e-guest", "interfaces": [{"label": "public", "mac": "$MAC",
  "ips": [{"ip": "192.0.2.10", "netmask": "255.255.255.0", "enabled": "1", "gateway": "192.0.2.1"}],
  "gateway": "192.0.2.1", "dns": ["192.0.2.53"]}]}
EOF
  out=$(CTL_TIMEOUT=120 ctl reset-network --config "$W/net.json" 2>&1) || true
  addr=$(con 'ip -4 addr show eth0 | grep -o "inet [0-9./]*"')
  host=$(con 'cat /etc/hostname')
  if [ "$addr" = "inet 192.0.2.10/24" ] && [ "$host" = "e2e-guest" ]; then
    pass "resetnetwork from inline data (eth0 has 192.0.2.10/24, hostname e2e-guest)"
  else
    fail "resetnetwork" "$out / eth0: '$addr' / hostname: '$host'"
  fi
else
  skip "resetnetwork" "needs the resetnetwork command and guestctl reset-network (features: $FEATURES)"
fi

# configure over the real port: a directory, a file, the tarball unpacked, the administrator's
# script run with parameters; then the same document again changes nothing. (Debian's busybox
# has no adduser/addgroup and the initramfs no shadow-utils, so accounts are refused here with
# "not supported"; tests/tests/configure_debootstrap.rs covers them.)
if has_feature configure && has_subcommand configure; then
  cat > "$W/configure.json" <<'EOF'
{"resources": [
  {"name": "demo-dir", "kind": "directory", "path": "/etc/guestd-demo", "mode": "0750"},
  {"name": "demo-conf", "kind": "file", "path": "/etc/guestd-demo/demo.conf",
   "content": "greeting=hello\n", "mode": "0640", "after": ["demo-dir"]},
  {"name": "demo-site", "kind": "archive", "source": "/var/lib/guestd-demo/site.tar.gz",
   "destination": "/srv/demo-site", "owner": 1000, "group": 1000},
  {"name": "demo-setup", "kind": "run", "script": "demo-setup.sh",
   "params": {"DEMO_GREETING": "hello world", "DEMO_PORT": 8080},
   "creates": "/srv/demo-site/setup.out", "after": ["demo-site", "demo-conf"]}
]}
EOF
  statuses() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join(x["status"] for x in r["resources"]))'; }
  first=$(CTL_TIMEOUT=180 ctl configure "$W/configure.json" 2>"$W/ctl.err" | statuses 2>&1) || true
  got=$(con 'cat /srv/demo-site/setup.out /etc/guestd-demo/demo.conf; stat -c "%a %u" /etc/guestd-demo /etc/guestd-demo/demo.conf /srv/demo-site/index.html')
  want=$(printf 'greeting=hello world\nport=8080\ngreeting=hello\n750 0\n640 0\n644 1000')
  if [ "$first" = "changed changed changed changed" ] && [ "$got" = "$want" ]; then
    pass "configure over virtio-serial: directory, file, archive, script with parameters"
  else
    fail "configure" "statuses '$first' $(cat "$W/ctl.err") / guest has: $got"
  fi
  again=$(CTL_TIMEOUT=180 ctl configure "$W/configure.json" 2>"$W/ctl.err" | statuses 2>&1) || true
  if [ "$again" = "unchanged unchanged unchanged unchanged" ]; then
    pass "configure again: every resource unchanged"
  else
    fail "configure again" "statuses '$again' $(cat "$W/ctl.err")"
  fi
else
  skip "configure" "needs the configure command and guestctl configure (features: $FEATURES)"
fi

# 6. The qemu-guest-agent dialect on org.qemu.guest_agent.0 (auto-detected), spoken the way
#    libvirt does: guest-sync-delimited first, then commands.
cat > "$W/qga.py" <<'PY'
import base64, json, random, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(120)
buf = b""
def reply():
    global buf
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk: raise SystemExit("port closed")
        buf += chunk
    line, buf = buf.split(b"\n", 1)
    return line
def call(execute, **arguments):
    req = {"execute": execute}
    if arguments: req["arguments"] = arguments
    s.sendall(json.dumps(req).encode() + b"\n")
    return json.loads(reply())
token = random.randint(1, 2**31)
s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": token}}).encode() + b"\n")
line = reply()
while line.find(b"\xff") < 0: line = reply()   # stale output before the delimiter is skipped
assert json.loads(line[line.rfind(b"\xff") + 1:]) == {"return": token}, line
assert call("guest-ping") == {"return": {}}
names = [c["name"] for c in call("guest-info")["return"]["supported_commands"] if c["enabled"]]
assert "guest-set-user-password" in names, names
osinfo = call("guest-get-osinfo")["return"]
assert osinfo["id"] == "debian", osinfo
pw = sys.argv[2]
r = call("guest-set-user-password", username="root", password=base64.b64encode(pw.encode()).decode(), crypted=False)
assert r == {"return": {}}, r
print("ok", osinfo["kernel-release"])
PY
QPW="qga-$RANDOM-Pass"
if out=$(timeout 180 python3 "$W/qga.py" "$W/qga.sock" "$QPW" 2>&1); then
  hash=$(con 'grep "^root:" /etc/shadow | cut -d: -f2')
  if python3 -c 'import crypt,sys; sys.exit(0 if crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2] else 1)' "$QPW" "$hash" 2>/dev/null; then
    pass "qga on org.qemu.guest_agent.0: sync-delimited, ping, info, osinfo, set-user-password ($out)"
  else
    fail "qga set-user-password" "$out / shadow hash '${hash:0:12}...'"
  fi
else
  fail "qga on org.qemu.guest_agent.0" "$out"
fi

# 7. The same guestd process served everything (no crash, no restart).
now_pid=$(con 'pidof guestd' | tail -1)
if [ -n "$GUESTD_PID" ] && [ "$now_pid" = "$GUESTD_PID" ] && ! con 'cat /tmp/guestd.log' | grep -q 'guestd exited'; then
  pass "guestd never restarted"
else
  fail "guestd restarted" "pid $GUESTD_PID -> $now_pid; $(con 'grep exited /tmp/guestd.log')"
fi

if [ "$FAILED" -gt 0 ]; then
  note "guestd log (tail):"; con 'tail -40 /tmp/guestd.log' || true
fi
echo "qemu e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped ($(($(date +%s) - T0))s)"
[ "$FAILED" -eq 0 ]
