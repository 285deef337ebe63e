//! `agentupdate` (spec §4.7): download a new guestd, verify it, install it, restart into it,
//! and go back to the previous one if the new daemon does not come up.
//!
//! 1. The value is `"url,checksum"` (nova) or `{"url", "md5sum"}` / `{"url", "sha256"}`; the
//!    checksum kind follows its length (32 hex digits MD5, 64 SHA-256).
//! 2. The [`helper`] executable `guestd-update` (installed beside guestd; guestd itself links no
//!    HTTP, TLS or archive code) downloads over HTTP or HTTPS (rustls; `ca_bundle` replaces the
//!    built-in roots) with a size limit and a timeout, as `helper_user` (`nobody`), and hands the
//!    body back; guestd verifies the checksum itself before anything is unpacked.
//! 3. The helper unpacks the `.tar.gz`; it must hold `guestd` (top level or one directory down)
//!    and may hold `installer.sh` and the companion binaries `guestd-update` and `guestd-tls`
//!    beside it ([`payload`]). They are staged under `state_dir/staged.<pid>.<n>`, a directory
//!    of this update alone; `state_dir` and the install directory must be root's all the way
//!    (`Root::check_private`), since what is staged there is then run as root. One update runs
//!    at a time: a second one, on any channel, is refused while the first runs.
//! 4. The staged binary (and a staged `guestd-tls`) must pass `--self-test` (it parses the
//!    config and builds the dispatcher, then prints `guestd <version> self-test ok: …`); a
//!    staged helper must answer `--version`. `installer.sh`, if any, then runs with an empty
//!    environment. Any failure up to here changes nothing installed.
//! 5. The installed binary is copied to `<install_path>.previous`, the new one replaces it
//!    atomically (each companion likewise beside it), the [`watchdog`] state is written and the
//!    watchdog is started outside the service (the backend's `plan_detached_start`); the reply
//!    is `"0"`.
//! 6. The watchdog waits `restart_delay_ms` (so the reply reaches the host), restarts guestd
//!    through the service manager (the backend's `plan_service_restart`, found at start-up) and
//!    waits `ready_timeout_secs` for the ready marker with the new version; otherwise it
//!    restores the previous binary and restarts again.

pub mod helper;
pub mod payload;
pub mod watchdog;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use guestd_core::{
    ApplyOptions, Backend, BackendError, Context, Effect, Handler, HandlerError, ProcessSpec,
    Reply, Root, WriteOptions,
};
use md5::Digest as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use self::helper::Helper;
use self::payload::Payload;
use self::watchdog::{Argv, Companion, Status, WatchState};

/// Messages of record (U1, spec §4.7) and ours.
pub mod msg {
    pub const INVALID: &str = "Invalid arguments";
    pub const MISSING: &str = "Missing URL or MD5 sum in dictionary arguments";
    pub const NO_MANAGER: &str = "No service manager found to restart the agent";
    pub const IN_PROGRESS: &str = "An agent update is already in progress";
}

/// Largest agent binary read back (the installed one kept as `.previous`, or put back from
/// it): far above any real guestd, a bound all the same.
pub const MAX_BINARY: u64 = 1 << 30;

/// The version of the running guestd (the workspace version all crates share).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `[update]` in guestd.toml. Paths are guest paths (read through `Root`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// PEM CA bundle trusted for HTTPS downloads instead of the built-in roots.
    pub ca_bundle: Option<String>,
    /// Largest download accepted, in bytes (the unpacked archive may be 4 times that).
    pub max_size: u64,
    /// Whole-download time limit.
    pub download_timeout_secs: u64,
    /// The installed guestd binary; default: the running executable (`guestd` beside it when
    /// that is `guestd-tls`).
    pub install_path: Option<String>,
    /// The download helper `guestd-update` (a host path); default: beside the running executable.
    pub helper: Option<String>,
    /// The user the helper downloads as when guestd runs as root (empty: as root). Unix only.
    pub helper_user: String,
    /// Service name for the service manager.
    pub service_name: String,
    /// Restart command (argv) instead of the detected service manager's.
    pub restart_command: Option<Vec<String>>,
    /// How long the new daemon has to report ready before it is rolled back.
    pub ready_timeout_secs: u64,
    /// How long `guestd --self-test` of the new binary may take.
    pub self_test_timeout_secs: u64,
    /// How long `installer.sh` may take.
    pub installer_timeout_secs: u64,
    /// Delay between the reply and the restart.
    pub restart_delay_ms: u64,
    /// Staging area, watchdog state and log.
    pub state_dir: String,
    /// File the daemon writes its version to once it serves (see [`watchdog`]).
    pub ready_marker: String,
    /// The configuration file the daemon was started with (set by the daemon, not read from
    /// TOML): the new binary's self-test loads this one.
    #[serde(skip)]
    pub self_test_config: Option<String>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        let windows = cfg!(windows);
        Self {
            ca_bundle: None,
            max_size: 64 * 1024 * 1024,
            download_timeout_secs: 300,
            install_path: None,
            helper: None,
            helper_user: if windows {
                String::new()
            } else {
                "nobody".into()
            },
            service_name: "guestd".into(),
            restart_command: None,
            ready_timeout_secs: 60,
            self_test_timeout_secs: 30,
            installer_timeout_secs: 300,
            restart_delay_ms: 2000,
            state_dir: if windows {
                "C:\\ProgramData\\guestd\\update".into()
            } else {
                "/var/lib/guestd/update".into()
            },
            ready_marker: if windows {
                "C:\\ProgramData\\guestd\\ready".into()
            } else {
                "/run/guestd/ready".into()
            },
            self_test_config: None,
        }
    }
}

impl UpdateConfig {
    pub fn state_file(&self) -> String {
        join(&self.state_dir, "state.json")
    }
}

/// Expected digest of the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Md5(String),
    Sha256(String),
}

impl Checksum {
    /// Kind by length: 32 hex digits MD5, 64 SHA-256.
    pub fn parse(text: &str) -> Result<Self, HandlerError> {
        let hex = text.trim().to_ascii_lowercase();
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(HandlerError::failed(format!(
                "Invalid checksum '{}': not hexadecimal",
                text.trim()
            )));
        }
        match hex.len() {
            32 => Ok(Self::Md5(hex)),
            64 => Ok(Self::Sha256(hex)),
            n => Err(HandlerError::failed(format!(
                "Invalid checksum: {n} hex digits, expected 32 (MD5) or 64 (SHA-256)"
            ))),
        }
    }

    /// U1's message for MD5 (`MD5 sums do not match (<given> != <actual>)`), the same for SHA-256.
    pub fn verify(&self, data: &[u8]) -> Result<(), HandlerError> {
        let (kind, want, got) = match self {
            Self::Md5(want) => ("MD5", want, hex(&md5::Md5::digest(data))),
            Self::Sha256(want) => ("SHA-256", want, hex(&sha2::Sha256::digest(data))),
        };
        if *want == got {
            Ok(())
        } else {
            Err(HandlerError::failed(format!(
                "{kind} sums do not match ({want} != {got})"
            )))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed `agentupdate` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRequest {
    pub url: String,
    pub checksum: Checksum,
}

impl UpdateRequest {
    pub fn parse(value: &Value) -> Result<Self, HandlerError> {
        let (url, sum) = match value {
            Value::String(s) => {
                // The checksum never holds a comma, a URL may: split at the last one.
                let (url, sum) = s.rsplit_once(',').ok_or_else(|| {
                    HandlerError::failed(format!("{}: expected \"url,checksum\"", msg::INVALID))
                })?;
                (url.trim().to_string(), sum.to_string())
            }
            Value::Object(obj) => {
                let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
                match (text("url"), text("md5sum").or_else(|| text("sha256"))) {
                    (Some(url), Some(sum)) => (url.trim().to_string(), sum),
                    _ => return Err(HandlerError::failed(msg::MISSING)),
                }
            }
            _ => return Err(HandlerError::failed(msg::INVALID)),
        };
        check_scheme(&url)?;
        Ok(Self {
            url,
            checksum: Checksum::parse(&sum)?,
        })
    }
}

/// Only `http://` and `https://` URLs are downloaded.
fn check_scheme(url: &str) -> Result<(), HandlerError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(())
    } else {
        Err(HandlerError::failed(
            "Only http and https URLs are supported for agent updates",
        ))
    }
}

/// `agentupdate`.
#[derive(Debug, Clone)]
pub struct AgentUpdateHandler {
    config: UpdateConfig,
}

impl AgentUpdateHandler {
    pub fn new(config: UpdateConfig) -> Self {
        Self { config }
    }
}

impl Handler for AgentUpdateHandler {
    fn name(&self) -> &'static str {
        "agentupdate"
    }

    fn default_timeout(&self) -> Option<Duration> {
        let c = &self.config;
        Some(Duration::from_secs(
            c.download_timeout_secs + c.self_test_timeout_secs + c.installer_timeout_secs + 30,
        ))
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let request = UpdateRequest::parse(value)?;
        // One update at a time per state directory in this process, whichever channel asks:
        // two would share the staging area and overwrite each other's `.previous`.
        let lock = update_lock(&ctx.env.root, &self.config.state_dir);
        let _running = match lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(HandlerError::failed(msg::IN_PROGRESS));
            }
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        Updater {
            config: &self.config,
            root: &ctx.env.root,
            runner: ctx.env.runner.as_ref(),
            backend: ctx.env.backend.as_ref(),
        }
        .update(&request)?;
        Ok(Reply::ok(""))
    }
}

/// The lock of the updates that use `state_dir` (keyed by its host path, so tests on
/// different sandboxes in one process do not wait for each other).
fn update_lock(root: &Root, state_dir: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let key = root
        .resolve(state_dir)
        .unwrap_or_else(|_| PathBuf::from(state_dir));
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    locks.entry(key).or_default().clone()
}

/// Staging directories are `<state_dir>/staged.<pid>.<n>`: one per update, never reused.
const STAGED_PREFIX: &str = "staged.";
static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One update run.
struct Updater<'a> {
    config: &'a UpdateConfig,
    root: &'a Root,
    runner: &'a dyn guestd_core::ProcessRunner,
    /// The OS: how to restart guestd and start the watchdog outside its service.
    backend: &'a dyn Backend,
}

/// The executable an update archive must hold: this platform's name of guestd.
const BINARY_NAME: &str = if cfg!(windows) {
    "guestd.exe"
} else {
    "guestd"
};

fn failed(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::failed(e.to_string())
}

impl Updater<'_> {
    fn update(&self, request: &UpdateRequest) -> Result<(), HandlerError> {
        let cfg = self.config;
        // Everything that can be checked before the download is checked first.
        let install = self.install_path()?;
        if !self.root.exists(&install) {
            return Err(HandlerError::failed(format!(
                "Installed agent binary '{install}' not found"
            )));
        }
        let restart = self.restart_commands()?;
        // What is staged is then run as root: no other account may be able to swap it.
        let private = |what: &str, dir: &str| {
            self.root.check_private(dir).map_err(|e| {
                HandlerError::failed(format!("Cannot use {what} '{dir}' for an update: {e}"))
            })
        };
        private("update.state_dir", &cfg.state_dir)?;
        if let Some(dir) = Path::new(&install).parent() {
            private("the directory of", &dir.to_string_lossy())?;
        }
        if let Ok(state) = WatchState::load(self.root, &cfg.state_file()) {
            if state.in_progress(watchdog::unix_now()) {
                return Err(HandlerError::failed(msg::IN_PROGRESS));
            }
        }

        let helper = self.helper()?;
        let ca_pem = self.ca_bundle()?;
        let bytes = helper.fetch(
            &request.url,
            cfg.max_size,
            Duration::from_secs(cfg.download_timeout_secs),
            ca_pem.as_deref(),
        )?;
        request.checksum.verify(&bytes)?;
        let exe_suffix = if cfg!(windows) { ".exe" } else { "" };
        let files = helper.unpack(&bytes, cfg.max_size.saturating_mul(4))?;
        drop(bytes);
        let payload =
            Payload::find(files, BINARY_NAME, exe_suffix).map_err(HandlerError::failed)?;
        let staged = self.stage(&payload, BINARY_NAME)?;
        let new_version = self.self_test(&staged.binary)?;
        for (name, path) in &staged.companions {
            self.check_companion(name, path, &new_version)?;
        }
        if let Some(dir) = &staged.installer_dir {
            self.run_installer(dir)?;
        }

        let previous = format!("{install}.previous");
        let mut companions = Vec::new();
        let mut installed = payload.companions.iter().try_for_each(|(name, i)| {
            let target = sibling(&install, name);
            let companion = self.swap_companion(&target, &payload.files[*i].contents)?;
            companions.push(companion);
            Ok(())
        });
        if installed.is_ok() {
            installed = self.swap(&install, &previous, &payload.binary().contents);
        }
        if let Err(e) = installed {
            self.undo_companions(&companions);
            return Err(e);
        }
        let state = WatchState {
            status: Status::Pending,
            installed_at: watchdog::unix_now(),
            install_path: install.clone(),
            previous_path: previous.clone(),
            companions: companions.clone(),
            old_version: VERSION.into(),
            new_version: new_version.clone(),
            ready_marker: cfg.ready_marker.clone(),
            restart: restart.iter().map(Argv::from).collect(),
            restart_delay_ms: cfg.restart_delay_ms,
            ready_timeout_secs: cfg.ready_timeout_secs,
            poll_ms: 200,
        };
        let launched = state
            .save(self.root, &cfg.state_file())
            .map_err(failed)
            .and_then(|()| self.launch_watchdog(&previous));
        if let Err(e) = launched {
            warn!(error = %e, "cannot start the update watchdog; putting the previous binary back");
            if let Err(e2) = self.unswap(&install, &previous) {
                warn!(error = %e2, "could not put the previous binary back");
            }
            self.undo_companions(&companions);
            let _ = self.root.remove_file(cfg.state_file());
            return Err(HandlerError::failed(format!(
                "Couldn't restart the agent: {e}"
            )));
        }
        let _ = self.root.remove_dir_all(&staged.dir);
        info!(
            from = VERSION,
            to = %new_version,
            install = %install,
            companions = %payload.companions.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","),
            "update installed; the watchdog restarts guestd"
        );
        Ok(())
    }

    /// The download helper: configured, or `guestd-update` beside the running executable.
    fn helper(&self) -> Result<Helper<'_>, HandlerError> {
        let program = match &self.config.helper {
            Some(p) => p.clone(),
            None => {
                let exe = std::env::current_exe().map_err(|e| {
                    HandlerError::failed(format!("Cannot find the agent binary: {e}"))
                })?;
                exe.with_file_name(format!("guestd-update{}", std::env::consts::EXE_SUFFIX))
                    .to_string_lossy()
                    .into_owned()
            }
        };
        Ok(Helper {
            program,
            user: &self.config.helper_user,
            runner: self.runner,
        })
    }

    fn install_path(&self) -> Result<String, HandlerError> {
        if let Some(p) = &self.config.install_path {
            return Ok(p.clone());
        }
        if self.root.is_sandbox() {
            return Err(HandlerError::failed(
                "update.install_path must be configured when guestd runs on a sandbox root",
            ));
        }
        let exe = std::env::current_exe()
            .map_err(|e| HandlerError::failed(format!("Cannot find the agent binary: {e}")))?;
        // `guestd` re-executes itself as `guestd-tls` when it serves TCP: the installed binary is
        // still `guestd`.
        let stem = exe.file_stem().map(|s| s.to_string_lossy().into_owned());
        let exe = if stem.as_deref() == Some("guestd-tls") {
            exe.with_file_name(format!("guestd{}", std::env::consts::EXE_SUFFIX))
        } else {
            exe
        };
        Ok(exe.to_string_lossy().into_owned())
    }

    /// The configured override, or the restart the backend plans for the service manager it
    /// found at start-up.
    fn restart_commands(&self) -> Result<Vec<ProcessSpec>, HandlerError> {
        if let Some(argv) = &self.config.restart_command {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| HandlerError::failed("update.restart_command is empty"))?;
            return Ok(vec![
                ProcessSpec::new(program)
                    .args(args.iter().cloned())
                    .timeout(Duration::from_secs(120))
                    .effect(Effect::Service),
            ]);
        }
        match self
            .backend
            .plan_service_restart(self.root, &self.config.service_name)
        {
            Ok(plan) => Ok(plan.commands.into_iter().map(|c| c.command).collect()),
            Err(BackendError::Unsupported(_)) => Err(HandlerError::failed(msg::NO_MANAGER)),
            Err(e) => Err(HandlerError::failed(format!("{}: {e}", msg::NO_MANAGER))),
        }
    }

    /// The configured CA bundle's PEM text (read here: the helper may not be able to).
    fn ca_bundle(&self) -> Result<Option<String>, HandlerError> {
        let Some(path) = &self.config.ca_bundle else {
            return Ok(None);
        };
        let bytes = self
            .root
            .read(path)
            .map_err(|e| HandlerError::failed(format!("Cannot read the update CA bundle: {e}")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| HandlerError::failed("Invalid CA bundle: not PEM text"))
    }

    /// `staged.<pid>.<n>/<binary>` and each companion (0700), and with an installer the whole
    /// archive under `staged.<pid>.<n>/payload/`. The staging areas of earlier updates (kept
    /// after a failure for inspection) are removed first; no other update runs (see
    /// [`update_lock`]).
    fn stage(&self, payload: &Payload, name: &str) -> Result<Staged, HandlerError> {
        let fail = |e: guestd_core::RootError| {
            HandlerError::failed(format!("Cannot stage the update: {e}"))
        };
        let state_dir = &self.config.state_dir;
        self.root.create_dir_all(state_dir, 0o700).map_err(fail)?;
        for old in self.root.read_dir(state_dir).map_err(fail)? {
            if old == "staged" || old.starts_with(STAGED_PREFIX) {
                self.root
                    .remove_dir_all(join(state_dir, &old))
                    .map_err(fail)?;
            }
        }
        let staged_dir = join(
            state_dir,
            &format!(
                "{STAGED_PREFIX}{}.{}",
                std::process::id(),
                STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        );
        self.root.create_dir_all(&staged_dir, 0o700).map_err(fail)?;
        let binary = join(&staged_dir, name);
        let exact = |mode| WriteOptions::mode(mode).exact();
        self.root
            .write_atomic(&binary, &payload.binary().contents, exact(0o700))
            .map_err(fail)?;
        let mut companions = Vec::new();
        for (companion, i) in &payload.companions {
            let path = join(&staged_dir, companion);
            self.root
                .write_atomic(&path, &payload.files[*i].contents, exact(0o700))
                .map_err(fail)?;
            companions.push((companion.clone(), path));
        }
        let mut installer_dir = None;
        if let Some(installer) = payload.installer() {
            let base = join(&staged_dir, "payload");
            for f in &payload.files {
                let path = join(&base, &f.path);
                if let Some(parent) = Path::new(&path).parent() {
                    self.root.create_dir_all(parent, 0o700).map_err(fail)?;
                }
                let mode = if f.mode & 0o111 != 0 { 0o700 } else { 0o600 };
                self.root
                    .write_atomic(&path, &f.contents, exact(mode))
                    .map_err(fail)?;
            }
            let dir = Path::new(&installer.path)
                .parent()
                .map_or(base.clone(), |p| join(&base, &p.to_string_lossy()));
            installer_dir = Some(dir);
        }
        Ok(Staged {
            dir: staged_dir,
            binary,
            companions,
            installer_dir,
        })
    }

    /// A staged companion must be of the new version: `guestd-tls` passes the same self-test
    /// as guestd, `guestd-update` answers `--version`.
    fn check_companion(&self, name: &str, path: &str, version: &str) -> Result<(), HandlerError> {
        let reported = if name.starts_with("guestd-tls") {
            self.self_test(path)?
        } else {
            let host = self.root.resolve(path).map_err(failed)?;
            // Like the self-test: the staged binary only prints its version.
            let cmd = ProcessSpec::new(host.to_string_lossy())
                .arg("--version")
                .root_local()
                .timeout(Duration::from_secs(self.config.self_test_timeout_secs));
            let out = self
                .runner
                .run(&cmd)
                .map_err(|e| HandlerError::failed(format!("New {name} does not run: {e}")))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            stdout
                .split_whitespace()
                .nth(1)
                .filter(|_| out.success())
                .map(str::to_string)
                .ok_or_else(|| {
                    HandlerError::failed(format!("New {name} did not report its version"))
                })?
        };
        if reported == version {
            Ok(())
        } else {
            Err(HandlerError::failed(format!(
                "New {name} is version {reported}, the new agent {version}"
            )))
        }
    }

    /// Run `<staged> --self-test`; it must exit 0 and print `guestd <version> self-test ok…`.
    fn self_test(&self, binary: &str) -> Result<String, HandlerError> {
        // A host path for the command (the only use of `resolve`): `state_dir` is root's all
        // the way down (checked before staging), so nobody can swap what it names.
        let host = self.root.resolve(binary).map_err(failed)?;
        // The staged binary only loads the configuration and builds its commands.
        let mut cmd = ProcessSpec::new(host.to_string_lossy())
            .arg("--self-test")
            .root_local();
        if let Some(config) = &self.config.self_test_config {
            cmd = cmd.args(["--config", config]);
        }
        let cmd = cmd.timeout(Duration::from_secs(self.config.self_test_timeout_secs));
        let out = self
            .runner
            .run(&cmd)
            .map_err(|e| HandlerError::failed(format!("New agent failed its self-test: {e}")))?;
        if !out.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            warn!(code = ?out.code, stderr = %stderr.trim(), "self-test of the new agent failed");
            let status = out
                .code
                .map_or("a signal".into(), |c| format!("exit status {c}"));
            return Err(HandlerError::failed(format!(
                "New agent failed its self-test ({status})"
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_self_test(&stdout)
            .ok_or_else(|| HandlerError::failed("New agent's self-test did not report its version"))
    }

    /// `installer.sh` in its directory, with an empty environment (as U1 ran it).
    fn run_installer(&self, dir: &str) -> Result<(), HandlerError> {
        // A host path for the command, in the private staging directory (see `self_test`).
        let host = self.root.resolve(dir).map_err(failed)?;
        let cmd = ProcessSpec::new("/bin/sh")
            .args([
                "-c",
                "cd \"$1\" && exec /bin/sh ./installer.sh",
                "guestd-installer",
            ])
            .arg(host.to_string_lossy())
            .clear_env(Vec::new())
            .timeout(Duration::from_secs(self.config.installer_timeout_secs))
            .effect(Effect::Install);
        info!(dir = %host.display(), "running the update's installer.sh");
        let out = self
            .runner
            .run(&cmd)
            .map_err(|e| HandlerError::failed(format!("Agent installer script failed: {e}")))?;
        if !out.success() {
            warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "installer.sh failed");
            let rc = out.code.map_or("signal".into(), |c| c.to_string());
            return Err(HandlerError::failed(format!(
                "Agent installer script failed: {rc}"
            )));
        }
        Ok(())
    }

    /// Keep the installed binary as `previous`, then replace it atomically.
    fn swap(&self, install: &str, previous: &str, new: &[u8]) -> Result<(), HandlerError> {
        let fail = |e: guestd_core::RootError| {
            HandlerError::failed(format!("Cannot install the new agent: {e}"))
        };
        if cfg!(windows) {
            // A running .exe cannot be replaced or copied over, but it can be renamed away.
            self.root.rename(install, previous).map_err(fail)?;
        } else {
            let current = self.root.read_limited(install, MAX_BINARY).map_err(fail)?;
            let meta = self.root.metadata(install).map_err(fail)?;
            let keep = WriteOptions {
                mode: meta.mode,
                owner: Some((meta.uid, meta.gid)),
                preserve: false,
            };
            self.root
                .write_atomic(previous, &current, keep)
                .map_err(fail)?;
        }
        self.root
            .write_atomic(install, new, WriteOptions::mode(0o755))
            .map_err(fail)
    }

    /// Install a companion binary at `target`, keeping the one it replaces (if any) as
    /// `<target>.previous`.
    fn swap_companion(&self, target: &str, new: &[u8]) -> Result<Companion, HandlerError> {
        if self.root.exists(target) {
            let previous = format!("{target}.previous");
            self.swap(target, &previous, new)?;
            return Ok(Companion {
                install_path: target.to_string(),
                previous_path: Some(previous),
            });
        }
        self.root
            .write_atomic(target, new, WriteOptions::mode(0o755))
            .map_err(|e| HandlerError::failed(format!("Cannot install the new agent: {e}")))?;
        Ok(Companion {
            install_path: target.to_string(),
            previous_path: None,
        })
    }

    fn undo_companions(&self, companions: &[Companion]) {
        for c in companions {
            if let Err(e) = watchdog::restore_companion(self.root, c) {
                warn!(error = %e, path = %c.install_path, "could not put the previous companion back");
            }
        }
    }

    fn unswap(&self, install: &str, previous: &str) -> Result<(), guestd_core::RootError> {
        let bytes = self.root.read_limited(previous, MAX_BINARY)?;
        self.root
            .write_atomic(install, &bytes, WriteOptions::default())
    }

    /// Start `<previous> --update-watchdog <state>` detached from the service.
    fn launch_watchdog(&self, previous: &str) -> Result<(), HandlerError> {
        // Host paths for the command; both are in directories checked to be root's.
        let resolve = |p: &str| {
            self.root
                .resolve(p)
                .map(|h| h.to_string_lossy().into_owned())
                .map_err(failed)
        };
        // The program is a host path; the state file a guest path under `--root`.
        let mut argv = vec![
            resolve(previous)?,
            "--update-watchdog".to_string(),
            self.config.state_file(),
        ];
        if let Some(base) = self.root.base() {
            argv.extend(["--root".to_string(), base.to_string_lossy().into_owned()]);
        }
        let log = resolve(&join(&self.config.state_dir, "watchdog.log"))?;
        let plan = self.backend.plan_detached_start(&argv, &log)?;
        info!(
            commands = ?plan.commands.iter().map(|c| c.command.to_string()).collect::<Vec<_>>(),
            manager = self.backend.service_manager().unwrap_or("none"),
            "starting the update watchdog"
        );
        let options = ApplyOptions { keep_backups: 0 };
        let applied = guestd_core::apply(&plan, self.root, self.runner, options).map_err(failed)?;
        // Under a --root sandbox the watchdog did not start: the update must be undone.
        match applied.not_run_error() {
            Some(not_run) => Err(failed(not_run)),
            None => Ok(()),
        }
    }
}

struct Staged {
    dir: String,
    binary: String,
    /// (file name, staged guest path) of each companion binary.
    companions: Vec<(String, String)>,
    installer_dir: Option<String>,
}

/// The version from `guestd <version> self-test ok[: …]` (the last such line).
pub fn parse_self_test(stdout: &str) -> Option<String> {
    stdout.lines().rev().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["guestd", version, "self-test", ok, ..] if ok.trim_end_matches(':') == "ok" => {
                Some((*version).to_string())
            }
            _ => None,
        }
    })
}

/// `name` in the directory of the file `path`.
fn sibling(path: &str, name: &str) -> String {
    match path.rfind(['/', '\\']) {
        Some(i) => format!("{}{name}", &path[..=i]),
        None => name.to_string(),
    }
}

/// `dir` + `/` + `name` (guest paths use `/`; Windows paths keep their `\`).
fn join(dir: &str, name: &str) -> String {
    let sep = if dir.contains('\\') { '\\' } else { '/' };
    format!("{}{sep}{name}", dir.trim_end_matches(['/', '\\']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        UpdateRequest::parse(&v).unwrap_err().to_string()
    }

    #[test]
    fn parses_nova_and_legacy_forms() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = UpdateRequest::parse(&json!(format!("http://h/a,b.tgz,{md5}"))).unwrap();
        assert_eq!(r.url, "http://h/a,b.tgz");
        assert_eq!(r.checksum, Checksum::Md5(md5.into()));
        let r = UpdateRequest::parse(&json!({"url": "https://h/x", "sha256": sha.to_uppercase()}))
            .unwrap();
        assert_eq!(r.checksum, Checksum::Sha256(sha.into()));
        let r = UpdateRequest::parse(&json!({"url": "https://h/x", "md5sum": md5})).unwrap();
        assert_eq!(r.checksum, Checksum::Md5(md5.into()));
        assert_eq!(err(json!(5)), "Invalid arguments");
        assert_eq!(err(json!({"url": "http://h"})), msg::MISSING);
        assert!(err(json!("http://h/x")).starts_with("Invalid arguments"));
        assert!(err(json!(format!("ftp://h/x,{md5}"))).contains("http and https"));
        assert!(err(json!("http://h/x,abc")).contains("expected 32 (MD5) or 64"));
        assert!(err(json!(format!("http://h/x,{}", "z".repeat(32)))).contains("not hexadecimal"));
    }

    #[test]
    fn checksums_verify() {
        Checksum::parse("d41d8cd98f00b204e9800998ecf8427e")
            .unwrap()
            .verify(b"")
            .unwrap();
        let e = Checksum::parse(&"0".repeat(32))
            .unwrap()
            .verify(b"")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "MD5 sums do not match (00000000000000000000000000000000 != d41d8cd98f00b204e9800998ecf8427e)"
        );
        let e = Checksum::parse(&"0".repeat(64))
            .unwrap()
            .verify(b"x")
            .unwrap_err();
        assert!(e.to_string().starts_with("SHA-256 sums do not match"));
    }

    #[test]
    fn self_test_output() {
        assert_eq!(
            parse_self_test("config ok\nguestd 1.2.3 self-test ok\n"),
            Some("1.2.3".into())
        );
        assert_eq!(
            parse_self_test("guestd 0.1.0 self-test ok: 6 commands\n"),
            Some("0.1.0".into())
        );
        assert_eq!(parse_self_test("guestd 1.2.3\n"), None);
        assert_eq!(parse_self_test("guestd 1.2.3 self-test failed\n"), None);
        assert_eq!(
            join("/var/lib/guestd/update/", "x"),
            "/var/lib/guestd/update/x"
        );
        assert_eq!(
            join("C:\\ProgramData\\guestd", "x"),
            "C:\\ProgramData\\guestd\\x"
        );
        assert_eq!(
            sibling("/usr/sbin/guestd", "guestd-tls"),
            "/usr/sbin/guestd-tls"
        );
        assert_eq!(
            sibling("C:\\Program Files\\guestd\\guestd.exe", "guestd-update.exe"),
            "C:\\Program Files\\guestd\\guestd-update.exe"
        );
    }
}
