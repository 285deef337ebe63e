"""guestd alone: figures that have no qemu-ga counterpart.

- `polling_model`: what the old agents' one-second XenStore polling costs, for comparison with
  guestd's watch-driven transport: a request written at a uniformly random moment waits for the
  next poll, so its latency is uniform on [0, interval); a poller also wakes once per interval
  when nothing happens.

Each section returns a dict (or None when its peer is not in this build) and a table row.
"""
import random


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


def run_all(args, guestd, workdir, log):
    out = {"polling_model": polling_model()}
    return out


def table(extra):
    rows = []
    pm = extra.get("polling_model")
    if pm:
        rows.append(
            f"{'1 s polling (old agents), model':<44} mean {pm['mean_ms']:.0f} ms, "
            f"p99 {pm['p99_ms']:.0f} ms, {pm['idle_wakeups_10s']} idle wakeups/10 s"
        )
    return "\n".join(rows)
