//! How to restart guestd on this OS, and how to start the update watchdog so that it outlives
//! that restart. Platform-neutral: the OS is a parameter, so every variant is tested on Linux.

use std::time::Duration;

use guestd_core::{Command, Effect, Root};

/// Time a restart command may take.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

/// The OS guestd is built for (detection input; tests pass any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetOs {
    Linux,
    FreeBsd,
    Windows,
}

impl TargetOs {
    pub fn current() -> Self {
        if cfg!(windows) {
            Self::Windows
        } else if cfg!(target_os = "freebsd") {
            Self::FreeBsd
        } else {
            Self::Linux
        }
    }
}

/// The service manager running guestd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    OpenRc,
    /// A SysV init script `/etc/init.d/<service>`.
    SysV,
    /// FreeBSD `rc.d` (`service <name> restart`).
    RcD,
    /// Windows service control manager.
    Scm,
}

impl Manager {
    pub fn name(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::OpenRc => "OpenRC",
            Self::SysV => "SysV init",
            Self::RcD => "rc.d",
            Self::Scm => "Windows SCM",
        }
    }

    /// Find the manager from the guest's files (`Root`, so a sandbox works the same).
    pub fn detect(root: &Root, os: TargetOs, service: &str) -> Option<Self> {
        match os {
            TargetOs::Windows => Some(Self::Scm),
            TargetOs::FreeBsd => Some(Self::RcD),
            TargetOs::Linux if root.is_dir("/run/systemd/system") => Some(Self::Systemd),
            TargetOs::Linux if root.exists("/run/openrc") || root.exists("/sbin/openrc-run") => {
                Some(Self::OpenRc)
            }
            TargetOs::Linux if root.exists(format!("/etc/init.d/{service}")) => Some(Self::SysV),
            TargetOs::Linux => None,
        }
    }

    /// The commands that restart `service` (run by the watchdog, in order).
    pub fn restart_commands(self, service: &str) -> Vec<Command> {
        let cmd = |prog: &str, args: &[&str]| {
            Command::new(prog)
                .args(args.iter().copied())
                .timeout(RESTART_TIMEOUT)
                .effect(Effect::Service)
        };
        match self {
            Self::Systemd => vec![cmd("systemctl", &["restart", service])],
            Self::OpenRc => vec![cmd("rc-service", &[service, "restart"])],
            Self::SysV => vec![cmd(&format!("/etc/init.d/{service}"), &["restart"])],
            Self::RcD => vec![cmd("service", &[service, "restart"])],
            // `net stop` fails when the service is already stopped; the watchdog ignores that.
            Self::Scm => vec![
                cmd("net", &["stop", service]),
                cmd("net", &["start", service]),
            ],
        }
    }

    /// A command that starts `watchdog` (program + args) detached from guestd's service, so
    /// that restarting the service does not kill it, and returns at once. Its output goes to
    /// the journal (systemd) or to `log`.
    pub fn launch_command(self, watchdog: &[String], log: &str) -> Command {
        match self {
            Self::Systemd => Command::new("systemd-run")
                .args([
                    "--unit",
                    &format!("guestd-update-watchdog-{}", std::process::id()),
                    "--description",
                    "guestd update watchdog",
                    "--collect",
                    "--quiet",
                ])
                .args(watchdog.iter().cloned()),
            Self::OpenRc | Self::SysV => Command::new("/bin/sh")
                .args([
                    "-c",
                    "log=$1; shift; exec setsid -f \"$@\" </dev/null >>\"$log\" 2>&1",
                    "guestd-update",
                    log,
                ])
                .args(watchdog.iter().cloned()),
            Self::RcD => Command::new("daemon")
                .args(["-f", "-o", log])
                .args(watchdog.iter().cloned()),
            Self::Scm => Command::new("cmd.exe")
                .args(["/d", "/c", "start", "guestd update watchdog", "/b"])
                .args(watchdog.iter().cloned()),
        }
        .timeout(Duration::from_secs(30))
        // It starts the watchdog that restarts guestd.
        .effect(Effect::Service)
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn detection_from_files() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        assert_eq!(Manager::detect(&root, TargetOs::Linux, "guestd"), None);
        assert_eq!(
            Manager::detect(&root, TargetOs::FreeBsd, "guestd"),
            Some(Manager::RcD)
        );
        assert_eq!(
            Manager::detect(&root, TargetOs::Windows, "guestd"),
            Some(Manager::Scm)
        );
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        std::fs::write(d.path().join("etc/init.d/guestd"), "").unwrap();
        assert_eq!(
            Manager::detect(&root, TargetOs::Linux, "guestd"),
            Some(Manager::SysV)
        );
        std::fs::create_dir_all(d.path().join("run/openrc")).unwrap();
        assert_eq!(
            Manager::detect(&root, TargetOs::Linux, "guestd"),
            Some(Manager::OpenRc)
        );
        std::fs::create_dir_all(d.path().join("run/systemd/system")).unwrap();
        assert_eq!(
            Manager::detect(&root, TargetOs::Linux, "guestd"),
            Some(Manager::Systemd)
        );
    }

    #[test]
    fn restart_and_launch_commands() {
        let lines = |m: Manager| {
            m.restart_commands("guestd")
                .iter()
                .map(Command::command_line)
                .collect::<Vec<_>>()
        };
        assert_eq!(lines(Manager::Systemd), ["systemctl restart guestd"]);
        assert_eq!(lines(Manager::OpenRc), ["rc-service guestd restart"]);
        assert_eq!(lines(Manager::SysV), ["/etc/init.d/guestd restart"]);
        assert_eq!(lines(Manager::RcD), ["service guestd restart"]);
        assert_eq!(lines(Manager::Scm), ["net stop guestd", "net start guestd"]);
        let w = [
            "/usr/sbin/guestd.previous".to_string(),
            "--update-watchdog".into(),
            "/s".into(),
        ];
        let rcd = Manager::RcD
            .launch_command(&w, "/var/log/w.log")
            .command_line();
        assert_eq!(
            rcd,
            "daemon -f -o /var/log/w.log /usr/sbin/guestd.previous --update-watchdog /s"
        );
        let sd = Manager::Systemd.launch_command(&w, "/l").command_line();
        assert!(
            sd.starts_with("systemd-run --unit guestd-update-watchdog-"),
            "{sd}"
        );
        assert!(sd.ends_with("--collect --quiet /usr/sbin/guestd.previous --update-watchdog /s"));
    }

    /// The setsid launcher really detaches: it returns while the watchdog still runs, and
    /// the watchdog's output lands in the log.
    #[test]
    fn sysv_launcher_returns_at_once_and_logs() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("w.log");
        let marker = d.path().join("done");
        let w = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            format!("echo started; sleep 1; touch {}", marker.display()),
        ];
        let cmd = Manager::SysV.launch_command(&w, log.to_str().unwrap());
        let started = std::time::Instant::now();
        let out = guestd_core::CommandRunner::run(&guestd_core::SystemRunner, &cmd).unwrap();
        assert!(out.success(), "{out:?}");
        assert!(!marker.exists(), "the launcher waited for the watchdog");
        for _ in 0..100 {
            if marker.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            marker.exists(),
            "watchdog never finished ({:?})",
            started.elapsed()
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\n");
    }
}
