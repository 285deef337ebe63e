//! Setting the clock (`guest-set-time`), as qemu-ga does it on Linux: with a time, `date -u -s
//! @SECONDS.NANOSECONDS` then `hwclock -w` (system clock to the RTC); without one, `hwclock -s`
//! (the RTC to the system clock). A guest without `hwclock` or without an RTC is refused
//! before anything changes; other families have no plan yet.

use std::time::Duration;

use guestd_core::plan::Expect;
use guestd_core::{BackendError, Effect, Plan, PlannedProcess, ProcessSpec, Root};

use crate::OsFamily;

pub const HWCLOCK: &str = "hwclock";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The plan for `time_ns` (see the module docs). `hwclock_installed`: whether the command
/// runner finds `hwclock`.
pub fn plan_set_clock(
    family: OsFamily,
    root: &Root,
    hwclock_installed: bool,
    time_ns: Option<i64>,
) -> Result<Plan, BackendError> {
    if matches!(family, OsFamily::FreeBsd | OsFamily::Windows) {
        return Err(BackendError::Unsupported(format!(
            "setting the clock on {}",
            family.name()
        )));
    }
    if !hwclock_installed {
        return Err(BackendError::Unsupported(
            "hwclock is not installed in this guest".into(),
        ));
    }
    if !has_rtc(root) {
        return Err(BackendError::Unsupported(
            "this guest has no hardware clock (RTC)".into(),
        ));
    }
    let command = |c: ProcessSpec| PlannedProcess {
        command: c.effect(Effect::Clock).timeout(TIMEOUT),
        expect: Expect::Success,
        undo: None,
    };
    let commands = match time_ns {
        Some(ns) => vec![
            command(ProcessSpec::new("date").args([
                "-u".to_string(),
                "-s".to_string(),
                format!(
                    "@{}.{:09}",
                    ns.div_euclid(1_000_000_000),
                    ns.rem_euclid(1_000_000_000)
                ),
            ])),
            command(ProcessSpec::new(HWCLOCK).arg("-w")),
        ],
        None => vec![command(ProcessSpec::new(HWCLOCK).arg("-s"))],
    };
    Ok(Plan {
        commands,
        ..Plan::default()
    })
}

/// Whether the guest has a real-time clock for hwclock to use.
fn has_rtc(root: &Root) -> bool {
    root.exists("/dev/rtc0")
        || root.exists("/dev/rtc")
        || root
            .read_dir("/sys/class/rtc")
            .is_ok_and(|entries| entries.iter().any(|e| e.starts_with("rtc")))
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::Reach;

    fn lines(plan: &Plan) -> Vec<String> {
        assert!(plan.changes.is_empty() && plan.rollback_commands.is_empty());
        for c in &plan.commands {
            assert_eq!(c.command.reach, Reach::Machine(Effect::Clock));
            assert_eq!(c.expect, Expect::Success);
        }
        plan.commands
            .iter()
            .map(|c| c.command.command_line())
            .collect()
    }

    #[test]
    fn with_and_without_a_time() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/rtc/rtc0")).unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let plan = |t| plan_set_clock(OsFamily::Debian, &root, true, t).unwrap();
        assert_eq!(
            lines(&plan(Some(1_700_000_000_000_000_042))),
            ["date -u -s @1700000000.000000042", "hwclock -w"]
        );
        assert_eq!(lines(&plan(None)), ["hwclock -s"]);
    }

    #[test]
    fn refused_without_rtc_hwclock_or_on_other_families() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let why = |family, hwclock| match plan_set_clock(family, &root, hwclock, None) {
            Err(BackendError::Unsupported(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why(OsFamily::Debian, true),
            "this guest has no hardware clock (RTC)"
        );
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/rtc0"), "").unwrap();
        assert_eq!(
            why(OsFamily::RedHat, false),
            "hwclock is not installed in this guest"
        );
        assert_eq!(why(OsFamily::FreeBsd, true), "setting the clock on freebsd");
        assert!(plan_set_clock(OsFamily::Unknown, &root, true, None).is_ok());
    }
}
