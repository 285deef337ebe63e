//! `guest-shutdown`: `shutdown -P|-H|-r +0` through the command runner, as qemu-ga does. On
//! success nothing is sent back (qemu-ga's `success-response: false`).

use std::time::Duration;

use guestd_core::{Command, Effect, HandlerError};
use serde::Deserialize;
use serde_json::json;

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
        let flag = match a.mode.as_deref().unwrap_or("powerdown") {
            "powerdown" => "-P",
            "halt" => "-H",
            "reboot" => "-r",
            other => {
                return Err(HandlerError::BadRequest(format!(
                    "Invalid parameter 'mode': '{other}' (expected powerdown, halt or reboot)"
                )));
            }
        };
        let cmd = Command::new("shutdown")
            .args([flag, "+0", "hypervisor initiated shutdown"])
            .effect(Effect::Power)
            .timeout(Duration::from_secs(30));
        ctx.env.runner.run(&cmd)?.check("shutdown")?;
        Ok(json!({}))
    },
};
