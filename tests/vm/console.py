#!/usr/bin/env python3
"""Run one shell command in the VM test's guest through its serial console.

  console.py SOCK 'CMD' [TIMEOUT]   prints CMD's output (stdout and stderr), exits with its status
  console.py SOCK --ready [TIMEOUT] waits until the shell answers (exit 0), else exits 124

SOCK is QEMU's chardev socket behind the guest's ttyS0, where the guest runs a root shell with
no echo and no prompt (vmtest-console.service, written by tests/vm/run.sh), so what comes back
before the end marker is exactly the command's output. Exit status 124 means no answer in time.
"""
import os
import re
import socket
import sys
import time


def connect(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def ready(path, timeout):
    """Probe until the shell answers. Input sent before the shell starts is lost (its unit
    resets the terminal), so the probe, which is harmless to repeat, is sent again and again."""
    deadline = time.time() + timeout
    s = connect(path, deadline)
    needle = b"@@ready-42@@"
    out = b""
    while time.time() < deadline:
        s.sendall(b'echo "@@ready-$((40+2))@@"\n')
        step = time.time() + 3
        while time.time() < step:
            s.settimeout(0.5)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                sys.exit(124)
            out += chunk
            if needle in out:
                # Let the answers to the other probes arrive, then drop them.
                time.sleep(1)
                s.settimeout(0.5)
                try:
                    s.recv(65536)
                except socket.timeout:
                    pass
                s.close()
                sys.exit(0)
    sys.stderr.write("the console shell did not answer within %ss; got %r\n" % (timeout, out[-300:]))
    sys.exit(124)


def main():
    if sys.argv[2] == "--ready":
        ready(sys.argv[1], float(sys.argv[3]) if len(sys.argv) > 3 else 120.0)
    path, cmd = sys.argv[1], sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    deadline = time.time() + timeout
    s = connect(path, deadline)
    tag = "VM%d%d" % (os.getpid(), int(time.time() * 1000) % 100000)
    # The marker is computed by the shell, so the command text itself never matches it. The
    # command runs in a subshell so that `exit` or `cd` in it cannot end or move the shell.
    s.sendall(("( %s\n) 2>&1\necho \"@@%s:$?:$((40+2))@@\"\n" % (cmd, tag)).encode())
    marker = re.compile((r"@@%s:(\d+):42@@" % tag).encode())
    out = b""
    while True:
        m = marker.search(out)
        if m:
            break
        if time.time() > deadline:
            sys.stderr.write("no console answer to %r within %ss; got %r\n" % (cmd, timeout, out[-300:]))
            sys.exit(124)
        s.settimeout(0.5)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            # The emulated 8250 UART sometimes holds the last output until the next received
            # byte (a lost transmit interrupt under TCG); an empty line to the shell flushes it.
            s.sendall(b"\n")
            continue
        if not chunk:
            sys.stderr.write("console closed\n")
            sys.exit(124)
        out += chunk
    s.close()
    text = out[: m.start()].decode(errors="replace").replace("\r", "")
    text = re.sub(r"@@ready-42@@\n?", "", text)  # a late answer to a --ready probe
    sys.stdout.write(text)
    sys.exit(int(m.group(1)))


if __name__ == "__main__":
    main()
