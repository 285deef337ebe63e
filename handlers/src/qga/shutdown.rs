//! `guest-shutdown`: the backend plans the OS's own shutdown (`shutdown -P|-H|-r +0` on Linux,
//! as qemu-ga runs it) and `guestd_core::apply` carries it out. On success nothing is sent back
//! (qemu-ga's `success-response: false`).

use guestd_core::{ApplyOptions, BackendError, HandlerError, PowerOff};
use serde::Deserialize;
use serde_json::json;

use super::platform::not_on_this_os;
use super::{QgaCommand, args};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    mode: Option<String>,
}

pub const SHUTDOWN: QgaCommand = QgaCommand {
    name: "guest-shutdown",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: Args = args(value)?;
        let mode = match a.mode.as_deref().unwrap_or("powerdown") {
            "powerdown" => PowerOff::PowerDown,
            "halt" => PowerOff::Halt,
            "reboot" => PowerOff::Reboot,
            other => {
                return Err(HandlerError::BadRequest(format!(
                    "Invalid parameter 'mode': '{other}' (expected powerdown, halt or reboot)"
                )));
            }
        };
        let plan = match ctx.env.backend.plan_shutdown(mode) {
            Err(BackendError::Unsupported(_)) => return Err(not_on_this_os("guest-shutdown")),
            other => other?,
        };
        let applied = guestd_core::apply(
            &plan,
            &ctx.env.root,
            ctx.env.runner.as_ref(),
            ApplyOptions::default(),
        )?;
        // Under a --root sandbox: say which command was kept off the machine.
        if let Some(not_run) = applied.not_run_error() {
            return Err(not_run.into());
        }
        Ok(json!({}))
    },
};
