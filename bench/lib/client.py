"""A small newline-delimited JSON client over a unix socket, for start-up and idle checks (the
timed loops are the Rust load generator's, `bench/loadgen.rs`, so that client cost stays low).

The same client drives guestd (`{"id", "name", "value"}` lines) and qemu-ga (`{"execute", "id"}`
lines); the agent description says what to send and how to recognise a good reply.
"""
import json
import socket
import time


class LineClient:
    def __init__(self, path, timeout=10.0, connect_deadline=0.0):
        deadline = time.monotonic() + connect_deadline
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.0005)
        sock.settimeout(timeout)
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def recv_line(self):
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                return line
            chunk = self.sock.recv(262144)
            if not chunk:
                raise EOFError("agent closed the connection")
            self.buf += chunk

    def recv(self):
        # 0xFF may precede a sync reply (both agents); it is not part of the JSON.
        return json.loads(self.recv_line().lstrip(b"\xff"))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def percentile(values, p):
    """Nearest-rank percentile, p in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]
