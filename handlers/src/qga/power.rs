//! `guest-suspend-disk`, `guest-suspend-ram`, `guest-suspend-hybrid`: through the guest's own
//! mechanism, tried in qemu-ga's order, each checked before it is used:
//!
//! 1. systemd (when it runs the guest: `/run/systemd/system` exists): `systemctl status
//!    systemd-<mode>.service` answering an LSB status of 1..=3 means the unit exists, then
//!    `systemctl suspend|hibernate|hybrid-sleep`;
//! 2. pm-utils: `pm-is-supported --suspend|--hibernate|--suspend-hybrid`, then `pm-suspend`…;
//! 3. the kernel: `/sys/power/state` lists `mem` or `disk`, which is written there (no hybrid).
//!
//! A mechanism that is supported but fails falls through to the next, as in qemu-ga; when none
//! supports the mode the answer is qemu-ga's "not supported by the guest". The commands run as
//! a `Plan`; the sysfs write goes through `Root`. On success nothing is sent back (the guest is
//! asleep), as `success-response: false` says.

use std::time::Duration;

use guestd_core::plan::Expect;
use guestd_core::{ApplyOptions, Context, Effect, HandlerError, Plan, PlannedProcess, ProcessSpec};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::platform::linux_only;
use super::{QgaCommand, args};

const POWER_STATE: &str = "/sys/power/state";
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// A suspend mode and its name in each mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disk,
    Ram,
    Hybrid,
}

impl Mode {
    fn systemd_verb(self) -> &'static str {
        match self {
            Self::Disk => "hibernate",
            Self::Ram => "suspend",
            Self::Hybrid => "hybrid-sleep",
        }
    }

    fn pm_utils(self) -> (&'static str, &'static str) {
        match self {
            Self::Disk => ("--hibernate", "pm-hibernate"),
            Self::Ram => ("--suspend", "pm-suspend"),
            Self::Hybrid => ("--suspend-hybrid", "pm-suspend-hybrid"),
        }
    }

    /// The word for `/sys/power/state` (the kernel has no hybrid state).
    fn sysfs(self) -> Option<&'static str> {
        match self {
            Self::Disk => Some("disk"),
            Self::Ram => Some("mem"),
            Self::Hybrid => None,
        }
    }
}

pub const SUSPEND_DISK: QgaCommand = QgaCommand {
    name: "guest-suspend-disk",
    blocking: true,
    query: false,
    run: |ctx, value| run(ctx, value, "guest-suspend-disk", Mode::Disk),
};

pub const SUSPEND_RAM: QgaCommand = QgaCommand {
    name: "guest-suspend-ram",
    blocking: true,
    query: false,
    run: |ctx, value| run(ctx, value, "guest-suspend-ram", Mode::Ram),
};

pub const SUSPEND_HYBRID: QgaCommand = QgaCommand {
    name: "guest-suspend-hybrid",
    blocking: true,
    query: false,
    run: |ctx, value| run(ctx, value, "guest-suspend-hybrid", Mode::Hybrid),
};

fn run(ctx: &Context<'_>, value: &Value, name: &str, mode: Mode) -> Result<Value, HandlerError> {
    args::<NoArgs>(value)?;
    linux_only(name)?;
    suspend(ctx, mode)?;
    Ok(json!({}))
}

fn command(c: ProcessSpec) -> Plan {
    Plan {
        commands: vec![PlannedProcess {
            command: c.timeout(TIMEOUT),
            expect: Expect::Success,
        }],
        ..Plan::default()
    }
}

/// Suspending through one mechanism failed, or a `--root` sandbox did not let it run (then no
/// other mechanism is tried: the guest did not refuse, the sandbox did).
enum Failure {
    Failed(HandlerError),
    NotRun(String),
}

fn apply(ctx: &Context<'_>, plan: &Plan) -> Result<(), Failure> {
    let applied = guestd_core::apply(
        plan,
        &ctx.env.root,
        ctx.env.runner.as_ref(),
        ApplyOptions::default(),
    )
    .map_err(|e| Failure::Failed(e.into()))?;
    match applied.not_run_message() {
        Some(message) => Err(Failure::NotRun(format!(
            "the guest was not suspended: {message}"
        ))),
        None => Ok(()),
    }
}

/// The exit code of a check command; `None` when it cannot run at all.
fn status(ctx: &Context<'_>, cmd: ProcessSpec) -> Option<i32> {
    if !ctx.env.runner.exists(&cmd.program) {
        return None;
    }
    match ctx.env.runner.run(&cmd.timeout(TIMEOUT)) {
        Ok(out) => out.code,
        Err(e) => {
            warn!(error = %e, "suspend support check failed");
            None
        }
    }
}

pub(crate) fn suspend(ctx: &Context<'_>, mode: Mode) -> Result<(), HandlerError> {
    let root = &ctx.env.root;
    let mut last_error = None;
    let mut supported = false;

    let unit = format!("systemd-{}.service", mode.systemd_verb());
    if root.is_dir("/run/systemd/system")
        && status(
            ctx,
            ProcessSpec::new("systemctl")
                .args(["status", unit.as_str()])
                .observes(),
        )
        .is_some_and(|code| (1..=3).contains(&code))
    {
        supported = true;
        info!(
            mechanism = "systemd",
            verb = mode.systemd_verb(),
            "suspending"
        );
        match apply(
            ctx,
            &command(
                ProcessSpec::new("systemctl")
                    .arg(mode.systemd_verb())
                    .effect(Effect::Power),
            ),
        ) {
            Ok(()) => return Ok(()),
            Err(Failure::NotRun(message)) => return Err(HandlerError::failed(message)),
            Err(Failure::Failed(e)) => last_error = Some(e),
        }
    }

    let (flag, program) = mode.pm_utils();
    if status(
        ctx,
        ProcessSpec::new("pm-is-supported").arg(flag).observes(),
    ) == Some(0)
    {
        supported = true;
        info!(mechanism = "pm-utils", program, "suspending");
        match apply(
            ctx,
            &command(ProcessSpec::new(program).effect(Effect::Power)),
        ) {
            Ok(()) => return Ok(()),
            Err(Failure::NotRun(message)) => return Err(HandlerError::failed(message)),
            Err(Failure::Failed(e)) => last_error = Some(e),
        }
    }

    if let Some(word) = mode.sysfs() {
        let listed = root.read(POWER_STATE).is_ok_and(|s| {
            String::from_utf8_lossy(&s)
                .split_whitespace()
                .any(|w| w == word)
        });
        if listed {
            supported = true;
            info!(mechanism = "sysfs", state = word, "suspending");
            match root.write_in_place(POWER_STATE, word.as_bytes()) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last_error = Some(HandlerError::failed(format!(
                        "suspend: cannot write to '{POWER_STATE}': {e}"
                    )))
                }
            }
        }
    }

    match (supported, last_error) {
        (true, Some(err)) => Err(err),
        _ => Err(HandlerError::failed(
            "the requested suspend mode is not supported by the guest",
        )),
    }
}
