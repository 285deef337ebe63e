//! `/etc/shadow` (and FreeBSD `/etc/master.passwd`) as text: find and replace one user's
//! password field, leaving every other byte of the file as it was; and the shadow lock.

use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use guestd_core::file_lock::{FileLock, LOCK_TIMEOUT};
use guestd_core::{BackendError, Root};

/// The lock file `lckpwdf(3)` uses, relative to the root.
pub const LOCK_FILE: &str = "/etc/.pwd.lock";

/// A user name we are willing to put into `user:hash` lines and argv.
pub fn check_user_name(user: &str) -> Result<(), BackendError> {
    let ok = !user.is_empty()
        && user.len() <= 256
        && !user.starts_with('-')
        && !user
            .chars()
            .any(|c| c == ':' || c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(BackendError::Invalid(format!(
            "invalid user name '{}'",
            user.escape_default()
        )))
    }
}

/// The password field of `user` (field 2 of the first line starting with `user:`).
pub fn password_field<'a>(text: &'a [u8], user: &str) -> Option<&'a [u8]> {
    text.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(user.as_bytes())?.strip_prefix(b":"))
        .map(|rest| rest.split(|&b| b == b':').next().unwrap_or(rest))
}

/// `text` with the first `user:` line's password field set to `hash` and, when `today` is
/// given and the line has a non-empty "last change" field (shadow field 3), that field set to
/// `today`. Every other byte is unchanged. `None` when the user has no line.
pub fn replace_password(
    text: &[u8],
    user: &str,
    hash: &str,
    today: Option<u64>,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() + hash.len()));
    let mut done = false;
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let is_target =
            !done && line.starts_with(user.as_bytes()) && line.get(user.len()) == Some(&b':');
        if !is_target {
            out.extend_from_slice(line);
            continue;
        }
        done = true;
        for (f, field) in line.split(|&b| b == b':').enumerate() {
            if f > 0 {
                out.push(b':');
            }
            match (f, today) {
                (1, _) => out.extend_from_slice(hash.as_bytes()),
                (2, Some(day)) if !field.is_empty() => {
                    out.extend_from_slice(day.to_string().as_bytes())
                }
                _ => out.extend_from_slice(field),
            }
        }
    }
    done.then_some(out)
}

/// Days since 1970-01-01 (shadow's "date of last password change").
pub fn days_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// The shadow lock (`lckpwdf` semantics: a write `fcntl` lock on `<root>/etc/.pwd.lock`, see
/// `guestd_core::file_lock`), released on drop. Plans take it themselves
/// (`FileChange::Update { lock, .. }`); this is for code that reads and writes under it.
#[derive(Debug)]
pub struct ShadowLock {
    _lock: FileLock,
}

impl ShadowLock {
    pub fn acquire(root: &Root) -> Result<Self, BackendError> {
        FileLock::acquire(root, LOCK_FILE, LOCK_TIMEOUT)
            .map(|lock| Self { _lock: lock })
            .map_err(|e| BackendError::Failed(format!("the password files are not locked: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    const SHADOW: &[u8] = b"root:*:19000:0:99999:7:::\n# a comment\nrootx:!:19000::::::\ndaemon:*:19000:0:99999:7:::\n";

    #[test]
    fn finds_the_right_user() {
        assert_eq!(password_field(SHADOW, "root"), Some(&b"*"[..]));
        assert_eq!(password_field(SHADOW, "rootx"), Some(&b"!"[..]));
        assert_eq!(password_field(SHADOW, "nobody"), None);
        assert_eq!(password_field(SHADOW, "roo"), None);
    }

    #[test]
    fn replaces_only_the_password_and_date() {
        let out = replace_password(SHADOW, "root", "$6$s$h", Some(20000)).unwrap();
        assert_eq!(
            out.as_slice(),
            &b"root:$6$s$h:20000:0:99999:7:::\n# a comment\nrootx:!:19000::::::\ndaemon:*:19000:0:99999:7:::\n"[..]
        );
        let out = replace_password(SHADOW, "rootx", "$6$s$h", None).unwrap();
        assert!(out.starts_with(b"root:*:19000:"));
        assert!(out.ends_with(b"rootx:$6$s$h:19000::::::\ndaemon:*:19000:0:99999:7:::\n"));
        assert!(replace_password(SHADOW, "nobody", "x", None).is_none());
        // No trailing newline stays without one; an empty date field stays empty.
        let out = replace_password(b"root:*::0:99999:7:::", "root", "H", Some(5)).unwrap();
        assert_eq!(out.as_slice(), b"root:H::0:99999:7:::");
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("root").is_ok());
        assert!(check_user_name("Administrator").is_ok());
        for bad in ["", "a:b", "a\nb", "-R", "a b"] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Probe the lock from another process (fcntl locks are per process) with Python's
    /// `fcntl.lockf`, which is `fcntl(F_SETLK)` like glibc's `lckpwdf`.
    #[cfg(unix)]
    #[allow(clippy::disallowed_methods)] // test-only spawn of a peer process
    fn other_process_can_lock(path: &std::path::Path) -> bool {
        let script = "import fcntl,sys\nf=open(sys.argv[1],'a')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept OSError:\n sys.exit(3)\n";
        let status = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(path)
            .status()
            .expect("python3 is required for this test (apt-get install python3)");
        match status.code() {
            Some(0) => true,
            Some(3) => false,
            other => panic!("lock probe failed: {other:?}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn lock_excludes_other_processes_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let path = root.resolve(LOCK_FILE).unwrap();
        let held = ShadowLock::acquire(&root).unwrap();
        assert!(!other_process_can_lock(&path));
        drop(held);
        assert!(other_process_can_lock(&path));
    }
}
