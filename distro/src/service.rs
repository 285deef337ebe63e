//! The service manager (init system) of this guest, found once at start-up beside the OS
//! family, and whether it runs for the root: how to restart a service (guestd, after an
//! update), how to start a program that outlives that restart (the update watchdog), and
//! which tools `configure`'s service resources use (configure/services.rs). Platform-neutral:
//! the family is a parameter, so every variant is tested on Linux.

use std::time::Duration;

use guestd_core::plan::Expect;
use guestd_core::{BackendError, Effect, Plan, PlannedProcess, ProcessSpec, Root};

use crate::OsFamily;

/// Time a restart command may take.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

/// The plan that restarts `service` through `manager`: its commands in order, each but the
/// last best effort (`net stop` fails when the service is already stopped).
pub fn plan_restart(
    manager: ServiceManager,
    root: &Root,
    service: &str,
) -> Result<Plan, BackendError> {
    let commands = manager.restart_commands(root, service)?;
    let last = commands.len().saturating_sub(1);
    let commands = commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| PlannedProcess {
            command,
            expect: if i == last {
                Expect::Success
            } else {
                Expect::Anything
            },
            undo: None,
        })
        .collect();
    Ok(Plan {
        commands,
        ..Plan::default()
    })
}

/// The service manager running guestd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceManager {
    Systemd,
    OpenRc,
    /// A SysV init script `/etc/init.d/<service>`.
    SysV,
    /// FreeBSD `rc.d` (`service <name> restart`).
    RcD,
    /// Windows service control manager.
    Scm,
}

impl ServiceManager {
    pub fn name(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::OpenRc => "OpenRC",
            Self::SysV => "SysV init",
            Self::RcD => "rc.d",
            Self::Scm => "Windows SCM",
        }
    }

    /// Find the manager of the OS `family` from the guest's files (`Root`, so a sandbox works
    /// the same): a running systemd or OpenRC, else one that is installed (a chroot, an image
    /// being built), else SysV init scripts; `None` when there is none of them.
    pub fn detect(root: &Root, family: OsFamily) -> Option<Self> {
        match family {
            OsFamily::Windows => return Some(Self::Scm),
            OsFamily::FreeBsd => return Some(Self::RcD),
            _ => {}
        }
        if root.is_dir("/run/systemd/system") {
            return Some(Self::Systemd);
        }
        if ["/run/openrc", "/sbin/openrc", "/sbin/openrc-run"]
            .iter()
            .any(|p| root.exists(p))
        {
            return Some(Self::OpenRc);
        }
        let systemd_init = ["/sbin/init", "/usr/sbin/init"].iter().any(|init| {
            root.read_link(init)
                .is_ok_and(|t| t.to_string_lossy().contains("systemd"))
        });
        if systemd_init
            || root.exists("/lib/systemd/systemd")
            || root.exists("/usr/lib/systemd/systemd")
        {
            return Some(Self::Systemd);
        }
        if root.is_dir("/etc/init.d") {
            return Some(Self::SysV);
        }
        None
    }

    /// Whether this manager runs for `root`, so that services can be started and stopped:
    /// never in a `--root` sandbox (the one that runs belongs to this machine), and not where
    /// systemd or OpenRC is only installed (a chroot, an image being built).
    pub fn runs_for(self, root: &Root) -> bool {
        !root.is_sandbox()
            && match self {
                Self::Systemd => root.is_dir("/run/systemd/system"),
                Self::OpenRc => root.exists("/run/openrc/softlevel"),
                Self::SysV | Self::RcD | Self::Scm => true,
            }
    }

    /// How a program is started detached from guestd's service in `family` when no manager
    /// was found (`setsid` on Linux).
    pub fn detach_default(family: OsFamily) -> Self {
        match family {
            OsFamily::Windows => Self::Scm,
            OsFamily::FreeBsd => Self::RcD,
            _ => Self::SysV,
        }
    }

    /// The commands that restart `service` (run by the watchdog, in order). A SysV system
    /// needs the service's init script.
    pub fn restart_commands(
        self,
        root: &Root,
        service: &str,
    ) -> Result<Vec<ProcessSpec>, BackendError> {
        if self == Self::SysV && !root.exists(format!("/etc/init.d/{service}")) {
            return Err(BackendError::Failed(format!(
                "SysV init has no script /etc/init.d/{service}"
            )));
        }
        Ok(self.restart_commands_unchecked(service))
    }

    fn restart_commands_unchecked(self, service: &str) -> Vec<ProcessSpec> {
        let cmd = |prog: &str, args: &[&str]| {
            ProcessSpec::new(prog)
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
    pub fn launch_command(self, watchdog: &[String], log: &str) -> ProcessSpec {
        match self {
            Self::Systemd => ProcessSpec::new("systemd-run")
                .args([
                    "--unit",
                    &format!("guestd-update-watchdog-{}", std::process::id()),
                    "--description",
                    "guestd update watchdog",
                    "--collect",
                    "--quiet",
                ])
                .args(watchdog.iter().cloned()),
            Self::OpenRc | Self::SysV => ProcessSpec::new("/bin/sh")
                .args([
                    "-c",
                    "log=$1; shift; exec setsid -f \"$@\" </dev/null >>\"$log\" 2>&1",
                    "guestd-update",
                    log,
                ])
                .args(watchdog.iter().cloned()),
            Self::RcD => ProcessSpec::new("daemon")
                .args(["-f", "-o", log])
                .args(watchdog.iter().cloned()),
            Self::Scm => ProcessSpec::new("cmd.exe")
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
        let detect = |family| ServiceManager::detect(&root, family);
        assert_eq!(detect(OsFamily::Debian), None);
        assert_eq!(detect(OsFamily::FreeBsd), Some(ServiceManager::RcD));
        assert_eq!(detect(OsFamily::Windows), Some(ServiceManager::Scm));
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        assert_eq!(detect(OsFamily::Unknown), Some(ServiceManager::SysV));
        std::fs::create_dir_all(d.path().join("run/openrc")).unwrap();
        assert_eq!(detect(OsFamily::Alpine), Some(ServiceManager::OpenRc));
        std::fs::create_dir_all(d.path().join("run/systemd/system")).unwrap();
        assert_eq!(detect(OsFamily::Debian), Some(ServiceManager::Systemd));
        assert_eq!(
            ServiceManager::detach_default(OsFamily::RedHat),
            ServiceManager::SysV
        );
        // A sandbox never has a running manager, even with systemd's marker in it.
        assert!(!ServiceManager::Systemd.runs_for(&root));
        assert!(!ServiceManager::Scm.runs_for(&root));
    }

    /// systemd or OpenRC installed but not running (a chroot, an image being built) is still
    /// the manager, ahead of the SysV scripts that come with it.
    #[test]
    fn installed_managers_win_over_init_scripts() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let detect = || ServiceManager::detect(&root, OsFamily::Debian);
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        assert_eq!(detect(), Some(ServiceManager::SysV));
        std::fs::create_dir_all(d.path().join("lib/systemd")).unwrap();
        std::fs::write(d.path().join("lib/systemd/systemd"), "").unwrap();
        assert_eq!(detect(), Some(ServiceManager::Systemd));
        std::fs::remove_file(d.path().join("lib/systemd/systemd")).unwrap();
        std::fs::create_dir_all(d.path().join("sbin")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/systemd", d.path().join("sbin/init")).unwrap();
        assert_eq!(detect(), Some(ServiceManager::Systemd));
        std::fs::remove_file(d.path().join("sbin/init")).unwrap();
        std::fs::write(d.path().join("sbin/openrc"), "").unwrap();
        assert_eq!(detect(), Some(ServiceManager::OpenRc));
    }

    #[test]
    fn restart_and_launch_commands() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let lines = |m: ServiceManager| {
            m.restart_commands(&root, "guestd")
                .map(|c| c.iter().map(ProcessSpec::command_line).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            lines(ServiceManager::Systemd).unwrap(),
            ["systemctl restart guestd"]
        );
        assert_eq!(
            lines(ServiceManager::OpenRc).unwrap(),
            ["rc-service guestd restart"]
        );
        assert_eq!(
            lines(ServiceManager::SysV).unwrap_err(),
            "SysV init has no script /etc/init.d/guestd"
        );
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        std::fs::write(d.path().join("etc/init.d/guestd"), "").unwrap();
        assert_eq!(
            lines(ServiceManager::SysV).unwrap(),
            ["/etc/init.d/guestd restart"]
        );
        assert_eq!(
            lines(ServiceManager::RcD).unwrap(),
            ["service guestd restart"]
        );
        assert_eq!(
            lines(ServiceManager::Scm).unwrap(),
            ["net stop guestd", "net start guestd"]
        );
        let w = [
            "/usr/sbin/guestd.previous".to_string(),
            "--update-watchdog".into(),
            "/s".into(),
        ];
        let rcd = ServiceManager::RcD
            .launch_command(&w, "/var/log/w.log")
            .command_line();
        assert_eq!(
            rcd,
            "daemon -f -o /var/log/w.log /usr/sbin/guestd.previous --update-watchdog /s"
        );
        let sd = ServiceManager::Systemd
            .launch_command(&w, "/l")
            .command_line();
        assert!(
            sd.starts_with("systemd-run --unit guestd-update-watchdog-"),
            "{sd}"
        );
        assert!(sd.ends_with("--collect --quiet /usr/sbin/guestd.previous --update-watchdog /s"));
    }

    /// The restart plan, inspected without running it: every step but the last may fail.
    #[test]
    fn restart_plans_run_nothing_and_only_the_last_step_must_succeed() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let plan = plan_restart(ServiceManager::Scm, &root, "guestd").unwrap();
        let steps: Vec<(String, Expect)> = plan
            .commands
            .iter()
            .map(|c| (c.command.to_string(), c.expect.clone()))
            .collect();
        assert_eq!(
            steps,
            [
                ("net stop guestd".to_string(), Expect::Anything),
                ("net start guestd".to_string(), Expect::Success)
            ]
        );
        assert!(plan.changes.is_empty() && plan.rollback_commands.is_empty());
        let plan = plan_restart(ServiceManager::Systemd, &root, "guestd").unwrap();
        assert_eq!(plan.commands[0].expect, Expect::Success);
        assert_eq!(plan.commands[0].command.timeout, RESTART_TIMEOUT);
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
        let cmd = ServiceManager::SysV.launch_command(&w, log.to_str().unwrap());
        let started = std::time::Instant::now();
        let out = guestd_core::ProcessRunner::run(&guestd_core::SystemRunner, &cmd).unwrap();
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
