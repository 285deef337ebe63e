//! `guest-suspend-disk`, `guest-suspend-ram`, `guest-suspend-hybrid`: the backend lists the
//! ways this guest can suspend, each with its checks (`Backend::plan_suspend`; on Linux
//! systemd, then pm-utils, then `/sys/power/state`, in qemu-ga's order), and
//! `guestd_core::apply_first` tries them in turn: a way that is supported but fails falls
//! through to the next, as in qemu-ga. When none is supported the answer is qemu-ga's "not
//! supported by the guest"; when a `--root` sandbox keeps the suspend off the machine, the
//! answer says so and no other way is tried. On success nothing is sent back (the guest is
//! asleep), as `success-response: false` says.

use guestd_core::{
    AlternativesError, ApplyOptions, BackendError, Context, HandlerError, SuspendMode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::platform::{linux_only, not_on_this_os};
use super::{QgaCommand, args};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const SUSPEND_DISK: QgaCommand = QgaCommand {
    name: "guest-suspend-disk",
    blocking: true,
    query: false,
    run: |ctx, value| run(ctx, value, "guest-suspend-disk", SuspendMode::Disk),
};

pub const SUSPEND_RAM: QgaCommand = QgaCommand {
    name: "guest-suspend-ram",
    blocking: true,
    query: false,
    run: |ctx, value| run(ctx, value, "guest-suspend-ram", SuspendMode::Ram),
};

pub const SUSPEND_HYBRID: QgaCommand = QgaCommand {
    name: "guest-suspend-hybrid",
    blocking: true,
    query: false,
    run: |ctx, value| run(ctx, value, "guest-suspend-hybrid", SuspendMode::Hybrid),
};

fn run(
    ctx: &Context<'_>,
    value: &Value,
    name: &str,
    mode: SuspendMode,
) -> Result<Value, HandlerError> {
    args::<NoArgs>(value)?;
    linux_only(name)?;
    let env = ctx.env;
    let ways = match env.backend.plan_suspend(env, mode) {
        Err(BackendError::Unsupported(_)) => return Err(not_on_this_os(name)),
        other => other?,
    };
    let (way, applied) = guestd_core::apply_first(
        &ways,
        &env.root,
        env.runner.as_ref(),
        ApplyOptions::default(),
    )
    .map_err(|e| match e {
        AlternativesError::NoneApplies => {
            HandlerError::failed("the requested suspend mode is not supported by the guest")
        }
        AlternativesError::Failed { name, source } => {
            HandlerError::failed(format!("suspend through {name} failed: {source}"))
        }
    })?;
    if let Some(message) = applied.not_run_message() {
        return Err(HandlerError::failed(format!(
            "the guest was not suspended: {message}"
        )));
    }
    info!(way, "suspended");
    Ok(json!({}))
}
