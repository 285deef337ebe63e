//! FreeBSD (type-checked here, not run): addresses from `getifaddrs(3)`, read again when the
//! routing socket reports an address or interface change (no polling); `xnN`, the netfront
//! interface, is vif N; memory from `sysctl` (`hw.physmem`, free plus inactive pages); the OS
//! from `os-release` through `Root`, else `uname`. No host name or clock-jump notifications:
//! those are picked up at the next full publication (resume, reconnect).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use guestd_core::Root;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::debug;

use crate::facts::{Event, Memory, Nic, OsFacts, Platform};

/// What FreeBSD's Xen support carries out by itself (`dev/xen/control`, the balloon).
const FEATURES: &[&str] = &[
    "feature-shutdown",
    "feature-poweroff",
    "feature-reboot",
    "feature-suspend",
    "feature-balloon",
];

/// Routing messages that change addresses or interfaces.
const RTM_NEWADDR: u8 = 0xc;
const RTM_DELADDR: u8 = 0xd;
const RTM_IFINFO: u8 = 0xe;
const RTM_IFANNOUNCE: u8 = 0x11;

/// The FreeBSD sources.
#[derive(Debug)]
pub struct FreeBsd {
    route: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl FreeBsd {
    /// Open the routing socket. Needs a tokio runtime.
    pub async fn new() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::ROUTE,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| io::Error::from_raw_os_error(e.raw_os_error()))?;
        #[allow(unsafe_code)]
        // SAFETY: `fd` is an `OwnedFd` the AsyncFd owns from now on; it stays open and the
        // same for its lifetime.
        let route = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Self {
            route,
            buf: vec![0; 16 * 1024],
        })
    }
}

impl Platform for FreeBsd {
    const NAME: &'static str = "freebsd";

    fn control_features(&self) -> &'static [&'static str] {
        FEATURES
    }

    fn os(&mut self, root: &Root) -> OsFacts {
        let text = |path: &str| root.read_to_string(path).ok();
        let release = text("/etc/os-release").or_else(|| text("/var/run/os-release"));
        let identity = crate::os_release::identity(release.as_deref().unwrap_or_default(), None);
        let uname = rustix::system::uname();
        let owned = |c: &CStr| {
            let s = c.to_string_lossy().into_owned();
            (!s.is_empty()).then_some(s)
        };
        let kernel = owned(uname.release());
        // "14.1-RELEASE-p3": major 14, minor 1.
        let (major, minor) = kernel
            .as_deref()
            .and_then(|k| k.split('-').next())
            .and_then(|v| v.split_once('.'))
            .map(|(a, b)| (Some(a.to_string()), Some(b.to_string())))
            .unwrap_or((None, None));
        OsFacts {
            distro: identity.distro.or_else(|| Some("freebsd".into())),
            name: identity
                .name
                .or_else(|| kernel.as_ref().map(|k| format!("FreeBSD {k}"))),
            major: identity.major.or(major),
            minor: identity.minor.or(minor),
            uname: kernel,
            hostname: owned(uname.nodename()),
            domain: text("/etc/resolv.conf")
                .as_deref()
                .and_then(crate::os_release::resolv_domain),
        }
    }

    fn memory(&mut self, _root: &Root) -> Option<Memory> {
        let total: u64 = sysctl("hw.physmem")?;
        let page: u32 = sysctl::<i32>("hw.pagesize")?.try_into().ok()?;
        let free: u32 = sysctl("vm.stats.vm.v_free_count")?;
        let inactive: u32 = sysctl("vm.stats.vm.v_inactive_count").unwrap_or(0);
        Some(Memory {
            total_kib: total / 1024,
            free_kib: (u64::from(free) + u64::from(inactive)) * u64::from(page) / 1024,
        })
    }

    fn nics(&mut self, _root: &Root) -> Vec<Nic> {
        interfaces()
            .inspect_err(|e| debug!(error = %e, "getifaddrs failed"))
            .unwrap_or_default()
    }

    async fn next_event(&mut self) -> Event {
        loop {
            let Ok(mut guard) = self.route.readable().await else {
                return std::future::pending().await;
            };
            let mut changed = false;
            loop {
                match rustix::net::recv(guard.get_inner(), &mut self.buf[..], RecvFlags::empty()) {
                    // rt_msghdr / ifa_msghdr: u16 length, u8 version, u8 type.
                    Ok((n, _)) if n >= 4 => {
                        changed |= matches!(
                            self.buf[3],
                            RTM_NEWADDR | RTM_DELADDR | RTM_IFINFO | RTM_IFANNOUNCE
                        )
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    // Lost messages: read the interfaces again anyway.
                    Err(rustix::io::Errno::NOBUFS) => changed = true,
                    Err(_) => {
                        guard.clear_ready();
                        break;
                    }
                }
            }
            if changed {
                return Event::Network;
            }
        }
    }
}

/// One `sysctlbyname` value of a plain integer type.
fn sysctl<T: Copy + Default>(name: &str) -> Option<T> {
    let cname = CString::new(name).ok()?;
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>();
    #[allow(unsafe_code)]
    // SAFETY: `value` is a plain integer of `len` bytes the kernel writes at most `len`
    // bytes into; the name is NUL-terminated; no new value is set.
    let rc = unsafe {
        libc::sysctlbyname(
            cname.as_ptr(),
            (&mut value as *mut T).cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    (rc == 0 && len == std::mem::size_of::<T>()).then_some(value)
}

/// Every interface but loopback with its MAC and addresses (`xnN` tied to vif N).
fn interfaces() -> io::Result<Vec<Nic>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    #[allow(unsafe_code)]
    // SAFETY: getifaddrs fills `head` with a list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut nics: BTreeMap<String, Nic> = BTreeMap::new();
    let mut loopback = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        #[allow(unsafe_code)]
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs;
        // `ifa_name` is a NUL-terminated string and `ifa_addr`, when not null, points to a
        // sockaddr of the size its family says.
        let (name, flags, addr, mac) = unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            let (addr, mac) = if ifa.ifa_addr.is_null() {
                (None, None)
            } else {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        (Some(IpAddr::V4(ip)), None)
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let mut bytes = sin6.sin6_addr.s6_addr;
                        if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 {
                            // KAME's embedded scope id in link-local addresses.
                            bytes[2] = 0;
                            bytes[3] = 0;
                        }
                        (Some(IpAddr::V6(Ipv6Addr::from(bytes))), None)
                    }
                    libc::AF_LINK => {
                        let sdl = &*(ifa.ifa_addr as *const libc::sockaddr_dl);
                        let (start, len) = (usize::from(sdl.sdl_nlen), usize::from(sdl.sdl_alen));
                        let data: Vec<u8> = sdl.sdl_data.iter().map(|b| *b as u8).collect();
                        let mac = (len == 6)
                            .then(|| data.get(start..start + 6))
                            .flatten()
                            .and_then(|m| <[u8; 6]>::try_from(m).ok());
                        (None, mac)
                    }
                    _ => (None, None),
                }
            };
            (name, ifa.ifa_flags, addr, mac)
        };
        if flags & libc::IFF_LOOPBACK as u32 != 0 {
            loopback.push(name);
            continue;
        }
        let nic = nics.entry(name.clone()).or_insert_with(|| Nic {
            vif: name.strip_prefix("xn").and_then(|n| n.parse().ok()),
            name,
            mac: None,
            addresses: Vec::new(),
        });
        if let Some(mac) = mac {
            nic.mac = Some(mac);
        }
        if let Some(addr) = addr {
            if !nic.addresses.contains(&addr) {
                nic.addresses.push(addr);
            }
        }
    }
    #[allow(unsafe_code)]
    // SAFETY: the list getifaddrs returned, freed once, after its last use.
    unsafe {
        libc::freeifaddrs(head)
    };
    let mut out: Vec<Nic> = nics.into_values().collect();
    for nic in &mut out {
        // Link-local addresses after the others, as on Linux.
        nic.addresses.sort_by_key(|a| match a {
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(_) => false,
        });
    }
    let _ = loopback;
    Ok(out)
}
