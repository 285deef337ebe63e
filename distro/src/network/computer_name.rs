//! Windows: the hostname of `resetnetwork`, set with
//! `SetComputerNameExW(ComputerNamePhysicalDnsHostname, …)`.
//!
//! Windows applies a new computer name at the next boot; guestd never reboots behind the
//! host's back, so it sets the name, logs it and says so in the reply. The DNS host label is
//! checked first (1–63 letters, digits or hyphens, not all digits); Windows derives the NetBIOS
//! name from it (the first 15 characters, upper-cased), which is logged when it truncates.
//! Nothing is set when the name waiting for the next boot already is the requested one.
//!
//! [`plan`] decides (reading only the pending name); `guestd_core::apply_network_plan` sets it.
//! [`ComputerName`] (core's) is the capability: [`SystemComputerName`] is the real one
//! (Windows only), tests give the backend a [`RecordingComputerName`].

use std::sync::{Arc, Mutex};

use guestd_core::{BackendError, ComputerNameChange};
use tracing::info;

use super::model::{Hostname, NetworkError, invalid};

/// Windows' limit for the NetBIOS computer name.
pub const NETBIOS_MAX: usize = 15;

pub use guestd_core::ComputerName;

/// The computer's own name through kernel32 (Windows); elsewhere every call is unsupported.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemComputerName;

impl ComputerName for SystemComputerName {
    fn pending(&self) -> Result<String, BackendError> {
        #[cfg(windows)]
        return glue::pending();
        #[cfg(not(windows))]
        Err(BackendError::Unsupported(
            "the Windows computer name".into(),
        ))
    }

    fn set(&self, label: &str) -> Result<(), BackendError> {
        #[cfg(windows)]
        return glue::set(label);
        #[cfg(not(windows))]
        {
            let _ = label;
            Err(BackendError::Unsupported(
                "the Windows computer name".into(),
            ))
        }
    }
}

/// The DNS host label Windows gets for `name`: its first label, checked against Windows' rules.
pub fn host_label(name: &Hostname) -> Result<&str, NetworkError> {
    let label = name.short();
    // Hostname::parse already enforces 1-63 characters of letters, digits and '-', not at
    // either end; Windows also refuses a name of digits only.
    if label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "hostname '{label}' is not valid on Windows: it is all digits"
        )));
    }
    Ok(label)
}

/// What the plan does about the computer name for `name`: the change to make (none when the
/// name waiting for the next boot already is the requested one) and the notice for the host
/// (the name takes effect after a reboot). Only the pending name is read here; the change is
/// made by `guestd_core::apply_network_plan` once the network is configured.
pub fn plan(
    names: &Arc<dyn ComputerName>,
    name: &Hostname,
) -> Result<(Option<ComputerNameChange>, String), BackendError> {
    let label = host_label(name).map_err(|e| BackendError::Invalid(e.to_string()))?;
    if name.as_str() != label {
        info!(
            hostname = %name,
            host = label,
            "Windows takes the host label only; the DNS suffix is left as it is"
        );
    }
    let pending = names.pending()?;
    if pending == label {
        info!(
            hostname = label,
            "computer name already set; it takes effect after a reboot (guestd does not reboot)"
        );
        return Ok((
            None,
            format!("hostname '{label}' is already set; it takes effect after a reboot"),
        ));
    }
    if label.len() > NETBIOS_MAX {
        info!(
            hostname = label,
            netbios = %label[..NETBIOS_MAX].to_ascii_uppercase(),
            "the NetBIOS name is the first {NETBIOS_MAX} characters of the host name"
        );
    }
    let change = ComputerNameChange {
        label: label.to_string(),
        previous: pending,
        names: Arc::clone(names),
    };
    Ok((
        Some(change),
        format!("hostname set to '{label}'; it takes effect after a reboot"),
    ))
}

#[cfg(windows)]
#[allow(unsafe_code)]
mod glue {
    use guestd_core::BackendError;
    use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_SUCCESS};
    use windows_sys::Win32::System::Registry::{HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ, RegGetValueW};
    use windows_sys::Win32::System::SystemInformation::{
        ComputerNamePhysicalDnsHostname, GetComputerNameExW, SetComputerNameExW,
    };

    /// Where Windows keeps the host name of the next boot (`NV Hostname`).
    const TCPIP_PARAMETERS: &str = r"SYSTEM\CurrentControlSet\Services\Tcpip\Parameters";

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain(Some(0)).collect()
    }

    fn text(buf: &[u16]) -> String {
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        String::from_utf16_lossy(&buf[..end])
    }

    /// `NV Hostname` (what the next boot uses); without it (Wine writes `Hostname` at once),
    /// the current name.
    pub fn pending() -> Result<String, BackendError> {
        let key = wide(TCPIP_PARAMETERS);
        let value = wide("NV Hostname");
        let mut buf = [0u16; 256];
        let mut size = std::mem::size_of_val(&buf) as u32;
        // SAFETY: key and value are NUL-terminated; `buf` has `size` bytes; the type
        // out-pointer may be null.
        let rc = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                value.as_ptr(),
                RRF_RT_REG_SZ,
                std::ptr::null_mut(),
                buf.as_mut_ptr().cast(),
                &mut size,
            )
        };
        match rc {
            ERROR_SUCCESS => return Ok(text(&buf)),
            ERROR_FILE_NOT_FOUND => {}
            rc => {
                return Err(BackendError::Failed(format!(
                    "reading the pending host name (NV Hostname) failed with error {rc}"
                )));
            }
        }
        let mut len = buf.len() as u32;
        // SAFETY: `buf` holds `len` UTF-16 units.
        let ok = unsafe {
            GetComputerNameExW(ComputerNamePhysicalDnsHostname, buf.as_mut_ptr(), &mut len)
        };
        if ok == 0 {
            return Err(BackendError::Failed(format!(
                "GetComputerNameExW failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(text(&buf))
    }

    pub fn set(label: &str) -> Result<(), BackendError> {
        let name = wide(label);
        // SAFETY: `name` is NUL-terminated and alive for the call.
        let ok = unsafe { SetComputerNameExW(ComputerNamePhysicalDnsHostname, name.as_ptr()) };
        if ok == 0 {
            return Err(BackendError::Failed(format!(
                "SetComputerNameExW('{label}') failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

/// A recording stand-in for tests: `pending` is the name waiting for the next boot; every
/// name set is recorded (and becomes the pending one).
#[derive(Debug, Default)]
pub struct RecordingComputerName {
    pub pending: Mutex<String>,
    pub set: Mutex<Vec<String>>,
}

impl RecordingComputerName {
    pub fn with_pending(name: &str) -> Self {
        Self {
            pending: Mutex::new(name.to_string()),
            set: Mutex::default(),
        }
    }

    /// The names set so far.
    pub fn names_set(&self) -> Vec<String> {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ComputerName for RecordingComputerName {
    fn pending(&self) -> Result<String, BackendError> {
        Ok(self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    fn set(&self, label: &str) -> Result<(), BackendError> {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(label.to_string());
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = label.to_string();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Hostname {
        Hostname::parse(s).unwrap()
    }

    /// Plans as the backend does, then sets as `apply_network_plan` does.
    fn plan_and_set(r: &Arc<RecordingComputerName>, host: &str) -> Result<String, BackendError> {
        let names: Arc<dyn ComputerName> = r.clone();
        let (change, notice) = plan(&names, &name(host))?;
        if let Some(change) = change {
            change.names.set(&change.label)?;
        }
        Ok(notice)
    }

    #[test]
    fn sets_the_host_label_and_says_a_reboot_is_needed() {
        let r = Arc::new(RecordingComputerName::with_pending("WIN-OLD"));
        let names: Arc<dyn ComputerName> = r.clone();
        // Planning sets nothing.
        let (change, _) = plan(&names, &name("web-01.example.com")).unwrap();
        let change = change.unwrap();
        assert_eq!(
            (change.label.as_str(), change.previous.as_str()),
            ("web-01", "WIN-OLD")
        );
        assert!(r.names_set().is_empty());
        let notice = plan_and_set(&r, "web-01.example.com").unwrap();
        assert_eq!(
            notice,
            "hostname set to 'web-01'; it takes effect after a reboot"
        );
        assert_eq!(r.names_set(), ["web-01"]);
        // The same name again: nothing to set, still pending a reboot.
        let (change, notice) = plan(&names, &name("web-01")).unwrap();
        assert!(change.is_none());
        assert_eq!(
            notice,
            "hostname 'web-01' is already set; it takes effect after a reboot"
        );
        assert_eq!(r.names_set().len(), 1);
    }

    #[test]
    fn long_names_are_set_whole() {
        // Windows derives the 15-character NetBIOS name itself; the DNS label is set whole.
        let r = Arc::new(RecordingComputerName::default());
        plan_and_set(&r, "a-very-long-host-name-01").unwrap();
        assert_eq!(r.names_set(), ["a-very-long-host-name-01"]);
    }

    #[test]
    fn windows_refuses_all_digit_names() {
        let r = Arc::new(RecordingComputerName::default());
        let err = plan_and_set(&r, "12345").unwrap_err().to_string();
        assert_eq!(
            err,
            "hostname '12345' is not valid on Windows: it is all digits"
        );
        assert!(r.names_set().is_empty());
        assert!(host_label(&name("1a")).is_ok());
    }

    /// Read-only smoke test of the glue (setting it is tested end to end in a private Wine
    /// prefix, tests/tests/windows.rs).
    #[cfg(windows)]
    #[test]
    fn the_real_one_reads_the_pending_name() {
        let name = SystemComputerName.pending().unwrap();
        assert!(!name.is_empty());
    }

    #[cfg(not(windows))]
    #[test]
    fn the_real_one_is_unsupported_off_windows() {
        assert!(SystemComputerName.pending().is_err());
        assert!(SystemComputerName.set("x").is_err());
    }
}
