//! Reading an OpenStack config drive (a filesystem labelled `config-2`): finding the device,
//! mounting it, and reading `openstack/latest/network_data.json` and `meta_data.json`. Parsing
//! them is platform-neutral (`guestd_network_model::config_drive`).
//!
//! The drive is host data and is only believed when it really is the drive the host attached:
//! - a directory given in the configuration is the administrator's word and used as it is;
//! - otherwise the device is udev's `/dev/disk/by-label/config-2` link (or, without udev,
//!   `blkid -t LABEL=config-2`), and it must be a block device the kernel lists in
//!   `/sys/class/block` that is not a loop device (a desktop user can attach an image file of
//!   their own as a loop device through udisks);
//! - it is read where it is already mounted only when `/proc/self/mountinfo` shows a mount of
//!   that very device number (not merely a source field that reads `/dev/sr0`: FUSE lets any
//!   user choose that), of the whole filesystem, read-only, with type iso9660 or vfat;
//! - otherwise guestd mounts it itself, read-only, `nosuid,nodev,noexec`, typed iso9660 or vfat,
//!   on its private `/run/guestd/config-drive` (mode 0700), checks the mount table again, reads
//!   and unmounts.
//!
//! The files read must be regular files (no FIFO, device or symlink, and no symlinked
//! directory on the way) of at most [`MAX_FILE`] bytes.

use std::path::PathBuf;

use guestd_core::{Effect, ProcessRunner, ProcessSpec, Root, RootError, Snapshot};
pub use guestd_network_model::config_drive::{ConfigDriveFiles, MAX_FILE};
use guestd_network_model::config_drive::{META_DATA, NETWORK_DATA};
use tracing::{debug, info, warn};

use super::model::{NetworkError, shown};

pub const LABEL_DEVICE: &str = "/dev/disk/by-label/config-2";
pub const MOUNT_POINT: &str = "/run/guestd/config-drive";
/// The kernel's block devices (Linux).
const SYS_BLOCK: &str = "/sys/class/block";
/// guestd's own mount table (the one its `mount` and `umount` act on).
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The filesystems a config drive is made with.
const FILESYSTEMS: [&str; 2] = ["iso9660", "vfat"];
/// `mount -o` for the drive: nothing on it may run, be a device or gain privileges.
const MOUNT_OPTIONS: &str = "ro,nosuid,nodev,noexec";

fn sys(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::System(format!("config drive: {e}"))
}

/// Find and read the config drive (`meta_data.json` only when `keep_hostname` is false).
/// `Ok(None)` when there is none.
pub fn read(
    root: &Root,
    runner: &dyn ProcessRunner,
    dir: Option<&str>,
    keep_hostname: bool,
) -> Result<Option<ConfigDriveFiles>, NetworkError> {
    if let Some(dir) = dir {
        return read_dir(root, dir, keep_hostname).map(Some);
    }
    let Some(device) = find_device(root, runner)? else {
        return Ok(None);
    };
    let mounts = mount_table(root)?;
    if let Some(mounted) = trusted_mount(&mounts, &device, None) {
        info!(device = %device.name, mount_point = %shown(&mounted), "reading the mounted config drive");
        return read_dir(root, &mounted, keep_hostname).map(Some);
    }
    if root.is_symlink(MOUNT_POINT) {
        return Err(sys(format!(
            "{MOUNT_POINT} is a symlink; not mounting there"
        )));
    }
    root.create_dir_all(MOUNT_POINT, 0o700).map_err(sys)?;
    let source = format!("/dev/{}", device.name);
    let mount = ProcessSpec::new("mount")
        .args([
            "-t",
            &FILESYSTEMS.join(","),
            "-o",
            MOUNT_OPTIONS,
            &source,
            MOUNT_POINT,
        ])
        .effect(Effect::Mount);
    runner
        .run(&mount)
        .and_then(|o| o.check("mount"))
        .map_err(|e| NetworkError::System(format!("cannot mount the config drive: {e}")))?;
    // What is mounted there now must be that device, with a config drive's filesystem.
    let result = match mount_table(root) {
        Ok(mounts) if trusted_mount(&mounts, &device, Some(MOUNT_POINT)).is_some() => {
            read_dir(root, MOUNT_POINT, keep_hostname)
        }
        Ok(_) => Err(sys(format!(
            "after mounting {source}, {MOUNT_POINT} does not hold an iso9660 or vfat filesystem of that device; not read"
        ))),
        Err(e) => Err(e),
    };
    if let Err(e) = runner
        .run(
            &ProcessSpec::new("umount")
                .arg(MOUNT_POINT)
                .effect(Effect::Mount),
        )
        .and_then(|o| o.check("umount"))
    {
        warn!(error = %e, "could not unmount the config drive");
    }
    result.map(Some)
}

/// A block device of this kernel: its name in `/sys/class/block` and its `major:minor`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockDevice {
    name: String,
    number: String,
}

/// The device labelled `config-2`, checked to be a real block device. `Ok(None)` when no
/// device has that label (or this is not a Linux system with `/sys/class/block`).
fn find_device(
    root: &Root,
    runner: &dyn ProcessRunner,
) -> Result<Option<BlockDevice>, NetworkError> {
    if !root.is_dir(SYS_BLOCK) {
        return Ok(None);
    }
    let name = if root.is_symlink(LABEL_DEVICE) {
        let target = root.read_link(LABEL_DEVICE).map_err(sys)?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else if root.exists(LABEL_DEVICE) {
        return Err(sys(format!(
            "{LABEL_DEVICE} is not udev's link to a device; not trusted"
        )));
    } else {
        match blkid(runner) {
            Some(name) => name,
            None => return Ok(None),
        }
    };
    block_device(root, &name).map(Some)
}

/// Without udev's link: the device `blkid` finds with the label, if any.
fn blkid(runner: &dyn ProcessRunner) -> Option<String> {
    if !runner.exists("blkid") {
        return None;
    }
    let cmd = ProcessSpec::new("blkid")
        .args(["-t", "LABEL=config-2", "-o", "device"])
        .observes();
    match runner.run(&cmd) {
        // blkid exits 2 when no device matches.
        Ok(out) if out.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let first = text.lines().next()?.trim();
            let name = first.strip_prefix("/dev/")?;
            Some(name.to_string())
        }
        Ok(_) => None,
        Err(e) => {
            debug!(error = %e, "blkid did not run; no config drive");
            None
        }
    }
}

/// Check `name` against the kernel's list of block devices.
fn block_device(root: &Root, name: &str) -> Result<BlockDevice, NetworkError> {
    let plain = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(sys(format!(
            "the device labelled config-2 has the unexpected name '{}'; not trusted",
            shown(name)
        )));
    }
    let dir = format!("{SYS_BLOCK}/{name}");
    let number = root
        .read_to_string(format!("{dir}/dev"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|n| is_dev_number(n))
        .ok_or_else(|| {
            sys(format!(
                "the device labelled config-2 ('{name}') is not a block device of this system; not trusted"
            ))
        })?;
    if root.is_dir(format!("{dir}/loop")) {
        return Err(sys(format!(
            "the device labelled config-2 ('{name}') is a loop device backed by a file; not trusted"
        )));
    }
    Ok(BlockDevice {
        name: name.to_string(),
        number,
    })
}

/// `major:minor`.
fn is_dev_number(text: &str) -> bool {
    text.split_once(':').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

/// One line of `/proc/self/mountinfo` (proc(5)), the fields guestd looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    number: String,
    /// The directory of the filesystem that is mounted (`/` for the whole filesystem).
    root: String,
    point: String,
    read_only: bool,
    fstype: String,
}

fn mount_table(root: &Root) -> Result<Vec<Mount>, NetworkError> {
    let text = match root.read_optional(MOUNTINFO) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => String::new(),
        Err(e) => return Err(sys(e)),
    };
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let [_, _, number, root, point, options, ..] = fields.as_slice() else {
        return None;
    };
    let fstype = after.split(' ').next()?;
    Some(Mount {
        number: number.to_string(),
        root: unescape_octal(root),
        point: unescape_octal(point),
        read_only: options.split(',').any(|o| o == "ro"),
        fstype: fstype.to_string(),
    })
}

/// The kernel writes space, tab, newline and backslash in mount paths as `\ooo`.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\' && digits.is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
        {
            let d = digits.unwrap_or_default();
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount point of `device` that can be believed (see the module doc); with `at`, only a
/// mount on that point, and the last one there (the one on top).
fn trusted_mount(mounts: &[Mount], device: &BlockDevice, at: Option<&str>) -> Option<String> {
    let candidates: Vec<&Mount> = match at {
        Some(point) => mounts
            .iter()
            .rev()
            .filter(|m| m.point == point)
            .take(1)
            .collect(),
        None => mounts.iter().collect(),
    };
    for m in candidates {
        let trusted = m.number == device.number
            && m.root == "/"
            && FILESYSTEMS.contains(&m.fstype.as_str())
            && m.read_only;
        if trusted {
            return Some(m.point.clone());
        }
        if m.number == device.number || at.is_some() {
            debug!(
                mount_point = %shown(&m.point),
                fstype = %shown(&m.fstype),
                root = %shown(&m.root),
                read_only = m.read_only,
                "a mount of the config drive that is not used"
            );
        }
    }
    None
}

/// Read a config drive's files under `dir` (a guest path).
pub fn read_dir(
    root: &Root,
    dir: &str,
    keep_hostname: bool,
) -> Result<ConfigDriveFiles, NetworkError> {
    let network_data = read_file(root, dir, NETWORK_DATA)?
        .ok_or_else(|| sys(format!("{dir}/{NETWORK_DATA} does not exist")))?;
    let meta_data = if keep_hostname {
        None
    } else {
        read_file(root, dir, META_DATA)?
    };
    Ok(ConfigDriveFiles {
        network_data,
        meta_data,
    })
}

/// Read `dir/rel`: `Ok(None)` when it does not exist; refused when it, or a directory on the way
/// below `dir`, is not what it should be (a symlink, a FIFO, a device), or it is larger than
/// [`MAX_FILE`]. `Root::snapshot` opens the file without following a link and without blocking,
/// checks it on the open handle and reads at most [`MAX_FILE`] bytes.
fn read_file(root: &Root, dir: &str, rel: &str) -> Result<Option<Vec<u8>>, NetworkError> {
    let mut guest = PathBuf::from(dir);
    let parts: Vec<&str> = rel.split('/').collect();
    let (file, dirs) = parts.split_last().unwrap_or((&"", &[]));
    for part in dirs {
        guest.push(part);
        if root.is_symlink(&guest) {
            return Err(sys(format!(
                "{} is a symlink; not followed",
                guest.display()
            )));
        }
        if !root.is_dir(&guest) {
            return Ok(None);
        }
    }
    guest.push(file);
    let shown_path = guest.display().to_string();
    let not_regular = || sys(format!("{shown_path} is not a regular file; not read"));
    match root.snapshot(&guest, MAX_FILE) {
        Ok(Snapshot::Absent) => Ok(None),
        Ok(Snapshot::File { contents, .. }) => Ok(Some(contents.to_vec())),
        Ok(Snapshot::Link(_) | Snapshot::Unread { .. }) | Err(RootError::NotRegular { .. }) => {
            Err(not_regular())
        }
        Err(RootError::TooLarge { .. }) => Err(sys(format!(
            "{shown_path} is larger than {MAX_FILE} bytes; not read"
        ))),
        Err(e) => Err(sys(format!("cannot read {shown_path}: {e}"))),
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    const NETWORK_DATA_JSON: &str = r#"{
      "links": [
        {"id": "tap1", "type": "ovs", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": 1450},
        {"id": "tap2", "type": "phy", "ethernet_mac_address": "FA:16:3E:00:00:02"},
        {"id": "bond0", "type": "bond", "bond_links": ["tap2"]}
      ],
      "networks": [
        {"id": "net0", "type": "ipv4", "link": "tap1", "ip_address": "10.0.0.5",
         "netmask": "255.255.255.0", "network_id": "public",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                    {"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "10.0.0.254"}],
         "services": [{"type": "dns", "address": "10.0.0.2"}]},
        {"id": "net1", "type": "ipv6", "link": "tap1", "ip_address": "2001:db8::5/64",
         "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]},
        {"id": "net2", "type": "ipv4_dhcp", "link": "tap2"}
      ],
      "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "10.0.0.2"}]
    }"#;

    /// A sandbox with a `config-2` CD-ROM (`sr0`, 11:0) known to the kernel and its files at
    /// `/mnt/config`; `mountinfo` is the sandbox's mount table.
    fn sandbox(mountinfo: &str) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("dev/disk/by-label")).unwrap();
        std::os::unix::fs::symlink("../../sr0", p.join("dev/disk/by-label/config-2")).unwrap();
        std::fs::create_dir_all(p.join("sys/class/block/sr0")).unwrap();
        std::fs::write(p.join("sys/class/block/sr0/dev"), "11:0\n").unwrap();
        std::fs::create_dir_all(p.join("proc/self")).unwrap();
        std::fs::write(p.join("proc/self/mountinfo"), mountinfo).unwrap();
        for dir in ["mnt/config", "mnt/fake"] {
            let latest = p.join(dir).join("openstack/latest");
            std::fs::create_dir_all(&latest).unwrap();
            std::fs::write(latest.join("network_data.json"), NETWORK_DATA_JSON).unwrap();
            std::fs::write(
                latest.join("meta_data.json"),
                r#"{"hostname": "vm1.novalocal", "uuid": "x"}"#,
            )
            .unwrap();
        }
        let root = Root::sandbox(p).unwrap();
        (d, root)
    }

    const BASE_MOUNTS: &str = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
        25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n";

    /// A runner whose `mount` fails: a test that expects the drive to be read where it is
    /// mounted fails loudly if guestd mounts it instead.
    fn no_mount() -> guestd_testkit::FakeRunner {
        let runner = guestd_testkit::FakeRunner::new();
        runner.respond("mount ", 32, "");
        runner
    }

    #[test]
    fn reads_a_mounted_drive_of_the_right_device_and_type() {
        let table =
            format!("{BASE_MOUNTS}40 25 11:0 / /mnt/config ro,relatime - iso9660 /dev/sr0 ro\n");
        let (_d, root) = sandbox(&table);
        let runner = no_mount();
        let files = read(&root, &runner, None, false).unwrap().unwrap();
        assert_eq!(files.network_data, NETWORK_DATA_JSON.as_bytes());
        assert_eq!(
            files.meta_data.as_deref(),
            Some(&br#"{"hostname": "vm1.novalocal", "uuid": "x"}"#[..])
        );
        assert!(runner.lines().is_empty(), "{:?}", runner.lines());
        let files = read(&root, &runner, None, true).unwrap().unwrap();
        assert_eq!(files.meta_data, None, "not read when the hostname is kept");
        // A space in the mount point is written `\040` by the kernel.
        let (d, root) = sandbox(&format!(
            "{BASE_MOUNTS}40 25 11:0 / /mnt/config\\040drive ro - vfat /dev/sr0 ro\n"
        ));
        std::fs::rename(
            d.path().join("mnt/config"),
            d.path().join("mnt/config drive"),
        )
        .unwrap();
        assert!(read(&root, &runner, None, false).unwrap().is_some());
    }

    #[test]
    fn no_label_no_drive() {
        let (d, root) = sandbox(BASE_MOUNTS);
        std::fs::remove_file(d.path().join("dev/disk/by-label/config-2")).unwrap();
        let runner = guestd_testkit::FakeRunner::new();
        runner.mark_missing("blkid");
        assert_eq!(read(&root, &runner, None, false).unwrap(), None);
        assert!(runner.lines().is_empty());
        // blkid finds nothing (exit 2).
        let runner = guestd_testkit::FakeRunner::new();
        runner.respond("blkid ", 2, "");
        assert_eq!(read(&root, &runner, None, false).unwrap(), None);
        assert_eq!(runner.lines(), ["blkid -t LABEL=config-2 -o device"]);
    }

    /// Mounts that claim to be the config drive but are not believed: guestd mounts the real
    /// device itself instead (here the fake `mount` fails, so the error shows it tried).
    #[test]
    fn lookalike_mounts_are_not_trusted() {
        let cases = [
            // FUSE chooses its source field freely (`mount -o fsname=/dev/sr0`).
            "60 25 0:52 / /mnt/fake rw,nosuid,nodev - fuse.sshfs /dev/sr0 rw,user_id=1000\n",
            "60 25 0:52 / /mnt/fake ro,nosuid,nodev - fuse /dev/sr0 ro,user_id=1000\n",
            "60 25 0:30 / /mnt/fake ro - tmpfs /dev/sr0 ro\n",
            "60 25 0:31 / /mnt/fake ro - overlay /dev/sr0 ro,lowerdir=/x\n",
            "60 25 0:32 / /mnt/fake ro - nfs4 /dev/sr0 ro,vers=4.2\n",
            // The right device number but another filesystem type.
            "60 25 11:0 / /mnt/fake ro - udf /dev/sr0 ro\n",
            // The right device, but only a directory of it bind-mounted.
            "60 25 11:0 /openstack /mnt/fake ro - iso9660 /dev/sr0 ro\n",
            // A writable vfat mount of it: guestd reads only from a read-only mount.
            "60 25 11:0 / /mnt/fake rw - vfat /dev/sr0 rw\n",
            // Another device whose source field names the label link.
            "60 25 8:16 / /mnt/fake ro - iso9660 /dev/disk/by-label/config-2 ro\n",
        ];
        for line in cases {
            let (_d, root) = sandbox(&format!("{BASE_MOUNTS}{line}"));
            let runner = no_mount();
            let err = read(&root, &runner, None, false).unwrap_err().to_string();
            assert_eq!(
                err, "cannot mount the config drive: 'mount' failed with exit status 32",
                "{line}"
            );
            assert_eq!(
                runner.lines(),
                [
                    "mount -t iso9660,vfat -o ro,nosuid,nodev,noexec /dev/sr0 /run/guestd/config-drive"
                ],
                "{line}"
            );
        }
    }

    /// guestd's own mount is checked in the mount table before anything is read.
    #[test]
    fn its_own_mount_must_show_the_device() {
        for (line, ok) in [
            (
                "70 25 11:0 / /run/guestd/config-drive ro,nosuid,nodev,noexec - iso9660 /dev/sr0 ro\n",
                true,
            ),
            // Something else ended up there (another device, a FUSE mount on top).
            (
                "70 25 8:16 / /run/guestd/config-drive ro - iso9660 /dev/sdb ro\n",
                false,
            ),
            (
                "70 25 11:0 / /run/guestd/config-drive ro - iso9660 /dev/sr0 ro\n71 70 0:52 / /run/guestd/config-drive ro - fuse /dev/sr0 ro\n",
                false,
            ),
        ] {
            let (d, root) = sandbox(BASE_MOUNTS);
            let base = d.path().to_path_buf();
            let table_line = line.to_string();
            let runner = guestd_testkit::FakeRunner::new();
            runner.respond_with("mount ", move |_| {
                let latest = base.join("run/guestd/config-drive/openstack/latest");
                std::fs::create_dir_all(&latest).unwrap();
                std::fs::write(latest.join("network_data.json"), NETWORK_DATA_JSON).unwrap();
                let table = base.join("proc/self/mountinfo");
                let mut text = std::fs::read_to_string(&table).unwrap();
                text.push_str(&table_line);
                std::fs::write(table, text).unwrap();
                Ok(guestd_core::Output {
                    code: Some(0),
                    ..Default::default()
                })
            });
            let result = read(&root, &runner, None, false);
            assert_eq!(result.is_ok(), ok, "{line}: {result:?}");
            if !ok {
                assert_eq!(
                    result.unwrap_err().to_string(),
                    "config drive: after mounting /dev/sr0, /run/guestd/config-drive does not hold an iso9660 or vfat filesystem of that device; not read"
                );
            }
            assert_eq!(
                runner.lines().last().unwrap(),
                "umount /run/guestd/config-drive"
            );
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(d.path().join("run/guestd/config-drive"))
                    .unwrap()
                    .permissions(),
            );
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn the_device_must_be_a_block_device_of_this_kernel() {
        let table =
            format!("{BASE_MOUNTS}40 25 11:0 / /mnt/config ro,relatime - iso9660 /dev/sr0 ro\n");
        // The label links to a name the kernel does not list as a block device.
        let (d, root) = sandbox(&table);
        std::fs::remove_dir_all(d.path().join("sys/class/block/sr0")).unwrap();
        assert_eq!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string(),
            "config drive: the device labelled config-2 ('sr0') is not a block device of this system; not trusted"
        );
        // A loop device: a file someone attached.
        let (d, root) = sandbox(&table);
        std::fs::create_dir_all(d.path().join("sys/class/block/sr0/loop")).unwrap();
        assert!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string()
                .contains("is a loop device backed by a file; not trusted")
        );
        // Not udev's link.
        let (d, root) = sandbox(&table);
        let link = d.path().join("dev/disk/by-label/config-2");
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, "").unwrap();
        assert_eq!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string(),
            "config drive: /dev/disk/by-label/config-2 is not udev's link to a device; not trusted"
        );
        // blkid's answer goes through the same checks.
        let (d, root) = sandbox(&table);
        std::fs::remove_file(d.path().join("dev/disk/by-label/config-2")).unwrap();
        let runner = no_mount();
        runner.respond("blkid ", 0, "/dev/sr0\n");
        assert!(read(&root, &runner, None, false).unwrap().is_some());
        let runner = no_mount();
        runner.respond("blkid ", 0, "/dev/../sr0\n");
        assert!(read(&root, &runner, None, false).is_err());
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let table =
            format!("{BASE_MOUNTS}40 25 11:0 / /mnt/config ro,relatime - iso9660 /dev/sr0 ro\n");
        let latest = |d: &tempfile::TempDir| d.path().join("mnt/config/openstack/latest");
        // A FIFO would block a plain read forever.
        let (d, root) = sandbox(&table);
        let file = latest(&d).join("network_data.json");
        std::fs::remove_file(&file).unwrap();
        let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(rc, 0);
        assert_eq!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string(),
            "config drive: /mnt/config/openstack/latest/network_data.json is not a regular file; not read"
        );
        // A symlink to a file elsewhere.
        let (d, root) = sandbox(&table);
        let file = latest(&d).join("meta_data.json");
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", &file).unwrap();
        assert!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string()
                .ends_with("meta_data.json is not a regular file; not read")
        );
        // A symlinked directory on the way.
        let (d, root) = sandbox(&table);
        let dir = d.path().join("mnt/config/openstack");
        std::fs::rename(&dir, d.path().join("mnt/elsewhere")).unwrap();
        std::os::unix::fs::symlink("/mnt/elsewhere", &dir).unwrap();
        assert_eq!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string(),
            "config drive: /mnt/config/openstack is a symlink; not followed"
        );
        // Too large.
        let (d, root) = sandbox(&table);
        let mut big = NETWORK_DATA_JSON.to_string();
        big.push_str(&" ".repeat(MAX_FILE as usize));
        std::fs::write(latest(&d).join("network_data.json"), big).unwrap();
        assert_eq!(
            read(&root, &no_mount(), None, false)
                .unwrap_err()
                .to_string(),
            format!(
                "config drive: /mnt/config/openstack/latest/network_data.json is larger than {MAX_FILE} bytes; not read"
            )
        );
    }

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(
            (
                m.number.as_str(),
                m.root.as_str(),
                m.point.as_str(),
                m.read_only,
                m.fstype.as_str()
            ),
            ("98:0", "/mnt1", "/mnt 2", false, "ext3")
        );
        assert!(parse_mountinfo_line("garbage").is_none());
        assert_eq!(unescape_octal("a\\134b\\011c\\12"), "a\\b\tc\\12");
    }
}
