//! OS family detection. On Linux from `/etc/os-release` (`ID`, then `ID_LIKE`), falling back to
//! the classic release files; Windows and FreeBSD by compile target.

use guestd_core::Root;

/// The OS families guestd knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OsFamily {
    /// Debian, Ubuntu and derivatives.
    Debian,
    /// RHEL, CentOS, Fedora, Rocky, Alma, Oracle, Amazon Linux.
    RedHat,
    /// openSUSE, SLES.
    Suse,
    Alpine,
    Arch,
    Gentoo,
    FreeBsd,
    Windows,
    /// A Linux (or sandbox) we cannot place.
    Unknown,
}

impl OsFamily {
    pub fn name(self) -> &'static str {
        match self {
            Self::Debian => "debian",
            Self::RedHat => "redhat",
            Self::Suse => "suse",
            Self::Alpine => "alpine",
            Self::Arch => "arch",
            Self::Gentoo => "gentoo",
            Self::FreeBsd => "freebsd",
            Self::Windows => "windows",
            Self::Unknown => "unknown",
        }
    }

    /// Map an os-release `ID` or `ID_LIKE` word.
    pub fn from_id(id: &str) -> Option<Self> {
        Some(match id.trim().to_ascii_lowercase().as_str() {
            "debian" | "ubuntu" | "raspbian" | "linuxmint" | "devuan" => Self::Debian,
            "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" | "redhat" => {
                Self::RedHat
            }
            "suse" | "opensuse" | "sles" | "sled" | "opensuse-leap" | "opensuse-tumbleweed" => {
                Self::Suse
            }
            "alpine" => Self::Alpine,
            "arch" | "archlinux" | "manjaro" => Self::Arch,
            "gentoo" => Self::Gentoo,
            "freebsd" => Self::FreeBsd,
            _ => return None,
        })
    }

    /// Detect the family of the system under `root`.
    pub fn detect(root: &Root) -> Self {
        if cfg!(windows) {
            return Self::Windows;
        }
        if cfg!(target_os = "freebsd") {
            return Self::FreeBsd;
        }
        if let Ok(text) = root.read_to_string("/etc/os-release") {
            if let Some(family) = parse_os_release(&text) {
                return family;
            }
        }
        const MARKERS: [(&str, OsFamily); 6] = [
            ("/etc/debian_version", OsFamily::Debian),
            ("/etc/redhat-release", OsFamily::RedHat),
            ("/etc/SuSE-release", OsFamily::Suse),
            ("/etc/alpine-release", OsFamily::Alpine),
            ("/etc/arch-release", OsFamily::Arch),
            ("/etc/gentoo-release", OsFamily::Gentoo),
        ];
        MARKERS
            .iter()
            .find(|(path, _)| root.exists(path))
            .map_or(Self::Unknown, |(_, f)| *f)
    }
}

/// `ID` first, then each word of `ID_LIKE`.
fn parse_os_release(text: &str) -> Option<OsFamily> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    value("ID")
        .and_then(|id| OsFamily::from_id(&id))
        .or_else(|| {
            value("ID_LIKE")?
                .split_whitespace()
                .find_map(OsFamily::from_id)
        })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn os_release_id_then_id_like() {
        assert_eq!(
            parse_os_release("ID=ubuntu\nID_LIKE=debian\n"),
            Some(OsFamily::Debian)
        );
        assert_eq!(parse_os_release("ID=\"rocky\"\n"), Some(OsFamily::RedHat));
        assert_eq!(
            parse_os_release("ID=pop\nID_LIKE=\"ubuntu debian\"\n"),
            Some(OsFamily::Debian)
        );
        assert_eq!(parse_os_release("ID=weird\n"), None);
    }

    #[cfg(unix)]
    #[test]
    fn detects_from_sandbox_files() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        assert_eq!(OsFamily::detect(&root), OsFamily::Unknown);
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/alpine-release"), "3.19\n").unwrap();
        assert_eq!(OsFamily::detect(&root), OsFamily::Alpine);
        std::fs::write(d.path().join("etc/os-release"), "ID=fedora\n").unwrap();
        assert_eq!(OsFamily::detect(&root), OsFamily::RedHat);
    }
}
