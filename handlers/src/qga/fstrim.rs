//! `guest-fstrim`: discard unused blocks of every local filesystem (the mounts
//! `guest-get-fsinfo` reports). The backend plans one step per mount (`Backend::plan_fstrim`:
//! util-linux `fstrim --verbose [--minimum N] MOUNTPOINT` on Linux), `guestd_core::apply` runs
//! them, and each step's own result becomes that mount's entry as qemu-ga reports it:
//! `{path, trimmed, minimum}` or `{path, error}` ("trim not supported" for filesystems or
//! devices without discard). `minimum` is the requested minimum: the fstrim tool does not print
//! the kernel's effective one. Refused while this agent holds filesystems frozen.

use std::time::Duration;

use guestd_core::{
    ApplyOptions, BackendError, Context, Dialect, Handler, HandlerError, Reply, Step,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::args;
use super::fsinfo::local_mounts;
use super::platform::{linux_only, unsupported};

/// Trimming every filesystem may take long (each step has its own timeout in the plan).
const WHOLE: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    /// Smallest free range to discard, in bytes.
    minimum: Option<i64>,
}

/// Answers `guest-fstrim` (refused by the dispatcher while filesystems are frozen: it is no
/// query).
#[derive(Debug)]
pub struct FstrimHandler;

impl Handler for FstrimHandler {
    fn name(&self) -> &'static str {
        "guest-fstrim"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(WHOLE)
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let a: Args = args(value)?;
        linux_only(self.name())?;
        let minimum = match a.minimum {
            Some(m) if m < 0 => {
                return Err(HandlerError::BadRequest(format!(
                    "Invalid parameter 'minimum': {m} (expected bytes, 0 or more)"
                )));
            }
            Some(m) => m,
            None => 0,
        };
        let env = ctx.env;
        // qemu-ga lists the last mount first.
        let mounts: Vec<String> = local_mounts(&env.root)?
            .into_iter()
            .rev()
            .map(|m| m.mountpoint)
            .collect();
        let plan = match env
            .backend
            .plan_fstrim(env, &mounts, minimum.unsigned_abs())
        {
            Err(BackendError::Unsupported(why)) => return Err(unsupported(&why)),
            other => other?,
        };
        let applied = guestd_core::apply(
            &plan,
            &env.root,
            env.runner.as_ref(),
            ApplyOptions::default(),
        )?;
        // One step per mount, in order (the backend's promise).
        let paths: Vec<Value> = mounts
            .iter()
            .zip(plan.commands.iter().zip(&applied.steps))
            .map(|(path, (planned, step))| result(path, &planned.command.program, step, minimum))
            .collect();
        info!(count = paths.len(), "filesystems trimmed");
        Ok(guestd_core::qga::ok(&json!({ "paths": paths })))
    }
}

/// One mount's entry, from its step's result (`program`: the tool, for the sandbox's words).
fn result(path: &str, program: &str, step: &Step, minimum: i64) -> Value {
    match step {
        Step::Ran(out) if out.success() => {
            match trimmed_bytes(&String::from_utf8_lossy(&out.stdout)) {
                Some(bytes) => json!({"path": path, "trimmed": bytes, "minimum": minimum}),
                None => {
                    json!({"path": path, "error": "failed to trim: unreadable output of fstrim"})
                }
            }
        }
        Step::Ran(out) | Step::Declined(out) => {
            json!({"path": path, "error": failure(&String::from_utf8_lossy(&out.stderr), out.code)})
        }
        Step::TimedOut => {
            json!({"path": path, "error": "failed to trim: fstrim did not finish in time"})
        }
        // A --root sandbox kept it off the machine: say so, not "failed".
        Step::NotRun(effect) => {
            let not_run = guestd_core::ProcessError::NotRun {
                program: program.into(),
                effect: *effect,
            };
            json!({"path": path, "error": not_run.to_string()})
        }
        Step::CouldNotRun(reason) => {
            json!({"path": path, "error": format!("failed to trim: {reason}")})
        }
        Step::Unchecked => json!({"path": path, "error": "failed to trim: not run"}),
    }
}

/// The byte count of fstrim's verbose line: `/: 1.2 GiB (1288490188 bytes) trimmed on
/// /dev/vda1` (util-linux 2.26+) or `/: 1288490188 bytes were trimmed` (older).
pub(crate) fn trimmed_bytes(stdout: &str) -> Option<i64> {
    let line = stdout.lines().find(|l| l.contains("trimmed"))?;
    let before = match line.find(" bytes)") {
        Some(at) => &line[line[..at].rfind('(')? + 1..at],
        None => {
            let at = line.find(" bytes were trimmed")?;
            line[..at].rsplit(' ').next()?
        }
    };
    before.trim().parse().ok()
}

/// qemu-ga's error text for a failed trim, from fstrim's message (or its exit status).
pub(crate) fn failure(stderr: &str, code: Option<i32>) -> String {
    let msg = stderr.lines().next().unwrap_or("").trim();
    if msg.contains("not supported") || msg.contains("Inappropriate ioctl") {
        "trim not supported".to_string()
    } else if msg.is_empty() {
        match code {
            Some(c) => format!("failed to trim: fstrim exited with status {c}"),
            None => "failed to trim: fstrim was killed by a signal".to_string(),
        }
    } else {
        let msg = msg.strip_prefix("fstrim: ").unwrap_or(msg);
        format!("failed to trim: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstrim_output_and_errors() {
        assert_eq!(
            trimmed_bytes("/: 7.4 GiB (7945158656 bytes) trimmed on /dev/vda\n"),
            Some(7_945_158_656)
        );
        assert_eq!(trimmed_bytes("/srv: 0 B (0 bytes) trimmed\n"), Some(0));
        assert_eq!(trimmed_bytes("/: 4096 bytes were trimmed\n"), Some(4096));
        assert_eq!(trimmed_bytes("nonsense"), None);
        assert_eq!(
            failure(
                "fstrim: /boot: the discard operation is not supported\n",
                Some(1)
            ),
            "trim not supported"
        );
        assert_eq!(
            failure(
                "fstrim: /mnt: FITRIM ioctl failed: Read-only file system\n",
                Some(1)
            ),
            "failed to trim: /mnt: FITRIM ioctl failed: Read-only file system"
        );
    }
}
