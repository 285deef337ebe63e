//! Freezing and thawing filesystems (`guest-fsfreeze-*`) and discarding their unused blocks
//! (`guest-fstrim`), as plans that `guestd_core::apply` carries out. Linux only: util-linux
//! `fsfreeze --freeze|--unfreeze MOUNTPOINT` (FIFREEZE/FITHAW) and `fstrim --verbose`, as
//! qemu-ga does them; FreeBSD and Windows have no such tools (`Unsupported`).
//!
//! Which filesystems, the hook's checks and the record of what is frozen are the handler's
//! (they are qemu-ga's rules, the same on every Linux); here is only how each is done.

use std::time::Duration;

use guestd_core::plan::Expect;
use guestd_core::{
    BackendError, Effect, FreezeHook, FreezeRequest, Plan, PlannedProcess, ProcessRunner,
    ProcessSpec,
};

use crate::OsFamily;

const FSFREEZE: &str = "fsfreeze";
/// What util-linux prints when the filesystem has no FIFREEZE (EOPNOTSUPP): skipped, as
/// qemu-ga skips it.
pub const NOT_SUPPORTED: &str = "Operation not supported";
/// How long one `fsfreeze` may take (a freeze waits for writes in flight to finish).
const PER_MOUNT: Duration = Duration::from_secs(60);

pub const FSTRIM: &str = "fstrim";
/// Trimming a large, fragmented filesystem takes minutes.
const PER_TRIM: Duration = Duration::from_secs(600);

fn linux(family: OsFamily, what: &str) -> Result<(), BackendError> {
    match family {
        OsFamily::FreeBsd | OsFamily::Windows => Err(BackendError::Unsupported(what.into())),
        _ => Ok(()),
    }
}

fn fsfreeze(flag: &str, mountpoint: &str) -> ProcessSpec {
    ProcessSpec::new(FSFREEZE)
        .args([flag, mountpoint])
        .timeout(PER_MOUNT)
        .effect(Effect::Freeze)
}

fn hook(hook: &FreezeHook, arg: &str) -> ProcessSpec {
    ProcessSpec::new(&hook.program)
        .arg(arg)
        .timeout(hook.timeout)
        .effect(Effect::Freeze)
}

/// The hook with `freeze` (undone by the hook with `thaw`), then one `fsfreeze --freeze` per
/// mount point in the order given (each undone by `--unfreeze`; EOPNOTSUPP declines it). See
/// `Backend::plan_fsfreeze`.
pub fn plan_fsfreeze(family: OsFamily, request: &FreezeRequest) -> Result<Plan, BackendError> {
    linux(family, "freezing filesystems")?;
    let mut commands = Vec::new();
    if let Some(h) = &request.hook {
        commands.push(PlannedProcess::new(hook(h, "freeze")).undone_by(hook(h, "thaw")));
    }
    for mountpoint in &request.mountpoints {
        commands.push(
            PlannedProcess::new(fsfreeze("--freeze", mountpoint))
                .expecting(Expect::SuccessOrDeclined(NOT_SUPPORTED.into()))
                .undone_by(fsfreeze("--unfreeze", mountpoint)),
        );
    }
    Ok(Plan {
        commands,
        ..Plan::default()
    })
}

/// One `fsfreeze --unfreeze` per mount point in the order given, then the hook with `thaw`,
/// each reported on its own. See `Backend::plan_thaw`.
pub fn plan_thaw(family: OsFamily, request: &FreezeRequest) -> Result<Plan, BackendError> {
    linux(family, "thawing filesystems")?;
    let mut commands: Vec<PlannedProcess> = request
        .mountpoints
        .iter()
        .map(|m| PlannedProcess::new(fsfreeze("--unfreeze", m)).expecting(Expect::Report))
        .collect();
    if let Some(h) = &request.hook {
        commands.push(PlannedProcess::new(hook(h, "thaw")).expecting(Expect::Report));
    }
    Ok(Plan {
        commands,
        ..Plan::default()
    })
}

/// One `fstrim --verbose [--minimum N] MOUNTPOINT` per mount point, each reported on its own.
/// `Unsupported` when fstrim is not installed. See `Backend::plan_fstrim`.
pub fn plan_fstrim(
    family: OsFamily,
    runner: &dyn ProcessRunner,
    mountpoints: &[String],
    minimum: u64,
) -> Result<Plan, BackendError> {
    linux(family, "trimming filesystems")?;
    if !runner.exists(FSTRIM) {
        return Err(BackendError::Unsupported(
            "fstrim (util-linux) is not installed in this guest".into(),
        ));
    }
    let commands = mountpoints
        .iter()
        .map(|path| {
            let mut cmd = ProcessSpec::new(FSTRIM)
                .arg("--verbose")
                .timeout(PER_TRIM)
                .effect(Effect::Trim);
            if minimum > 0 {
                cmd = cmd.args(["--minimum".to_string(), minimum.to_string()]);
            }
            PlannedProcess::new(cmd.arg(path)).expecting(Expect::Report)
        })
        .collect();
    Ok(Plan {
        commands,
        ..Plan::default()
    })
}

#[cfg(test)]
mod tests {
    use guestd_core::{Reach, plan::FileChange};
    use guestd_testkit::FakeRunner;

    use super::*;

    fn request(hook: bool) -> FreezeRequest {
        FreezeRequest {
            mountpoints: vec!["/srv".into(), "/".into()],
            hook: hook.then(|| FreezeHook {
                program: "/sandbox/etc/qemu/fsfreeze-hook".into(),
                timeout: Duration::from_secs(7),
            }),
        }
    }

    fn line(c: &ProcessSpec) -> String {
        c.command_line()
    }

    fn no_files(plan: &Plan) {
        let none: &[FileChange] = &[];
        assert_eq!(plan.changes, none);
        assert!(plan.rollback_commands.is_empty());
    }

    #[test]
    fn freeze_plans_the_hook_then_one_step_per_mount_each_undone_by_its_thaw() {
        let plan = plan_fsfreeze(OsFamily::Debian, &request(true)).unwrap();
        no_files(&plan);
        let steps: Vec<(String, Option<String>, &Expect)> = plan
            .commands
            .iter()
            .map(|c| (line(&c.command), c.undo.as_ref().map(line), &c.expect))
            .collect();
        let declined = Expect::SuccessOrDeclined(NOT_SUPPORTED.into());
        assert_eq!(
            steps,
            [
                (
                    "/sandbox/etc/qemu/fsfreeze-hook freeze".to_string(),
                    Some("/sandbox/etc/qemu/fsfreeze-hook thaw".to_string()),
                    &Expect::Success
                ),
                (
                    "fsfreeze --freeze /srv".into(),
                    Some("fsfreeze --unfreeze /srv".into()),
                    &declined
                ),
                (
                    "fsfreeze --freeze /".into(),
                    Some("fsfreeze --unfreeze /".into()),
                    &declined
                ),
            ]
        );
        for c in &plan.commands {
            assert_eq!(c.command.reach, Reach::Machine(Effect::Freeze));
            assert_eq!(
                c.undo.as_ref().unwrap().reach,
                Reach::Machine(Effect::Freeze)
            );
        }
        assert_eq!(plan.commands[0].command.timeout, Duration::from_secs(7));
        assert_eq!(plan.commands[1].command.timeout, PER_MOUNT);
        // Without a hook: only the mounts.
        let plan = plan_fsfreeze(OsFamily::RedHat, &request(false)).unwrap();
        assert_eq!(plan.commands.len(), 2);
        assert_eq!(line(&plan.commands[0].command), "fsfreeze --freeze /srv");
    }

    #[test]
    fn thaw_plans_each_mount_reported_on_its_own_then_the_hook() {
        let plan = plan_thaw(OsFamily::Debian, &request(true)).unwrap();
        no_files(&plan);
        let steps: Vec<(String, &Expect, bool)> = plan
            .commands
            .iter()
            .map(|c| (line(&c.command), &c.expect, c.undo.is_none()))
            .collect();
        assert_eq!(
            steps,
            [
                (
                    "fsfreeze --unfreeze /srv".to_string(),
                    &Expect::Report,
                    true
                ),
                ("fsfreeze --unfreeze /".into(), &Expect::Report, true),
                (
                    "/sandbox/etc/qemu/fsfreeze-hook thaw".into(),
                    &Expect::Report,
                    true
                ),
            ]
        );
        assert!(
            plan_thaw(OsFamily::Debian, &FreezeRequest::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn trim_plans_one_reported_step_per_mount_when_fstrim_is_there() {
        let runner = FakeRunner::new();
        let mounts = ["/srv/my vol".to_string(), "/".to_string()];
        let plan = plan_fstrim(OsFamily::Debian, &runner, &mounts, 65536).unwrap();
        no_files(&plan);
        let lines: Vec<String> = plan.commands.iter().map(|c| line(&c.command)).collect();
        assert_eq!(
            lines,
            [
                "fstrim --verbose --minimum 65536 /srv/my vol",
                "fstrim --verbose --minimum 65536 /"
            ]
        );
        // The mount point is one argument, whatever it holds.
        assert_eq!(plan.commands[0].command.args.last().unwrap(), "/srv/my vol");
        for c in &plan.commands {
            assert_eq!(c.expect, Expect::Report);
            assert_eq!(c.command.reach, Reach::Machine(Effect::Trim));
            assert_eq!(c.command.timeout, PER_TRIM);
        }
        let plan = plan_fstrim(OsFamily::Debian, &runner, &mounts, 0).unwrap();
        assert_eq!(line(&plan.commands[1].command), "fstrim --verbose /");
        // Nothing was run to plan it.
        assert!(runner.lines().is_empty());
        runner.mark_missing(FSTRIM);
        let err = plan_fstrim(OsFamily::Debian, &runner, &mounts, 0).unwrap_err();
        assert!(
            err.to_string()
                .contains("fstrim (util-linux) is not installed")
        );
    }

    #[test]
    fn freebsd_and_windows_have_none_of_it() {
        let runner = FakeRunner::new();
        for family in [OsFamily::FreeBsd, OsFamily::Windows] {
            assert!(matches!(
                plan_fsfreeze(family, &request(false)),
                Err(BackendError::Unsupported(_))
            ));
            assert!(matches!(
                plan_thaw(family, &request(false)),
                Err(BackendError::Unsupported(_))
            ));
            assert!(matches!(
                plan_fstrim(family, &runner, &[], 0),
                Err(BackendError::Unsupported(_))
            ));
        }
    }
}
