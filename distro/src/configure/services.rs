//! `service`: started at boot or not (`enabled`), running or not (`state`), with the guest's
//! service manager ([`ServiceManager`], found once at start-up):
//!
//! | init | enabled? / enable / disable | running? / start / stop / restart |
//! |---|---|---|
//! | systemd | `systemctl is-enabled` / `enable` / `disable` (`--root=DIR` under `--root`) | `systemctl is-active` / `start` / `stop` / `restart` |
//! | OpenRC | link in `/etc/runlevels/default` / `rc-update add\|del NAME default` (the link itself under `--root`) | `rc-service NAME status\|start\|stop\|restart` |
//! | SysV | `S??NAME` links in `/etc/rc[2-5].d` / `update-rc.d NAME defaults`+`enable`, `disable` (or `chkconfig --add`, `on`, `off`) | `/etc/init.d/NAME status\|start\|stop\|restart` |
//! | FreeBSD rc.d | `sysrc -n NAME_enable` / `sysrc NAME_enable=YES\|NO` (`-R DIR`) | `service NAME onestatus\|onestart\|onestop\|onerestart` |
//! | Windows SCM | `sc.exe qc` (auto start) / `sc.exe config NAME start= auto\|demand` | `sc.exe query` / `net.exe start\|stop` |
//!
//! `restarted` means running, and restarted when a resource the service comes `after` changed
//! in this run (a configuration file), so a second run with nothing new leaves it alone.
//!
//! Where no service manager runs for the root (a `--root` tree, a chroot, an image being
//! built), nothing can be started or stopped: `enabled` is still managed (offline, as the
//! tools allow), and a requested `state` is reported in the notes, not done. That is what
//! `systemctl` itself does in a chroot ("Running in chroot, ignoring command").

use guestd_core::configure::{ResourceContext, ResourcePlan, ServiceSpec, ServiceState};
use guestd_core::{BackendError, Effect, Env, FileChange, PlannedProcess, ProcessSpec, Reach};

use super::{changes, first_line, has_tool, in_root, with_root_option};
use crate::ServiceManager;

/// Plan a `service` resource through the guest's service manager (`None`: none found), which
/// `running` tells runs for the root (see [`ServiceManager::runs_for`]).
pub fn plan_service(
    service_manager: Option<ServiceManager>,
    running: bool,
    env: &Env,
    spec: &ServiceSpec,
    context: &ResourceContext<'_>,
) -> Result<ResourcePlan, BackendError> {
    let name = spec.name.as_str();
    let mut out = ResourcePlan::default();
    let manager = Manager::new(service_manager, running, env, name)?;
    let mut enabled_now = None;
    if let Some(want) = spec.enabled {
        let current = manager.is_enabled(env, name)?;
        enabled_now = Some(want);
        if current != want {
            out.change(if want { "enable" } else { "disable" });
            manager.set_enabled(env, name, want, &mut out)?;
        }
    }
    let Some(state) = spec.state else {
        return Ok(out);
    };
    if !running {
        out.note(format!(
            "no {} service manager runs for this root (a --root tree or a chroot): state '{}' \
             is not applied{}",
            service_manager.map_or("unknown", ServiceManager::name),
            state_name(state),
            if enabled_now == Some(true) {
                "; the service starts at boot"
            } else {
                ""
            }
        ));
        return Ok(out);
    }
    let running = manager.is_running(env, name)?;
    let action = match (state, running) {
        (ServiceState::Running, false) | (ServiceState::Restarted, false) => Some("start"),
        (ServiceState::Stopped, true) => Some("stop"),
        (ServiceState::Restarted, true) if context.dependency_changed => Some("restart"),
        _ => None,
    };
    if let Some(action) = action {
        out.change(action);
        out.plan.commands.extend(
            manager
                .action(env, name, action)?
                .into_iter()
                .map(PlannedProcess::from),
        );
    }
    Ok(out)
}

fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Running => "running",
        ServiceState::Stopped => "stopped",
        ServiceState::Restarted => "restarted",
    }
}

/// How the guest's service manager is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Systemd,
    OpenRc { running: bool },
    SysV { update_rc_d: bool },
    RcD,
    Scm,
}

impl Manager {
    fn new(
        service_manager: Option<ServiceManager>,
        running: bool,
        env: &Env,
        name: &str,
    ) -> Result<Self, BackendError> {
        let script = || {
            let path = format!("/etc/init.d/{name}");
            if env.root.exists(&path) {
                Ok(())
            } else {
                Err(BackendError::Invalid(format!(
                    "no init script {path} for service '{name}'"
                )))
            }
        };
        let Some(service_manager) = service_manager else {
            return Err(BackendError::Unsupported(
                "services on a guest whose init system is unknown".into(),
            ));
        };
        Ok(match service_manager {
            ServiceManager::Systemd => Self::Systemd,
            ServiceManager::OpenRc => {
                script()?;
                Self::OpenRc { running }
            }
            ServiceManager::SysV => {
                script()?;
                let update_rc_d = has_tool(env, "update-rc.d");
                if !update_rc_d && !has_tool(env, "chkconfig") {
                    return Err(BackendError::Unsupported(
                        "SysV services without update-rc.d or chkconfig".into(),
                    ));
                }
                Self::SysV { update_rc_d }
            }
            ServiceManager::RcD => {
                if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(BackendError::Invalid(format!(
                        "rc.d service name '{name}' may only hold letters, digits and '_'"
                    )));
                }
                Self::RcD
            }
            ServiceManager::Scm => {
                if !running {
                    return Err(BackendError::Unsupported(
                        "services of a --root tree on Windows".into(),
                    ));
                }
                Self::Scm
            }
        })
    }

    fn is_enabled(self, env: &Env, name: &str) -> Result<bool, BackendError> {
        let root = &env.root;
        match self {
            Self::Systemd => {
                let cmd = with_root_option(
                    root,
                    Reach::Observe,
                    "systemctl",
                    "--root=",
                    &["is-enabled", name],
                )?;
                let out = env.runner.run(&cmd)?;
                let state = first_line(&out.stdout);
                match state.as_str() {
                    "enabled" | "enabled-runtime" | "static" | "alias" | "indirect"
                    | "generated" => Ok(true),
                    "disabled" | "linked" | "linked-runtime" => Ok(false),
                    "masked" | "masked-runtime" => {
                        Err(BackendError::Invalid(format!("unit '{name}' is masked")))
                    }
                    _ => Err(BackendError::Invalid(format!(
                        "no unit '{name}' on this guest"
                    ))),
                }
            }
            Self::OpenRc { .. } => Ok(root.exists(format!("/etc/runlevels/default/{name}"))
                || root.is_symlink(format!("/etc/runlevels/default/{name}"))),
            Self::SysV { .. } => {
                for level in ["rc2.d", "rc3.d", "rc4.d", "rc5.d"] {
                    let dir = format!("/etc/{level}");
                    if !root.is_dir(&dir) {
                        continue;
                    }
                    let started = root.read_dir(&dir)?.into_iter().any(|entry| {
                        entry.len() > 3
                            && entry.starts_with('S')
                            && entry[1..3].bytes().all(|b| b.is_ascii_digit())
                            && entry[3..] == *name
                    });
                    if started {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Self::RcD => {
                let var = format!("{name}_enable");
                let cmd = with_root_option(root, Reach::Observe, "sysrc", "-R", &["-n", &var])?;
                let out = env.runner.run(&cmd)?;
                Ok(out.success() && first_line(&out.stdout).eq_ignore_ascii_case("YES"))
            }
            Self::Scm => {
                let out = env.runner.run(&scm(&["qc", name]))?;
                if !out.success() {
                    return Err(BackendError::Invalid(format!(
                        "no service '{name}' on this guest"
                    )));
                }
                let start_type = scm_field(&out.stdout, "START_TYPE");
                // 0 boot, 1 system, 2 automatic: started without anyone asking.
                Ok(matches!(start_type, Some(0..=2)))
            }
        }
    }

    fn set_enabled(
        self,
        env: &Env,
        name: &str,
        enable: bool,
        out: &mut ResourcePlan,
    ) -> Result<(), BackendError> {
        let root = &env.root;
        let commands: Vec<ProcessSpec> = match self {
            Self::Systemd => vec![with_root_option(
                root,
                changes(Effect::Service),
                "systemctl",
                "--root=",
                &[if enable { "enable" } else { "disable" }, name],
            )?],
            Self::OpenRc { running: true } => vec![in_root(
                root,
                changes(Effect::Service),
                "rc-update",
                &[if enable { "add" } else { "del" }, name, "default"],
                &[],
            )?],
            Self::OpenRc { running: false } => {
                // What rc-update does, done through Root: the runlevel's link to the script.
                let link = format!("/etc/runlevels/default/{name}");
                out.plan.changes.push(if enable {
                    FileChange::Symlink {
                        path: link,
                        target: format!("/etc/init.d/{name}"),
                    }
                } else {
                    FileChange::Remove { path: link }
                });
                Vec::new()
            }
            Self::SysV { update_rc_d: true } => {
                if enable {
                    vec![
                        in_root(
                            root,
                            changes(Effect::Service),
                            "update-rc.d",
                            &[name, "defaults"],
                            &[],
                        )?,
                        in_root(
                            root,
                            changes(Effect::Service),
                            "update-rc.d",
                            &[name, "enable"],
                            &[],
                        )?,
                    ]
                } else {
                    vec![in_root(
                        root,
                        changes(Effect::Service),
                        "update-rc.d",
                        &[name, "disable"],
                        &[],
                    )?]
                }
            }
            Self::SysV { update_rc_d: false } => {
                if enable {
                    vec![
                        in_root(
                            root,
                            changes(Effect::Service),
                            "chkconfig",
                            &["--add", name],
                            &[],
                        )?,
                        in_root(
                            root,
                            changes(Effect::Service),
                            "chkconfig",
                            &[name, "on"],
                            &[],
                        )?,
                    ]
                } else {
                    vec![in_root(
                        root,
                        changes(Effect::Service),
                        "chkconfig",
                        &[name, "off"],
                        &[],
                    )?]
                }
            }
            Self::RcD => {
                let setting = format!("{name}_enable={}", if enable { "YES" } else { "NO" });
                vec![with_root_option(
                    root,
                    changes(Effect::Service),
                    "sysrc",
                    "-R",
                    &[&setting],
                )?]
            }
            Self::Scm => vec![scm(&[
                "config",
                name,
                "start=",
                if enable { "auto" } else { "demand" },
            ])],
        };
        out.plan
            .commands
            .extend(commands.into_iter().map(PlannedProcess::from));
        Ok(())
    }

    fn is_running(self, env: &Env, name: &str) -> Result<bool, BackendError> {
        let root = &env.root;
        let out = match self {
            Self::Systemd => {
                let out = env.runner.run(&with_root_option(
                    root,
                    Reach::Observe,
                    "systemctl",
                    "--root=",
                    &["is-active", name],
                )?)?;
                return Ok(first_line(&out.stdout) == "active");
            }
            Self::OpenRc { .. } => env.runner.run(&in_root(
                root,
                Reach::Observe,
                "rc-service",
                &[name, "status"],
                &[],
            )?)?,
            Self::SysV { .. } => env.runner.run(&in_root(
                root,
                Reach::Observe,
                &format!("/etc/init.d/{name}"),
                &["status"],
                &[],
            )?)?,
            Self::RcD => env.runner.run(&in_root(
                root,
                Reach::Observe,
                "service",
                &[name, "onestatus"],
                &[],
            )?)?,
            Self::Scm => {
                let out = env.runner.run(&scm(&["query", name]))?;
                // 4 RUNNING; 2 START_PENDING counts as on its way.
                return Ok(matches!(scm_field(&out.stdout, "STATE"), Some(2 | 4)));
            }
        };
        Ok(out.success())
    }

    fn action(self, env: &Env, name: &str, action: &str) -> Result<Vec<ProcessSpec>, BackendError> {
        let root = &env.root;
        Ok(match self {
            Self::Systemd => vec![with_root_option(
                root,
                changes(Effect::Service),
                "systemctl",
                "--root=",
                &[action, name],
            )?],
            Self::OpenRc { .. } => vec![in_root(
                root,
                changes(Effect::Service),
                "rc-service",
                &[name, action],
                &[],
            )?],
            Self::SysV { .. } => vec![in_root(
                root,
                changes(Effect::Service),
                &format!("/etc/init.d/{name}"),
                &[action],
                &[],
            )?],
            Self::RcD => vec![in_root(
                root,
                changes(Effect::Service),
                "service",
                &[name, &format!("one{action}")],
                &[],
            )?],
            Self::Scm => match action {
                "restart" => vec![net(&["stop", name]), net(&["start", name])],
                other => vec![net(&[other, name])],
            },
        })
    }
}

/// `sc.exe qc|query` only look; `sc.exe config` changes how the machine starts a service.
fn scm(args: &[&str]) -> ProcessSpec {
    let cmd = ProcessSpec::new("sc.exe")
        .args(args.iter().copied())
        .timeout(super::TOOL_TIMEOUT);
    match args.first() {
        Some(&("qc" | "query")) => cmd.observes(),
        _ => cmd.effect(Effect::Service),
    }
}

/// `net.exe start|stop` waits for the service to get there (`sc.exe` only asks).
fn net(args: &[&str]) -> ProcessSpec {
    ProcessSpec::new("net.exe")
        .args(args.iter().copied())
        .timeout(super::TOOL_TIMEOUT)
        .effect(Effect::Service)
}

/// The number of an `sc.exe` field (`        STATE              : 4  RUNNING`).
fn scm_field(stdout: &[u8], key: &str) -> Option<u32> {
    String::from_utf8_lossy(stdout).lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::NullBackend;
    use guestd_core::configure::ConfigureSettings;
    use guestd_testkit::FakeRunner;
    use std::sync::Arc;

    fn env(d: &tempfile::TempDir, runner: Arc<FakeRunner>, sandbox: bool) -> Env {
        Env {
            root: if sandbox {
                guestd_core::Root::sandbox(d.path()).unwrap()
            } else {
                guestd_core::Root::system()
            },
            runner,
            backend: Arc::new(NullBackend),
        }
    }

    fn context(settings: &ConfigureSettings, changed: bool) -> ResourceContext<'_> {
        ResourceContext {
            settings,
            run_id: "t",
            resource: "svc",
            dependency_changed: changed,
        }
    }

    fn spec(enabled: Option<bool>, state: Option<ServiceState>) -> ServiceSpec {
        ServiceSpec {
            name: "web.service".into(),
            enabled,
            state,
        }
    }

    #[test]
    fn systemd_offline_enables_with_root_and_notes_the_state() {
        let d = tempfile::tempdir().unwrap();
        let runner = Arc::new(FakeRunner::new());
        runner.respond("systemctl", 1, "disabled\n");
        let env = env(&d, runner.clone(), true);
        let base = env.root.base().unwrap().display().to_string();
        let settings = ConfigureSettings::default();
        let manager = Some(ServiceManager::Systemd);
        let plan = plan_service(
            manager,
            false,
            &env,
            &spec(Some(true), Some(ServiceState::Running)),
            &context(&settings, false),
        )
        .unwrap();
        assert_eq!(plan.changes, ["enable"]);
        assert_eq!(
            plan.plan.commands[0].command.command_line(),
            format!("systemctl --root={base} enable web.service")
        );
        assert_eq!(plan.plan.commands.len(), 1);
        assert!(
            plan.notes[0].contains("state 'running' is not applied"),
            "{plan:?}"
        );
        assert_eq!(
            runner.lines(),
            [format!("systemctl --root={base} is-enabled web.service")]
        );
    }

    #[test]
    fn systemd_running_restarts_only_after_a_dependency_changed() {
        let d = tempfile::tempdir().unwrap();
        let runner = Arc::new(FakeRunner::new());
        runner.respond("systemctl is-enabled", 0, "enabled\n");
        runner.respond("systemctl is-active", 0, "active\n");
        let env = env(&d, runner, false);
        let settings = ConfigureSettings::default();
        let manager = Some(ServiceManager::Systemd);
        let want = spec(Some(true), Some(ServiceState::Restarted));
        let same = plan_service(manager, true, &env, &want, &context(&settings, false)).unwrap();
        assert!(same.is_unchanged(), "{same:?}");
        let plan = plan_service(manager, true, &env, &want, &context(&settings, true)).unwrap();
        assert_eq!(plan.changes, ["restart"]);
        assert_eq!(
            plan.plan.commands[0].command.command_line(),
            "systemctl restart web.service"
        );
        let stop = plan_service(
            manager,
            true,
            &env,
            &spec(None, Some(ServiceState::Stopped)),
            &context(&settings, false),
        )
        .unwrap();
        assert_eq!(
            stop.plan.commands[0].command.command_line(),
            "systemctl stop web.service"
        );
    }

    #[test]
    fn openrc_offline_links_the_runlevel_and_sysv_uses_update_rc_d() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        std::fs::write(d.path().join("etc/init.d/web"), "").unwrap();
        let env = env(&d, Arc::new(FakeRunner::new()), true);
        let settings = ConfigureSettings::default();
        let web = ServiceSpec {
            name: "web".into(),
            enabled: Some(true),
            state: None,
        };
        let plan = plan_service(
            Some(ServiceManager::OpenRc),
            false,
            &env,
            &web,
            &context(&settings, false),
        )
        .unwrap();
        assert_eq!(
            plan.plan.changes,
            [FileChange::Symlink {
                path: "/etc/runlevels/default/web".into(),
                target: "/etc/init.d/web".into()
            }]
        );
        std::fs::create_dir_all(d.path().join("usr/sbin")).unwrap();
        std::fs::write(d.path().join("usr/sbin/update-rc.d"), "").unwrap();
        let plan = plan_service(
            Some(ServiceManager::SysV),
            false,
            &env,
            &web,
            &context(&settings, false),
        )
        .unwrap();
        let base = env.root.base().unwrap().display().to_string();
        let lines: Vec<String> = plan
            .plan
            .commands
            .iter()
            .map(|c| c.command.command_line().replace(&base, "ROOT"))
            .collect();
        assert_eq!(
            lines,
            [
                "chroot ROOT update-rc.d web defaults",
                "chroot ROOT update-rc.d web enable"
            ]
        );
        std::fs::create_dir_all(d.path().join("etc/rc2.d")).unwrap();
        std::os::unix::fs::symlink("../init.d/web", d.path().join("etc/rc2.d/S01web")).unwrap();
        assert!(
            plan_service(
                Some(ServiceManager::SysV),
                false,
                &env,
                &web,
                &context(&settings, false)
            )
            .unwrap()
            .is_unchanged()
        );
        let missing = ServiceSpec {
            name: "nope".into(),
            ..web
        };
        let err = plan_service(
            Some(ServiceManager::SysV),
            false,
            &env,
            &missing,
            &context(&settings, false),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no init script /etc/init.d/nope for service 'nope'"
        );
    }

    #[test]
    fn freebsd_and_windows() {
        let d = tempfile::tempdir().unwrap();
        let runner = Arc::new(FakeRunner::new());
        runner.respond("sysrc", 1, "");
        runner.respond("service", 1, "");
        runner.respond(
            "sc.exe qc",
            0,
            "SERVICE_NAME: w\r\n        START_TYPE         : 3   DEMAND_START\r\n",
        );
        runner.respond(
            "sc.exe query",
            0,
            "        STATE              : 1  STOPPED\r\n",
        );
        let env = env(&d, runner, false);
        let settings = ConfigureSettings::default();
        let both = |name: &str| ServiceSpec {
            name: name.into(),
            enabled: Some(true),
            state: Some(ServiceState::Running),
        };
        let plan = plan_service(
            Some(ServiceManager::RcD),
            true,
            &env,
            &both("nginx"),
            &context(&settings, false),
        )
        .unwrap();
        let lines: Vec<String> = plan
            .plan
            .commands
            .iter()
            .map(|c| c.command.command_line())
            .collect();
        assert_eq!(lines, ["sysrc nginx_enable=YES", "service nginx onestart"]);
        let plan = plan_service(
            Some(ServiceManager::Scm),
            true,
            &env,
            &both("w"),
            &context(&settings, false),
        )
        .unwrap();
        let lines: Vec<String> = plan
            .plan
            .commands
            .iter()
            .map(|c| c.command.command_line())
            .collect();
        assert_eq!(lines, ["sc.exe config w start= auto", "net.exe start w"]);
    }
}
