//! Who serves the named pipe guestctl connected to. Any local program can create
//! `\\.\pipe\guestd` first (before guestd starts, or after it stopped) and read what guestctl
//! sends, a password included. guestd's pipe is created by SYSTEM (the service) or an
//! administrator, so guestctl talks only to a pipe whose owner is SYSTEM or the Administrators
//! group, or whose server process runs as SYSTEM or with the Administrators group enabled
//! (an elevated administrator); anything else is refused before a byte is sent.
//!
//! The decision ([`judge`]) is plain code tested everywhere; reading the owner and the server's
//! token is Windows glue.

/// LocalSystem.
pub const SYSTEM_SID: &str = "S-1-5-18";
/// BUILTIN\Administrators.
pub const ADMINISTRATORS_SID: &str = "S-1-5-32-544";

/// What guestctl found out about the pipe's server (each part may be unknown: an error text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The owner SID of the pipe object.
    pub owner: Result<String, String>,
    /// The server process id.
    pub pid: Option<u32>,
    /// The server process's user SID, and whether its token has the Administrators group
    /// enabled.
    pub user: Result<(String, bool), String>,
}

/// `Ok` when the pipe is served by SYSTEM or an administrator; else why not.
pub fn judge(pipe: &str, who: &ServerIdentity) -> Result<(), String> {
    let trusted_owner = who
        .owner
        .as_ref()
        .is_ok_and(|sid| sid == SYSTEM_SID || sid == ADMINISTRATORS_SID);
    let trusted_user = who
        .user
        .as_ref()
        .is_ok_and(|(sid, admin)| sid == SYSTEM_SID || *admin);
    if trusted_owner || trusted_user {
        return Ok(());
    }
    let owner = match &who.owner {
        Ok(sid) => format!("owned by {sid}"),
        Err(e) => format!("owner unknown ({e})"),
    };
    let process = match (who.pid, &who.user) {
        (Some(pid), Ok((sid, _))) => format!("served by process {pid} running as {sid}"),
        (Some(pid), Err(e)) => format!("served by process {pid} (its user unknown: {e})"),
        (None, _) => "its server process unknown".to_owned(),
    };
    Err(format!(
        "refusing to talk to {pipe}: it is {owner}, {process}, which is neither SYSTEM nor an \
         administrator; another program may have taken guestd's pipe name (is guestd running?)"
    ))
}

#[cfg(windows)]
pub use glue::identify;

#[cfg(windows)]
#[allow(unsafe_code)]
mod glue {
    use std::ffi::c_void;
    use std::os::windows::io::RawHandle;

    use windows_sys::Win32::Foundation::{CloseHandle, FALSE, HANDLE, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, GetSecurityInfo, SE_KERNEL_OBJECT,
    };
    use windows_sys::Win32::Security::{
        GetTokenInformation, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
        SID_AND_ATTRIBUTES, TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_QUERY, TOKEN_USER,
        TokenGroups, TokenUser,
    };
    use windows_sys::Win32::System::Pipes::GetNamedPipeServerProcessId;
    use windows_sys::Win32::System::SystemServices::SE_GROUP_ENABLED;
    use windows_sys::Win32::System::Threading::{
        OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
    };

    use super::{ADMINISTRATORS_SID, ServerIdentity};

    fn last_error(what: &str) -> String {
        format!("{what}: {}", std::io::Error::last_os_error())
    }

    /// The owner of the pipe behind `pipe` and its server process's identity.
    pub fn identify(pipe: RawHandle) -> ServerIdentity {
        let pipe = pipe as HANDLE;
        let owner = pipe_owner(pipe);
        let mut pid = 0u32;
        // SAFETY: a valid pipe handle and an out-pointer to a u32.
        let pid = (unsafe { GetNamedPipeServerProcessId(pipe, &mut pid) } != 0).then_some(pid);
        let user = match pid {
            Some(pid) => process_user(pid),
            None => Err(last_error("GetNamedPipeServerProcessId")),
        };
        ServerIdentity { owner, pid, user }
    }

    fn pipe_owner(pipe: HANDLE) -> Result<String, String> {
        let mut owner: PSID = std::ptr::null_mut();
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: valid handle; only the owner is asked for; `descriptor` receives a
        // LocalAlloc'ed buffer (freed below) that `owner` points into.
        let status = unsafe {
            GetSecurityInfo(
                pipe,
                SE_KERNEL_OBJECT,
                OWNER_SECURITY_INFORMATION,
                &mut owner,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if status != 0 {
            return Err(format!(
                "GetSecurityInfo: {}",
                std::io::Error::from_raw_os_error(status as i32)
            ));
        }
        // Wine, at least, hands back a descriptor without an owner.
        let sid = if owner.is_null() {
            Err("the pipe's security descriptor names no owner".to_owned())
        } else {
            sid_string(owner)
        };
        // SAFETY: allocated by GetSecurityInfo, freed once; `owner` is not used after this.
        unsafe { LocalFree(descriptor) };
        sid
    }

    fn process_user(pid: u32) -> Result<(String, bool), String> {
        // SAFETY: plain call; the handle is closed below.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid) };
        if process.is_null() {
            return Err(last_error("OpenProcess"));
        }
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: valid process handle, out-pointer to a handle closed below.
        let opened = unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } != 0;
        // SAFETY: opened above, closed once.
        unsafe { CloseHandle(process) };
        if !opened {
            return Err(last_error("OpenProcessToken"));
        }
        let result = token_user(token);
        // SAFETY: opened above, closed once.
        unsafe { CloseHandle(token) };
        result
    }

    fn token_user(token: HANDLE) -> Result<(String, bool), String> {
        let user = token_info(token, TokenUser)?;
        // SAFETY: the buffer holds a TOKEN_USER (8-aligned) whose SID points into it.
        let user_sid = unsafe { (*user.as_ptr().cast::<TOKEN_USER>()).User.Sid };
        let user_sid = sid_string(user_sid)?;
        let groups = token_info(token, TokenGroups)?;
        // SAFETY: the buffer holds a TOKEN_GROUPS with GroupCount entries following it.
        let admin = unsafe {
            let header = groups.as_ptr().cast::<TOKEN_GROUPS>();
            let count = (*header).GroupCount as usize;
            let first = std::ptr::addr_of!((*header).Groups).cast::<SID_AND_ATTRIBUTES>();
            (0..count).any(|i| {
                let group = *first.add(i);
                group.Attributes & SE_GROUP_ENABLED as u32 != 0
                    && sid_string(group.Sid).is_ok_and(|s| s == ADMINISTRATORS_SID)
            })
        };
        Ok((user_sid, admin))
    }

    /// A token information buffer, 8-aligned.
    fn token_info(token: HANDLE, class: TOKEN_INFORMATION_CLASS) -> Result<Vec<u64>, String> {
        let mut needed = 0u32;
        // SAFETY: asking for the size only (null buffer, length 0).
        unsafe { GetTokenInformation(token, class, std::ptr::null_mut(), 0, &mut needed) };
        if needed == 0 {
            return Err(last_error("GetTokenInformation"));
        }
        let mut buffer = vec![0u64; (needed as usize).div_ceil(8)];
        // SAFETY: the buffer is at least `needed` bytes long.
        let ok = unsafe {
            GetTokenInformation(
                token,
                class,
                buffer.as_mut_ptr().cast::<c_void>(),
                needed,
                &mut needed,
            )
        };
        if ok == 0 {
            return Err(last_error("GetTokenInformation"));
        }
        Ok(buffer)
    }

    fn sid_string(sid: PSID) -> Result<String, String> {
        let mut text: *mut u16 = std::ptr::null_mut();
        // SAFETY: `sid` is a valid SID; `text` receives a LocalAlloc'ed string freed below.
        if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
            return Err(last_error("ConvertSidToStringSidW"));
        }
        // SAFETY: a NUL-terminated UTF-16 string from ConvertSidToStringSidW.
        let string = unsafe {
            let len = (0..).take_while(|&i| *text.add(i) != 0).count();
            String::from_utf16_lossy(std::slice::from_raw_parts(text, len))
        };
        // SAFETY: allocated by ConvertSidToStringSidW, freed once.
        unsafe { LocalFree(text.cast()) };
        Ok(string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPE: &str = r"\\.\pipe\guestd";

    fn who(owner: &str, user: &str, admin: bool) -> ServerIdentity {
        ServerIdentity {
            owner: Ok(owner.into()),
            pid: Some(42),
            user: Ok((user.into(), admin)),
        }
    }

    #[test]
    fn system_and_administrators_are_trusted() {
        let user = "S-1-5-21-1-2-3-1001";
        assert!(judge(PIPE, &who(SYSTEM_SID, SYSTEM_SID, false)).is_ok());
        assert!(judge(PIPE, &who(ADMINISTRATORS_SID, user, false)).is_ok());
        // An elevated administrator whose default owner is their own account.
        assert!(judge(PIPE, &who(user, user, true)).is_ok());
        // The owner alone suffices when the process cannot be inspected.
        let unknown = ServerIdentity {
            owner: Ok(SYSTEM_SID.into()),
            pid: None,
            user: Err("access denied".into()),
        };
        assert!(judge(PIPE, &unknown).is_ok());
    }

    #[test]
    fn anyone_else_is_refused_with_the_reason() {
        let user = "S-1-5-21-1-2-3-1001";
        let err = judge(PIPE, &who(user, user, false)).unwrap_err();
        for part in [
            PIPE,
            "owned by S-1-5-21-1-2-3-1001",
            "process 42",
            "neither SYSTEM",
        ] {
            assert!(err.contains(part), "{err}");
        }
        let nothing = ServerIdentity {
            owner: Err("GetSecurityInfo: denied".into()),
            pid: None,
            user: Err("GetNamedPipeServerProcessId: denied".into()),
        };
        let err = judge(PIPE, &nothing).unwrap_err();
        assert!(
            err.contains("owner unknown") && err.contains("server process unknown"),
            "{err}"
        );
    }

    /// The Windows glue against a pipe this process serves (under Wine: a token in the
    /// Administrators group, as the README says, so it is trusted).
    #[cfg(windows)]
    #[test]
    fn identifies_the_server_of_a_real_pipe() {
        use std::os::windows::io::AsRawHandle;
        use tokio::net::windows::named_pipe::{ClientOptions, ServerOptions};

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _inside = rt.enter();
        let name = format!(r"\\.\pipe\guestctl-owner-test-{}", std::process::id());
        let _server = ServerOptions::new().create(&name).unwrap();
        let client = ClientOptions::new().open(&name).unwrap();
        let who = identify(client.as_raw_handle());
        assert_eq!(who.pid, Some(std::process::id()), "{who:?}");
        // Wine's pipes have no owner in their descriptor; Windows' do.
        if let Ok(owner) = &who.owner {
            assert!(owner.starts_with("S-1-5-"), "{who:?}");
        }
        let (user, _) = who.user.clone().unwrap();
        assert!(user.starts_with("S-1-5-"), "{who:?}");
        assert_eq!(judge(&name, &who), Ok(()), "{who:?}");
    }
}
