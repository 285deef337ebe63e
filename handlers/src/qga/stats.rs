//! `guest-get-diskstats` (`/proc/diskstats`), `guest-get-cpustats` (`/proc/stat`, in
//! milliseconds) and `guest-get-load` (`/proc/loadavg`), parsed as qemu-ga parses them and read
//! through `Root`.

use guestd_core::{HandlerError, Root};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::platform::linux_only;
use super::{QgaCommand, args};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const DISKSTATS: QgaCommand = QgaCommand {
    name: "guest-get-diskstats",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-diskstats")?;
        Ok(diskstats(&read(&ctx.env.root, "/proc/diskstats")?))
    },
};

pub const CPUSTATS: QgaCommand = QgaCommand {
    name: "guest-get-cpustats",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-cpustats")?;
        Ok(cpustats(&read(&ctx.env.root, "/proc/stat")?, clock_ticks()))
    },
};

pub const LOAD: QgaCommand = QgaCommand {
    name: "guest-get-load",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-load")?;
        load(&read(&ctx.env.root, "/proc/loadavg")?)
    },
};

fn read(root: &Root, path: &str) -> Result<String, HandlerError> {
    let bytes = root
        .read(path)
        .map_err(|e| HandlerError::failed(format!("open(\"{path}\"): {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of `/proc/stat`.
#[cfg(target_os = "linux")]
fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks() -> u64 {
    100
}

/// The leading unsigned numbers of `fields` (stopping at the first that is not one).
fn leading_numbers<'a>(fields: impl Iterator<Item = &'a str>) -> Vec<u64> {
    fields.map_while(|f| f.parse().ok()).collect()
}

/// `/proc/diskstats`: `MAJOR MINOR NAME` and 4 (old partition lines), 11, 15 or 17 counters
/// (Documentation/admin-guide/iostats.rst). Members appear as the line provides them.
pub(crate) fn diskstats(text: &str) -> Value {
    const FULL: [&str; 11] = [
        "read-ios",
        "read-merges",
        "read-sectors",
        "read-ticks",
        "write-ios",
        "write-merges",
        "write-sectors",
        "write-ticks",
        "ios-pgr",
        "total-ticks",
        "weight-ticks",
    ];
    const DISCARD: [&str; 4] = [
        "discard-ios",
        "discard-merges",
        "discard-sectors",
        "discard-ticks",
    ];
    const FLUSH: [&str; 2] = ["flush-ios", "flush-ticks"];
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(major), Some(minor), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        let n = leading_numbers(f);
        let mut stats = Map::new();
        let mut put = |names: &[&str], values: &[u64]| {
            for (name, v) in names.iter().zip(values) {
                stats.insert((*name).into(), json!(v));
            }
        };
        match n.len() {
            0..=3 => continue,
            // Partitions on Linux 2.4/2.6.0-2.6.24: reads, read sectors, writes, write sectors.
            4 => put(
                &["read-ios", "read-sectors", "write-ios", "write-sectors"],
                &n,
            ),
            // A truncated line: reported without counters, as qemu-ga does.
            5..=10 => {}
            _ => {
                put(&FULL, &n[..11]);
                if n.len() >= 15 {
                    put(&DISCARD, &n[11..15]);
                }
                if n.len() >= 17 {
                    put(&FLUSH, &n[15..17]);
                }
            }
        }
        out.push(json!({"name": name, "major": major, "minor": minor, "stats": stats}));
    }
    Value::Array(out)
}

/// `/proc/stat`'s `cpuN` lines (not the `cpu` total), converted from clock ticks to
/// milliseconds, as qemu-ga's `GuestCpuStats` union (`"type": "linux"` beside the members).
pub(crate) fn cpustats(text: &str, ticks_per_sec: u64) -> Value {
    const OPTIONAL: [&str; 6] = ["iowait", "irq", "softirq", "steal", "guest", "guestnice"];
    let ms = |ticks: u64| ticks.saturating_mul(1000) / ticks_per_sec.max(1);
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(cpu) = f.next().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(cpu) = cpu.parse::<i64>() else {
            continue;
        };
        let n = leading_numbers(f);
        if n.len() < 4 {
            // qemu-ga stops at the first line it cannot read.
            break;
        }
        let mut stats = Map::new();
        stats.insert("type".into(), json!("linux"));
        stats.insert("cpu".into(), json!(cpu));
        for (name, v) in ["user", "nice", "system", "idle"].iter().zip(&n) {
            stats.insert((*name).into(), json!(ms(*v)));
        }
        for (name, v) in OPTIONAL.iter().zip(&n[4..]) {
            stats.insert((*name).into(), json!(ms(*v)));
        }
        out.push(Value::Object(stats));
    }
    Value::Array(out)
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub(crate) fn load(text: &str) -> Result<Value, HandlerError> {
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .map_while(|f| f.parse().ok())
        .collect();
    match v.as_slice() {
        [one, five, fifteen] => Ok(json!({"load1m": one, "load5m": five, "load15m": fifteen})),
        _ => Err(HandlerError::failed(
            "cannot read the load average from /proc/loadavg",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskstats_of_every_kernel_generation() {
        let text = "\
 254       0 vda 100 2 300 4 500 6 700 8 0 10 11 12 13 14 15 16 17
 254       1 vda1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
   8       1 sda1 10 20 30 40
   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11
   7       1 loop1 1 2 3
 garbage
";
        let v = diskstats(text);
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0]["name"], "vda");
        assert_eq!(list[0]["major"], 254);
        let s = &list[0]["stats"];
        assert_eq!(s["read-ios"], 100);
        assert_eq!(s["read-merges"], 2);
        assert_eq!(s["read-sectors"], 300);
        assert_eq!(s["write-ticks"], 8);
        assert_eq!(s["ios-pgr"], 0);
        assert_eq!(s["weight-ticks"], 11);
        assert_eq!(s["discard-ticks"], 15);
        assert_eq!(s["flush-ticks"], 17);
        assert!(list[1]["stats"].get("discard-ticks").is_some());
        assert!(list[1]["stats"].get("flush-ios").is_none());
        assert_eq!(
            list[2]["stats"],
            json!({"read-ios": 10, "read-sectors": 20, "write-ios": 30, "write-sectors": 40})
        );
        assert_eq!(list[3]["stats"].as_object().unwrap().len(), 11);
    }

    #[test]
    fn cpustats_per_cpu_in_milliseconds() {
        let text = "cpu  10 20 30 40 50 60 70 80 90 100\n\
                    cpu0 100 200 300 400 500 600 700 800 900 1000\n\
                    cpu1 1 2 3 4\n\
                    intr 12345\n";
        let v = cpustats(text, 100);
        assert_eq!(
            v,
            json!([
                {"type": "linux", "cpu": 0, "user": 1000, "nice": 2000, "system": 3000,
                 "idle": 4000, "iowait": 5000, "irq": 6000, "softirq": 7000, "steal": 8000,
                 "guest": 9000, "guestnice": 10000},
                {"type": "linux", "cpu": 1, "user": 10, "nice": 20, "system": 30, "idle": 40},
            ])
        );
        // An unreadable cpu line ends the list, as in qemu-ga.
        assert_eq!(cpustats("cpu0 1 2\ncpu1 1 2 3 4\n", 100), json!([]));
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            load("0.52 1.25 10.00 2/345 6789\n").unwrap(),
            json!({"load1m": 0.52, "load5m": 1.25, "load15m": 10.0})
        );
        assert!(load("").is_err());
        assert!(load("1 x 3").is_err());
    }
}
