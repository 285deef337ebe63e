//! Windows: addresses from `GetAdaptersAddresses`, read again when
//! `NotifyUnicastIpAddressChange` calls back (on a thread-pool thread; nothing of guestd runs
//! until then); memory from `GlobalMemoryStatusEx`; the version from `RtlGetVersion` (which,
//! unlike `GetVersionEx`, does not lie to unmanifested programs) and the product name from the
//! registry; host and domain names from `GetComputerNameExW`. Interfaces are tied to vifs by
//! MAC against the toolstack's `device/vif/*/mac`, as the Windows PV tools do.
//!
//! The `control/feature-*` keys for shutdown, reboot, suspend and the balloon belong to the
//! Xen PV drivers on Windows (their own agent answers `control/shutdown`), so guestd announces
//! none of them there.

use std::ffi::c_void;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use guestd_core::Root;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use windows_sys::Win32::Foundation::{ERROR_BUFFER_OVERFLOW, ERROR_SUCCESS, HANDLE};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    CancelMibChangeNotify2, GAA_FLAG_SKIP_ANYCAST, GAA_FLAG_SKIP_DNS_SERVER,
    GAA_FLAG_SKIP_MULTICAST, GetAdaptersAddresses, IF_TYPE_SOFTWARE_LOOPBACK,
    IP_ADAPTER_ADDRESSES_LH, MIB_NOTIFICATION_TYPE, MIB_UNICASTIPADDRESS_ROW,
    NotifyUnicastIpAddressChange,
};
use windows_sys::Win32::Networking::WinSock::{
    AF_INET, AF_INET6, AF_UNSPEC, IpDadStateDeprecated, IpDadStatePreferred, SOCKADDR, SOCKADDR_IN,
    SOCKADDR_IN6,
};
use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};
use windows_sys::Win32::System::SystemInformation::{
    ComputerNameDnsDomain, ComputerNameDnsHostname, GetComputerNameExW, GlobalMemoryStatusEx,
    MEMORYSTATUSEX, OSVERSIONINFOW,
};

use crate::facts::{Event, Memory, Nic, OsFacts, Platform};

/// The Windows sources.
#[derive(Debug)]
pub struct Windows {
    changes: Option<Registration>,
}

/// A registered address-change callback; cancelled (waiting for a callback in progress) when
/// dropped.
#[derive(Debug)]
struct Registration {
    handle: HANDLE,
    rx: mpsc::UnboundedReceiver<()>,
    /// The callback's context: the sender, freed after the cancellation.
    context: *mut mpsc::UnboundedSender<()>,
}

#[allow(unsafe_code)]
// SAFETY: the handle and context are only used to cancel the registration (from any thread)
// and to free the context after it; the callback only reads the context.
unsafe impl Send for Registration {}

impl Drop for Registration {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: the handle came from NotifyUnicastIpAddressChange; CancelMibChangeNotify2
        // returns once no callback runs any more, so the context can then be freed, once.
        unsafe {
            CancelMibChangeNotify2(self.handle);
            drop(Box::from_raw(self.context));
        }
    }
}

#[allow(unsafe_code)]
unsafe extern "system" fn on_change(
    context: *const c_void,
    _row: *const MIB_UNICASTIPADDRESS_ROW,
    _kind: MIB_NOTIFICATION_TYPE,
) {
    // SAFETY: `context` is the sender boxed by `Windows::new`, alive until the registration
    // is cancelled, which waits for this callback to return.
    let tx = unsafe { &*(context as *const mpsc::UnboundedSender<()>) };
    let _ = tx.send(());
}

impl Windows {
    /// Register for address changes (without them the addresses are read at every full
    /// publication only, and the log says so).
    pub async fn new() -> io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let context = Box::into_raw(Box::new(tx));
        let mut handle: HANDLE = std::ptr::null_mut();
        #[allow(unsafe_code)]
        // SAFETY: `on_change` matches the callback type; `context` stays valid until the
        // registration is cancelled (Registration::drop); `handle` is a valid out pointer.
        let rc = unsafe {
            NotifyUnicastIpAddressChange(
                AF_UNSPEC,
                Some(on_change),
                context as *const c_void,
                false,
                &mut handle,
            )
        };
        let changes = if rc == ERROR_SUCCESS {
            Some(Registration {
                handle,
                rx,
                context,
            })
        } else {
            #[allow(unsafe_code)]
            // SAFETY: not registered: nothing else holds the context.
            drop(unsafe { Box::from_raw(context) });
            warn!(error = %io::Error::from_raw_os_error(rc as i32), "no address change notifications; addresses are read again only after a resume or reconnect");
            None
        };
        Ok(Self { changes })
    }
}

impl Platform for Windows {
    const NAME: &'static str = "windows";

    fn control_features(&self) -> &'static [&'static str] {
        &[]
    }

    fn os(&mut self, _root: &Root) -> OsFacts {
        let version = os_version();
        let product = product_name();
        let name = match (&product, version) {
            (Some(p), _) if p.starts_with("Microsoft") => Some(p.clone()),
            (Some(p), _) => Some(format!("Microsoft {p}")),
            (None, Some((major, minor, _))) => Some(format!("Microsoft Windows {major}.{minor}")),
            (None, None) => Some("Microsoft Windows".into()),
        };
        OsFacts {
            distro: Some("windows".into()),
            name,
            major: version.map(|v| v.0.to_string()),
            minor: version.map(|v| v.1.to_string()),
            uname: version.map(|(a, b, c)| format!("{a}.{b}.{c}")),
            hostname: computer_name(ComputerNameDnsHostname),
            domain: computer_name(ComputerNameDnsDomain),
        }
    }

    fn memory(&mut self, _root: &Root) -> Option<Memory> {
        let mut status = MEMORYSTATUSEX {
            dwLength: std::mem::size_of::<MEMORYSTATUSEX>() as u32,
            ..Default::default()
        };
        #[allow(unsafe_code)]
        // SAFETY: a MEMORYSTATUSEX with its length set, as the call requires.
        let ok = unsafe { GlobalMemoryStatusEx(&mut status) } != 0;
        ok.then_some(Memory {
            total_kib: status.ullTotalPhys / 1024,
            free_kib: status.ullAvailPhys / 1024,
        })
    }

    fn nics(&mut self, _root: &Root) -> Vec<Nic> {
        adapters()
            .inspect_err(|e| warn!(error = %e, "GetAdaptersAddresses failed"))
            .unwrap_or_default()
    }

    async fn next_event(&mut self) -> Event {
        match &mut self.changes {
            Some(r) => {
                if r.rx.recv().await.is_none() {
                    return std::future::pending().await;
                }
                // A burst of changes is one event.
                while r.rx.try_recv().is_ok() {}
                Event::Network
            }
            None => std::future::pending().await,
        }
    }
}

/// `(major, minor, build)` from `RtlGetVersion`.
fn os_version() -> Option<(u32, u32, u32)> {
    let mut info = OSVERSIONINFOW {
        dwOSVersionInfoSize: std::mem::size_of::<OSVERSIONINFOW>() as u32,
        ..Default::default()
    };
    #[allow(unsafe_code)]
    // SAFETY: an OSVERSIONINFOW with its size set.
    let status = unsafe { windows_sys::Wdk::System::SystemServices::RtlGetVersion(&mut info) };
    (status >= 0).then_some((info.dwMajorVersion, info.dwMinorVersion, info.dwBuildNumber))
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\ProductName`.
fn product_name() -> Option<String> {
    let key = wide(r"SOFTWARE\Microsoft\Windows NT\CurrentVersion");
    let value = wide("ProductName");
    let mut buf = vec![0u16; 256];
    let mut bytes = (buf.len() * 2) as u32;
    #[allow(unsafe_code)]
    // SAFETY: NUL-terminated key and value names; `buf` holds `bytes` bytes.
    let rc = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            RRF_RT_REG_SZ,
            std::ptr::null_mut(),
            buf.as_mut_ptr().cast(),
            &mut bytes,
        )
    };
    if rc != ERROR_SUCCESS {
        return None;
    }
    buf.truncate((bytes as usize / 2).min(buf.len()));
    let text = String::from_utf16_lossy(&buf);
    let text = text.trim_end_matches('\0').trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn computer_name(kind: i32) -> Option<String> {
    let mut buf = vec![0u16; 256];
    let mut len = buf.len() as u32;
    #[allow(unsafe_code)]
    // SAFETY: `buf` holds `len` UTF-16 units; the call writes at most that and sets `len`.
    let ok = unsafe { GetComputerNameExW(kind, buf.as_mut_ptr(), &mut len) } != 0;
    if !ok {
        return None;
    }
    let name = String::from_utf16_lossy(&buf[..(len as usize).min(buf.len())]);
    (!name.is_empty()).then_some(name)
}

/// Every adapter but loopback, with its MAC and usable unicast addresses.
fn adapters() -> io::Result<Vec<Nic>> {
    let flags = GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER;
    // 15 KB is Microsoft's advice; grown when the call says so.
    let mut buf: Vec<u64> = vec![0; 15 * 1024 / 8];
    let mut size = (buf.len() * 8) as u32;
    for _ in 0..4 {
        #[allow(unsafe_code)]
        // SAFETY: `buf` is 8-byte aligned and `size` bytes long.
        let rc = unsafe {
            GetAdaptersAddresses(
                u32::from(AF_UNSPEC),
                flags,
                std::ptr::null(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        match rc {
            ERROR_SUCCESS => {
                #[allow(unsafe_code)]
                // SAFETY: on success `buf` holds the linked list, valid while `buf` lives.
                return Ok(unsafe { walk(buf.as_ptr().cast()) });
            }
            ERROR_BUFFER_OVERFLOW => buf.resize((size as usize).div_ceil(8), 0),
            // No adapters at all.
            232 /* ERROR_NO_DATA */ => return Ok(Vec::new()),
            other => return Err(io::Error::from_raw_os_error(other as i32)),
        }
    }
    Err(io::Error::other("the adapter list kept growing"))
}

/// # Safety
/// `first` is the head of a list GetAdaptersAddresses filled, alive for the call.
#[allow(unsafe_code)]
unsafe fn walk(first: *const IP_ADAPTER_ADDRESSES_LH) -> Vec<Nic> {
    let mut out = Vec::new();
    let mut adapter = first;
    while !adapter.is_null() {
        // SAFETY: a node of the list (see the function's contract).
        let a = unsafe { &*adapter };
        adapter = a.Next;
        if a.IfType == IF_TYPE_SOFTWARE_LOOPBACK {
            continue;
        }
        // SAFETY: FriendlyName is a NUL-terminated wide string of the list.
        let name = unsafe { wide_str(a.FriendlyName) };
        let mac = (a.PhysicalAddressLength == 6)
            .then(|| <[u8; 6]>::try_from(&a.PhysicalAddress[..6]).ok())
            .flatten();
        let mut addresses = Vec::new();
        let mut unicast = a.FirstUnicastAddress;
        while !unicast.is_null() {
            // SAFETY: a node of the unicast list, valid with the adapter list.
            let u = unsafe { &*unicast };
            unicast = u.Next;
            if u.DadState != IpDadStatePreferred && u.DadState != IpDadStateDeprecated {
                continue;
            }
            // SAFETY: lpSockaddr points to a sockaddr of iSockaddrLength bytes.
            if let Some(ip) =
                unsafe { sockaddr_ip(u.Address.lpSockaddr, u.Address.iSockaddrLength) }
            {
                addresses.push(ip);
            }
        }
        addresses.sort_by_key(|a| match a {
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
            IpAddr::V4(_) => false,
        });
        out.push(Nic {
            name,
            mac,
            vif: None,
            addresses,
        });
    }
    debug!(adapters = out.len(), "read the adapters");
    out
}

/// # Safety
/// `p` is null or a NUL-terminated UTF-16 string.
#[allow(unsafe_code)]
unsafe fn wide_str(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: NUL-terminated (the function's contract).
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` units before the NUL.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// # Safety
/// `sa` is null or points to `len` readable bytes of a sockaddr.
#[allow(unsafe_code)]
unsafe fn sockaddr_ip(sa: *const SOCKADDR, len: i32) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    let len = usize::try_from(len).ok()?;
    // SAFETY: every sockaddr starts with its family.
    match unsafe { (*sa).sa_family } {
        AF_INET if len >= std::mem::size_of::<SOCKADDR_IN>() => {
            // SAFETY: an AF_INET sockaddr of the right size.
            let sin = unsafe { &*(sa as *const SOCKADDR_IN) };
            // SAFETY: every bit pattern of the address union is a valid u32.
            let raw = unsafe { sin.sin_addr.S_un.S_addr };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(raw))))
        }
        AF_INET6 if len >= std::mem::size_of::<SOCKADDR_IN6>() => {
            // SAFETY: an AF_INET6 sockaddr of the right size.
            let sin6 = unsafe { &*(sa as *const SOCKADDR_IN6) };
            // SAFETY: every bit pattern of the address union is valid bytes.
            let bytes = unsafe { sin6.sin6_addr.u.Byte };
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under Wine (scripts/test-all): the real calls answer with sane values.
    #[tokio::test]
    async fn the_windows_sources_answer() {
        let mut w = Windows::new().await.unwrap();
        let root = Root::system();
        let os = w.os(&root);
        assert_eq!(os.distro.as_deref(), Some("windows"));
        assert!(
            os.name
                .as_deref()
                .is_some_and(|n| n.starts_with("Microsoft")),
            "{os:?}"
        );
        assert!(os.major.is_some() && os.uname.is_some(), "{os:?}");
        assert!(os.hostname.is_some(), "{os:?}");
        let mem = w.memory(&root).expect("GlobalMemoryStatusEx");
        assert!(
            mem.total_kib > 0 && mem.free_kib <= mem.total_kib,
            "{mem:?}"
        );
        let nics = w.nics(&root);
        assert!(nics.iter().all(|n| n.vif.is_none()), "{nics:?}");
        assert!(w.control_features().is_empty());
    }
}
