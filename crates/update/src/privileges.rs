//! Dropping root before touching the network: `--user NAME` becomes that user's uid and gid
//! with no supplementary groups (and so no capabilities), and on Linux `no_new_privs`, so that
//! nothing the helper could exec regains privileges. Only when started as root; otherwise the
//! helper already runs as whoever started it.

/// The uid and gid of `name` from `passwd` text (`/etc/passwd`). `nobody` falls back to the
/// kernel's overflow id 65534 when the file has no such entry.
pub fn lookup(passwd: &str, name: &str) -> Result<(u32, u32), String> {
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == name {
            let uid = fields[2]
                .parse()
                .map_err(|_| format!("bad uid for {name}"))?;
            let gid = fields[3]
                .parse()
                .map_err(|_| format!("bad gid for {name}"))?;
            return Ok((uid, gid));
        }
    }
    if name == "nobody" {
        return Ok((65534, 65534));
    }
    Err(format!("no user '{name}' in /etc/passwd"))
}

/// Become `name` if running as root. Returns the uid now in effect.
#[cfg(unix)]
#[allow(unsafe_code)]
pub fn drop_to(name: &str) -> Result<u32, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // SAFETY: as above.
        return Ok(unsafe { libc::geteuid() });
    }
    // An unreadable passwd file is only survivable for `nobody` (the kernel's overflow id).
    let passwd = match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => text,
        Err(_) if name == "nobody" => String::new(),
        Err(e) => return Err(format!("cannot read /etc/passwd to find '{name}': {e}")),
    };
    let (uid, gid) = lookup(&passwd, name)?;
    if uid == 0 {
        return Err(format!("refusing to run the download as '{name}' (uid 0)"));
    }
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on integers and a null list; called at the start of main,
    // before any other thread exists, so the whole process changes identity.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os("setgroups"));
        }
        if libc::setgid(gid as libc::gid_t) != 0 {
            return Err(os("setgid"));
        }
        if libc::setuid(uid as libc::uid_t) != 0 {
            return Err(os("setuid"));
        }
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os("prctl(PR_SET_NO_NEW_PRIVS)"));
        }
        // Root must be gone for good.
        if libc::setuid(0) == 0 || libc::geteuid() == 0 || libc::getegid() == 0 {
            return Err("still privileged after dropping to the helper user".into());
        }
    }
    Ok(uid)
}

/// No users to switch to here: the helper runs as the service's account.
#[cfg(not(unix))]
pub fn drop_to(_name: &str) -> Result<u32, String> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_users() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65533::/:/sbin/nologin\n\
                      _update:x:990:991::/:/sbin/nologin\n";
        assert_eq!(lookup(passwd, "_update"), Ok((990, 991)));
        assert_eq!(lookup(passwd, "nobody"), Ok((65534, 65533)));
        assert_eq!(lookup("", "nobody"), Ok((65534, 65534)));
        assert!(lookup(passwd, "ghost").is_err());
        assert!(lookup("x:x:y:0::/:\n", "x").is_err());
    }
}
