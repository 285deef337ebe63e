//! Linux: addresses from rtnetlink notifications ([`netlink`]), the vif of an interface from
//! sysfs `device/nodename`, memory from `/proc/meminfo`, the OS from `os-release` (all read
//! through `Root`, so a sandbox can stand in for them), kernel release and host name from
//! `uname`. Three file descriptors wait in tokio's epoll and wake guestd only when the kernel
//! reports something: the netlink socket, `/proc/sys/kernel/hostname` (`POLLPRI` when the
//! host name is set, as systemd watches it) and a `CLOCK_REALTIME` timerfd armed with
//! `TFD_TIMER_CANCEL_ON_SET`, which the kernel cancels when the clock is stepped (a resume,
//! a migration, or an administrator setting it).

pub mod netlink;

use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use guestd_core::Root;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use crate::facts::{Event, Memory, Nic, OsFacts, Platform};
use netlink::{Message, RTM_GETADDR, RTM_GETLINK, State};

/// What the Linux kernel (and the udev rules distributions ship) carries out by itself:
/// `control/shutdown` requests, vCPU hot-plug and the balloon.
const FEATURES: &[&str] = &[
    "feature-shutdown",
    "feature-poweroff",
    "feature-reboot",
    "feature-suspend",
    "feature-vcpu-hotplug",
    "feature-balloon",
];

/// Where a dump stands.
#[derive(Debug)]
enum Sync {
    /// The state follows the notifications.
    Live,
    /// A dump of `RTM_GETLINK` then `RTM_GETADDR` is being read into `fresh`, which replaces
    /// the state at its end (so a half-read dump is never published).
    Dumping { ty: u16, seq: u32, fresh: State },
}

/// The Linux sources.
#[derive(Debug)]
pub struct Linux {
    net: Net,
    hostname: Option<AsyncFd<std::fs::File>>,
    clock: Option<AsyncFd<OwnedFd>>,
}

/// The netlink socket and what it told so far.
#[derive(Debug)]
struct Net {
    socket: AsyncFd<OwnedFd>,
    state: State,
    sync: Sync,
    /// Notifications were lost: read everything again once the current dump (if any) ends.
    stale: bool,
    seq: u32,
    buf: Vec<u8>,
}

fn os_error(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Register a descriptor guestd owns with tokio's reactor.
fn register<T: std::os::fd::AsRawFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    #[allow(unsafe_code)]
    // SAFETY: `inner` (an `OwnedFd` or `File`) owns its descriptor, which stays open and the
    // same for as long as the `AsyncFd` holds it.
    unsafe {
        AsyncFd::register_with_interest(inner, interest).map_err(Into::into)
    }
}

impl Linux {
    /// Open the netlink socket and read the current links and addresses; open the host
    /// name and clock watches (each is optional: without it, that change is noticed at the
    /// next publication instead). Needs a tokio runtime.
    pub async fn new() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(os_error)?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, netlink::GROUPS)).map_err(os_error)?;
        // Room for bursts (hundreds of addresses added at once); the kernel caps it.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 1 << 20);
        let mut net = Net {
            socket: register(fd, Interest::READABLE)?,
            state: State::default(),
            sync: Sync::Live,
            stale: false,
            seq: 0,
            buf: vec![0; 64 * 1024],
        };
        net.start_dump(RTM_GETLINK)?;
        while matches!(net.sync, Sync::Dumping { .. }) {
            net.changed().await?;
        }
        Ok(Self {
            net,
            hostname: open_hostname_watch(),
            clock: open_clock_watch(),
        })
    }
}

impl Net {
    fn start_dump(&mut self, ty: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = netlink::dump_request(ty, self.seq);
        rustix::net::sendto(
            self.socket.get_ref(),
            &request,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(os_error)?;
        let fresh = match std::mem::replace(&mut self.sync, Sync::Live) {
            Sync::Dumping { fresh, .. } => fresh,
            Sync::Live => State::default(),
        };
        self.sync = Sync::Dumping {
            ty,
            seq: self.seq,
            fresh,
        };
        Ok(())
    }

    /// Read what the kernel sent until the published view changed (or a dump completed).
    /// Cancel-safe: all progress lives in `self`, and the only wait is for readability.
    async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut messages = Vec::new();
            let mut overrun = false;
            {
                let mut guard = self.socket.readable().await?;
                loop {
                    match rustix::net::recv(
                        guard.get_inner(),
                        &mut self.buf[..],
                        RecvFlags::empty(),
                    ) {
                        Ok((n, _)) => messages.extend(netlink::parse(&self.buf[..n])),
                        Err(rustix::io::Errno::AGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        // The kernel dropped notifications: what we hold may be stale.
                        Err(rustix::io::Errno::NOBUFS) => overrun = true,
                        Err(rustix::io::Errno::INTR) => {}
                        Err(e) => return Err(os_error(e)),
                    }
                }
            }
            let mut changed = false;
            for message in &messages {
                match self.handle(message) {
                    Ok(c) => changed |= c,
                    Err(()) => overrun = true,
                }
            }
            if overrun {
                self.stale = true;
            }
            if self.stale && matches!(self.sync, Sync::Live) {
                // (During a dump, another one waits for it to end: one at a time per socket.)
                debug!("netlink notifications were lost; reading links and addresses again");
                self.stale = false;
                self.start_dump(RTM_GETLINK)?;
            }
            // A dump that just completed swapped the state in: that counts as a change.
            if changed {
                return Ok(());
            }
        }
    }

    /// Apply one message; `Err` when the state must be read again.
    fn handle(&mut self, message: &Message) -> Result<bool, ()> {
        if let Message::Overrun = message {
            return Err(());
        }
        let (ty, seq) = match &mut self.sync {
            Sync::Live => return Ok(self.state.apply(message)),
            Sync::Dumping { ty, seq, fresh } => match message {
                Message::Done { seq: s } | Message::Error { seq: s, .. } if *s == *seq => {
                    (*ty, *seq)
                }
                other => {
                    // Notifications during a dump are newer than what it read so far.
                    fresh.apply(other);
                    return Ok(false);
                }
            },
        };
        if let Message::Error { errno, .. } = message {
            if *errno != 0 {
                warn!(
                    errno,
                    seq, "the kernel refused a netlink dump; asking again"
                );
                return self.start_dump(ty).map(|()| false).map_err(drop);
            }
        }
        if ty == RTM_GETLINK {
            return self.start_dump(RTM_GETADDR).map(|()| false).map_err(drop);
        }
        if let Sync::Dumping { fresh, .. } = std::mem::replace(&mut self.sync, Sync::Live) {
            self.state = fresh;
        }
        Ok(true)
    }
}

/// `/proc/sys/kernel/hostname` reports `POLLPRI` when the host name is set. A kernel event
/// source like the netlink socket, not a file read: the name itself comes from `uname`.
fn open_hostname_watch() -> Option<AsyncFd<std::fs::File>> {
    let file = std::fs::File::open("/proc/sys/kernel/hostname")
        .inspect_err(|e| debug!(error = %e, "no host name notifications"))
        .ok()?;
    register(file, Interest::PRIORITY)
        .inspect_err(|e| debug!(error = %e, "no host name notifications"))
        .ok()
}

fn open_clock_watch() -> Option<AsyncFd<OwnedFd>> {
    let fd = rustix::time::timerfd_create(
        TimerfdClockId::Realtime,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .inspect_err(|e| debug!(error = %e, "no clock jump notifications"))
    .ok()?;
    arm_clock_watch(&fd)
        .inspect_err(|e| debug!(error = %e, "no clock jump notifications"))
        .ok()?;
    register(fd, Interest::READABLE).ok()
}

/// A timer that never expires (the kernel saturates the far-away time), cancelled by the
/// kernel when `CLOCK_REALTIME` is set discontinuously.
fn arm_clock_watch(fd: &OwnedFd) -> io::Result<()> {
    let never = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: Timespec {
            tv_sec: 1 << 40,
            tv_nsec: 0,
        },
    };
    rustix::time::timerfd_settime(
        fd,
        TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
        &never,
    )
    .map(drop)
    .map_err(os_error)
}

async fn hostname_changed(watch: &mut Option<AsyncFd<std::fs::File>>) {
    match watch {
        Some(w) => match w.ready(Interest::PRIORITY).await {
            Ok(mut guard) => guard.clear_ready(),
            Err(e) => {
                debug!(error = %e, "host name notifications stopped");
                *watch = None;
                std::future::pending::<()>().await;
            }
        },
        None => std::future::pending().await,
    }
}

async fn clock_jumped(watch: &mut Option<AsyncFd<OwnedFd>>) {
    let Some(w) = watch else {
        return std::future::pending().await;
    };
    loop {
        let mut guard = match w.readable().await {
            Ok(g) => g,
            Err(e) => {
                debug!(error = %e, "clock jump notifications stopped");
                *watch = None;
                return std::future::pending().await;
            }
        };
        let mut ticks = [0u8; 8];
        match rustix::io::read(guard.get_inner(), &mut ticks) {
            Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
            // ECANCELED: the clock was set. Anything else (it expired): arm it again too.
            _ => {
                guard.clear_ready();
                if let Err(e) = arm_clock_watch(guard.get_inner()) {
                    debug!(error = %e, "re-arming the clock watch failed");
                }
                return;
            }
        }
    }
}

impl Platform for Linux {
    const NAME: &'static str = "linux";

    fn control_features(&self) -> &'static [&'static str] {
        FEATURES
    }

    fn os(&mut self, root: &Root) -> OsFacts {
        let text = |path: &str| root.read_to_string(path).ok();
        let release = text("/etc/os-release").or_else(|| text("/usr/lib/os-release"));
        let identity = crate::os_release::identity(
            release.as_deref().unwrap_or_default(),
            text("/etc/debian_version").as_deref(),
        );
        let uname = rustix::system::uname();
        let owned = |c: &std::ffi::CStr| {
            let s = c.to_string_lossy().into_owned();
            (!s.is_empty()).then_some(s)
        };
        OsFacts {
            distro: identity.distro.or_else(|| Some("linux".into())),
            name: identity.name.or_else(|| Some("Linux".into())),
            major: identity.major,
            minor: identity.minor,
            uname: owned(uname.release()),
            hostname: owned(uname.nodename()),
            domain: text("/etc/resolv.conf")
                .as_deref()
                .and_then(crate::os_release::resolv_domain),
        }
    }

    fn memory(&mut self, root: &Root) -> Option<Memory> {
        parse_meminfo(&root.read_to_string("/proc/meminfo").ok()?)
    }

    fn nics(&mut self, root: &Root) -> Vec<Nic> {
        self.net
            .state
            .interfaces()
            .into_iter()
            .map(|i| Nic {
                vif: vif_of(root, &i.name),
                name: i.name,
                mac: i.mac,
                addresses: i.addresses.into_iter().collect::<Vec<IpAddr>>(),
            })
            .collect()
    }

    async fn next_event(&mut self) -> Event {
        loop {
            tokio::select! {
                result = self.net.changed() => match result {
                    Ok(()) => return Event::Network,
                    Err(e) => {
                        warn!(error = %e, "reading netlink failed; reading links and addresses again");
                        if let Err(e) = self.net.start_dump(RTM_GETLINK) {
                            warn!(error = %e, "netlink is unusable; addresses are no longer followed");
                            std::future::pending::<()>().await;
                        }
                    }
                },
                () = hostname_changed(&mut self.hostname) => return Event::Hostname,
                () = clock_jumped(&mut self.clock) => return Event::ClockJump,
            }
        }
    }
}

/// The vif an interface belongs to: its xen-netfront device's `nodename` is
/// `device/vif/<devid>`.
fn vif_of(root: &Root, name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let nodename = root
        .read_to_string(format!("/sys/class/net/{name}/device/nodename"))
        .ok()?;
    nodename.trim().strip_prefix("device/vif/")?.parse().ok()
}

/// `MemTotal` and `MemAvailable` (kernels before 3.14: `MemFree`), in KiB.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(Memory {
        total_kib: field("MemTotal")?,
        free_kib: field("MemAvailable").or_else(|| field("MemFree"))?,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let m = parse_meminfo("MemTotal:        8041424 kB\nMemFree:          512000 kB\nMemAvailable:    4096000 kB\n").unwrap();
        assert_eq!((m.total_kib, m.free_kib), (8041424, 4096000));
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 40 kB\n").unwrap();
        assert_eq!(old.free_kib, 40);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotalX: 1 kB\nMemFree: 1 kB\n"), None);
    }

    #[test]
    fn vifs_from_a_sandbox_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (ifname, node) in [
            ("eth0", "device/vif/0\n"),
            ("enX3", "device/vif/3"),
            ("xvda", "device/vbd/51712"),
        ] {
            let d = dir.path().join("sys/class/net").join(ifname).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("nodename"), node).unwrap();
        }
        let root = Root::sandbox(dir.path()).unwrap();
        assert_eq!(vif_of(&root, "eth0"), Some(0));
        assert_eq!(vif_of(&root, "enX3"), Some(3));
        assert_eq!(vif_of(&root, "xvda"), None);
        assert_eq!(vif_of(&root, "lo"), None);
        assert_eq!(vif_of(&root, ".."), None);
    }

    #[tokio::test]
    async fn reads_this_machines_interfaces() {
        let mut linux = Linux::new().await.expect("netlink works here");
        let root = Root::system();
        let nics = linux.nics(&root);
        assert!(nics.iter().all(|n| n.name != "lo"), "{nics:?}");
        let os = linux.os(&root);
        assert!(os.uname.is_some() && os.hostname.is_some());
        assert!(linux.memory(&root).is_some_and(|m| m.total_kib > 0));
    }
}
