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


def static_build(binary, workdir):
    """Idle memory of a statically linked guestd (musl): no shared libc pages to count."""
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


def run_all(args, guestd, workdir, log):
    out = {"polling_model": polling_model()}
    if args.xs_latency and os.path.exists(args.xs_latency):
        n = 500 if args.quick else 3000
        log(f"XenStore round trips on test-xenstored, {n}")
        xenstored = os.path.join(os.path.dirname(args.xs_latency), "test-xenstored")
        xs = xenstore_roundtrip(args.xs_latency, guestd.binary, xenstored, n)
        xs["vs_polling_mean"] = round(out["polling_model"]["mean_ms"] * 1000 / xs["mean_us"])
        out["xenstore"] = xs
    if args.guestd_static and os.path.exists(args.guestd_static):
        log("static (musl) build: idle RSS")
        out["static_musl"] = static_build(args.guestd_static, workdir)
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
    st = extra.get("static_musl")
    if st:
        rows.append(
            f"{'idle RSS of the static (musl) build':<44} {st['rss_kib']} KiB "
            f"(binary {st['binary_bytes'] // 1024} KiB)"
        )
    return "\n".join(rows)
