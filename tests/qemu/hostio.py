#!/usr/bin/env python3
"""Host-side helpers for tests/qemu/run.sh.

  hostio.py console SOCK 'CMD'   run CMD in the guest's console shell, print its output
  hostio.py half SOCK            send half a request on the agent port, then disconnect
  hostio.py stale SOCK ID        send a whole request, disconnect before its reply arrives
  hostio.py retry SOCK           same id twice on two connections: same reply (printed)
  hostio.py hostile SOCK DIR     replay the hostile corpus (tests/hostile/*.req), each case
                                 followed by a version probe that must come back in step
  hostio.py flood SOCK           10 MB without a newline, then a request: both answered

SOCK is QEMU's chardev unix socket (the host end of the guest's port or console).
Exit status 0 means the check held; a message on stderr says why not.
"""
import json
import os
import socket
import sys
import time


def connect(path, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.settimeout(timeout)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def read_until(s, needle, timeout):
    buf = b""
    deadline = time.time() + timeout
    while needle not in buf:
        s.settimeout(max(0.1, deadline - time.time()))
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("closed before %r" % needle)
        buf += chunk
        if time.time() > deadline:
            raise TimeoutError("no %r in %r" % (needle, buf[-200:]))
    return buf


def console(path, cmd, timeout=60.0):
    s = connect(path)
    tag = "E2E%d%d" % (os.getpid(), int(time.time() * 1000) % 100000)
    # The marker is computed by the shell, so the command text itself never matches it.
    s.sendall(("%s\necho; echo \"@@%s-$((40+2))@@\"\n" % (cmd, tag)).encode())
    needle = ("@@%s-42@@" % tag).encode()
    out = b""
    deadline = time.time() + timeout
    while needle not in out:
        if time.time() > deadline:
            raise TimeoutError("no console answer to %r; got %r" % (cmd, out[-300:]))
        s.settimeout(0.3)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            # The emulated 8250 UART sometimes holds the last output until the next received
            # byte (a lost transmit interrupt under TCG); an empty line to the shell flushes it.
            s.sendall(b"\n")
            continue
        if not chunk:
            raise EOFError("console closed")
        out += chunk
    s.close()
    text = out.decode(errors="replace").split("@@%s-42@@" % tag)[0]
    sys.stdout.write(text.strip() + "\n")


def sync(s, token):
    s.sendall(b"\xff" + json.dumps({"id": token, "name": "sync", "value": token}).encode() + b"\n")
    buf = b""
    while True:
        buf += read_until(s, b"\n", 30)
        for line in buf.split(b"\n")[:-1]:
            line = line.lstrip(b"\xff")
            try:
                if json.loads(line).get("id") == token:
                    return buf[buf.rindex(b"\n") + 1:]
            except ValueError:
                pass
        buf = buf[buf.rindex(b"\n") + 1:]


def reply_for(s, rid, rest=b"", timeout=60):
    buf = rest
    deadline = time.time() + timeout
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                obj = json.loads(line.lstrip(b"\xff"))
            except ValueError:
                continue
            if obj.get("id") == rid:
                return obj, buf
        s.settimeout(max(0.1, deadline - time.time()))
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("closed before the reply to %s" % rid)
        buf += chunk


def request(rid, name, value="agent"):
    return json.dumps({"id": rid, "name": name, "value": value}).encode() + b"\n"


def next_line(s, buf):
    """The next reply line after `buf` (without its newline and any 0xFF), and what is left."""
    while b"\n" not in buf:
        more = s.recv(65536)
        if not more:
            raise SystemExit("the port closed")
        buf += more
    line, buf = buf.split(b"\n", 1)
    return line.lstrip(b"\xff"), buf


def load_case(path):
    """A corpus case (format: tests/src/hostile.rs): header `#! expect=WHAT`, then the bytes,
    with `@@REPEAT(count,text)@@` expanded."""
    raw = open(path, "rb").read()
    header, body = raw.split(b"\n", 1)
    if body.endswith(b"\n"):
        body = body[:-1]
    expect = header.decode().split("#! expect=", 1)[1]
    out = b""
    while b"@@REPEAT(" in body:
        before, rest = body.split(b"@@REPEAT(", 1)
        spec, body = rest.split(b")@@", 1)
        count, text = spec.split(b",", 1)
        out += before + text * int(count)
    return expect, out + body


def hostile_ok(expect, line):
    """Whether one reply line answers a case as it must (tests/src/hostile.rs check_reply)."""
    if len(line) > 64 * 1024 or not line.isascii():
        return False
    try:
        reply = json.loads(line)
    except ValueError:
        return False
    code, message = reply.get("returncode"), reply.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return False
    return {
        "malformed": code == "500" and message == "Request is malformed",
        "missing-name": code == "500" and message == "Request is missing 'name' key",
        "too-large": code == "500" and "too large" in message,
        "error": code not in ("0", "D0"),
        "reply": True,
    }[expect]


def hostile(path, corpus):
    s = connect(path)
    buf = sync(s, "hostile-sync-%d" % os.getpid())
    s.settimeout(120)

    names = sorted(n for n in os.listdir(corpus) if n.endswith(".req"))
    failures = []
    for name in names:
        expect, data = load_case(os.path.join(corpus, name))
        s.sendall(data + b"\n")
        line, buf = next_line(s, buf)
        if not hostile_ok(expect, line):
            failures.append("%s: expected %s, got %r" % (name, expect, line[:200]))
        s.sendall(request("probe", "version"))
        probe, buf = next_line(s, buf)
        try:
            ok = json.loads(probe).get("id") == "probe"
        except ValueError:
            ok = False
        if not ok:
            failures.append("%s: out of step afterwards, probe got %r" % (name, probe[:200]))
    s.close()
    print("%d cases" % len(names))
    if len(names) < 40 or failures:
        raise SystemExit("\n".join(failures) or "corpus incomplete")


def main():
    what, path = sys.argv[1], sys.argv[2]
    if what == "console":
        console(path, sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 60.0)
    elif what == "half":
        s = connect(path)
        s.sendall(b'{"id":"half","name":"vers')
        time.sleep(0.2)
        s.close()
    elif what == "stale":
        s = connect(path)
        s.sendall(request(sys.argv[3], "version"))
        s.close()
    elif what == "retry":
        # keyinit answers with a fresh random key: the same message twice means the second
        # attempt got the remembered reply (a query such as version would simply run again).
        rid = "retry-%d" % os.getpid()
        replies = []
        for attempt in (1, 2):
            s = connect(path)
            rest = sync(s, "retry-sync-%d-%d" % (os.getpid(), attempt))
            s.sendall(request(rid, "keyinit", "12345"))
            got, _ = reply_for(s, rid, rest)
            replies.append(got)
            s.close()
        print(json.dumps(replies[0]))
        print(json.dumps(replies[1]))
        if replies[0] != replies[1]:
            raise SystemExit("the repeated id got a different reply")
    elif what == "flood":
        s = connect(path)
        rest = sync(s, "flood-sync-%d" % os.getpid())
        chunk = b"x" * 65536
        for _ in range(160):
            s.sendall(chunk)
        s.sendall(b"\n" + request("after-flood", "version"))
        seen = []
        buf = rest
        s.settimeout(120)
        while True:
            line, buf = next_line(s, buf)
            seen.append(line.decode(errors="replace"))
            if '"after-flood"' in seen[-1]:
                break
        s.close()
        print("\n".join(seen))
        if not any("too large" in l for l in seen[:-1]) or '"returncode":"0"' not in seen[-1]:
            raise SystemExit("expected a 'too large' error, then the reply")
    elif what == "hostile":
        hostile(path, sys.argv[3])
    else:
        raise SystemExit("unknown helper %r" % what)


if __name__ == "__main__":
    main()
