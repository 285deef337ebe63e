//! After an update is installed, the watchdog restarts guestd through the service manager and
//! waits for the new daemon to report ready; if it does not within the configured time, it puts
//! the previous binary back and restarts again.
//!
//! "Ready" is observed through a marker file (default `/run/guestd/ready`): the daemon writes
//! its version there (first line; its pid on the second) once its transports are serving
//! ([`write_ready_marker`]). The watchdog removes the marker before restarting, so only a daemon
//! started after the update can write it, and it must name the new version.
//!
//! The watchdog runs as a separate process (`<previous binary> --update-watchdog <state>`)
//! started outside guestd's service (the backend's `plan_detached_start`), and reads
//! everything it needs from the state file the handler wrote; it records the outcome there.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guestd_core::{Effect, ProcessRunner, ProcessSpec, Root, RootError, WriteOptions};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Where an update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Installed; the watchdog has not finished.
    Pending,
    /// The new daemon reported ready.
    Ready,
    /// The new daemon did not come up; the previous one is back and reported ready.
    RolledBack,
    /// The previous binary is back, but it did not report ready either.
    RollbackFailed,
}

/// One restart command (argv).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argv {
    pub program: String,
    pub args: Vec<String>,
    pub timeout_secs: u64,
}

impl From<&ProcessSpec> for Argv {
    fn from(c: &ProcessSpec) -> Self {
        Self {
            program: c.program.clone(),
            args: c.args.clone(),
            timeout_secs: c.timeout.as_secs(),
        }
    }
}

impl Argv {
    fn command(&self) -> ProcessSpec {
        ProcessSpec::new(&self.program)
            .args(self.args.iter().cloned())
            .timeout(Duration::from_secs(self.timeout_secs.max(1)))
            .effect(Effect::Service)
    }
}

/// A binary installed beside guestd by the same update (`guestd-update`, `guestd-tls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Companion {
    pub install_path: String,
    /// Where the file it replaced is kept; `None`: there was none (a rollback removes it).
    pub previous_path: Option<String>,
}

/// The handler's hand-over to the watchdog (`<state_dir>/state.json`, guest paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchState {
    pub status: Status,
    /// Unix time the update was installed.
    pub installed_at: u64,
    pub install_path: String,
    pub previous_path: String,
    /// Companion binaries the update replaced too (absent in the state of older agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companions: Vec<Companion>,
    pub old_version: String,
    pub new_version: String,
    pub ready_marker: String,
    pub restart: Vec<Argv>,
    pub restart_delay_ms: u64,
    pub ready_timeout_secs: u64,
    /// Polling interval for the marker.
    pub poll_ms: u64,
}

impl WatchState {
    pub fn load(root: &Root, path: &str) -> Result<Self, String> {
        let bytes = root.read(path).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("state file '{path}': {e}"))
    }

    pub fn save(&self, root: &Root, path: &str) -> Result<(), RootError> {
        let json = serde_json::to_vec_pretty(self).expect("state serializes");
        root.write_atomic(path, &json, WriteOptions::mode(0o600))
    }

    /// Still waiting for a watchdog that has not run out of time.
    pub fn in_progress(&self, now: u64) -> bool {
        let budget = self.restart_delay_ms / 1000 + 2 * self.ready_timeout_secs + 300;
        self.status == Status::Pending && now < self.installed_at.saturating_add(budget)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tell a watchdog (and operators) that this daemon is up: `<version>\n<pid>\n`.
pub fn write_ready_marker(root: &Root, path: &str, version: &str) -> Result<(), RootError> {
    if let Some(parent) = Path::new(path).parent() {
        root.create_dir_all(parent, 0o755)?;
    }
    let text = format!("{version}\n{}\n", std::process::id());
    root.write_atomic(path, text.as_bytes(), WriteOptions::mode(0o644))
}

/// The version in the marker, if there is one.
pub fn read_ready_marker(root: &Root, path: &str) -> Option<String> {
    let bytes = root.read_optional(path).ok()??;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Run the watchdog for the state at `state_path`; returns the final status (also saved).
pub fn supervise(
    root: &Root,
    runner: &dyn ProcessRunner,
    state_path: &str,
) -> Result<Status, String> {
    let mut state = WatchState::load(root, state_path)?;
    if state.status != Status::Pending {
        return Err(format!("update state is already {:?}", state.status));
    }
    // Let the "0" reply reach the host before the daemon that sent it goes away.
    sleep(Duration::from_millis(state.restart_delay_ms));
    info!(version = %state.new_version, "restarting guestd into the new version");
    let status = if restart_and_wait(root, runner, &state, &state.new_version) {
        info!(version = %state.new_version, "new guestd reported ready; update complete");
        Status::Ready
    } else {
        warn!(
            version = %state.new_version,
            timeout_s = state.ready_timeout_secs,
            "new guestd did not report ready; putting the previous binary back"
        );
        match restore_previous(root, &state) {
            Err(e) => {
                warn!(error = %e, "could not put the previous binary back");
                Status::RollbackFailed
            }
            Ok(()) if restart_and_wait(root, runner, &state, &state.old_version) => {
                info!(version = %state.old_version, "previous guestd is back and ready");
                Status::RolledBack
            }
            Ok(()) => {
                warn!(version = %state.old_version, "previous guestd did not report ready either");
                Status::RollbackFailed
            }
        }
    };
    state.status = status;
    state
        .save(root, state_path)
        .map_err(|e| format!("cannot record the update outcome: {e}"))?;
    Ok(status)
}

/// Remove the marker, run the restart commands, wait for `version` in the marker.
fn restart_and_wait(
    root: &Root,
    runner: &dyn ProcessRunner,
    state: &WatchState,
    version: &str,
) -> bool {
    if let Err(e) = root.remove_file(&state.ready_marker) {
        warn!(error = %e, "cannot remove the ready marker");
        return false;
    }
    let last = state.restart.len().saturating_sub(1);
    for (i, argv) in state.restart.iter().enumerate() {
        let cmd = argv.command();
        match runner.run(&cmd) {
            Ok(out) if out.success() => {}
            // Only the last command must succeed (`net stop` of a stopped service fails).
            Ok(out) if i < last => {
                info!(command = %cmd, code = ?out.code, "restart step failed; going on")
            }
            Ok(out) => {
                warn!(command = %cmd, code = ?out.code, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "restart failed");
                return false;
            }
            Err(e) => {
                warn!(command = %cmd, error = %e, "restart failed");
                if i == last {
                    return false;
                }
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(state.ready_timeout_secs);
    loop {
        match read_ready_marker(root, &state.ready_marker) {
            Some(v) if v == version => return true,
            Some(v) => {
                warn!(reported = %v, expected = %version, "guestd reported an unexpected version");
                return false;
            }
            None if Instant::now() >= deadline => return false,
            None => sleep(Duration::from_millis(state.poll_ms.max(10))),
        }
    }
}

/// Put `<install>.previous` back in place (atomically, with its mode and owner), and each
/// companion's previous file (or remove a companion that did not exist before).
fn restore_previous(root: &Root, state: &WatchState) -> Result<(), RootError> {
    for companion in &state.companions {
        restore_companion(root, companion)?;
    }
    restore_file(root, &state.previous_path, &state.install_path)
}

/// Undo one companion's installation.
pub fn restore_companion(root: &Root, companion: &Companion) -> Result<(), RootError> {
    match &companion.previous_path {
        Some(previous) => restore_file(root, previous, &companion.install_path),
        None => root.remove_file(&companion.install_path),
    }
}

fn restore_file(root: &Root, previous: &str, install: &str) -> Result<(), RootError> {
    let bytes = root.read_limited(previous, super::MAX_BINARY)?;
    let meta = root.metadata(previous)?;
    let opts = WriteOptions {
        mode: meta.mode,
        owner: Some((meta.uid, meta.gid)),
        preserve: false,
    };
    root.write_atomic(install, &bytes, opts)
}
