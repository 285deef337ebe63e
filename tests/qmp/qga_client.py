"""Drive a guest agent the way QEMU's own qemu-ga-client does (python/qemu/utils/
qemu_ga_client.py over the qemu.qmp library): QEMUMonitorProtocol(path).connect(negotiate=False),
the ping + guest-sync handshake, then one cmd_obj per command. The library writes each request
as a bare JSON object, without a newline.

    python qga_client.py SOCKET sandbox|host     run READ_ONLY's commands of that group
    python qga_client.py --list                  print every command of READ_ONLY

prints one JSON object: {"synced": true, "replies": {COMMAND: REPLY, ...}} and exits 0, or
exits 1 with the reason.
"""

import asyncio
import json
import random
import sys

from qemu.qmp.legacy import QEMUMonitorProtocol

# Every read-only command guestd answers: (name, arguments, group). "sandbox": answered by a
# guestd whose --root is a prepared sandbox (tests/tests/qga.rs's sandbox_dir: alice has an
# authorized key); "host": needs this machine's real /proc and /sys (a guestd with --root / and
# only the read-only queries enabled). Add one line per new command.
READ_ONLY = [
    ("guest-ping", {}, "sandbox"),
    ("guest-info", {}, "sandbox"),
    ("guest-get-osinfo", {}, "sandbox"),
    ("guest-get-host-name", {}, "sandbox"),
    ("guest-get-time", {}, "sandbox"),
    ("guest-network-get-interfaces", {}, "sandbox"),
    ("guest-ssh-get-authorized-keys", {"username": "alice"}, "sandbox"),
    ("guest-fsfreeze-status", {}, "sandbox"),
    ("guest-get-timezone", {}, "sandbox"),
    ("guest-get-users", {}, "sandbox"),
    ("guest-get-fsinfo", {}, "host"),
    ("guest-get-disks", {}, "host"),
    ("guest-get-diskstats", {}, "host"),
    ("guest-get-cpustats", {}, "host"),
    ("guest-get-load", {}, "host"),
    ("guest-get-vcpus", {}, "host"),
    ("guest-get-memory-blocks", {}, "host"),
    ("guest-get-memory-block-info", {}, "host"),
    ("guest-network-get-route", {}, "host"),
]


class QemuGuestAgent(QEMUMonitorProtocol):
    """As qemu_ga_client.py (QEMU 9, on qemu.qmp): qga.sync(id=...) is
    cmd('guest-sync', id=...)."""

    def __getattr__(self, name):
        def wrapper(**kwds):
            return self.cmd("guest-" + name.replace("_", "-"), **kwds)

        return wrapper


def ping(qga, timeout):
    qga.settimeout(timeout)
    try:
        qga.ping()
    except asyncio.TimeoutError:
        return False
    return True


def sync(qga, timeout=3):
    # qemu_ga_client.py's handshake: a ping within the timeout, then guest-sync until the
    # random id comes back.
    if not ping(qga, timeout):
        raise EnvironmentError("Agent seems not alive")
    uid = random.randint(0, (1 << 32) - 1)
    while True:
        ret = qga.sync(id=uid)
        if isinstance(ret, int) and int(ret) == uid:
            return


def main(path, group):
    qga = QemuGuestAgent(path)
    qga.connect(negotiate=False)
    try:
        sync(qga)
        replies = {}
        for name, arguments, where in READ_ONLY:
            if where == group:
                replies[name] = qga.cmd_obj({"execute": name, "arguments": arguments})
    finally:
        qga.close()
    json.dump({"synced": True, "replies": replies}, sys.stdout)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        json.dump([name for name, _, _ in READ_ONLY], sys.stdout)
        sys.exit(0)
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except Exception as err:  # the reason, for the test's failure message
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
