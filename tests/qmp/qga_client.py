"""Drive a guest agent the way QEMU's own qemu-ga-client does (python/qemu/utils/
qemu_ga_client.py over the qemu.qmp library): QEMUMonitorProtocol(path).connect(negotiate=False),
the ping + guest-sync handshake, then one cmd_obj per command. The library writes each request
as a bare JSON object, without a newline.

    python qga_client.py SOCKET

prints one JSON object: {"synced": true, "replies": {COMMAND: REPLY, ...}} and exits 0, or
exits 1 with the reason. The commands are READ_ONLY below.
"""

import asyncio
import json
import random
import sys

from qemu.qmp.legacy import QEMUMonitorProtocol

# Every read-only command guestd answers, with its arguments. Add one line per new command.
READ_ONLY = [
    ("guest-ping", {}),
    ("guest-info", {}),
    ("guest-get-osinfo", {}),
    ("guest-get-host-name", {}),
    ("guest-get-time", {}),
    ("guest-network-get-interfaces", {}),
    ("guest-ssh-get-authorized-keys", {"username": "alice"}),
    ("guest-fsfreeze-status", {}),
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


def main(path):
    qga = QemuGuestAgent(path)
    qga.connect(negotiate=False)
    try:
        sync(qga)
        replies = {}
        for name, arguments in READ_ONLY:
            replies[name] = qga.cmd_obj({"execute": name, "arguments": arguments})
    finally:
        qga.close()
    json.dump({"synced": True, "replies": replies}, sys.stdout)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1]))
    except Exception as err:  # the reason, for the test's failure message
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
