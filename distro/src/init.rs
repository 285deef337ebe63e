//! Which init system manages the guest's services, found from the guest's files (through
//! `Root`, so a sandbox tree is judged like a real system).

use guestd_core::Root;

use crate::OsFamily;

/// The service manager of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitSystem {
    Systemd {
        /// A systemd runs for this root (`/run/systemd/system` on the guest itself); not in
        /// a `--root` tree or a chroot.
        running: bool,
    },
    OpenRc {
        running: bool,
    },
    /// `/etc/init.d` scripts with `update-rc.d` or `chkconfig`.
    SysV {
        running: bool,
    },
    /// FreeBSD's rc.d (`rc.conf`, `service`).
    RcD {
        running: bool,
    },
    /// The Windows service control manager.
    Scm {
        running: bool,
    },
    Unknown,
}

impl InitSystem {
    pub fn name(self) -> &'static str {
        match self {
            Self::Systemd { .. } => "systemd",
            Self::OpenRc { .. } => "openrc",
            Self::SysV { .. } => "sysv",
            Self::RcD { .. } => "rc.d",
            Self::Scm { .. } => "windows-scm",
            Self::Unknown => "unknown",
        }
    }

    /// Whether a service manager runs for this root, so that services can be started and
    /// stopped (never in a `--root` sandbox: the one that runs belongs to this machine).
    pub fn is_running(self) -> bool {
        match self {
            Self::Systemd { running }
            | Self::OpenRc { running }
            | Self::SysV { running }
            | Self::RcD { running }
            | Self::Scm { running } => running,
            Self::Unknown => false,
        }
    }

    /// Detect the init system of the system under `root`.
    pub fn detect(root: &Root, family: OsFamily) -> Self {
        let live = !root.is_sandbox();
        match family {
            OsFamily::Windows => return Self::Scm { running: live },
            OsFamily::FreeBsd => return Self::RcD { running: live },
            _ => {}
        }
        if root.is_dir("/run/systemd/system") {
            return Self::Systemd { running: live };
        }
        if root.exists("/sbin/openrc") || root.exists("/sbin/openrc-run") {
            return Self::OpenRc {
                running: live && root.exists("/run/openrc/softlevel"),
            };
        }
        let systemd_init = ["/sbin/init", "/usr/sbin/init"].iter().any(|init| {
            root.read_link(init)
                .is_ok_and(|t| t.to_string_lossy().contains("systemd"))
        });
        if systemd_init
            || root.exists("/lib/systemd/systemd")
            || root.exists("/usr/lib/systemd/systemd")
        {
            // Installed but not running for this root (a chroot, an image being built).
            return Self::Systemd { running: false };
        }
        if root.is_dir("/etc/init.d") {
            return Self::SysV { running: live };
        }
        Self::Unknown
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn detects_from_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let family = OsFamily::Debian;
        assert_eq!(InitSystem::detect(&root, family), InitSystem::Unknown);
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        assert_eq!(
            InitSystem::detect(&root, family),
            InitSystem::SysV { running: false }
        );
        std::fs::create_dir_all(d.path().join("lib/systemd")).unwrap();
        std::fs::write(d.path().join("lib/systemd/systemd"), "").unwrap();
        assert_eq!(
            InitSystem::detect(&root, family),
            InitSystem::Systemd { running: false }
        );
        // A sandbox never has a running manager, even with systemd's marker in it.
        std::fs::create_dir_all(d.path().join("run/systemd/system")).unwrap();
        let init = InitSystem::detect(&root, family);
        assert_eq!(init, InitSystem::Systemd { running: false });
        assert!(!init.is_running());
        assert_eq!(
            InitSystem::detect(&root, OsFamily::FreeBsd),
            InitSystem::RcD { running: false }
        );
    }
}
