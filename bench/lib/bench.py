#!/usr/bin/env python3
"""guestd next to Debian's qemu-guest-agent, measured in the same run on the same machine.

Both agents serve a unix socket. For each: start-up to first reply; idle RSS, PSS and USS;
idle wakeups (all threads, one shared 10 s window); round trip p50/p99 of a trivial command
(`version` vs `guest-ping`), sequential and pipelined throughput; RSS after a million requests;
RSS with 200 idle clients connected; the binary's size. Then both over virtio-serial inside a
QEMU guest (`serialvm.py`), and guestd alone: the sections whose peers exist in this build (see
`extras.py`). Prints a table with the ratios guestd/qemu-ga and writes the numbers to a JSON file
(`bench/results/latest.json` by default).

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
import serialvm  # noqa: E402
from clients import IdleClients, settle  # noqa: E402
from agents import Guestd, QemuGa, cold_copy, stop  # noqa: E402
from client import percentile  # noqa: E402

KEYS = ("rss_kib", "startup_ms", "p50_us", "p99_us", "rps", "pipelined_rps", "idle_wakeups_10s",
        "pss_kib", "uss_kib", "binary_kib", "rss_after_1m_kib", "rss_200_clients_kib",
        "serial_p50_us", "serial_p99_us")

# The targets. (kind, value): "<=" / ">=" / "<": guestd's figure against value × qemu-ga's
# figure; "==": guestd's figure equals value; "within": guestd's figure is at most value KiB
# above guestd's idle RSS.
TARGETS = {
    "rss_kib": ("<=", 0.5),
    "pss_kib": ("<=", 1.0),
    "rps": (">=", 2.0),
    "p50_us": ("<=", 0.6),
    "pipelined_rps": (">=", 2.0),
    "idle_wakeups_10s": ("==", 0),
    "rss_after_1m_kib": ("within", 64),
    "serial_p50_us": ("<", 1.0),
}

MILLION = 1_000_000
MANY_CLIENTS = 200


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
        # How much of a file just written (so cached in the large folios of the write path)
        # one read fault maps. Executables read from disk or linked here were mapped in 64 KiB
        # blocks on the 2026-12-03 machine (bench/footprint --map shows the agent's own).
        "file_fault_around_kib": procstat.fault_around_kib(),
    }


def version_of(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def verdict(key, g, q):
    """Whether guestd's figure meets the target (None: cannot tell)."""
    kind, value = TARGETS[key]
    gv, qv = g.get(key), q.get(key)
    if gv is None:
        return None
    if kind == "==":
        return gv == value
    if kind == "within":
        return gv - g["rss_kib"] <= value
    if not qv:
        return None
    ratio = gv / qv
    return {"<=": ratio <= value, ">=": ratio >= value, "<": ratio < value}[kind]


def want(key):
    kind, value = TARGETS[key]
    if kind == "==":
        return f"== {value}"
    if kind == "within":
        return f"idle+{value}"
    return f"{kind} {value}x"


ROWS = [
    ("idle RSS (KiB)", "rss_kib", "{:.0f}"),
    ("idle PSS (KiB)", "pss_kib", "{:.0f}"),
    ("idle USS (KiB)", "uss_kib", "{:.0f}"),
    ("binary (KiB)", "binary_kib", "{:.0f}"),
    ("start-up to first reply (ms)", "startup_ms", "{:.2f}"),
    ("round trip p50 (us)", "p50_us", "{:.1f}"),
    ("round trip p99 (us)", "p99_us", "{:.1f}"),
    ("sequential (req/s)", "rps", "{:.0f}"),
    ("pipelined (req/s)", "pipelined_rps", "{:.0f}"),
    ("idle wakeups in 10 s", "idle_wakeups_10s", "{:.0f}"),
    ("RSS after 1M requests (KiB)", "rss_after_1m_kib", "{:.0f}"),
    ("RSS, 200 idle clients (KiB)", "rss_200_clients_kib", "{:.0f}"),
    ("virtio-serial p50, VM (us)", "serial_p50_us", "{:.1f}"),
    ("virtio-serial p99, VM (us)", "serial_p99_us", "{:.1f}"),
    ("RSS in the VM (KiB)", "vm_rss_kib", "{:.0f}"),
    ("PSS in the VM (KiB)", "vm_pss_kib", "{:.0f}"),
]


def table(results):
    g, q = results["guestd"], results["qemu_ga"]
    lines = [
        f"{'metric':<30} {'guestd':>10} {'qemu-ga':>10} {'ratio':>7}  target",
        "-" * 74,
    ]
    for label, key, fmt in ROWS:
        gv, qv = g.get(key), q.get(key)
        if gv is None and qv is None:
            continue
        show = lambda v: fmt.format(v) if v is not None else "-"  # noqa: E731
        ratio = f"{gv / qv:.2f}" if gv is not None and qv else "-"
        target = ""
        if key in TARGETS:
            ok = verdict(key, g, q)
            target = f"{want(key):<9} {'met' if ok else 'MISSED' if ok is False else '?'}"
        lines.append(f"{label:<30} {show(gv):>10} {show(qv):>10} {ratio:>7}  {target}")
    per = [f"{name}: {r['rss_200_clients_per_conn_kib']:.1f} KiB per served client "
           f"({r['clients_200']['answered']} of {MANY_CLIENTS} answered)"
           for name, r in (("guestd", g), ("qemu-ga", q)) if "clients_200" in r]
    if per:
        lines.append("  " + "; ".join(per))
    grow = [f"{name}: anon {r['growth_after_1m_kib']['anon']:+} KiB, file "
            f"{r['growth_after_1m_kib']['file']:+} KiB"
            for name, r in (("guestd", g), ("qemu-ga", q)) if "growth_after_1m_kib" in r]
    if grow:
        lines.append("  growth after 1M requests: " + "; ".join(grow))
    return "\n".join(lines)


def memory(pid):
    """RSS, PSS and USS of pid now, in KiB."""
    st = procstat.status(pid)
    return {"rss_kib": st["VmRSS"], "pss_kib": st.get("Pss"), "uss_kib": st.get("Uss"),
            "anon_kib": st.get("RssAnon"), "file_kib": st.get("RssFile")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guestd", required=True, help="the guestd binary (release build)")
    ap.add_argument("--qemu-ga", default=shutil.which("qemu-ga") or "/usr/sbin/qemu-ga")
    ap.add_argument("--loadgen", required=True, help="the load generator (bench/loadgen.rs)")
    ap.add_argument("--xs-latency", default=None,
                    help="the XenStore round-trip helper (tests/src/bin/xs-latency.rs)")
    ap.add_argument("--guestd-alt", default=None,
                    help="another build of guestd whose idle RSS is reported too")
    ap.add_argument("--guestd-alt-label", default="other")
    ap.add_argument("--build", default="", help="how --guestd was built (for the record)")
    ap.add_argument("--quick", action="store_true", help="fewer iterations (about two minutes)")
    ap.add_argument("--no-vm", action="store_true", help="skip the virtio-serial VM figures")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results",
                                                  "latest.json"))
    a = ap.parse_args()

    n_seq = 5000 if a.quick else 20000
    n_pipe = 20000 if a.quick else 100000
    rounds = 1 if a.quick else 3
    start_runs = 5 if a.quick else 20
    vm_rounds, vm_n = (1, 500) if a.quick else (3, 3000)

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

        # The guestd that is measured from here on runs from a copy read from disk, as in a
        # guest after boot; the cold starts above ran the build's binary from the page cache.
        agents["guestd"].binary = cold_copy(a.guestd)
        logs = {}
        socks = {key: os.path.join(workdir, f"{key}.sock") for key in agents}
        for key, agent in agents.items():
            logs[key] = open(os.path.join(workdir, f"{key}.log"), "w")
            procs[key] = agent.start(socks[key], workdir, logs[key])
            clients[key] = agent.wait_ready(socks[key], procs[key])
        # The host keeps its channel open; so does this client while both agents idle.
        time.sleep(1.0)
        for key in agents:
            st = procstat.status(procs[key].pid)
            res[key]["rss_kib"] = st["VmRSS"]
            res[key]["pss_kib"] = st.get("Pss")
            res[key]["uss_kib"] = st.get("Uss")
            res[key]["idle_status"] = st
            # Read while the agent is surely up (qemu-ga's were sometimes missing when read last).
            files = procstat.mapped_files(procs[key].pid)
            res[key]["mapped_files_kib"] = {path: size // 1024 for path, size in files.items()}
        log(f"idle window, {a.idle_seconds:g} s, both agents at once, a client connected")
        idle = procstat.idle_windows([p.pid for p in procs.values()], a.idle_seconds)
        for key in agents:
            w = idle[procs[key].pid]
            res[key]["idle_wakeups_10s"] = round(w["wakeups"] * 10.0 / a.idle_seconds)
            res[key]["idle_window"] = w

        for c in clients.values():
            c.close()
        clients.clear()
        seq = {key: [] for key in agents}
        pipe = {key: [] for key in agents}
        # The floor: the same client against the least a server can do (bench/loadgen.rs
        # `serve`), in the same rounds, so that the sequential figures can be read against it.
        floor_sock = os.path.join(workdir, "floor.sock")
        floor = subprocess.Popen([a.loadgen, "serve", floor_sock], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, start_new_session=True)
        procs["floor"] = floor
        deadline = time.monotonic() + 10
        while not os.path.exists(floor_sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        floor_seq = []
        for r in range(rounds):
            for key, agent in agents.items():  # interleaved, so that noise hits both
                log(f"round {r + 1}/{rounds}: {agent.name}, {n_seq} sequential + {n_pipe} pipelined")
                loadgen(a.loadgen, "seq", socks[key], agent, 500)  # warm-up
                seq[key].append(loadgen(a.loadgen, "seq", socks[key], agent, n_seq))
                pipe[key].append(loadgen(a.loadgen, "pipe", socks[key], agent, n_pipe)["rps"])
            log(f"round {r + 1}/{rounds}: the floor server, {n_seq} sequential")
            loadgen(a.loadgen, "seq", floor_sock, agents["guestd"], 500)
            floor_seq.append(loadgen(a.loadgen, "seq", floor_sock, agents["guestd"], n_seq))
        stop(procs.pop("floor"))
        res["floor"] = {
            "p50_us": round(median([x["p50_us"] for x in floor_seq]), 1),
            "rps": round(median([x["rps"] for x in floor_seq])),
            "rounds": floor_seq,
        }
        for key in agents:
            res[key]["p50_us"] = round(median([x["p50_us"] for x in seq[key]]), 1)
            res[key]["p99_us"] = round(median([x["p99_us"] for x in seq[key]]), 1)
            res[key]["rps"] = round(median([x["rps"] for x in seq[key]]))
            res[key]["pipelined_rps"] = round(median(pipe[key]))
            res[key]["rounds"] = {"sequential": seq[key], "pipelined_rps": pipe[key]}
            res[key]["rss_after_load_kib"] = procstat.status(procs[key].pid)["VmRSS"]

        # A million more requests (pipelined on one connection), then the idle state again (one
        # client connected, one reply, a second's rest): how far RSS is from idle.
        for key, agent in agents.items():
            log(f"{agent.name}: {MILLION} pipelined requests, then RSS")
            loadgen(a.loadgen, "pipe", socks[key], agent, MILLION)
            c = agent.wait_ready(socks[key], procs[key])
            time.sleep(1.0)
            after = memory(procs[key].pid)
            c.close()
            res[key]["rss_after_1m_kib"] = after["rss_kib"]
            res[key]["pss_after_1m_kib"] = after["pss_kib"]
            # Growth split: anonymous memory (heap, buffers: a leak or a cache) and file pages
            # (code the later requests ran, mapped on first use: not a leak).
            idle_st = res[key]["idle_status"]
            res[key]["growth_after_1m_kib"] = {
                "anon": after["anon_kib"] - idle_st["RssAnon"],
                "file": after["file_kib"] - idle_st["RssFile"],
            }
            res[key]["requests"] = (n_seq + n_pipe + 500) * rounds + MILLION
            res[key]["cpu_ms_total"] = procstat.cpu_ms(procs[key].pid)

        # Many clients at once, each idle after one request.
        for key, agent in agents.items():
            settle()
            before = memory(procs[key].pid)
            log(f"{agent.name}: {MANY_CLIENTS} idle clients")
            many = IdleClients(socks[key], agent, MANY_CLIENTS)
            time.sleep(1.0)
            during = memory(procs[key].pid)
            many.close()
            served = max(1, many.answered)
            res[key]["rss_200_clients_kib"] = during["rss_kib"]
            res[key]["clients_200"] = dict(many.summary(), rss_before_kib=before["rss_kib"],
                                           pss_kib=during["pss_kib"])
            res[key]["rss_200_clients_per_conn_kib"] = round(
                (during["rss_kib"] - before["rss_kib"]) / served, 2)

        for key, agent in agents.items():
            res[key]["binary_kib"] = os.path.getsize(agent.binary) // 1024
            res[key]["idle_pss_kib"] = res[key]["pss_kib"]  # the name of earlier runs
            res[key]["idle_rss_anon_kib"] = res[key]["idle_status"].get("RssAnon")
        res["guestd"]["version"] = version_of([a.guestd, "--version"])
        res["qemu_ga"]["version"] = version_of([a.qemu_ga, "--version"])
    finally:
        for c in clients.values():
            c.close()
        for p in procs.values():
            stop(p)
    try:
        if a.no_vm:
            res["serial_vm"] = {"skipped": "--no-vm"}
        else:
            repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
            try:
                vm = serialvm.run(repo, a.guestd, a.qemu_ga, a.loadgen,
                                  tempfile.mkdtemp(dir=workdir), vm_rounds, vm_n, log)
            except (OSError, RuntimeError, subprocess.SubprocessError, TimeoutError,
                    EOFError) as e:
                # The other figures stand; the table and the JSON say why these are missing.
                log(f"virtio-serial VM figures failed: {e}")
                vm = {"error": str(e)}
            for key, name in (("guestd", "guestd"), ("qemu_ga", "qemu-ga")):
                if name in vm:
                    res[key]["serial_p50_us"] = vm[name]["p50_us"]
                    res[key]["serial_p99_us"] = vm[name]["p99_us"]
                    mem = vm[name].get("memory") or {}
                    res[key]["vm_rss_kib"] = mem.get("rss_kib")
                    res[key]["vm_pss_kib"] = mem.get("pss_kib")
            res["serial_vm"] = vm
        res["guestd_only"] = extras.run_all(a, agents["guestd"], workdir, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    res["machine"] = machine()
    res["machine"]["loadavg_1m_at_start"] = load_at_start
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    res["mode"] = "quick" if a.quick else "full"
    res["guestd"]["build"] = a.build
    res["targets"] = {
        key: {"want": want(key), "met": verdict(key, res["guestd"], res["qemu_ga"])}
        for key in TARGETS
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")

    m = res["machine"]
    print(f"\n{res['guestd']['version']} ({a.build}) vs {res['qemu_ga']['version']}")
    print(f"{res['date']}, {m['os']}, kernel {m['kernel']}, {m['cores']} cores {m['cpu']}, "
          f"{m['memory_gib']} GiB; {res['mode']} run; load average {load_at_start:.2f} at the "
          f"start, {m['loadavg_1m']:.2f} at the end; one read fault maps "
          f"{m['file_fault_around_kib']} KiB of a file just written\n")
    print(table(res))
    fl = res.get("floor")
    if fl:
        print(f"  floor (bench/loadgen.rs serve: a blocking read, a line scan, a write): "
              f"{fl['rps']} req/s, p50 {fl['p50_us']} us; sequential rate guestd "
              f"{res['guestd']['rps'] / fl['rps']:.2f} of it, qemu-ga "
              f"{res['qemu_ga']['rps'] / fl['rps']:.2f}")
    vm = res.get("serial_vm", {})
    if "vm" in vm:
        print(f"  virtio-serial: {vm['vm']['qemu']}, TCG, 1 vCPU; guestd as "
              f"{vm['vm']['guestd_dialect']}")
    elif vm:
        print(f"  virtio-serial figures missing: {vm.get('error') or vm.get('skipped')}")
    extra_table = extras.table(res["guestd_only"])
    if extra_table:
        print("\nguestd alone\n" + extra_table)
    print(f"\nwritten to {os.path.relpath(a.out)}")
    missed = [k for k, t in res["targets"].items() if t["met"] is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
