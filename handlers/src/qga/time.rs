//! `guest-get-timezone` (the zone abbreviation and UTC offset now in effect, from
//! `/etc/localtime`, as qemu-ga reports them through GLib) and `guest-set-time` (qemu-ga's two
//! modes: with a time, set the system clock and then write it to the RTC with `hwclock -w`;
//! without one, set the system clock from the RTC with `hwclock -s`). The backend plans setting
//! the time (`Backend::plan_set_clock`; it refuses a guest without `hwclock` or without an RTC
//! before anything changes) and `plan::apply` carries the plan out; the errors are worded here,
//! as qemu-ga words them.

use std::time::{SystemTime, UNIX_EPOCH};

use guestd_core::{ApplyError, ApplyOptions, BackendError, HandlerError, ProcessError, Root};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::platform::{linux_only, not_on_this_os, unsupported};
use super::tzif;
use super::{QgaCommand, args};

const LOCALTIME: &str = "/etc/localtime";
/// The program whose failure qemu-ga words as a hardware clock failure.
const HWCLOCK: &str = "hwclock";
/// qemu-ga accepts years 1970 up to (not including) 2070.
const LATEST: i64 = 3_155_760_000; // 2070-01-01T00:00:00Z

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const TIMEZONE: QgaCommand = QgaCommand {
    name: "guest-get-timezone",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        if cfg!(windows) {
            return Err(not_on_this_os("guest-get-timezone"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(timezone(&ctx.env.root, now))
    },
};

/// The zone in effect at `now`; UTC when `/etc/localtime` is missing or unusable (as GLib,
/// hence qemu-ga, falls back).
pub(crate) fn timezone(root: &Root, now: i64) -> Value {
    let zone = match root.read_optional(LOCALTIME) {
        Ok(Some(data)) => tzif::zone_at(&data, now).map_err(|e| e.to_string()),
        Ok(None) => Err(format!("{LOCALTIME} does not exist")),
        Err(e) => Err(e.to_string()),
    };
    match zone {
        Ok(z) => json!({"zone": z.abbreviation, "offset": z.offset}),
        Err(why) => {
            warn!(reason = %why, "no usable local time zone: reporting UTC");
            json!({"zone": "UTC", "offset": 0})
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTimeArgs {
    /// Nanoseconds since the epoch.
    time: Option<i64>,
}

pub const SET_TIME: QgaCommand = QgaCommand {
    name: "guest-set-time",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: SetTimeArgs = args(value)?;
        linux_only("guest-set-time")?;
        if let Some(t) = a.time {
            check_time(t)?;
        }
        let plan = match ctx.env.backend.plan_set_clock(ctx.env, a.time) {
            Err(BackendError::Unsupported(why)) => return Err(unsupported(&why)),
            other => other?,
        };
        let applied = guestd_core::apply(
            &plan,
            &ctx.env.root,
            ctx.env.runner.as_ref(),
            ApplyOptions::default(),
        )
        .map_err(|e| set_time_error(&e))?;
        if let Some(message) = applied.not_run_message() {
            return Err(HandlerError::failed(format!(
                "the clock was not set: {message}"
            )));
        }
        match a.time {
            Some(t) => info!(time_ns = t, "system clock set and written to the RTC"),
            None => info!("system clock set from the RTC"),
        }
        Ok(json!({}))
    },
};

/// qemu-ga's range check: a year from 1970 to 2069.
fn check_time(ns: i64) -> Result<(), HandlerError> {
    let secs = ns.div_euclid(1_000_000_000);
    if (0..LATEST).contains(&secs) {
        Ok(())
    } else {
        Err(HandlerError::BadRequest(format!(
            "Invalid time: {ns} ns is not between 1970 and 2069"
        )))
    }
}

/// qemu-ga's wording for the step that failed; the detail goes to the log.
fn set_time_error(err: &ApplyError) -> HandlerError {
    warn!(error = %err, "guest-set-time failed");
    let program = match err {
        ApplyError::ProcessSpec { source, .. } => match source {
            ProcessError::Spawn { program, .. }
            | ProcessError::Timeout { program, .. }
            | ProcessError::Failed { program, .. }
            | ProcessError::NotRun { program, .. } => program.as_str(),
        },
        ApplyError::Unexpected { program, .. } => program.as_str(),
        ApplyError::File { .. } | ApplyError::Check { .. } | ApplyError::Native { .. } => "",
    };
    if program == HWCLOCK {
        HandlerError::failed(format!(
            "hwclock failed to set hardware clock to system time ({err})"
        ))
    } else {
        HandlerError::failed(format!("Failed to set time to guest ({err})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_range() {
        assert!(check_time(0).is_ok());
        assert!(check_time(1_700_000_000_123_456_789).is_ok());
        assert!(check_time(-1).is_err());
        assert!(check_time(LATEST * 1_000_000_000).is_err());
        assert!(check_time(i64::MAX).is_err());
    }
}
