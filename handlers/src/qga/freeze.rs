//! `guest-fsfreeze-status`, `guest-fsfreeze-freeze`, `guest-fsfreeze-freeze-list`,
//! `guest-fsfreeze-thaw`: Linux FIFREEZE and
//! FITHAW through util-linux `fsfreeze` (run by the command runner, so tests use the fake
//! runner). Frozen filesystems are thawed automatically after the configured timeout, so a
//! host that disappears between freeze and thaw never leaves the guest frozen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestd_core::{Command, CommandRunner, Context, Dialect, Handler, HandlerError, Reply, Root};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::args;

const FSFREEZE: &str = "fsfreeze";
const MOUNTS: &str = "/proc/self/mounts";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Which filesystems this agent froze; shared by the three commands and the auto-thaw timer.
#[derive(Debug, Clone)]
pub struct Freezer {
    state: Arc<Mutex<State>>,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// Mount points frozen by us, in freeze order.
    frozen: Vec<String>,
    /// Bumped by every freeze and thaw, so a stale auto-thaw timer does nothing.
    generation: u64,
}

impl Freezer {
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: Arc::default(),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any filesystem is frozen by this agent.
    pub fn is_frozen(&self) -> bool {
        !self.lock().frozen.is_empty()
    }

    /// Freeze every freezable filesystem, or only those mounted at `only` (mount points that
    /// are not freezable filesystems are ignored, as qemu-ga ignores them).
    fn freeze(
        &self,
        root: &Root,
        runner: Arc<dyn CommandRunner>,
        only: Option<&[String]>,
    ) -> Result<usize, HandlerError> {
        let mut state = self.lock();
        if !state.frozen.is_empty() {
            return Err(HandlerError::failed(
                "the filesystems are already frozen; thaw them first",
            ));
        }
        let mut mounts = freezable_mounts(&root.read_to_string(MOUNTS)?);
        if let Some(only) = only {
            mounts.retain(|m| only.contains(m));
        }
        // Children before their parents, as qemu-ga does.
        for mount in mounts.iter().rev() {
            if let Err(err) = run(runner.as_ref(), "--freeze", mount) {
                let done = std::mem::take(&mut state.frozen);
                thaw_all(runner.as_ref(), &done);
                return Err(err);
            }
            state.frozen.push(mount.clone());
        }
        state.generation += 1;
        let count = state.frozen.len();
        info!(
            count,
            timeout_secs = self.timeout.as_secs(),
            "filesystems frozen"
        );
        let generation = state.generation;
        let this = self.clone();
        let timer_runner = Arc::clone(&runner);
        std::thread::Builder::new()
            .name("fsfreeze-auto-thaw".into())
            .spawn(move || {
                std::thread::sleep(this.timeout);
                let mut state = this.lock();
                if state.generation == generation && !state.frozen.is_empty() {
                    warn!("no guest-fsfreeze-thaw within the timeout; thawing automatically");
                    let done = std::mem::take(&mut state.frozen);
                    thaw_all(timer_runner.as_ref(), &done);
                    state.generation += 1;
                }
            })
            .map_err(|e| {
                // Without the timer a lost host would leave us frozen: undo at once.
                let done = std::mem::take(&mut state.frozen);
                thaw_all(runner.as_ref(), &done);
                HandlerError::failed(format!("cannot start the auto-thaw timer: {e}"))
            })?;
        Ok(count)
    }

    fn thaw(&self, runner: &dyn CommandRunner) -> usize {
        let mut state = self.lock();
        let done = std::mem::take(&mut state.frozen);
        state.generation += 1;
        thaw_all(runner, &done)
    }
}

fn run(runner: &dyn CommandRunner, flag: &str, mount: &str) -> Result<(), HandlerError> {
    let cmd = Command::new(FSFREEZE)
        .args([flag, mount])
        .timeout(Duration::from_secs(60))
        .effect(guestd_core::Effect::Freeze);
    runner.run(&cmd)?.check(FSFREEZE)?;
    Ok(())
}

/// Thaw in reverse freeze order; returns how many thawed. Failures are logged, the rest go on.
fn thaw_all(runner: &dyn CommandRunner, frozen: &[String]) -> usize {
    frozen
        .iter()
        .rev()
        .filter(|mount| match run(runner, "--unfreeze", mount) {
            Ok(()) => true,
            Err(err) => {
                warn!(mount = %mount, error = %err, "thaw failed");
                false
            }
        })
        .count()
}

/// Mount points of block-device filesystems (`/dev/...` sources), each once, in mount order.
fn freezable_mounts(table: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in table.lines() {
        let mut f = line.split_whitespace();
        let (Some(source), Some(target)) = (f.next(), f.next()) else {
            continue;
        };
        let target = unescape(target);
        if source.starts_with("/dev/") && !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// `/proc/mounts` octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers `guest-fsfreeze-status`: `"thawed"` or `"frozen"`.
#[derive(Debug)]
pub struct StatusHandler(pub Freezer);

impl Handler for StatusHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-status"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn may_block(&self) -> bool {
        false
    }

    fn is_query(&self) -> bool {
        true
    }

    fn run(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        args::<NoArgs>(value)?;
        let status = if self.0.is_frozen() {
            "frozen"
        } else {
            "thawed"
        };
        Ok(guestd_core::qga::ok(&json!(status)))
    }
}

/// Answers `guest-fsfreeze-freeze`: the number of filesystems frozen.
#[derive(Debug)]
pub struct FreezeHandler(pub Freezer);

impl Handler for FreezeHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-freeze"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        args::<NoArgs>(value)?;
        let count = self
            .0
            .freeze(&ctx.env.root, Arc::clone(&ctx.env.runner), None)?;
        Ok(guestd_core::qga::ok(&json!(count)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Absent: every filesystem, as `guest-fsfreeze-freeze`.
    mountpoints: Option<Vec<String>>,
}

/// Answers `guest-fsfreeze-freeze-list`: the number of the listed filesystems frozen.
#[derive(Debug)]
pub struct FreezeListHandler(pub Freezer);

impl Handler for FreezeListHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-freeze-list"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let a: ListArgs = args(value)?;
        let count = self.0.freeze(
            &ctx.env.root,
            Arc::clone(&ctx.env.runner),
            a.mountpoints.as_deref(),
        )?;
        Ok(guestd_core::qga::ok(&json!(count)))
    }
}

/// Answers `guest-fsfreeze-thaw`: the number of filesystems thawed.
#[derive(Debug)]
pub struct ThawHandler(pub Freezer);

impl Handler for ThawHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-thaw"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        args::<NoArgs>(value)?;
        let count = self.0.thaw(ctx.env.runner.as_ref());
        info!(count, "filesystems thawed");
        Ok(guestd_core::qga::ok(&json!(count)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_block_devices_once() {
        let table = "proc /proc proc rw 0 0\n/dev/vda1 / ext4 rw 0 0\n\
                     tmpfs /run tmpfs rw 0 0\n/dev/vdb /mnt/my\\040data xfs rw 0 0\n\
                     /dev/vda1 / ext4 rw 0 0\n";
        assert_eq!(freezable_mounts(table), vec!["/", "/mnt/my data"]);
    }
}
