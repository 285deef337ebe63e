"""guestd alone: figures that have no qemu-ga counterpart.

- `polling_model`: what the old agents' one-second XenStore polling costs, for comparison with
  guestd's watch-driven transport: a request written at a uniformly random moment waits for the
  next poll, so its latency is uniform on [0, interval); a poller also wakes once per interval
  when nothing happens.

Each section returns a dict (or None when its peer is not in this build) and a table row.
"""
import os
import json
import random
import subprocess
import time

import procstat
from agents import Guestd, stop


def polling_model(interval_ms=1000.0, samples=100_000, seed=1):
    """Latency of a poll loop with period `interval_ms`, by simulation (and closed form)."""
    rng = random.Random(seed)
    lat = sorted(rng.uniform(0, interval_ms) for _ in range(samples))
    return {
        "interval_ms": interval_ms,
        "mean_ms": round(sum(lat) / samples, 1),  # closed form: interval / 2
        "p50_ms": round(lat[samples // 2], 1),
        "p99_ms": round(lat[int(samples * 0.99)], 1),
        "idle_wakeups_10s": int(10_000 / interval_ms),
    }


def alt_build(binary, workdir):
    """Idle memory of the other guestd build (glibc, dynamically linked, when the table shows
    the static musl build that packaging ships)."""
    agent = Guestd(binary)
    sock = os.path.join(workdir, "static.sock")
    with open(os.path.join(workdir, "static.log"), "w") as errlog:
        proc = agent.start(sock, workdir, errlog)
        try:
            client = agent.wait_ready(sock, proc)
            time.sleep(1.0)
            st = procstat.status(proc.pid)
            client.close()
        finally:
            stop(proc)
    return {"binary": binary, "binary_bytes": os.path.getsize(binary), "rss_kib": st["VmRSS"],
            "rss_anon_kib": st.get("RssAnon"), "pss_kib": st.get("Pss")}


def xenstore_roundtrip(binary, guestd, xenstored, n):
    """Host-side round trips of `version` to the guestd binary serving XenStore on
    test-xenstored (tests/src/bin/xs-latency.rs): write of `data/host/<id>` to the reply read
    after its watch fired. This bounds guestd's request-write to reply-write latency from
    above."""
    out = subprocess.run([binary, guestd, xenstored, str(n)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"xs-latency: {out.stderr.strip()}")
    return json.loads(out.stdout)


P_LEGACY = 2**107 - 1


def keyinit_password(guestd, workdir, n):
    """nova's `set_admin_password` against guestd on a sandbox root: `keyinit` (legacy DH) then
    `password` (openssl-encrypted, as nova does). Times the agent's two round trips only; the
    host's own arithmetic and the openssl CLI run between them and are not counted."""
    root = os.path.join(workdir, "pw-root")
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    files = {
        "os-release": "ID=debian\nVERSION_ID=\"12\"\n",
        "passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "group": "root:x:0:\nshadow:x:42:\n",
        "shadow": "root:*:19832:0:99999:7:::\n",
    }
    for name, text in files.items():
        with open(os.path.join(etc, name), "w") as f:
            f.write(text)
    os.chmod(os.path.join(etc, "shadow"), 0o640)
    agent = Guestd(guestd.binary, ["--root", root])
    sock = os.path.join(workdir, "pw.sock")
    keyinit_ms, password_ms = [], []
    with open(os.path.join(workdir, "pw.log"), "w") as errlog:
        proc = agent.start(sock, workdir, errlog)
        try:
            client = agent.wait_ready(sock, proc)
            for i in range(n):
                private = int.from_bytes(os.urandom(10), "big")
                t0 = time.perf_counter()
                client.send(json.dumps({"id": f"k{i}", "name": "keyinit",
                                        "value": str(pow(5, private, P_LEGACY))}).encode() + b"\n")
                reply = client.recv()
                keyinit_ms.append((time.perf_counter() - t0) * 1000)
                if reply.get("returncode") != "D0":
                    raise RuntimeError(f"keyinit: {reply}")
                shared = str(pow(int(reply["message"]), private, P_LEGACY))
                password = f"bench-{i}-{os.urandom(4).hex()}"
                enc = subprocess.run(
                    ["openssl", "aes-128-cbc", "-A", "-a", "-pass", f"pass:{shared}", "-nosalt",
                     "-md", "md5"], input=password + "\n", capture_output=True, text=True,
                    check=True).stdout.strip()
                t0 = time.perf_counter()
                client.send(json.dumps({"id": f"p{i}", "name": "password",
                                        "value": enc}).encode() + b"\n")
                reply = client.recv()
                password_ms.append((time.perf_counter() - t0) * 1000)
                if reply.get("returncode") != "0":
                    raise RuntimeError(f"password: {reply}")
            client.close()
        finally:
            stop(proc)
    keyinit_ms.sort()
    password_ms.sort()
    total = sorted(k + p for k, p in zip(keyinit_ms, password_ms))
    return {"n": n, "keyinit_p50_ms": round(keyinit_ms[n // 2], 2),
            "password_p50_ms": round(password_ms[n // 2], 2),
            "total_p50_ms": round(total[n // 2], 2), "total_max_ms": round(total[-1], 2)}


def run_all(args, guestd, workdir, log):
    out = {"polling_model": polling_model()}
    if args.xs_latency and os.path.exists(args.xs_latency):
        n = 500 if args.quick else 3000
        log(f"XenStore round trips on test-xenstored, {n}")
        xenstored = os.path.join(os.path.dirname(args.xs_latency), "test-xenstored")
        xs = xenstore_roundtrip(args.xs_latency, guestd.binary, xenstored, n)
        xs["vs_polling_mean"] = round(out["polling_model"]["mean_ms"] * 1000 / xs["mean_us"])
        out["xenstore"] = xs
    n = 10 if args.quick else 50
    log(f"keyinit + password (nova's flow, chpasswd -R on a sandbox root), {n}")
    out["keyinit_password"] = keyinit_password(guestd, workdir, n)
    if args.guestd_alt and os.path.exists(args.guestd_alt):
        log(f"{args.guestd_alt_label} build: idle RSS")
        out["alt_build"] = dict(alt_build(args.guestd_alt, workdir), label=args.guestd_alt_label)
    return out


def table(extra):
    rows = []
    pm = extra.get("polling_model")
    if pm:
        rows.append(
            f"{'1 s polling (old agents), model':<44} mean {pm['mean_ms']:.0f} ms, "
            f"p99 {pm['p99_ms']:.0f} ms, {pm['idle_wakeups_10s']} idle wakeups/10 s"
        )
    xs = extra.get("xenstore")
    if xs:
        rows.append(
            f"{'XenStore round trip (watch-driven), host side':<44} p50 {xs['p50_us']:.0f} us, "
            f"p99 {xs['p99_us']:.0f} us, mean {xs['mean_us']:.0f} us "
            f"({xs['vs_polling_mean']}x faster than 1 s polling)"
        )
    kp = extra.get("keyinit_password")
    if kp:
        rows.append(
            f"{'keyinit + password (agent side), p50':<44} {kp['total_p50_ms']:.1f} ms "
            f"(keyinit {kp['keyinit_p50_ms']:.2f} ms, password {kp['password_p50_ms']:.1f} ms)"
        )
    st = extra.get("alt_build")
    if st:
        label = f"idle RSS of the {st['label']} build"
        rows.append(f"{label:<44} {st['rss_kib']} KiB (binary {st['binary_bytes'] // 1024} KiB)")
    return "\n".join(rows)
