"""Round trips over virtio-serial inside a VM: guestd next to Debian's qemu-ga.

One QEMU guest (TCG, the Debian cloud kernel of `tests/qemu/kernel.sh`, a busybox initramfs)
with one virtio-serial port, `org.qemu.guest_agent.0`, whose host end is a unix socket. The
initramfs holds the static guestd and Debian's qemu-ga with the shared libraries `ldd` names
(the package's own binary, not a rebuild: a static qemu-ga needs the QEMU source tree and a
static glib, and the point is to measure the agent distributions ship). The host starts one
agent at a time through a shell on the serial console (guestd serving the qemu-ga dialect on
the port, `qga+serial:`, so that both answer the same bytes), and the same host client
(`bench/loadgen.rs`, `guest-ping` one at a time) measures each, alternating rounds so that a
noisy moment hits both.
"""
import json
import os
import shutil
import socket
import subprocess
import time

PORT = "org.qemu.guest_agent.0"
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_console")

GUEST_FILES = {
    "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\n",
    "etc/guestd/bench.toml": "",
}

# Shell snippets run in the guest. `$P`: the port's /dev/vportNpM (busybox has no udev, so no
# /dev/virtio-ports/ links; guestd finds the port through sysfs by itself).
FIND_PORT = (f'P=; for d in /sys/class/virtio-ports/*; do [ "$(cat $d/name)" = {PORT} ] '
             '&& P=/dev/${d##*/}; done')
START = {
    "guestd": (f"/bin/guestd --config /etc/guestd/bench.toml --listen qga+serial:{PORT} "
               "--log-level warn >/tmp/guestd.log 2>&1 & echo $! >/tmp/agent.pid"),
    "qemu-ga": (f"{FIND_PORT}; mkdir -p /tmp/qga; /usr/sbin/qemu-ga -m virtio-serial -p $P "
                "-t /tmp/qga -f /tmp/qga/qemu-ga.pid >/tmp/qemu-ga.log 2>&1 & "
                "echo $! >/tmp/agent.pid"),
}
STOP = ('pid=$(cat /tmp/agent.pid); kill $pid; i=0; while kill -0 $pid 2>/dev/null && '
        '[ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; rm -f /tmp/agent.pid')
MEMORY = ("pid=$(cat /tmp/agent.pid); grep -E '^(Rss|Pss|Private_Clean|Private_Dirty):' "
          "/proc/$pid/smaps_rollup")


def kernel(repo):
    """(vmlinuz, unpacked package dir, module dir name) from tests/qemu/kernel.sh."""
    script = ('note() { echo "[bench] $*" >&2; }; . tests/qemu/kernel.sh; '
              'printf "%s\\n%s\\n%s\\n" "$KERNEL" "$KROOT" "$KVER"')
    out = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"kernel: {out.stderr.strip()}")
    vmlinuz, kroot, kver = out.stdout.split("\n")[:3]
    return vmlinuz, kroot, kver


def shared_libraries(binary):
    """The files `ldd` says `binary` loads (the dynamic loader included)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        words = line.split()
        if "=>" in words:
            path = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):
            path = words[0]
        else:
            continue  # linux-vdso
        if path.startswith("/"):
            libs.append(path)
    return libs


def initramfs(workdir, guestd, qemu_ga, kroot, kver):
    """Build the gzipped cpio; returns (its path, the bytes of qemu-ga + its libraries)."""
    root = os.path.join(workdir, "initramfs")
    for d in ("bin", "sbin", "usr/sbin", "lib/modules", "proc", "sys", "dev", "tmp", "run",
              "root", "etc/guestd"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    shutil.copy(guestd, os.path.join(root, "bin/guestd"))
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, "..", "vm", "init.sh"), os.path.join(root, "init"))
    os.chmod(os.path.join(root, "init"), 0o755)
    shutil.copy(qemu_ga, os.path.join(root, "usr/sbin/qemu-ga"))
    qga_bytes = os.path.getsize(qemu_ga)
    for lib in shared_libraries(qemu_ga):
        dest = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(os.path.realpath(lib), dest)
        qga_bytes += os.path.getsize(dest)
    mods = os.path.join(kroot, "lib/modules", kver)
    for m in MODULES:
        found = None
        for dirpath, _, names in os.walk(mods):
            for n in names:
                if n in (f"{m}.ko", f"{m}.ko.xz"):
                    found = os.path.join(dirpath, n)
        if not found:
            raise RuntimeError(f"module {m} not in {mods}")
        dest = os.path.join(root, "lib/modules", f"{m}.ko")
        if found.endswith(".xz"):
            with open(dest, "wb") as out:
                subprocess.run(["xz", "-dc", found], stdout=out, check=True)
        else:
            shutil.copy(found, dest)
    for rel, text in GUEST_FILES.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)
    os.chmod(os.path.join(root, "etc/shadow"), 0o600)
    image = os.path.join(workdir, "initramfs.gz")
    subprocess.run(f"cd '{root}' && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 "
                   f"> '{image}'", shell=True, check=True)
    return image, qga_bytes


class Console:
    """The guest's serial console: a shell that runs what the host writes."""

    def __init__(self, path, deadline_s=120):
        deadline = time.monotonic() + deadline_s
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.n = 0

    def run(self, cmd, timeout=60.0):
        """Run `cmd` in the guest shell; its output."""
        self.n += 1
        tag = f"BENCH{os.getpid()}x{self.n}"
        # The marker is computed by the shell, so the command's own text never matches it.
        self.sock.sendall(f'{cmd}\necho; echo "@@{tag}-$((40+2))@@"\n'.encode())
        needle = f"@@{tag}-42@@".encode()
        out = b""
        deadline = time.monotonic() + timeout
        while needle not in out:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no console answer to {cmd!r}; got {out[-300:]!r}")
            self.sock.settimeout(0.5)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                # The emulated UART may hold the last output until it receives a byte (a lost
                # transmit interrupt under TCG): an empty line flushes it.
                self.sock.sendall(b"\n")
                continue
            if not chunk:
                raise EOFError("the console closed")
            out += chunk
        return out.split(needle)[0].decode(errors="replace").strip()

    def close(self):
        self.sock.close()


def wait_for_agent(path, deadline_s=60.0):
    """Connect to the port's host end and `guest-sync` until the agent in the guest answers
    (requests sent before it ran are answered late, so wait for the latest id)."""
    deadline = time.monotonic() + deadline_s
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    buf = b""
    token = int(time.time() * 1000) % 1_000_000_000
    try:
        while True:
            token += 1
            s.sendall(json.dumps({"execute": "guest-sync", "arguments": {"id": token}}).encode()
                      + b"\n")
            resend = time.monotonic() + 2.0
            while time.monotonic() < resend:
                s.settimeout(max(0.05, resend - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    raise EOFError("the port's host end closed")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        if json.loads(line.lstrip(b"\xff")).get("return") == token:
                            return
                    except ValueError:
                        pass
            if time.monotonic() > deadline:
                raise TimeoutError("the agent in the VM did not answer guest-sync")
    finally:
        s.close()


def memory(console):
    fields = {}
    for line in console.run(MEMORY).splitlines():
        key, _, value = line.partition(":")
        if value.strip():
            fields[key.strip()] = int(value.split()[0])
    return {"rss_kib": fields.get("Rss"), "pss_kib": fields.get("Pss"),
            "uss_kib": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def run(repo, guestd, qemu_ga, loadgen, workdir, rounds, n, log):
    """Both agents over virtio-serial in one VM; {"guestd": {...}, "qemu-ga": {...}, "vm": {...}}."""
    vmlinuz, kroot, kver = kernel(repo)
    image, qga_bytes = initramfs(workdir, guestd, qemu_ga, kroot, kver)
    con_sock = os.path.join(workdir, "console.sock")
    port_sock = os.path.join(workdir, "qga.sock")
    qemu_log = open(os.path.join(workdir, "qemu.log"), "w")
    argv = [
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-accel", "tcg", "-M", "pc",
        "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-no-reboot",
        "-kernel", vmlinuz, "-initrd", image, "-append", "console=ttyS0 quiet panic=-1",
        "-chardev", f"socket,id=con0,path={con_sock},server=on,wait=off,"
                    f"logfile={workdir}/console.log",
        "-serial", "chardev:con0", "-device", "virtio-serial",
        "-chardev", f"socket,id=qga0,path={port_sock},server=on,wait=off",
        "-device", f"virtserialport,chardev=qga0,name={PORT}",
    ]
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=qemu_log)
    console = None
    try:
        console = Console(con_sock)
        console.run("true", timeout=180)  # the shell is up once it answers
        version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
        res = {name: {"rounds": [], "memory": None} for name in START}
        for r in range(rounds):
            for name in START:
                log(f"virtio-serial in the VM, round {r + 1}/{rounds}: {name}, {n} round trips")
                console.run(START[name])
                wait_for_agent(port_sock)
                warm = subprocess.run([loadgen, "seq", port_sock, "qemu-ga", "200"],
                                      capture_output=True, text=True, timeout=300)
                if warm.returncode != 0:
                    raise RuntimeError(f"{name} in the VM: {warm.stderr.strip()}")
                out = subprocess.run([loadgen, "seq", port_sock, "qemu-ga", str(n)],
                                     capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise RuntimeError(f"{name} in the VM: {out.stderr.strip()}")
                res[name]["rounds"].append(json.loads(out.stdout))
                if res[name]["memory"] is None:
                    res[name]["memory"] = memory(console)
                console.run(STOP)
        for name, agent in res.items():
            rows = agent["rounds"]
            agent["p50_us"] = round(sorted(x["p50_us"] for x in rows)[len(rows) // 2], 1)
            agent["p99_us"] = round(sorted(x["p99_us"] for x in rows)[len(rows) // 2], 1)
            agent["rps"] = round(sorted(x["rps"] for x in rows)[len(rows) // 2])
        res["vm"] = {"qemu": version, "accel": "tcg", "cpus": 1, "memory_mib": 256,
                     "kernel": os.path.basename(vmlinuz), "port": PORT,
                     "qemu_ga_with_libraries_kib": qga_bytes // 1024,
                     "qemu_ga_from": "Debian's package binary with the shared libraries ldd "
                                     "lists, copied into the initramfs",
                     "guestd_dialect": "qga+serial (guest-ping, the same bytes as qemu-ga)"}
        return res
    finally:
        if console:
            console.close()
        qemu.terminate()
        try:
            qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
        qemu_log.close()
