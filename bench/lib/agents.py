"""The agents under test: how to start each on a unix socket, what a trivial request is, and
what its reply must look like."""
import json
import os
import shutil
import signal
import subprocess
import time

from client import LineClient


class Agent:
    name = ""
    binary = ""

    def argv(self, sock, workdir):
        raise NotImplementedError

    def request(self, i):
        raise NotImplementedError

    def check(self, reply, i):
        raise NotImplementedError

    def start(self, sock, workdir, log):
        """Start the agent; returns the Popen. The socket may not be there yet."""
        if os.path.exists(sock):
            os.unlink(sock)
        return subprocess.Popen(
            self.argv(sock, workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )

    def wait_ready(self, sock, proc, deadline_s=20.0):
        """Connect (retrying until the socket answers) and get one reply; returns the client."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                client = LineClient(sock, connect_deadline=0.0)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {proc.returncode} at start-up")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not listen within {deadline_s} s")
                time.sleep(0.0005)
        client.send(self.request(0))
        self.check(client.recv(), 0)
        return client


def cold_copy(binary):
    """A copy of `binary` that is on disk and not in the page cache: what a guest starts at
    boot. A file just written (by the linker, cp or dpkg) sits in the page cache as the writer
    left it, and what the kernel maps around a fault, and what guestd's start-up page-out can
    reclaim, depend on that; a file read from disk is cached in readahead-sized pieces. The
    figures of a binary read from disk are the ones a guest sees, and they repeat. The copy is
    `BINARY.cold` beside it: on the build's disk, as /tmp may be a tmpfs, which has no disk."""
    copy = binary + ".cold"
    shutil.copy2(binary, copy)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return copy


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Guestd(Agent):
    name = "guestd"

    def __init__(self, binary, extra=()):
        self.binary = binary
        self.extra = list(extra)

    def argv(self, sock, workdir):
        # Its own config file: the measurement must not depend on /etc/guestd of this machine.
        # Defaults, but enough unix-socket slots to serve every client of the many-clients
        # figure (the default serves 16 at once and refuses the rest).
        config = os.path.join(workdir, "guestd.toml")
        with open(config, "w") as f:
            f.write("[unix]\nmax_connections = 256\n")
        argv = [self.binary, "--config", config, "--listen", f"unix:{sock}", *self.extra]
        if "--root" not in self.extra:
            root = os.path.join(workdir, "root")
            os.makedirs(root, exist_ok=True)
            argv += ["--root", root]
        return argv

    def request(self, i):
        return b'{"id":%d,"name":"version","value":"agent"}\n' % i

    def check(self, reply, i):
        if reply.get("id") != i or reply.get("returncode") != "0":
            raise RuntimeError(f"guestd: unexpected reply to request {i}: {json.dumps(reply)}")


class QemuGa(Agent):
    name = "qemu-ga"

    def __init__(self, binary):
        self.binary = binary

    def argv(self, sock, workdir):
        state = os.path.join(workdir, "state")
        os.makedirs(state, exist_ok=True)
        return [self.binary, "-m", "unix-listen", "-p", sock, "-t", state,
                "-f", os.path.join(workdir, "qemu-ga.pid")]

    def request(self, i):
        return b'{"execute":"guest-ping","id":%d}\n' % i

    def check(self, reply, i):
        if reply.get("id") != i or "return" not in reply:
            raise RuntimeError(f"qemu-ga: unexpected reply to request {i}: {json.dumps(reply)}")
