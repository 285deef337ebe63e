"""What /proc tells about a running agent: memory, CPU, and wakeups of all its threads."""
import mmap
import os
import struct
import tempfile
import time


def status(pid):
    """Selected /proc/PID/status fields in KiB (memory) or as numbers (Threads)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "VmSize", "Threads"):
                out[key] = int(value.split()[0])
    out.update(rollup(pid))
    return out


def rollup(pid):
    """From /proc/PID/smaps_rollup, in KiB: `Pss` (proportional set size: each shared page
    divided among the processes that map it) and `Uss` (unique set size: the pages only this
    process maps, Private_Clean + Private_Dirty, what stopping it would give back)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("Pss", "Private_Clean", "Private_Dirty", "Shared_Clean"):
                    fields[key] = int(value.split()[0])
    except OSError:
        return {}
    out = {}
    if "Pss" in fields:
        out["Pss"] = fields["Pss"]
    if "Private_Clean" in fields and "Private_Dirty" in fields:
        out["Uss"] = fields["Private_Clean"] + fields["Private_Dirty"]
    return out


def mapped_files(pid):
    """{path: size in bytes} of the regular files mapped into pid (its binary and shared
    libraries)."""
    files = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    path = parts[5].strip()
                    if path not in files and os.path.isfile(path):
                        files[path] = os.path.getsize(path)
    except OSError:
        pass
    return files


def _tasks(pid):
    """{tid: (context switches, cpu ns)} for every live thread of pid."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            switches = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu_ns = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the thread exited while we looked
        out[int(tid)] = (switches, cpu_ns)
    return out


def idle_windows(pids, seconds, sample_every=0.25):
    """Wakeups of several processes over the same window of `seconds`.

    Every thread's context switches (voluntary + involuntary) and CPU time are sampled every
    `sample_every` seconds (reading /proc does not wake the process), so a thread that exits in
    the window still counts up to its last sample, and threads born or gone are reported too.
    Returns {pid: {"wakeups", "cpu_ms", "threads_started", "threads_exited"}}.
    """
    first = {pid: _tasks(pid) for pid in pids}
    last = {pid: dict(tasks) for pid, tasks in first.items()}
    gone = {pid: set() for pid in pids}
    deadline = time.monotonic() + seconds
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        time.sleep(min(sample_every, deadline - now))
        for pid in pids:
            seen = _tasks(pid)
            for tid in last[pid]:
                if tid not in seen:
                    gone[pid].add(tid)
            last[pid].update(seen)
    result = {}
    for pid in pids:
        wakeups = cpu = 0
        for tid, (switches, cpu_ns) in last[pid].items():
            base = first[pid].get(tid, (0, 0))
            wakeups += switches - base[0]
            cpu += cpu_ns - base[1]
        result[pid] = {
            "wakeups": wakeups,
            "cpu_ms": round(cpu / 1e6, 3),
            "threads_started": len(set(last[pid]) - set(first[pid])),
            "threads_exited": len(gone[pid]),
        }
    return result


def cpu_ms(pid):
    """Total CPU time of the live threads of pid, in ms."""
    return round(sum(cpu for _, cpu in _tasks(pid).values()) / 1e6, 1)


def fault_around_kib(size=8 << 20):
    """KiB of a page-cached file that one read fault maps (the kernel's fault-around): touch
    one page in the middle of a mapped cached file and count the pages now present
    (/proc/self/pagemap). File-backed RSS of an agent grows in these steps."""
    with tempfile.NamedTemporaryFile(dir="/var/tmp") as f:
        f.write(os.urandom(size))
        f.flush()
        for off in range(0, size, 4096):  # cache it, one small page at a time
            os.pread(f.fileno(), 1, off)
        m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
        try:
            base = None
            with open("/proc/self/maps") as maps:
                for line in maps:
                    if line.rstrip().endswith(f.name):
                        base = int(line.split("-")[0], 16)
            if base is None:
                return None
            m[size // 2 + 3 * 4096]  # noqa: B018 (the touch is the point)
            with open("/proc/self/pagemap", "rb") as pm:
                pm.seek(base // 4096 * 8)
                entries = pm.read(size // 4096 * 8)
            present = sum(1 for i in range(size // 4096)
                          if struct.unpack_from("<Q", entries, i * 8)[0] >> 63)
            return present * 4
        finally:
            m.close()
