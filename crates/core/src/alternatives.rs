//! Ways to reach one goal, tried in order: the first whose checks pass is carried out, and when
//! it fails the next is tried (qga's suspend: systemd, then pm-utils, then the kernel's
//! `/sys/power/state`). Each way is an [`Alternative`]: a name for logs and dry runs, read-only
//! check commands, and an ordinary [`Plan`] that [`plan::apply`](crate::plan::apply) carries out.
//! So a dry run can print every way and every check, and nothing is hidden in a closure.
//!
//! A way whose plan a `--root` sandbox kept off the machine ([`Applied::not_run`]) ends the
//! search as done: the guest did not refuse, the sandbox did, and trying the next way behind
//! its back would be wrong. The caller reads `not_run` and says so.

use tracing::{info, warn};

use crate::plan::{Applied, ApplyError, ApplyOptions, Plan, PlannedProcess, apply};
use crate::root::Root;
use crate::runner::ProcessRunner;

/// One way to reach the goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// For logs, errors and dry runs (`systemd`, `pm-utils`, `sysfs`).
    pub name: String,
    /// Commands that only look (`systemctl status UNIT`, `pm-is-supported --suspend`); this
    /// way is used when every one meets its [`Expect`](crate::plan::Expect).
    pub checks: Vec<PlannedProcess>,
    /// What this way does.
    pub plan: Plan,
}

/// No way reached the goal.
#[derive(Debug, thiserror::Error)]
pub enum AlternativesError {
    /// No way's checks passed: the guest cannot do this.
    #[error("no way to do this is supported here")]
    NoneApplies,
    /// The last way whose checks passed failed (every earlier one failed too).
    #[error("{name}: {source}")]
    Failed {
        name: String,
        #[source]
        source: ApplyError,
    },
}

/// Try `alternatives` in order (see the module docs). Returns the name of the way carried out
/// and what its plan did.
pub fn apply_first(
    alternatives: &[Alternative],
    root: &Root,
    runner: &dyn ProcessRunner,
    options: ApplyOptions,
) -> Result<(String, Applied), AlternativesError> {
    let mut last = None;
    for way in alternatives {
        if !checks_pass(runner, way) {
            continue;
        }
        info!(way = %way.name, "checks passed; carrying it out");
        match apply(&way.plan, root, runner, options) {
            Ok(applied) => return Ok((way.name.clone(), applied)),
            Err(source) => {
                warn!(way = %way.name, error = %source, "failed; trying the next way");
                last = Some(AlternativesError::Failed {
                    name: way.name.clone(),
                    source,
                });
            }
        }
    }
    Err(last.unwrap_or(AlternativesError::NoneApplies))
}

fn checks_pass(runner: &dyn ProcessRunner, way: &Alternative) -> bool {
    way.checks
        .iter()
        .all(|check| match runner.run(&check.command) {
            Ok(out) if check.expect.met_by(&out) => true,
            Ok(out) => {
                info!(way = %way.name, check = %check.command, code = ?out.code, "not supported here");
                false
            }
            Err(e) => {
                info!(way = %way.name, check = %check.command, error = %e, "check could not run");
                false
            }
        })
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::effect::{Effect, SandboxRunner};
    use crate::plan::{Expect, FileChange};
    use crate::runner::{Output, ProcessError, ProcessSpec};

    /// Answers each program with the exit code listed for it (0 otherwise).
    #[derive(Default)]
    struct Scripted {
        codes: Vec<(&'static str, i32)>,
        ran: Mutex<Vec<String>>,
    }

    impl ProcessRunner for Scripted {
        fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
            self.ran.lock().unwrap().push(cmd.command_line());
            let line = cmd.command_line();
            let code = self
                .codes
                .iter()
                .find(|(p, _)| line.starts_with(p))
                .map_or(0, |(_, c)| *c);
            Ok(Output {
                code: Some(code),
                ..Output::default()
            })
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }

    fn ways() -> Vec<Alternative> {
        vec![
            Alternative {
                name: "first".into(),
                checks: vec![
                    PlannedProcess::new(ProcessSpec::new("check-first").observes())
                        .expecting(Expect::Status(vec![1, 2, 3])),
                ],
                plan: Plan {
                    commands: vec![ProcessSpec::new("do-first").effect(Effect::Power).into()],
                    ..Plan::default()
                },
            },
            Alternative {
                name: "second".into(),
                checks: vec![ProcessSpec::new("check-second").observes().into()],
                plan: Plan {
                    commands: vec![ProcessSpec::new("do-second").effect(Effect::Power).into()],
                    ..Plan::default()
                },
            },
            Alternative {
                name: "kernel".into(),
                checks: vec![],
                plan: Plan {
                    changes: vec![FileChange::Kernel {
                        path: "/sys/power/state".into(),
                        value: b"mem".to_vec(),
                    }],
                    ..Plan::default()
                },
            },
        ]
    }

    fn sandbox() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sys/power")).unwrap();
        std::fs::write(d.path().join("sys/power/state"), "freeze mem disk\n").unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        (d, root)
    }

    #[test]
    fn the_first_way_whose_checks_pass_is_used_and_a_failure_falls_through() {
        let (d, root) = sandbox();
        // The first way's check answers 0 (not among 1..=3): skipped; the second fails.
        let runner = Scripted {
            codes: vec![("check-first", 0), ("do-second", 1)],
            ..Scripted::default()
        };
        let (name, applied) =
            apply_first(&ways(), &root, &runner, ApplyOptions::default()).unwrap();
        assert_eq!(name, "kernel");
        assert_eq!(applied.changed, ["/sys/power/state"]);
        assert_eq!(
            *runner.ran.lock().unwrap(),
            ["check-first", "check-second", "do-second"]
        );
        // Written in place, as the kernel takes it: no temp file, no backup.
        assert_eq!(
            std::fs::read_to_string(d.path().join("sys/power/state")).unwrap(),
            "memeze mem disk\n"
        );
        assert!(!d.path().join("var/lib/guestd/backup").exists());

        let runner = Scripted {
            codes: vec![("check-first", 3)],
            ..Scripted::default()
        };
        let (name, _) = apply_first(&ways(), &root, &runner, ApplyOptions::default()).unwrap();
        assert_eq!(name, "first");
        assert_eq!(*runner.ran.lock().unwrap(), ["check-first", "do-first"]);
    }

    #[test]
    fn none_applies_or_the_last_failure_is_the_answer() {
        let (_d, root) = sandbox();
        let runner = Scripted {
            codes: vec![("check-first", 0), ("check-second", 1)],
            ..Scripted::default()
        };
        let err = apply_first(&ways()[..2], &root, &runner, ApplyOptions::default());
        assert!(
            matches!(err, Err(AlternativesError::NoneApplies)),
            "{err:?}"
        );
        let runner = Scripted {
            codes: vec![("check-first", 2), ("do-first", 1), ("do-second", 4)],
            ..Scripted::default()
        };
        let err = apply_first(&ways()[..2], &root, &runner, ApplyOptions::default());
        let Err(AlternativesError::Failed { name, source }) = err else {
            panic!("{err:?}")
        };
        assert_eq!(name, "second");
        assert_eq!(source.to_string(), "'do-second' failed with exit status 4");
    }

    #[test]
    fn a_way_the_sandbox_keeps_off_the_machine_ends_the_search() {
        let (d, root) = sandbox();
        let inner = Arc::new(Scripted {
            codes: vec![("check-first", 3)],
            ..Scripted::default()
        });
        let runner = SandboxRunner::new(inner.clone(), BTreeSet::new());
        let (name, applied) =
            apply_first(&ways(), &root, &runner, ApplyOptions::default()).unwrap();
        assert_eq!(name, "first");
        assert_eq!(
            applied.not_run_message().unwrap().rsplit(": ").next(),
            Some("do-first (power)")
        );
        // The check ran (it only looks); nothing else, and the kernel file is untouched.
        assert_eq!(*inner.ran.lock().unwrap(), ["check-first"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("sys/power/state")).unwrap(),
            "freeze mem disk\n"
        );
    }
}
