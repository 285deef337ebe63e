//! The qemu-ga information and effect commands through the real dispatcher, over sandbox trees
//! of /proc, /sys, /etc and /run shaped like a real guest's (PCI, virtio-blk, virtio-scsi, IDE,
//! device-mapper), with the fake runner for every command they would run: fsinfo, disks,
//! statistics, users (utmp made by util-linux's `utmpdump`), timezone (real zoneinfo files),
//! vCPUs and memory blocks, routes, set-time, suspend, fstrim, freeze-list, crypted passwords.
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_methods)] // tests build their trees by path

use std::path::Path;
use std::sync::Arc;

use guestd_core::wire::code;
use guestd_core::{Backend, Channel, DispatcherBuilder, Output, Reply, Root};
use guestd_handlers::qga::{QgaConfig, register};
use guestd_testkit::{FakeRunner, call, dispatcher, test_env};
use serde_json::{Value, json};

struct Guest {
    dir: tempfile::TempDir,
    runner: Arc<FakeRunner>,
    dispatcher: Arc<guestd_core::Dispatcher>,
    channel: Arc<Channel>,
}

impl Guest {
    /// A Debian guest (its backend plans set-time).
    fn new(files: &[(&str, &str)], links: &[(&str, &str)]) -> Self {
        let backend: Arc<dyn Backend> = Arc::new(guestd_distro::OsBackend::new(
            guestd_distro::OsFamily::Debian,
        ));
        Self::with_backend(files, links, Some(backend))
    }

    fn with_backend(
        files: &[(&str, &str)],
        links: &[(&str, &str)],
        backend: Option<Arc<dyn Backend>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            write(dir.path(), path, text);
        }
        for (path, target) in links {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        }
        let runner = Arc::new(FakeRunner::new());
        let env = test_env(Root::sandbox(dir.path()).unwrap(), runner.clone(), backend);
        let builder = register(DispatcherBuilder::new(), &QgaConfig::default()).unwrap();
        let channel = Arc::new(Channel::new("qga-test").with_dialect(guestd_core::Dialect::Qga));
        Self {
            dir,
            runner,
            dispatcher: dispatcher(builder, env),
            channel,
        }
    }

    fn reply(&self, name: &str, args: Value) -> Reply {
        call(&self.dispatcher, &self.channel, name, args)
    }

    /// `Ok(return value)` or `Err(message)`.
    fn qga(&self, name: &str, args: Value) -> Result<Value, String> {
        let reply = self.reply(name, args);
        if reply.is_success() {
            Ok(serde_json::from_str(&reply.message).unwrap())
        } else {
            Err(reply.message)
        }
    }

    fn path(&self, guest: &str) -> std::path::PathBuf {
        self.dir.path().join(guest.trim_start_matches('/'))
    }
}

fn write(base: &Path, path: &str, text: &str) {
    let p = base.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn uevent(name: &str, major: u32, minor: u32) -> String {
    format!("MAJOR={major}\nMINOR={minor}\nDEVNAME={name}\nDEVTYPE=disk\n")
}

const VDA: &str = "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda";
const SDA: &str =
    "/sys/devices/pci0000:00/0000:00:05.0/virtio2/host2/target2:0:3/2:0:3:7/block/sda";
const SDB: &str = "/sys/devices/pci0000:00/0000:00:01.1/ata2/host1/target1:0:1/1:0:1:0/block/sdb";
const VDC: &str = "/sys/devices/pci0000:00/0000:00:07.0/virtio3/block/vdc";
const DM0: &str = "/sys/devices/virtual/block/dm-0";
const LOOP0: &str = "/sys/devices/virtual/block/loop0";

const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
28 27 8:0 / /data rw - xfs /dev/sda rw
29 27 253:0 / /srv/my\\040vol rw - ext4 /dev/mapper/vg-data rw
30 27 8:16 / /legacy rw - ext2 /dev/sdb rw
31 27 0:50 / /net rw - nfs4 server:/export rw
32 27 9:9 / /gone rw - ext4 /dev/md9 rw
33 27 254:1 /srv /run/bound rw - ext4 /dev/vda1 rw
";

/// A guest with four disks on three controllers and a device-mapper volume.
fn storage_guest() -> Guest {
    let vda1 = format!("{VDA}/vda1");
    let files: Vec<(String, String)> = vec![
        ("/proc/self/mountinfo".into(), MOUNTINFO.into()),
        (format!("{VDA}/uevent"), uevent("vda", 254, 0)),
        (format!("{VDA}/dev"), "254:0\n".into()),
        (format!("{VDA}/size"), "2097152\n".into()),
        (format!("{VDA}/slaves/.keep"), String::new()),
        (format!("{vda1}/uevent"), uevent("vda1", 254, 1)),
        (format!("{vda1}/dev"), "254:1\n".into()),
        (format!("{vda1}/size"), "2095104\n".into()),
        (
            "/run/udev/data/b254:0".into(),
            "S:disk/by-id/virtio-disk-serial-1\nE:ID_SERIAL=disk-serial-1\n".into(),
        ),
        (format!("{SDA}/uevent"), uevent("sda", 8, 0)),
        (format!("{SDA}/dev"), "8:0\n".into()),
        (format!("{SDA}/size"), "4096\n".into()),
        (format!("{SDB}/uevent"), uevent("sdb", 8, 16)),
        (format!("{SDB}/dev"), "8:16\n".into()),
        (format!("{SDB}/size"), "4096\n".into()),
        (
            "/sys/devices/pci0000:00/0000:00:01.1/ata1/.keep".into(),
            String::new(),
        ),
        (format!("{VDC}/uevent"), uevent("vdc", 252, 32)),
        (format!("{VDC}/dev"), "252:32\n".into()),
        (format!("{VDC}/size"), "8192\n".into()),
        (format!("{DM0}/uevent"), uevent("dm-0", 253, 0)),
        (format!("{DM0}/dev"), "253:0\n".into()),
        (format!("{DM0}/size"), "8192\n".into()),
        (format!("{DM0}/dm/name"), "vg-data\n".into()),
        (format!("{LOOP0}/uevent"), uevent("loop0", 7, 0)),
        (format!("{LOOP0}/size"), "0\n".into()),
        ("/data/.keep".into(), String::new()),
        ("/srv/my vol/.keep".into(), String::new()),
        ("/legacy/.keep".into(), String::new()),
        ("/gone/.keep".into(), String::new()),
    ];
    let links: Vec<(String, String)> = vec![
        ("/sys/dev/block/254:0".into(), format!("../..{}", &VDA[4..])),
        (
            "/sys/dev/block/254:1".into(),
            format!("../..{}", &vda1[4..]),
        ),
        ("/sys/dev/block/8:0".into(), format!("../..{}", &SDA[4..])),
        ("/sys/dev/block/8:16".into(), format!("../..{}", &SDB[4..])),
        ("/sys/dev/block/253:0".into(), format!("../..{}", &DM0[4..])),
        ("/sys/block/vda".into(), format!("..{}", &VDA[4..])),
        ("/sys/block/sda".into(), format!("..{}", &SDA[4..])),
        ("/sys/block/sdb".into(), format!("..{}", &SDB[4..])),
        ("/sys/block/vdc".into(), format!("..{}", &VDC[4..])),
        ("/sys/block/dm-0".into(), format!("..{}", &DM0[4..])),
        ("/sys/block/loop0".into(), format!("..{}", &LOOP0[4..])),
        (
            format!("{DM0}/slaves/vdc"),
            format!("../../../..{}", &VDC[12..]),
        ),
        (
            "/sys/devices/pci0000:00/0000:00:04.0/driver".into(),
            "../../../bus/pci/drivers/virtio-pci".into(),
        ),
        (
            "/sys/devices/pci0000:00/0000:00:05.0/driver".into(),
            "../../../bus/pci/drivers/virtio-pci".into(),
        ),
        (
            "/sys/devices/pci0000:00/0000:00:07.0/driver".into(),
            "../../../bus/pci/drivers/virtio-pci".into(),
        ),
        (
            "/sys/devices/pci0000:00/0000:00:01.1/driver".into(),
            "../../../bus/pci/drivers/ata_piix".into(),
        ),
    ];
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let links: Vec<(&str, &str)> = links
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    Guest::new(&files, &links)
}

fn address(bus_type: &str, pci: [i64; 4], bus: i64, unit: i64, dev: &str) -> Value {
    json!({
        "pci-controller": {"domain": pci[0], "bus": pci[1], "slot": pci[2], "function": pci[3]},
        "bus-type": bus_type, "bus": bus, "target": 0, "unit": unit, "dev": dev,
    })
}

#[test]
fn fsinfo_reports_local_filesystems_and_their_disks() {
    let g = storage_guest();
    let fs = g.qga("guest-get-fsinfo", json!({})).unwrap();
    let fs = fs.as_array().unwrap();
    let mountpoints: Vec<&str> = fs
        .iter()
        .map(|f| f["mountpoint"].as_str().unwrap())
        .collect();
    // Network and pseudo filesystems and bind mounts (a device's second mount) are not
    // listed; the last mount comes first, as qemu-ga.
    assert_eq!(
        mountpoints,
        ["/gone", "/legacy", "/srv/my vol", "/data", "/"]
    );
    let by = |m: &str| fs.iter().find(|f| f["mountpoint"] == m).unwrap().clone();
    let root = by("/");
    assert_eq!(root["name"], "vda1");
    assert_eq!(root["type"], "ext4");
    assert_eq!(
        root["disk"],
        json!([address("virtio", [0, 0, 4, 0], 0, 0, "/dev/vda1")])
    );
    for key in ["used-bytes", "total-bytes", "total-bytes-privileged"] {
        assert!(root[key].is_u64(), "{key}: {root}");
    }
    assert!(root["total-bytes"].as_u64() <= root["total-bytes-privileged"].as_u64());
    assert_eq!(
        by("/data")["disk"],
        json!([address("scsi", [0, 0, 5, 0], 0, 7, "/dev/sda")])
    );
    assert_eq!(
        by("/legacy")["disk"],
        json!([address("ide", [0, 0, 1, 1], 1, 1, "/dev/sdb")])
    );
    let dm = by("/srv/my vol");
    assert_eq!(dm["name"], "dm-0");
    assert_eq!(
        dm["disk"],
        json!([address("virtio", [0, 0, 7, 0], 0, 0, "/dev/vdc")])
    );
    // A device missing from /sys (a container): still listed, named by its numbers.
    let gone = by("/gone");
    assert_eq!(
        (gone["name"].clone(), gone["disk"].clone()),
        (json!("9:9"), json!([]))
    );
}

#[test]
fn disks_lists_devices_partitions_dependencies_and_aliases() {
    let g = storage_guest();
    let disks = g.qga("guest-get-disks", json!({})).unwrap();
    let mut vda = address("virtio", [0, 0, 4, 0], 0, 0, "/dev/vda");
    vda["serial"] = json!("disk-serial-1");
    assert_eq!(
        disks,
        json!([
            {"name": "/dev/dm-0", "partition": false, "alias": "vg-data",
             "dependencies": ["/dev/vdc"]},
            {"name": "/dev/sda", "partition": false,
             "address": address("scsi", [0, 0, 5, 0], 0, 7, "/dev/sda")},
            {"name": "/dev/sdb", "partition": false,
             "address": address("ide", [0, 0, 1, 1], 1, 1, "/dev/sdb")},
            {"name": "/dev/vda", "partition": false, "address": vda, "dependencies": []},
            {"name": "/dev/vda1", "partition": true, "dependencies": ["/dev/vda"]},
            {"name": "/dev/vdc", "partition": false,
             "address": address("virtio", [0, 0, 7, 0], 0, 0, "/dev/vdc")},
        ])
    );
}

#[test]
fn statistics_load_and_routes_from_proc() {
    let g = Guest::new(
        &[
            (
                "/proc/diskstats",
                " 254 0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
            ),
            (
                "/proc/stat",
                "cpu  1 2 3 4\ncpu0 100 0 50 1000 0 0 0 0 0 0\nintr 1\n",
            ),
            ("/proc/loadavg", "0.25 0.50 1.00 1/100 4242\n"),
            (
                "/proc/net/route",
                "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
            ),
        ],
        &[],
    );
    let d = g.qga("guest-get-diskstats", json!({})).unwrap();
    assert_eq!(d[0]["name"], "vda");
    assert_eq!(d[0]["stats"]["flush-ticks"], 17);
    let c = g.qga("guest-get-cpustats", json!({})).unwrap();
    assert_eq!(
        c,
        json!([{"type": "linux", "cpu": 0, "user": 1000, "nice": 0, "system": 500,
        "idle": 10000, "iowait": 0, "irq": 0, "softirq": 0, "steal": 0, "guest": 0, "guestnice": 0}])
    );
    assert_eq!(
        g.qga("guest-get-load", json!({})).unwrap(),
        json!({"load1m": 0.25, "load5m": 0.5, "load15m": 1.0})
    );
    // No ipv6_route (IPv6 disabled): the IPv4 table is still answered.
    let r = g.qga("guest-network-get-route", json!({})).unwrap();
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["gateway"], "10.0.0.1");
    assert_eq!(r[0]["version"], 4);
    // Unknown arguments are refused.
    assert!(g.qga("guest-get-load", json!({"x": 1})).is_err());
    // Without /proc at all: clear errors.
    let bare = Guest::new(&[], &[]);
    let err = bare.qga("guest-get-cpustats", json!({})).unwrap_err();
    assert!(err.contains("/proc/stat"), "{err}");
    assert!(bare.qga("guest-network-get-route", json!({})).is_err());
}

/// A utmp file written by util-linux's `utmpdump -r` (the real binary format of glibc).
#[allow(clippy::disallowed_methods)] // the reference tool, as a peer
fn utmp(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("utmpdump")
        .arg("-r")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("utmpdump (util-linux) is required");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout.len() % 384,
        0,
        "glibc utmp records are 384 bytes"
    );
    out.stdout
}

#[test]
fn users_come_from_utmp_records() {
    let records = utmp(
        "[2] [00000] [~~  ] [reboot  ] [~           ] [6.1.0               ] [0.0.0.0        ] [2023-11-14T22:00:00,000000+00:00]\n\
         [7] [01234] [ts/0] [alice   ] [pts/0       ] [10.0.0.1            ] [10.0.0.1       ] [2023-11-14T22:13:20,250000+00:00]\n\
         [7] [01235] [ts/1] [bob     ] [pts/1       ] [10.0.0.2            ] [10.0.0.2       ] [2023-11-14T22:20:00,000000+00:00]\n\
         [7] [01236] [ts/2] [alice   ] [pts/2       ] [10.0.0.1            ] [10.0.0.1       ] [2023-11-14T22:05:00,500000+00:00]\n\
         [8] [01237] [ts/3] [carol   ] [pts/3       ] [10.0.0.3            ] [10.0.0.3       ] [2023-11-14T22:30:00,000000+00:00]\n",
    );
    let g = Guest::new(&[], &[]);
    std::fs::create_dir_all(g.path("/var/run")).unwrap();
    std::fs::write(g.path("/var/run/utmp"), &records).unwrap();
    assert_eq!(
        g.qga("guest-get-users", json!({})).unwrap(),
        json!([
            {"user": "alice", "login-time": 1_699_999_500.5},
            {"user": "bob", "login-time": 1_700_000_400.0},
        ])
    );
    // No utmp: nobody logged in.
    assert_eq!(
        Guest::new(&[], &[])
            .qga("guest-get-users", json!({}))
            .unwrap(),
        json!([])
    );
}

#[test]
fn timezone_from_etc_localtime() {
    let zoneinfo = Path::new("/usr/share/zoneinfo/Asia/Kolkata");
    let data = std::fs::read(zoneinfo).expect("tzdata is required (apt-get install tzdata)");
    let g = Guest::new(
        &[],
        &[("/etc/localtime", "/usr/share/zoneinfo/Asia/Kolkata")],
    );
    std::fs::create_dir_all(g.path("/usr/share/zoneinfo/Asia")).unwrap();
    std::fs::write(g.path("/usr/share/zoneinfo/Asia/Kolkata"), &data).unwrap();
    assert_eq!(
        g.qga("guest-get-timezone", json!({})).unwrap(),
        json!({"zone": "IST", "offset": 19800})
    );
    // No /etc/localtime, or garbage in it: UTC, as qemu-ga (GLib) answers.
    assert_eq!(
        Guest::new(&[], &[])
            .qga("guest-get-timezone", json!({}))
            .unwrap(),
        json!({"zone": "UTC", "offset": 0})
    );
    let junk = Guest::new(&[("/etc/localtime", "not a tzif file")], &[]);
    assert_eq!(
        junk.qga("guest-get-timezone", json!({})).unwrap(),
        json!({"zone": "UTC", "offset": 0})
    );
}

#[test]
fn vcpus_and_memory_blocks_change_sysfs_files_of_the_root() {
    let g = Guest::new(
        &[
            ("/sys/devices/system/cpu/cpu0/uevent", ""),
            ("/sys/devices/system/cpu/cpu1/online", "1\n"),
            ("/sys/devices/system/memory/block_size_bytes", "8000000\n"),
            ("/sys/devices/system/memory/memory0/state", "online\n"),
            ("/sys/devices/system/memory/memory0/removable", "1\n"),
        ],
        &[],
    );
    assert_eq!(
        g.qga("guest-get-vcpus", json!({})).unwrap(),
        json!([{"logical-id": 0, "online": true, "can-offline": false},
               {"logical-id": 1, "online": true, "can-offline": true}])
    );
    let vcpus =
        json!({"vcpus": [{"logical-id": 1, "online": false}, {"logical-id": 0, "online": false}]});
    assert_eq!(g.qga("guest-set-vcpus", vcpus).unwrap(), json!(1));
    assert!(
        std::fs::read_to_string(g.path("/sys/devices/system/cpu/cpu1/online"))
            .unwrap()
            .starts_with('0')
    );
    let err = g
        .qga(
            "guest-set-vcpus",
            json!({"vcpus": [{"logical-id": 0, "online": false}]}),
        )
        .unwrap_err();
    assert!(err.contains("can't be offlined"), "{err}");
    assert!(
        g.qga("guest-set-vcpus", json!({})).is_err(),
        "vcpus is required"
    );
    assert_eq!(
        g.qga("guest-get-memory-block-info", json!({})).unwrap(),
        json!({"size": 134217728})
    );
    let r = g
        .qga(
            "guest-set-memory-blocks",
            json!({"mem-blks": [{"phys-index": 0, "online": false}, {"phys-index": 5, "online": true}]}),
        )
        .unwrap();
    assert_eq!(
        r,
        json!([{"phys-index": 0, "response": "success"},
               {"phys-index": 5, "response": "not-found", "error-code": 2}])
    );
    assert!(
        std::fs::read_to_string(g.path("/sys/devices/system/memory/memory0/state"))
            .unwrap()
            .starts_with("offline")
    );
    assert!(
        g.runner.lines().is_empty(),
        "sysfs is written, nothing is run"
    );
}

#[test]
fn devices_is_windows_only_and_refused_like_a_blocked_command() {
    let g = Guest::new(&[], &[]);
    let r = g.reply("guest-get-devices", json!({}));
    assert_eq!(r.returncode, code::FORBIDDEN);
    assert!(
        r.message.contains("not currently supported"),
        "{}",
        r.message
    );
}

#[test]
fn set_time_is_planned_by_the_backend_date_and_hwclock() {
    let g = Guest::new(&[("/dev/rtc0", "")], &[]);
    let t = 1_700_000_000_123_456_789_i64;
    assert_eq!(
        g.qga("guest-set-time", json!({ "time": t })).unwrap(),
        json!({})
    );
    assert_eq!(
        g.runner.lines(),
        ["date -u -s @1700000000.123456789", "hwclock -w"]
    );
    g.runner.clear();
    assert_eq!(g.qga("guest-set-time", json!({})).unwrap(), json!({}));
    assert_eq!(g.runner.lines(), ["hwclock -s"]);

    // Out of qemu-ga's range, or not an integer: refused before anything runs.
    g.runner.clear();
    for bad in [
        json!({"time": -5}),
        json!({"time": 4_000_000_000_000_000_000_i64}),
        json!({"time": "now"}),
    ] {
        assert!(g.qga("guest-set-time", bad.clone()).is_err(), "{bad}");
    }
    assert!(g.runner.lines().is_empty());

    // hwclock fails: qemu-ga's wording, the step named.
    g.runner.respond("hwclock", 1, "");
    let err = g.qga("guest-set-time", json!({ "time": t })).unwrap_err();
    assert!(
        err.starts_with("hwclock failed to set hardware clock"),
        "{err}"
    );

    // No RTC, or no hwclock: unsupported, and the clock is left alone.
    let no_rtc = Guest::new(&[], &[]);
    let err = no_rtc
        .qga("guest-set-time", json!({ "time": t }))
        .unwrap_err();
    assert!(
        err.contains("not currently supported") && err.contains("RTC"),
        "{err}"
    );
    assert!(no_rtc.runner.lines().is_empty());
    let no_hwclock = Guest::new(&[("/sys/class/rtc/rtc0/name", "rtc_cmos\n")], &[]);
    no_hwclock.runner.mark_missing("hwclock");
    let err = no_hwclock.qga("guest-set-time", json!({})).unwrap_err();
    assert!(err.contains("hwclock is not installed"), "{err}");
    assert!(no_hwclock.runner.lines().is_empty());
}

#[test]
fn suspend_tries_systemd_then_pm_utils_then_sysfs() {
    // systemd runs the guest and has the unit (inactive: LSB status 3).
    let g = Guest::new(
        &[
            ("/run/systemd/system/.keep", ""),
            ("/sys/power/state", "freeze mem disk\n"),
        ],
        &[],
    );
    g.runner.respond("systemctl status", 3, "");
    assert_eq!(g.qga("guest-suspend-ram", json!({})).unwrap(), json!({}));
    assert_eq!(
        g.runner.lines(),
        [
            "systemctl status systemd-suspend.service",
            "systemctl suspend"
        ]
    );
    // systemctl fails: pm-utils is next, then the kernel.
    g.runner.clear();
    g.runner.respond("systemctl hibernate", 1, "");
    g.runner.respond("pm-is-supported --hibernate", 1, "");
    assert_eq!(g.qga("guest-suspend-disk", json!({})).unwrap(), json!({}));
    assert_eq!(
        g.runner.lines(),
        [
            "systemctl status systemd-hibernate.service",
            "systemctl hibernate",
            "pm-is-supported --hibernate",
        ]
    );
    // "disk" written over "freeze mem disk\n" in place (a sandbox file, not the kernel's).
    assert_eq!(
        std::fs::read_to_string(g.path("/sys/power/state")).unwrap(),
        "diskze mem disk\n"
    );

    // No systemd: pm-utils.
    let pm = Guest::new(&[], &[]);
    assert_eq!(
        pm.qga("guest-suspend-hybrid", json!({})).unwrap(),
        json!({})
    );
    assert_eq!(
        pm.runner.lines(),
        ["pm-is-supported --suspend-hybrid", "pm-suspend-hybrid"]
    );

    // Only the kernel, which has no hybrid state and no "disk" here: not supported.
    let kernel = Guest::new(&[("/sys/power/state", "freeze mem\n")], &[]);
    kernel.runner.mark_missing("pm-is-supported");
    for name in ["guest-suspend-hybrid", "guest-suspend-disk"] {
        let err = kernel.qga(name, json!({})).unwrap_err();
        assert_eq!(
            err,
            "the requested suspend mode is not supported by the guest"
        );
    }
    assert!(kernel.runner.lines().is_empty());
    assert_eq!(
        kernel.qga("guest-suspend-ram", json!({})).unwrap(),
        json!({})
    );
    assert!(
        std::fs::read_to_string(kernel.path("/sys/power/state"))
            .unwrap()
            .starts_with("mem")
    );
}

#[test]
fn fstrim_runs_per_mount_and_reports_each() {
    let g = Guest::new(&[("/proc/self/mountinfo", MOUNTINFO)], &[]);
    g.runner.respond_with("fstrim", |cmd| {
        let (code, stdout, stderr): (i32, &str, &str) = match cmd.args.last().unwrap().as_str() {
            "/" => (0, "/: 1 GiB (1073741824 bytes) trimmed on /dev/vda1\n", ""),
            "/data" => (
                1,
                "",
                "fstrim: /data: the discard operation is not supported\n",
            ),
            "/legacy" => (64, "", ""),
            _ => (0, "x: 0 B (0 bytes) trimmed\n", ""),
        };
        Ok(Output {
            code: Some(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        })
    });
    let r = g.qga("guest-fstrim", json!({"minimum": 65536})).unwrap();
    assert_eq!(
        r,
        json!({"paths": [
            {"path": "/gone", "trimmed": 0, "minimum": 65536},
            {"path": "/legacy", "error": "failed to trim: fstrim exited with status 64"},
            {"path": "/srv/my vol", "trimmed": 0, "minimum": 65536},
            {"path": "/data", "error": "trim not supported"},
            {"path": "/", "trimmed": 1073741824, "minimum": 65536},
        ]})
    );
    assert_eq!(
        g.runner.lines()[0],
        "fstrim --verbose --minimum 65536 /gone"
    );
    assert_eq!(g.runner.lines().len(), 5);
    assert!(g.qga("guest-fstrim", json!({"minimum": -1})).is_err());
    g.runner.clear();
    g.runner.mark_missing("fstrim");
    let err = g.qga("guest-fstrim", json!({})).unwrap_err();
    assert!(err.contains("not currently supported"), "{err}");
    assert!(g.runner.lines().is_empty());
}

#[test]
fn freeze_list_freezes_only_the_named_mounts() {
    let g = Guest::new(&[("/proc/self/mountinfo", MOUNTINFO)], &[]);
    let list = json!({"mountpoints": ["/data", "/", "/not-mounted"]});
    assert_eq!(g.qga("guest-fsfreeze-freeze-list", list).unwrap(), json!(2));
    assert_eq!(
        g.runner.lines(),
        ["fsfreeze --freeze /data", "fsfreeze --freeze /"]
    );
    // Frozen: effects that write are refused, the freeze state is shared.
    assert_eq!(
        g.qga("guest-fsfreeze-status", json!({})).unwrap(),
        json!("frozen")
    );
    assert!(
        g.qga("guest-fstrim", json!({}))
            .unwrap_err()
            .contains("frozen")
    );
    assert!(
        g.qga("guest-set-time", json!({}))
            .unwrap_err()
            .contains("frozen")
    );
    assert_eq!(g.qga("guest-fsfreeze-thaw", json!({})).unwrap(), json!(2));
    g.runner.clear();
    // Without the list: every filesystem, as guest-fsfreeze-freeze (those guest-get-fsinfo
    // lists: the bind mount /run/bound of / is not frozen a second time).
    assert_eq!(
        g.qga("guest-fsfreeze-freeze-list", json!({})).unwrap(),
        json!(5)
    );
    assert_eq!(g.qga("guest-fsfreeze-thaw", json!({})).unwrap(), json!(5));
    assert!(
        g.qga("guest-fsfreeze-freeze-list", json!({"mountpoints": "/"}))
            .is_err()
    );
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n";
const SHADOW: &str = "root:*:19700:0:99999:7:::\nalice:!:19701:0:99999:7:::\n";
const YESCRYPT: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$tnSYvahCwPBHKZUspmcxMfb0.WiB9W.zEaKlOBL35rC";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn crypted_passwords_are_checked_stored_as_is_and_verified() {
    let backend: Arc<dyn Backend> = Arc::new(guestd_distro::OsBackend::new(
        guestd_distro::OsFamily::Debian,
    ));
    let g = Guest::with_backend(
        &[("/etc/passwd", PASSWD), ("/etc/shadow", SHADOW)],
        &[],
        Some(backend),
    );
    // Without chpasswd the shadow file is rewritten under the lock.
    g.runner.mark_missing("chpasswd");
    let args =
        |user: &str, hash: &str| json!({"username": user, "password": b64(hash), "crypted": true});
    assert_eq!(
        g.qga("guest-set-user-password", args("alice", YESCRYPT))
            .unwrap(),
        json!({})
    );
    let shadow = std::fs::read_to_string(g.path("/etc/shadow")).unwrap();
    assert!(shadow.contains(&format!("alice:{YESCRYPT}:")), "{shadow}");
    // Hostile values: a field or line break, a plain password, garbage, an unknown user.
    for (user, hash) in [
        ("alice", "$y$j9T$x:0:0:::"),
        ("alice", &format!("{YESCRYPT}\nroot::0:0:::")),
        ("alice", "hunter2"),
        ("alice", "\u{1}\u{2}garbage"),
        ("root\nalice", YESCRYPT),
        ("mallory", YESCRYPT),
    ] {
        let err = g
            .qga("guest-set-user-password", args(user, hash))
            .unwrap_err();
        assert!(!err.contains(hash) || hash.len() < 8, "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(g.path("/etc/shadow")).unwrap(),
        shadow
    );
    assert!(g.runner.lines().is_empty());
}
