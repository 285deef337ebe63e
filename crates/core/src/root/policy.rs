//! Allow/deny path prefixes (the file injection's `[inject] allow`/`deny`), compared per
//! component. Windows paths compare case-insensitively after normalising `\\?\`, `/` against
//! `\` and the drive letter; a Windows path without a drive is never permitted, and a prefix
//! without a drive applies on every drive.

/// Where changes may be made. Empty `allow`: everywhere not denied. `deny` wins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathPolicy {
    allow: Vec<String>,
    deny: Vec<String>,
    windows: bool,
}

/// A path split for comparison: drive (Windows) and components.
#[derive(Debug, PartialEq, Eq)]
struct Split {
    drive: Option<char>,
    parts: Vec<String>,
}

impl PathPolicy {
    /// The policy for this guest's path style (Windows on Windows, else Unix).
    pub fn new(allow: Vec<String>, deny: Vec<String>) -> Self {
        Self {
            allow,
            deny,
            windows: cfg!(windows),
        }
    }

    /// The same prefixes judged as Windows paths (tests of the Windows rules on any host).
    pub fn windows(allow: Vec<String>, deny: Vec<String>) -> Self {
        Self {
            allow,
            deny,
            windows: true,
        }
    }

    /// The same prefixes judged as Unix paths.
    pub fn unix(allow: Vec<String>, deny: Vec<String>) -> Self {
        Self {
            allow,
            deny,
            windows: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a file at `path` may be written.
    pub fn permits(&self, path: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(path) = self.split(path) else {
            return false;
        };
        let allowed = self.allow.is_empty() || self.prefixes(&self.allow).any(|a| under(&path, &a));
        allowed && !self.prefixes(&self.deny).any(|d| under(&path, &d))
    }

    /// Whether the directory `path` may be created: not denied, and under an allowed prefix or
    /// on the way to one.
    pub fn permits_dir(&self, path: &str) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(path) = self.split(path) else {
            return false;
        };
        let allowed = self.allow.is_empty()
            || self
                .prefixes(&self.allow)
                .any(|a| under(&path, &a) || under(&a, &path));
        allowed && !self.prefixes(&self.deny).any(|d| under(&path, &d))
    }

    fn prefixes<'a>(&'a self, list: &'a [String]) -> impl Iterator<Item = Split> + 'a {
        list.iter().filter_map(|p| self.split_prefix(p))
    }

    /// A path to judge; `None` (never permitted) for a Windows path without a drive.
    fn split(&self, path: &str) -> Option<Split> {
        let s = if self.windows {
            split_windows(path)?
        } else {
            split_unix(path)
        };
        (!self.windows || s.drive.is_some()).then_some(s)
    }

    /// A configured prefix (a Windows prefix without a drive matches on every drive).
    fn split_prefix(&self, prefix: &str) -> Option<Split> {
        if self.windows {
            split_windows(prefix)
        } else {
            Some(split_unix(prefix))
        }
    }
}

/// `path` is `prefix` or below it, component by component (a driveless prefix: any drive).
fn under(path: &Split, prefix: &Split) -> bool {
    let drive_ok = prefix.drive.is_none() || prefix.drive == path.drive;
    drive_ok && path.parts.len() >= prefix.parts.len() && path.parts.starts_with(&prefix.parts)
}

fn split_unix(path: &str) -> Split {
    Split {
        drive: None,
        parts: path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect(),
    }
}

/// `\\?\C:\x`, `c:/x`, `C:\X\` → drive `C`, parts `["x"]` (lower case). `None` for UNC,
/// device and drive-relative (`C:x`) forms.
fn split_windows(path: &str) -> Option<Split> {
    let unified = path.replace('/', "\\");
    let rest = match unified.strip_prefix(r"\\?\") {
        Some(verbatim) => verbatim,
        None if unified.starts_with(r"\\") => return None,
        None => unified.as_str(),
    };
    let bytes = rest.as_bytes();
    let (drive, tail) = if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        if bytes.get(2).is_some_and(|b| *b != b'\\') {
            return None;
        }
        (Some(char::from(bytes[0].to_ascii_uppercase())), &rest[2..])
    } else if rest.starts_with('\\') {
        (None, rest)
    } else {
        return None;
    };
    Some(Split {
        drive,
        parts: tail
            .split('\\')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_lowercase)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unix_prefixes_are_per_component_and_case_sensitive() {
        let p = PathPolicy::unix(list(&["/root", "/tmp"]), list(&["/root/secret"]));
        assert!(p.permits("/root/.ssh/authorized_keys"));
        assert!(p.permits("/root"));
        assert!(!p.permits("/rootkit/x"));
        assert!(!p.permits("/root/secret/x"));
        assert!(!p.permits("/Root/x"));
        assert!(!p.permits("/etc/passwd"));
        // Directories on the way to an allowed prefix may be created.
        assert!(p.permits_dir("/"));
        assert!(!p.permits_dir("/etc"));
        assert!(!p.permits_dir("/root/secret"));
        assert!(PathPolicy::unix(vec![], vec![]).permits("/anything"));
    }

    #[test]
    fn windows_prefixes_ignore_case_separators_and_verbatim_forms() {
        let p = PathPolicy::windows(vec![], list(&[r"C:\Windows"]));
        for denied in [
            r"c:\windows\x",
            r"C:\WINDOWS\System32\drivers\etc\hosts",
            r"\\?\C:\Windows\x",
            "c:/windows/x",
            r"C:\Windows",
            r"C:\\Windows\\x",
        ] {
            assert!(!p.permits(denied), "{denied} must be denied");
        }
        assert!(p.permits(r"C:\WindowsApps\x"));
        assert!(
            p.permits(r"D:\Windows\x"),
            "a prefix with a drive is only that drive"
        );
        // Without a drive, or not on a local drive: never permitted.
        for bad in [
            r"\windows\x",
            r"\data\x",
            r"\\server\share\x",
            r"\\.\PhysicalDrive0",
            "C:rel",
        ] {
            assert!(!p.permits(bad), "{bad} must be refused");
        }
    }

    #[test]
    fn windows_driveless_prefixes_apply_on_every_drive_and_allow_lists_work() {
        let p = PathPolicy::windows(list(&[r"c:\Data", r"\Shared"]), list(&[r"\Shared\Private"]));
        assert!(p.permits(r"C:\data\x.txt"));
        assert!(p.permits(r"\\?\C:\DATA\x.txt"));
        assert!(!p.permits(r"D:\data\x.txt"));
        assert!(p.permits(r"E:\shared\x"));
        assert!(!p.permits(r"E:\shared\private\x"));
        assert!(!p.permits(r"C:\other"));
        assert!(p.permits_dir(r"C:\"));
        assert!(!p.permits_dir(r"C:\other"));
    }
}
