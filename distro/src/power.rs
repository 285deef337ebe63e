//! Stopping the guest (`guest-shutdown`): the command of each OS family's own tool, as a plan
//! that `guestd_core::apply` carries out. The tool stops the services cleanly and returns at
//! once; the words are qemu-ga's (`shutdown -P +0 "hypervisor initiated shutdown"` on Linux,
//! BSD's `-p`/`-h` on FreeBSD).
//!
//! Suspending (`guest-suspend-disk|ram|hybrid`): the ways a Linux guest can, in qemu-ga's
//! order, each an `Alternative` with its checks ([`plan_suspend`]):
//!
//! 1. systemd (when it runs the guest: `/run/systemd/system` exists): `systemctl status
//!    systemd-<mode>.service` answering an LSB status of 1..=3 means the unit exists, then
//!    `systemctl suspend|hibernate|hybrid-sleep`;
//! 2. pm-utils: `pm-is-supported --suspend|--hibernate|--suspend-hybrid`, then `pm-suspend`…;
//! 3. the kernel: `/sys/power/state` lists `mem` or `disk`, which is written there (no hybrid).
//!
//! A way whose tool is missing is left out; a way that is supported but fails falls through to
//! the next, as in qemu-ga.

use std::time::Duration;

use guestd_core::plan::{Expect, FileChange};
use guestd_core::{
    Alternative, BackendError, Effect, Env, Plan, PlannedProcess, PowerOff, ProcessSpec,
    SuspendMode,
};

use crate::OsFamily;

/// What shutdown(8) and shutdown.exe log and show to logged-in users.
pub const MESSAGE: &str = "hypervisor initiated shutdown";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The plan that stops a guest of `family` as `mode` says.
pub fn plan_shutdown(family: OsFamily, mode: PowerOff) -> Plan {
    let command = match family {
        OsFamily::Windows => {
            // Windows has no halt without power-off: `halt` powers off too.
            let flag = match mode {
                PowerOff::PowerDown | PowerOff::Halt => "/s",
                PowerOff::Reboot => "/r",
            };
            ProcessSpec::new("shutdown.exe").args([flag, "/t", "0", "/c", MESSAGE])
        }
        OsFamily::FreeBsd => {
            let flag = match mode {
                PowerOff::PowerDown => "-p",
                PowerOff::Halt => "-h",
                PowerOff::Reboot => "-r",
            };
            ProcessSpec::new("shutdown").args([flag, "+0", MESSAGE])
        }
        _ => {
            let flag = match mode {
                PowerOff::PowerDown => "-P",
                PowerOff::Halt => "-H",
                PowerOff::Reboot => "-r",
            };
            ProcessSpec::new("shutdown").args([flag, "+0", MESSAGE])
        }
    };
    Plan {
        commands: vec![command.effect(Effect::Power).timeout(TIMEOUT).into()],
        ..Plan::default()
    }
}

/// Where the kernel takes suspend requests.
pub const POWER_STATE: &str = "/sys/power/state";
/// systemd's directory that exists only while systemd runs the system.
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(60);

fn systemd_verb(mode: SuspendMode) -> &'static str {
    match mode {
        SuspendMode::Disk => "hibernate",
        SuspendMode::Ram => "suspend",
        SuspendMode::Hybrid => "hybrid-sleep",
    }
}

fn pm_utils(mode: SuspendMode) -> (&'static str, &'static str) {
    match mode {
        SuspendMode::Disk => ("--hibernate", "pm-hibernate"),
        SuspendMode::Ram => ("--suspend", "pm-suspend"),
        SuspendMode::Hybrid => ("--suspend-hybrid", "pm-suspend-hybrid"),
    }
}

/// The word for `/sys/power/state` (the kernel has no hybrid state).
fn sysfs_word(mode: SuspendMode) -> Option<&'static str> {
    match mode {
        SuspendMode::Disk => Some("disk"),
        SuspendMode::Ram => Some("mem"),
        SuspendMode::Hybrid => None,
    }
}

/// The ways a guest of `family` can suspend as `mode` says, in the order to try them (see the
/// module docs); empty when it has none. Only looks: `env.root` for files, `env.runner` for
/// which tools exist.
pub fn plan_suspend(
    family: OsFamily,
    env: &Env,
    mode: SuspendMode,
) -> Result<Vec<Alternative>, BackendError> {
    if matches!(family, OsFamily::FreeBsd | OsFamily::Windows) {
        return Err(BackendError::Unsupported("suspending the guest".into()));
    }
    let (root, runner) = (&env.root, env.runner.as_ref());
    let act = |c: ProcessSpec| Plan {
        commands: vec![c.effect(Effect::Power).timeout(SUSPEND_TIMEOUT).into()],
        ..Plan::default()
    };
    let mut ways = Vec::new();
    if root.is_dir(SYSTEMD_RUNNING) && runner.exists("systemctl") {
        let unit = format!("systemd-{}.service", systemd_verb(mode));
        ways.push(Alternative {
            name: "systemd".into(),
            checks: vec![
                PlannedProcess::new(
                    ProcessSpec::new("systemctl")
                        .args(["status", unit.as_str()])
                        .observes()
                        .timeout(SUSPEND_TIMEOUT),
                )
                // LSB: 1..=3 is a unit that exists (dead, or inactive); 4 is no such unit.
                .expecting(Expect::Status(vec![1, 2, 3])),
            ],
            plan: act(ProcessSpec::new("systemctl").arg(systemd_verb(mode))),
        });
    }
    let (flag, program) = pm_utils(mode);
    if runner.exists("pm-is-supported") {
        ways.push(Alternative {
            name: "pm-utils".into(),
            checks: vec![
                ProcessSpec::new("pm-is-supported")
                    .arg(flag)
                    .observes()
                    .timeout(SUSPEND_TIMEOUT)
                    .into(),
            ],
            plan: act(ProcessSpec::new(program)),
        });
    }
    if let Some(word) = sysfs_word(mode) {
        let listed = root.read(POWER_STATE).is_ok_and(|s| {
            String::from_utf8_lossy(&s)
                .split_whitespace()
                .any(|w| w == word)
        });
        if listed {
            ways.push(Alternative {
                name: "sysfs".into(),
                checks: Vec::new(),
                plan: Plan {
                    changes: vec![FileChange::Kernel {
                        path: POWER_STATE.into(),
                        value: word.as_bytes().to_vec(),
                    }],
                    ..Plan::default()
                },
            });
        }
    }
    Ok(ways)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestd_core::Reach;

    fn lines(family: OsFamily, mode: PowerOff) -> Vec<String> {
        let plan = plan_shutdown(family, mode);
        assert!(plan.changes.is_empty() && plan.rollback_commands.is_empty());
        for c in &plan.commands {
            assert_eq!(c.expect, Expect::Success);
            assert_eq!(
                c.command.reach,
                Reach::Machine(Effect::Power),
                "{:?}",
                c.command
            );
            assert_eq!(c.command.timeout, TIMEOUT);
        }
        plan.commands
            .iter()
            .map(|c| c.command.command_line())
            .collect()
    }

    #[test]
    fn each_family_and_mode_plans_its_own_tool() {
        use PowerOff::*;
        let m = MESSAGE;
        for family in [OsFamily::Debian, OsFamily::RedHat, OsFamily::Unknown] {
            assert_eq!(lines(family, PowerDown), [format!("shutdown -P +0 {m}")]);
            assert_eq!(lines(family, Halt), [format!("shutdown -H +0 {m}")]);
            assert_eq!(lines(family, Reboot), [format!("shutdown -r +0 {m}")]);
        }
        assert_eq!(
            lines(OsFamily::FreeBsd, PowerDown),
            [format!("shutdown -p +0 {m}")]
        );
        assert_eq!(
            lines(OsFamily::FreeBsd, Halt),
            [format!("shutdown -h +0 {m}")]
        );
        assert_eq!(
            lines(OsFamily::FreeBsd, Reboot),
            [format!("shutdown -r +0 {m}")]
        );
        assert_eq!(
            lines(OsFamily::Windows, PowerDown),
            [format!("shutdown.exe /s /t 0 /c {m}")]
        );
        assert_eq!(
            lines(OsFamily::Windows, Halt),
            [format!("shutdown.exe /s /t 0 /c {m}")]
        );
        assert_eq!(
            lines(OsFamily::Windows, Reboot),
            [format!("shutdown.exe /r /t 0 /c {m}")]
        );
    }
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod suspend_tests {
    use std::sync::Arc;

    use guestd_core::{Reach, Root};
    use guestd_testkit::{FakeRunner, test_env};

    use super::*;

    fn guest(files: &[(&str, &str)]) -> (tempfile::TempDir, Env, Arc<FakeRunner>) {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let runner = Arc::new(FakeRunner::new());
        let env = test_env(Root::sandbox(d.path()).unwrap(), runner.clone(), None);
        (d, env, runner)
    }

    /// Each way as `name: checks => commands / kernel writes`.
    fn describe(ways: &[Alternative]) -> Vec<String> {
        ways.iter()
            .map(|w| {
                let checks: Vec<String> = w
                    .checks
                    .iter()
                    .map(|c| format!("{} {:?}", c.command, c.expect))
                    .collect();
                let mut acts: Vec<String> = w
                    .plan
                    .commands
                    .iter()
                    .map(|c| c.command.to_string())
                    .collect();
                acts.extend(w.plan.changes.iter().map(|c| format!("{c:?}")));
                format!("{}: {} => {}", w.name, checks.join(", "), acts.join(", "))
            })
            .collect()
    }

    #[test]
    fn systemd_then_pm_utils_then_the_kernel_each_with_its_checks() {
        let (_d, env, runner) = guest(&[
            ("/run/systemd/system/.keep", ""),
            ("/sys/power/state", "freeze mem disk\n"),
        ]);
        let ways = plan_suspend(OsFamily::Debian, &env, SuspendMode::Ram).unwrap();
        assert_eq!(
            describe(&ways),
            [
                "systemd: systemctl status systemd-suspend.service Status([1, 2, 3]) => \
                 systemctl suspend",
                "pm-utils: pm-is-supported --suspend Success => pm-suspend",
                "sysfs:  => Kernel(/sys/power/state <- \"mem\")",
            ]
        );
        for way in &ways {
            for check in &way.checks {
                assert_eq!(check.command.reach, Reach::Observe);
            }
            for act in &way.plan.commands {
                assert_eq!(act.command.reach, Reach::Machine(Effect::Power));
            }
        }
        let ways = plan_suspend(OsFamily::Debian, &env, SuspendMode::Disk).unwrap();
        assert_eq!(
            describe(&ways)[2],
            "sysfs:  => Kernel(/sys/power/state <- \"disk\")"
        );
        // The kernel has no hybrid state.
        let ways = plan_suspend(OsFamily::Debian, &env, SuspendMode::Hybrid).unwrap();
        assert_eq!(
            describe(&ways),
            [
                "systemd: systemctl status systemd-hybrid-sleep.service Status([1, 2, 3]) => \
                 systemctl hybrid-sleep",
                "pm-utils: pm-is-supported --suspend-hybrid Success => pm-suspend-hybrid",
            ]
        );
        // Planning only looked.
        assert!(runner.lines().is_empty());
    }

    #[test]
    fn ways_whose_tools_are_missing_are_left_out() {
        // No systemd running, no pm-utils, and a kernel without "disk".
        let (_d, env, runner) = guest(&[("/sys/power/state", "freeze mem\n")]);
        runner.mark_missing("pm-is-supported");
        let ways = plan_suspend(OsFamily::RedHat, &env, SuspendMode::Disk).unwrap();
        assert!(ways.is_empty(), "{:?}", describe(&ways));
        let ways = plan_suspend(OsFamily::RedHat, &env, SuspendMode::Ram).unwrap();
        assert_eq!(
            describe(&ways),
            ["sysfs:  => Kernel(/sys/power/state <- \"mem\")"]
        );
        for family in [OsFamily::FreeBsd, OsFamily::Windows] {
            assert!(matches!(
                plan_suspend(family, &env, SuspendMode::Ram),
                Err(BackendError::Unsupported(_))
            ));
        }
    }
}
