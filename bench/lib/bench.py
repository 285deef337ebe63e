#!/usr/bin/env python3
"""guestd next to Debian's qemu-guest-agent, measured in the same run on the same machine.

Both agents serve a unix socket. For each: start-up to first reply, idle RSS, idle wakeups
(all threads, one shared 10 s window), round trip p50/p99 of a trivial command (`version` vs
`guest-ping`), sequential and pipelined throughput. Then guestd alone: the sections whose peers
exist in this build (see `extras.py`). Prints a table with the ratios guestd/qemu-ga and writes
the numbers to a JSON file (`bench/results/latest.json` by default).

Run it through `bench/run`, which installs qemu-guest-agent and builds guestd first.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import extras  # noqa: E402
import procstat  # noqa: E402
from agents import Guestd, QemuGa, stop  # noqa: E402
from client import percentile  # noqa: E402

KEYS = ("rss_kib", "startup_ms", "p50_us", "p99_us", "rps", "pipelined_rps", "idle_wakeups_10s")

# (key, comparison, factor): guestd must be `comparison` factor × qemu-ga's figure.
TARGETS = {
    "rss_kib": ("<=", 0.5),
    "p50_us": ("<=", 0.6),
    "rps": (">=", 2.0),
    "pipelined_rps": (">=", 2.0),
    "idle_wakeups_10s": ("==", 0),
}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def startup(agent, workdir, runs):
    """Milliseconds from exec to the first reply, over cold starts."""
    times = []
    sock = os.path.join(workdir, f"{agent.name}-start.sock")
    with open(os.path.join(workdir, f"{agent.name}-start.log"), "w") as errlog:
        for _ in range(runs):
            t0 = time.perf_counter()
            proc = agent.start(sock, workdir, errlog)
            try:
                agent.wait_ready(sock, proc).close()
                times.append((time.perf_counter() - t0) * 1000)
            finally:
                stop(proc)
    return times


def loadgen(binary, mode, sock, agent, n):
    """Run the Rust load generator (bench/loadgen.rs) against one agent; its JSON result."""
    kind = "qemu-ga" if agent.name == "qemu-ga" else "guestd"
    out = subprocess.run([binary, mode, sock, kind, str(n)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {mode} against {agent.name}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def median(values):
    return percentile(values, 50)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    os_name = platform.system()
    try:
        with open("/etc/os-release") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        os_name = fields.get("PRETTY_NAME", os_name).strip('"')
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        # Other work on the machine during the run (the numbers are only as quiet as this).
        "loadavg_1m": os.getloadavg()[0],
    }


def version_of(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def verdict(key, g, q):
    cmp, factor = TARGETS[key]
    if cmp == "==":
        return g == factor
    if q == 0:
        return None
    ratio = g / q
    return ratio <= factor if cmp == "<=" else ratio >= factor


def table(results):
    g, q = results["guestd"], results["qemu_ga"]
    rows = [
        ("idle RSS (KiB)", "rss_kib", "{:.0f}"),
        ("start-up to first reply (ms)", "startup_ms", "{:.2f}"),
        ("round trip p50 (us)", "p50_us", "{:.1f}"),
        ("round trip p99 (us)", "p99_us", "{:.1f}"),
        ("sequential (req/s)", "rps", "{:.0f}"),
        ("pipelined (req/s)", "pipelined_rps", "{:.0f}"),
        ("idle wakeups in 10 s", "idle_wakeups_10s", "{:.0f}"),
        ("idle PSS (KiB)", "idle_pss_kib", "{:.0f}"),
        ("binary (KiB)", "binary_kib", "{:.0f}"),
    ]
    lines = [
        f"{'metric':<30} {'guestd':>10} {'qemu-ga':>10} {'ratio':>7}  target",
        "-" * 74,
    ]
    for label, key, fmt in rows:
        gv, qv = g.get(key), q.get(key)
        if gv is None or qv is None:
            continue
        ratio = f"{gv / qv:.2f}" if qv else "-"
        target = ""
        if key in TARGETS:
            cmp, factor = TARGETS[key]
            ok = verdict(key, gv, qv)
            want = f"{cmp} {factor}x" if cmp != "==" else f"== {factor}"
            target = f"{want:<8} {'met' if ok else 'MISSED' if ok is False else '?'}"
        lines.append(f"{label:<30} {fmt.format(gv):>10} {fmt.format(qv):>10} {ratio:>7}  {target}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guestd", required=True, help="the guestd binary (release build)")
    ap.add_argument("--qemu-ga", default=shutil.which("qemu-ga") or "/usr/sbin/qemu-ga")
    ap.add_argument("--loadgen", required=True, help="the load generator (bench/loadgen.rs)")
    ap.add_argument("--xs-latency", default=None,
                    help="the XenStore round-trip helper (tests/src/bin/xs-latency.rs)")
    ap.add_argument("--guestd-static", default=None,
                    help="a statically linked (musl) guestd: its idle RSS is reported too")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (about a minute)")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results",
                                                  "latest.json"))
    a = ap.parse_args()

    n_seq = 5000 if a.quick else 20000
    n_pipe = 20000 if a.quick else 100000
    rounds = 1 if a.quick else 3
    start_runs = 5 if a.quick else 20

    agents = {"guestd": Guestd(a.guestd), "qemu_ga": QemuGa(a.qemu_ga)}
    load_at_start = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="guestd-bench-")
    res = {key: {} for key in agents}
    procs, clients = {}, {}
    try:
        log(f"start-up, {start_runs} cold starts each")
        starts = {key: [] for key in agents}
        for _ in range(start_runs):  # interleaved, so that a noisy second hits both
            for key, agent in agents.items():
                starts[key] += startup(agent, workdir, 1)
        for key in agents:
            res[key]["startup_ms"] = round(percentile(starts[key], 50), 2)
            res[key]["startup_ms_min"] = round(min(starts[key]), 2)

        logs = {}
        for key, agent in agents.items():
            logs[key] = open(os.path.join(workdir, f"{key}.log"), "w")
            sock = os.path.join(workdir, f"{key}.sock")
            procs[key] = agent.start(sock, workdir, logs[key])
            clients[key] = agent.wait_ready(sock, procs[key])
        # The host keeps its channel open; so does this client while both agents idle.
        time.sleep(1.0)
        for key in agents:
            st = procstat.status(procs[key].pid)
            res[key]["rss_kib"] = st["VmRSS"]
            res[key]["idle_status"] = st
        log(f"idle window, {a.idle_seconds:g} s, both agents at once, a client connected")
        idle = procstat.idle_windows([p.pid for p in procs.values()], a.idle_seconds)
        for key in agents:
            w = idle[procs[key].pid]
            res[key]["idle_wakeups_10s"] = round(w["wakeups"] * 10.0 / a.idle_seconds)
            res[key]["idle_window"] = w

        for c in clients.values():
            c.close()
        clients.clear()
        socks = {key: os.path.join(workdir, f"{key}.sock") for key in agents}
        seq = {key: [] for key in agents}
        pipe = {key: [] for key in agents}
        for r in range(rounds):
            for key, agent in agents.items():  # interleaved, so that noise hits both
                log(f"round {r + 1}/{rounds}: {agent.name}, {n_seq} sequential + {n_pipe} pipelined")
                loadgen(a.loadgen, "seq", socks[key], agent, 500)  # warm-up
                seq[key].append(loadgen(a.loadgen, "seq", socks[key], agent, n_seq))
                pipe[key].append(loadgen(a.loadgen, "pipe", socks[key], agent, n_pipe)["rps"])
        for key in agents:
            res[key]["p50_us"] = round(median([x["p50_us"] for x in seq[key]]), 1)
            res[key]["p99_us"] = round(median([x["p99_us"] for x in seq[key]]), 1)
            res[key]["rps"] = round(median([x["rps"] for x in seq[key]]))
            res[key]["pipelined_rps"] = round(median(pipe[key]))
            res[key]["rounds"] = {"sequential": seq[key], "pipelined_rps": pipe[key]}
            res[key]["requests"] = (n_seq + n_pipe + 500) * rounds
            res[key]["rss_after_load_kib"] = procstat.status(procs[key].pid)["VmRSS"]
            res[key]["cpu_ms_total"] = procstat.cpu_ms(procs[key].pid)

        for key, agent in agents.items():
            res[key]["binary_kib"] = os.path.getsize(agent.binary) // 1024
            res[key]["idle_pss_kib"] = res[key]["idle_status"].get("Pss")
            res[key]["idle_rss_anon_kib"] = res[key]["idle_status"].get("RssAnon")
        res["guestd"]["version"] = version_of([a.guestd, "--version"])
        res["qemu_ga"]["version"] = version_of([a.qemu_ga, "--version"])
        res["guestd_only"] = extras.run_all(a, agents["guestd"], workdir, log)
    finally:
        for c in clients.values():
            c.close()
        for p in procs.values():
            stop(p)
        shutil.rmtree(workdir, ignore_errors=True)

    res["machine"] = machine()
    res["machine"]["loadavg_1m_at_start"] = load_at_start
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    res["mode"] = "quick" if a.quick else "full"
    res["targets"] = {
        key: {"want": f"guestd {cmp} {factor}" + ("" if cmp == "==" else " x qemu-ga"),
              "met": verdict(key, res["guestd"][key], res["qemu_ga"][key])}
        for key, (cmp, factor) in TARGETS.items()
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")

    m = res["machine"]
    print(f"\n{res['guestd']['version']} vs {res['qemu_ga']['version']}")
    print(f"{res['date']}, {m['os']}, kernel {m['kernel']}, {m['cores']} cores {m['cpu']}, "
          f"{m['memory_gib']} GiB; {res['mode']} run\n")
    print(table(res))
    extra_table = extras.table(res["guestd_only"])
    if extra_table:
        print("\nguestd alone\n" + extra_table)
    print(f"\nwritten to {os.path.relpath(a.out)}")
    missed = [k for k, t in res["targets"].items() if t["met"] is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
