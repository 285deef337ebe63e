//! `guest-get-fsinfo` and `guest-get-disks`, as qemu-ga builds them on Linux: local filesystems
//! from `/proc/self/mountinfo` (device major ≠ 0, or btrfs on a block device; bind mounts, i.e.
//! a device's later mounts, left out as QEMU 10 does), each with its
//! disks found through `/sys/dev/block/MAJ:MIN` (device-mapper volumes through their `slaves`)
//! and the disk's address read from its place in the sysfs tree (PCI controller, bus type,
//! SCSI/ATA host, target and unit); device nodes from `uevent`, serials and aliases from udev's
//! database (`/run/udev/data`), as libudev reads them. All through `Root`; usage through one
//! `statvfs` helper. NVMe SMART data (`smart`) is not reported: it needs an ioctl on the device.

use guestd_core::{HandlerError, Root};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::platform::linux_only;
use super::sysfs::{attr, basename, canonical};
use super::{QgaCommand, args};

const MOUNTINFO: &str = "/proc/self/mountinfo";
const MOUNTS: &str = "/proc/self/mounts";
/// Device-mapper stacks deeper than this are not followed (a loop would never end).
const MAX_DEPTH: usize = 16;
/// qemu-ga looks at no more than 8 SCSI or ATA hosts of one controller.
const MAX_HOSTS: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const FSINFO: QgaCommand = QgaCommand {
    name: "guest-get-fsinfo",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-fsinfo")?;
        fsinfo(&ctx.env.root)
    },
};

pub const DISKS: QgaCommand = QgaCommand {
    name: "guest-get-disks",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-disks")?;
        disks(&ctx.env.root)
    },
};

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub major: u32,
    pub minor: u32,
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

/// The lines of `/proc/self/mountinfo` (proc(5)): `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
/// [OPTIONAL…] - FSTYPE SOURCE SUPEROPTIONS`, octal escapes (`\040`) decoded. Malformed lines
/// are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let mountpoint = fields.get(4)?;
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Mount {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mountpoint: unescape(mountpoint),
                fstype: unescape(fields.get(dash + 1)?),
                source: unescape(fields.get(dash + 2).copied().unwrap_or("")),
            })
        })
        .collect()
}

/// Decode the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash) and `\\`.
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|b| (b'0'..=b'7').contains(b))
        });
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b'\\', None) if bytes.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The local filesystems qemu-ga reports, in mount order: a real block device (major ≠ 0),
/// or btrfs (which reports major 0) on a block device node; each device once, at its first
/// mount (later mounts of it are bind mounts: freezing one twice would deadlock; QEMU 10).
pub(crate) fn local_mounts(root: &Root) -> Result<Vec<Mount>, HandlerError> {
    let mounts = match root.read_optional(MOUNTINFO)? {
        Some(text) => {
            let mut out = Vec::new();
            for mut m in parse_mountinfo(&String::from_utf8_lossy(&text)) {
                if m.major == 0 {
                    match (m.fstype.as_str(), device_numbers(root, &m.source)) {
                        ("btrfs", Some((major, minor))) => (m.major, m.minor) = (major, minor),
                        _ => continue,
                    }
                }
                out.push(m);
            }
            out
        }
        None => mounts_fallback(root)?,
    };
    let mut seen = Vec::new();
    Ok(mounts
        .into_iter()
        .filter(|m| {
            let dev = (m.major, m.minor);
            let first = !seen.contains(&dev);
            seen.push(dev);
            first
        })
        .collect())
}

/// Without mountinfo: `/proc/self/mounts` entries whose source is a path (not a pseudo or
/// network filesystem), device numbers from the source node, bind mounts of directories
/// skipped.
fn mounts_fallback(root: &Root) -> Result<Vec<Mount>, HandlerError> {
    let text = root.read_to_string(MOUNTS)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (source, target, fstype) = (unescape(f.first()?), f.get(1)?, f.get(2)?);
            if !source.starts_with('/') || matches!(*fstype, "smbfs" | "cifs") {
                return None;
            }
            if root.is_dir(&source) {
                return None;
            }
            let (major, minor) = device_numbers(root, &source).unwrap_or((0, 0));
            Some(Mount {
                major,
                minor,
                mountpoint: unescape(target),
                fstype: fstype.to_string(),
                source,
            })
        })
        .collect())
}

/// Major and minor of a block device node.
#[cfg(target_os = "linux")]
fn device_numbers(root: &Root, node: &str) -> Option<(u32, u32)> {
    use rustix::fs::FileType;
    if !node.starts_with('/') {
        return None;
    }
    let st = rustix::fs::stat(root.resolve(node).ok()?).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice)
        .then(|| (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)))
}

#[cfg(not(target_os = "linux"))]
fn device_numbers(_root: &Root, _node: &str) -> Option<(u32, u32)> {
    None
}

/// `(used, total for unprivileged users, total)` in bytes, as qemu-ga computes them from
/// statvfs(3): used = (blocks − free) × frsize, total = (used + available) × frsize.
#[cfg(unix)]
fn usage(root: &Root, mountpoint: &str) -> Option<(u64, u64, u64)> {
    let st = rustix::fs::statvfs(root.resolve(mountpoint).ok()?).ok()?;
    let used = st.f_blocks.saturating_sub(st.f_bfree);
    let frsize = st.f_frsize;
    Some((
        used.saturating_mul(frsize),
        used.saturating_add(st.f_bavail).saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    ))
}

#[cfg(not(unix))]
fn usage(_root: &Root, _mountpoint: &str) -> Option<(u64, u64, u64)> {
    None
}

fn fsinfo(root: &Root) -> Result<Value, HandlerError> {
    let mut out = Vec::new();
    for mount in local_mounts(root)? {
        let devpath = format!("/sys/dev/block/{}:{}", mount.major, mount.minor);
        let mut name = None;
        let mut disks = Vec::new();
        collect_disks(root, &devpath, &mut name, &mut disks, 0)?;
        let mut fs = Map::new();
        fs.insert(
            "name".into(),
            json!(name.unwrap_or_else(|| basename(&devpath).to_string())),
        );
        fs.insert("mountpoint".into(), json!(mount.mountpoint));
        fs.insert("type".into(), json!(mount.fstype));
        if let Some((used, total, privileged)) = usage(root, &mount.mountpoint) {
            fs.insert("used-bytes".into(), json!(used));
            fs.insert("total-bytes".into(), json!(total));
            fs.insert("total-bytes-privileged".into(), json!(privileged));
        }
        fs.insert(
            "disk".into(),
            Value::Array(disks.iter().map(DiskAddress::to_json).collect()),
        );
        out.push(Value::Object(fs));
    }
    // qemu-ga lists the last mount first.
    out.reverse();
    Ok(Value::Array(out))
}

/// The disks under the block device at `devpath` (a `/sys` path, possibly a link): itself when
/// it is a real device, the disks of its `slaves` when it is virtual (device-mapper, md).
/// `name` is set to the first device's kernel name.
fn collect_disks(
    root: &Root,
    devpath: &str,
    name: &mut Option<String>,
    disks: &mut Vec<DiskAddress>,
    depth: usize,
) -> Result<(), HandlerError> {
    let Some(syspath) = canonical(root, devpath)? else {
        // The device may be missing in a container: the filesystem is still reported.
        name.get_or_insert_with(|| basename(devpath).to_string());
        return Ok(());
    };
    name.get_or_insert_with(|| basename(&syspath).to_string());
    if is_virtual(&syspath) {
        if depth >= MAX_DEPTH {
            return Ok(());
        }
        let slaves = format!("{syspath}/slaves");
        let Ok(entries) = root.read_dir(&slaves) else {
            return Ok(());
        };
        for entry in entries {
            let path = format!("{slaves}/{entry}");
            if root.is_symlink(&path) {
                collect_disks(root, &path, name, disks, depth + 1)?;
            }
        }
    } else if let Some(disk) = real_device(root, &syspath) {
        disks.push(disk);
    }
    Ok(())
}

fn is_virtual(syspath: &str) -> bool {
    syspath.contains("/devices/virtual/block/")
}

/// qemu-ga's `GuestDiskAddress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskAddress {
    /// PCI domain, bus, slot, function of the controller; -1 when unknown.
    pub pci: [i64; 4],
    pub bus_type: &'static str,
    pub bus: i64,
    pub target: i64,
    pub unit: i64,
    pub serial: Option<String>,
    pub dev: Option<String>,
    /// s390x channel I/O: cssid, ssid, subchno, devno.
    pub ccw: Option<[i64; 4]>,
}

impl Default for DiskAddress {
    fn default() -> Self {
        Self {
            pci: [-1; 4],
            bus_type: "unknown",
            bus: 0,
            target: 0,
            unit: 0,
            serial: None,
            dev: None,
            ccw: None,
        }
    }
}

impl DiskAddress {
    fn to_json(&self) -> Value {
        let [domain, bus, slot, function] = self.pci;
        let mut out = Map::new();
        out.insert(
            "pci-controller".into(),
            json!({"domain": domain, "bus": bus, "slot": slot, "function": function}),
        );
        out.insert("bus-type".into(), json!(self.bus_type));
        out.insert("bus".into(), json!(self.bus));
        out.insert("target".into(), json!(self.target));
        out.insert("unit".into(), json!(self.unit));
        if let Some(serial) = &self.serial {
            out.insert("serial".into(), json!(serial));
        }
        if let Some(dev) = &self.dev {
            out.insert("dev".into(), json!(dev));
        }
        if let Some([cssid, ssid, subchno, devno]) = self.ccw {
            out.insert(
                "ccw-address".into(),
                json!({"cssid": cssid, "ssid": ssid, "subchno": subchno, "devno": devno}),
            );
        }
        Value::Object(out)
    }
}

/// The address of a real (non-virtual) block device; `None` when nothing at all is known.
fn real_device(root: &Root, syspath: &str) -> Option<DiskAddress> {
    let mut disk = DiskAddress {
        dev: devnode(root, syspath),
        serial: udev_property(root, syspath, "ID_SERIAL").filter(|s| !s.is_empty()),
        ..DiskAddress::default()
    };
    let known = if syspath.contains("/devices/pci") {
        pci_device(root, syspath, &mut disk)
    } else if syspath.contains("/devices/css") {
        ccw_device(syspath, &mut disk)
    } else if syspath.contains("/virtio") {
        nonpci_virtio(syspath, &mut disk)
    } else {
        false
    };
    (known || disk.dev.is_some() || disk.serial.is_some()).then_some(disk)
}

/// The device node as libudev names it: `/dev/` + `DEVNAME` from the device's `uevent`.
pub(crate) fn devnode(root: &Root, syspath: &str) -> Option<String> {
    let uevent = root.read(format!("{syspath}/uevent")).ok()?;
    String::from_utf8_lossy(&uevent)
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty())
        .map(|n| {
            if n.starts_with('/') {
                n.to_string()
            } else {
                format!("/dev/{n}")
            }
        })
}

/// A property from udev's database (`/run/udev/data/b<MAJ>:<MIN>`, `E:KEY=value` lines), which
/// is where libudev finds `ID_SERIAL` and `DM_NAME`.
pub(crate) fn udev_property(root: &Root, syspath: &str, key: &str) -> Option<String> {
    let dev = attr(root, &format!("{syspath}/dev"))?;
    let db = root.read(format!("/run/udev/data/b{dev}")).ok()?;
    let prefix = format!("E:{key}=");
    String::from_utf8_lossy(&db)
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
}

/// Hexadecimal digits at the start of `s` (as `%x`): the value and how many were read.
fn hex(s: &str) -> Option<(u32, usize)> {
    let n = s.bytes().take_while(u8::is_ascii_hexdigit).count();
    Some((
        u32::from_str_radix(s.get(..n).filter(|d| !d.is_empty())?, 16).ok()?,
        n,
    ))
}

/// Decimal digits at the start of `s` (as `%u`).
fn dec(s: &str) -> Option<(u32, usize)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    Some((s.get(..n).filter(|d| !d.is_empty())?.parse().ok()?, n))
}

/// `N<sep>N<sep>…` with the given separators after each number: the numbers and the length.
fn numbers(
    s: &str,
    seps: &[char],
    parse: fn(&str) -> Option<(u32, usize)>,
) -> Option<(Vec<u32>, usize)> {
    let mut pos = 0;
    let mut out = Vec::new();
    for (i, sep) in seps.iter().chain(std::iter::once(&'\0')).enumerate() {
        let (v, n) = parse(&s[pos..])?;
        out.push(v);
        pos += n;
        if i < seps.len() {
            if !s[pos..].starts_with(*sep) {
                return None;
            }
            pos += sep.len_utf8();
        }
    }
    Some((out, pos))
}

/// `DOMAIN:BUS:SLOT.FUNCTION` (hex) at the start of `s`.
fn pci_function(s: &str) -> Option<([i64; 4], usize)> {
    let (v, n) = numbers(s, &[':', ':', '.'], hex)?;
    Some(([v[0].into(), v[1].into(), v[2].into(), v[3].into()], n))
}

/// The channel, target and LUN of `…/targetH:C:T/H:C:T:L/…`.
fn scsi_target(syspath: &str) -> Option<[i64; 3]> {
    let at = syspath.find("/target")? + "/target".len();
    let (_, n) = numbers(&syspath[at..], &[':', ':'], dec)?;
    let rest = syspath[at + n..].strip_prefix('/')?;
    let (v, _) = numbers(rest, &[':', ':', ':'], dec)?;
    Some([v[1].into(), v[2].into(), v[3].into()])
}

/// The driver bound to the device at `path` (the name its `driver` link points to).
fn driver(root: &Root, path: &str) -> Option<String> {
    let target = root.read_link(format!("{path}/driver")).ok()?;
    Some(basename(&target.to_string_lossy()).to_string())
}

/// Sorted numbers of the `ataN` (or `hostN`) entries in `dir`, at most [`MAX_HOSTS`].
fn host_numbers(root: &Root, dir: &str, ata: bool) -> Vec<u32> {
    let prefix = if ata { "ata" } else { "host" };
    let mut hosts: Vec<u32> = root
        .read_dir(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|e| dec(e.strip_prefix(prefix)?).map(|(v, _)| v))
        .take(MAX_HOSTS)
        .collect();
    hosts.sort_unstable();
    hosts
}

/// A disk behind a PCI controller: walk the PCI path (through bridges) to the first device
/// with a storage driver qemu-ga knows, then read bus, target and unit the way that driver
/// lays them out.
fn pci_device(root: &Root, syspath: &str, disk: &mut DiskAddress) -> bool {
    let Some(start) = syspath.find("/devices/pci") else {
        return false;
    };
    // "/devices/pci" DOMAIN:BUS "/" DOMAIN:BUS:SLOT.FN
    let mut p = start + "/devices/pci".len();
    let Some((_, n)) = numbers(&syspath[p..], &[':'], hex) else {
        return false;
    };
    p += n;
    let Some((mut pci, n)) = syspath[p..].strip_prefix('/').and_then(pci_function) else {
        return false;
    };
    p += 1 + n;
    let driver = loop {
        let name = driver(root, &syspath[..p]);
        if let Some(d) = name.filter(|d| {
            matches!(
                d.as_str(),
                "ata_piix" | "sym53c8xx" | "virtio-pci" | "ahci" | "nvme" | "xhci_hcd" | "ehci-pci"
            )
        }) {
            break d;
        }
        match syspath[p..].strip_prefix('/').and_then(pci_function) {
            Some((next, n)) => {
                pci = next;
                p += 1 + n;
            }
            None => return false,
        }
    };
    let target = scsi_target(syspath);
    let (host_at, ata) = match syspath.find("/ata") {
        Some(at) => (Some(at), true),
        None => (syspath.find("/host"), false),
    };
    let host = host_at.and_then(|at| {
        let digits = &syspath[at + if ata { 4 } else { 5 }..];
        let (host, _) = dec(digits)?;
        let index = host_numbers(root, &syspath[..at], ata)
            .iter()
            .position(|h| *h == host)?;
        Some(index as i64)
    });
    disk.pci = pci;
    match driver.as_str() {
        // One host per IDE bus; target*:0:<unit>:0.
        "ata_piix" => match (host, target) {
            (Some(bus), Some(t)) => {
                disk.bus_type = "ide";
                disk.bus = bus;
                disk.unit = t[1];
            }
            _ => return false,
        },
        // LSI Logic SCSI: target*:0:<unit>:0.
        "sym53c8xx" => match target {
            Some(t) => {
                disk.bus_type = "scsi";
                disk.unit = t[1];
            }
            None => return false,
        },
        "virtio-pci" => match target {
            // virtio-scsi: target*:0:0:<unit>
            Some(t) => {
                disk.bus_type = "scsi";
                disk.unit = t[2];
            }
            // virtio-blk: one disk per device.
            None => disk.bus_type = "virtio",
        },
        // AHCI: one host per unit.
        "ahci" => match (host, target) {
            (Some(unit), Some(_)) => {
                disk.bus_type = "sata";
                disk.unit = unit;
            }
            _ => return false,
        },
        "nvme" => disk.bus_type = "nvme",
        _ => disk.bus_type = "usb",
    }
    true
}

/// s390x: `/devices/cssN/CSSID.SSID.SUBCHNO/X.Y.DEVNO/…`.
fn ccw_device(syspath: &str, disk: &mut DiskAddress) -> bool {
    let Some(at) = syspath.find("/devices/css") else {
        return false;
    };
    let rest = &syspath[at + "/devices/css".len()..];
    let parsed = (|| {
        let (_, n) = hex(rest)?;
        let rest = rest[n..].strip_prefix('/')?;
        let (sub, n) = numbers(rest, &['.', '.'], hex)?;
        let rest = rest[n..].strip_prefix('/')?;
        let (dev, n) = numbers(rest, &['.', '.'], hex)?;
        rest[n..]
            .starts_with('/')
            .then(|| [sub[0].into(), sub[1].into(), sub[2].into(), dev[2].into()])
    })();
    let Some(ccw) = parsed else {
        return false;
    };
    disk.ccw = Some(ccw);
    if syspath[at..].contains("/virtio") {
        nonpci_virtio(syspath, disk);
    }
    true
}

/// virtio not on PCI (s390x, MMIO): virtio-scsi or virtio-blk.
fn nonpci_virtio(syspath: &str, disk: &mut DiskAddress) -> bool {
    if !syspath.contains("/virtio") || !syspath.contains("/block") {
        return false;
    }
    match scsi_target(syspath) {
        Some([bus, target, unit]) => {
            disk.bus_type = "scsi";
            (disk.bus, disk.target, disk.unit) = (bus, target, unit);
        }
        None => disk.bus_type = "virtio",
    }
    true
}

/// `guest-get-disks`: every non-empty block device under `/sys/block`, then its partitions.
fn disks(root: &Root) -> Result<Value, HandlerError> {
    let names = root
        .read_dir("/sys/block")
        .map_err(|e| HandlerError::failed(format!("Can't open directory \"/sys/block\": {e}")))?;
    let mut out = Vec::new();
    for name in names {
        let dir = format!("/sys/block/{name}");
        if !root.is_symlink(&dir) {
            continue;
        }
        match attr(root, &format!("{dir}/size")) {
            Some(size) if size != "0" => {}
            _ => continue,
        }
        let Some(dev) = devnode(root, &dir) else {
            continue;
        };
        let mut disk = Map::new();
        disk.insert("name".into(), json!(dev));
        disk.insert("partition".into(), json!(false));
        let alias = udev_property(root, &dir, "DM_NAME")
            .or_else(|| attr(root, &format!("{dir}/dm/name")))
            .filter(|a| !a.is_empty());
        if let Some(alias) = alias {
            disk.insert("alias".into(), json!(alias));
        }
        let virtual_disk = canonical(root, &dir)
            .ok()
            .flatten()
            .is_none_or(|p| is_virtual(&p));
        if !virtual_disk {
            let mut name = None;
            let mut found = Vec::new();
            // As qemu-ga: a device whose address cannot be read is listed without one.
            if collect_disks(root, &dir, &mut name, &mut found, 0).is_ok() {
                if let Some(address) = found.first() {
                    disk.insert("address".into(), address.to_json());
                }
            }
        }
        let slaves = format!("{dir}/slaves");
        if let Ok(entries) = root.read_dir(&slaves) {
            let deps: Vec<String> = entries
                .iter()
                .filter_map(|e| {
                    let path = canonical(root, &format!("{slaves}/{e}")).ok()??;
                    devnode(root, &path)
                })
                .collect();
            disk.insert("dependencies".into(), json!(deps));
        }
        out.push(Value::Object(disk));
        for part in partitions(root, &dir, &name) {
            out.push(json!({"name": part, "partition": true, "dependencies": [dev]}));
        }
    }
    Ok(Value::Array(out))
}

/// Device nodes of the partitions of disk `name` (subdirectories named `<name><digit>…` or
/// `<name>p<digit>…`).
fn partitions(root: &Root, dir: &str, name: &str) -> Vec<String> {
    root.read_dir(dir)
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            e.strip_prefix(name).is_some_and(|rest| {
                let rest = rest.strip_prefix('p').unwrap_or(rest);
                rest.starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .filter_map(|e| {
            let path = format!("{dir}/{e}");
            if root.is_symlink(&path) || !root.is_dir(&path) {
                return None;
            }
            devnode(root, &path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_TEXT: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
40 27 254:17 / /srv/my\\040data rw master:3 unbindable - xfs /dev/mapper/vg-data\\134x rw
41 27 0:45 / /home rw - btrfs /dev/vdc rw
42 27 0:46 / /net rw - nfs4 server:/export rw
bogus line
";

    #[test]
    fn mountinfo_fields_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO_TEXT);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[1],
            Mount {
                major: 254,
                minor: 0,
                mountpoint: "/".into(),
                fstype: "ext4".into(),
                source: "/dev/vda".into(),
            }
        );
        assert_eq!(m[2].mountpoint, "/srv/my data");
        assert_eq!(m[2].source, "/dev/mapper/vg-data\\x");
        assert_eq!((m[2].major, m[2].minor), (254, 17));
        assert_eq!(unescape("a\\011b\\012c\\\\d\\9"), "a\tb\nc\\d\\9");
    }

    #[test]
    fn pci_and_scsi_path_pieces() {
        assert_eq!(
            pci_function("0000:00:1f.2/ata1"),
            Some(([0, 0, 0x1f, 2], 12))
        );
        assert_eq!(pci_function("0000:00:1f"), None);
        assert_eq!(
            scsi_target(
                "/devices/pci0000:00/0000:00:03.0/virtio2/host0/target0:0:1/0:0:1:5/block/sda"
            ),
            Some([0, 1, 5])
        );
        assert_eq!(scsi_target("/devices/virtio1/block/vda"), None);
        let mut d = DiskAddress::default();
        assert!(ccw_device(
            "/sys/devices/css0/0.0.0002/0.0.0001/virtio0/block/vda",
            &mut d
        ));
        assert_eq!(d.ccw, Some([0, 0, 2, 1]));
        assert_eq!(d.bus_type, "virtio");
    }
}
