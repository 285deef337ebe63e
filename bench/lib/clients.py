"""Many idle clients at once: what each open connection costs an agent.

`idle_clients` opens N unix-socket connections without blocking (a full listen backlog is a
refused connection, not a hang), sends one trivial request on each, and waits a moment for the
replies. Connections stay open while the caller measures the agent's memory; `close` ends them.
"""
import select
import socket
import time


class IdleClients:
    def __init__(self, sock_path, agent, n, wait_s=3.0):
        self.socks = []
        self.connected = 0
        self.answered = 0
        self.closed_by_agent = 0
        for i in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(sock_path)
            except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
                s.close()
                continue
            self.connected += 1
            try:
                s.send(agent.request(1_000_000 + i))
            except OSError:
                pass
            self.socks.append(s)
        pending = {s.fileno(): s for s in self.socks}
        deadline = time.monotonic() + wait_s
        while pending and time.monotonic() < deadline:
            ready, _, _ = select.select(list(pending.values()), [], [],
                                        max(0.0, deadline - time.monotonic()))
            for s in ready:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data:
                    self.answered += 1
                else:
                    self.closed_by_agent += 1
                del pending[s.fileno()]

    def summary(self):
        return {"connected": self.connected, "answered": self.answered,
                "closed_by_agent": self.closed_by_agent}

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


def settle():
    """Let the agent notice closed connections before the next measurement."""
    time.sleep(0.5)

