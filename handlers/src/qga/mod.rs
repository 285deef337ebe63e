//! The qemu-guest-agent commands (`guest-ping`, `guest-info`, …), answered by the same
//! dispatcher, policy and backends as the native commands. The qga framing (`execute`,
//! `return`/`error`, `guest-sync`) is core's `qga` module; a handler here answers with
//! `guestd_core::qga::ok(&json)` and its errors become `GenericError` replies (a command this OS
//! cannot do answers `platform::not_on_this_os`, which qemu-ga's clients see as a blocked
//! command). Kernel files (/proc, /sys) are read and written through `Root` (`sysfs`), effects
//! that run programs are `Plan`s applied through the command runner.
//!
//! These commands exist only on qga channels (`Handler::dialect` is `Dialect::Qga`; the
//! dispatcher refuses a `guest-*` name that says otherwise): `guest-set-user-password` takes a
//! plain password, which the native protocol only accepts encrypted (`keyinit`/`password`)
//! because channels like XenStore are not private.
//!
//! Adding one more command: a `QgaCommand` (stateless) or a `Handler` with `dialect()` =
//! `Dialect::Qga` in the module it belongs to, one line in [`register`], a test in
//! `tests/tests/qga.rs` and, if it only reads, a line in `READ_ONLY` of
//! `tests/qmp/qga_client.py` (QEMU's own client drives it). Arguments are decoded with
//! [`args`] (qemu's error wording).
//!
//! The commands that run programs or open files for the host (`guest-exec`,
//! `guest-exec-status`, `guest-file-*`: modules `exec` and `file`) are registered but disabled
//! unless `[qga] exec_allow` / `file_allow` name what they may reach ([`disabled_by_config`],
//! which the daemon adds to the command policy, so `guest-info` lists them as disabled and a
//! call gets qemu-ga's "has been disabled"). Programs start through core's `ProcessSpawner`,
//! files open through `Root::open_file`. They are the one exception to "handlers never spawn or
//! write by themselves", by design: the process or the open file *is* what the host asked for
//! (it polls it, reads and writes it), not a change to the guest that a backend could plan and
//! `guestd_core::apply` roll back. Every other effect here is a backend's plan.

mod exec;
mod file;
mod freeze;
mod fsinfo;
mod fstrim;
mod hw;
mod keys;
mod network;
mod password;
mod platform;
mod power;
mod route;
mod shutdown;
mod stats;
mod sysfs;
mod system;
mod time;
mod tzif;
mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use guestd_core::{
    Context, Dialect, DispatchError, DispatcherBuilder, Handler, HandlerError, ProcessSpawner,
    Reply, Root, SystemSpawner,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

pub use freeze::{FreezeSettings, Freezer};

/// `[qga]` in the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QgaConfig {
    /// Serve the qga dialect on the virtio port `org.qemu.guest_agent.0` when it exists and no
    /// transport is configured.
    pub auto_detect: bool,
    /// Seconds after which frozen filesystems are thawed even if the host never sends
    /// `guest-fsfreeze-thaw` (a lost host must not leave the guest frozen).
    pub freeze_timeout_secs: u64,
    /// The fsfreeze hook, run with `freeze` before freezing and `thaw` after thawing, as
    /// qemu-ga runs its `--fsfreeze-hook` (default path: Debian's dispatcher of
    /// `/etc/qemu/fsfreeze-hook.d/*`). Used when it exists; it must belong to root and be
    /// writable by no one else. `""`: none.
    pub fsfreeze_hook: String,
    /// How long one run of the hook may take, in seconds.
    pub fsfreeze_hook_timeout_secs: u64,
    /// Programs `guest-exec` may run: absolute paths, compared with the requested program
    /// after both are resolved (links followed), or `"*"` for any program (qemu-ga's
    /// behaviour). Empty: `guest-exec` and `guest-exec-status` are disabled.
    pub exec_allow: Vec<String>,
    /// Bytes of stdout, and of stderr, kept per program (qemu-ga: 16 MiB); the rest is read
    /// and dropped, and `out-truncated`/`err-truncated` say so.
    pub exec_output_limit: usize,
    /// Bytes of output all programs may hold together until their status is taken.
    pub exec_output_total: usize,
    /// Programs started by `guest-exec` that may run at once (one more is refused), and
    /// finished ones whose status is kept until `guest-exec-status` asks (beyond that the
    /// oldest is dropped, and logged).
    pub exec_max_processes: usize,
    /// Where `guest-file-open` may open files: absolute path prefixes (whole components),
    /// compared with the path as reached after links; `"/"` for anywhere. Empty: every
    /// `guest-file-*` command is disabled.
    pub file_allow: Vec<String>,
    /// Files open through `guest-file-open` at once.
    pub file_max_handles: usize,
    /// Most bytes one `guest-file-read` returns (at most qemu-ga's 48 MiB); a larger `count`
    /// reads this much, and `eof` stays false until the end.
    pub file_read_max: usize,
}

/// qemu-ga's `GUEST_FILE_READ_COUNT_MAX`: a larger `count` is refused.
pub const FILE_READ_COUNT_MAX: usize = 48 * 1024 * 1024;

impl Default for QgaConfig {
    fn default() -> Self {
        Self {
            auto_detect: true,
            freeze_timeout_secs: 600,
            fsfreeze_hook: "/etc/qemu/fsfreeze-hook".into(),
            fsfreeze_hook_timeout_secs: 300,
            exec_allow: Vec::new(),
            exec_output_limit: 16 * 1024 * 1024,
            exec_output_total: 64 * 1024 * 1024,
            exec_max_processes: 64,
            file_allow: Vec::new(),
            file_max_handles: 64,
            file_read_max: 16 * 1024 * 1024,
        }
    }
}

impl QgaConfig {
    /// Check the values a TOML type cannot: what is wrong, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for entry in &self.exec_allow {
            if entry != "*" && !Path::new(entry).is_absolute() {
                return Err(format!(
                    "exec_allow: '{entry}' is not an absolute path (or \"*\" for any program)"
                ));
            }
        }
        for entry in &self.file_allow {
            if let Err(why) = file::check_prefix(entry) {
                return Err(format!("file_allow: '{entry}' {why}"));
            }
        }
        let positive = [
            ("exec_max_processes", self.exec_max_processes),
            ("file_max_handles", self.file_max_handles),
            ("file_read_max", self.file_read_max),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be at least 1"));
        }
        if self.file_read_max > FILE_READ_COUNT_MAX {
            return Err(format!(
                "file_read_max must be at most {FILE_READ_COUNT_MAX} (qemu-ga's limit)"
            ));
        }
        Ok(())
    }

    fn freeze_settings(&self) -> FreezeSettings {
        FreezeSettings {
            auto_thaw: Duration::from_secs(self.freeze_timeout_secs.max(1)),
            hook: Some(self.fsfreeze_hook.clone()).filter(|h| !h.is_empty()),
            hook_timeout: Duration::from_secs(self.fsfreeze_hook_timeout_secs.max(1)),
        }
    }
}

/// The exec commands (governed by `exec_allow`).
pub const EXEC_COMMANDS: [&str; 2] = [exec::EXEC, exec::EXEC_STATUS];
/// The file commands (governed by `file_allow`).
pub const FILE_COMMANDS: [&str; 6] = file::COMMANDS;

/// Commands the `[qga]` configuration leaves off: the exec commands without `exec_allow`, the
/// file commands without `file_allow`. The daemon adds them to the command policy's block
/// list, so they answer and are listed exactly as qemu-ga's blocked commands.
pub fn disabled_by_config(config: &QgaConfig) -> Vec<&'static str> {
    let mut off = Vec::new();
    if config.exec_allow.is_empty() {
        off.extend(EXEC_COMMANDS);
    }
    if config.file_allow.is_empty() {
        off.extend(FILE_COMMANDS);
    }
    off
}

/// Thaw what a stopped or killed guestd left frozen (its record in `/run/guestd`), with the
/// thaw hook if the freeze hook ran; nothing when there is no record (`guestd --thaw`).
pub fn thaw_recorded(env: &guestd_core::Env, config: &QgaConfig) {
    let freezer = Freezer::new(guestd_core::FreezeFlag::default(), config.freeze_settings());
    guestd_core::Lifecycle::start(&freezer, env);
}

/// Register every qga command on `builder`, and the freezer's [`guestd_core::Lifecycle`] (it
/// thaws on start after a crash and on stop). Programs for `guest-exec` start on this machine.
pub fn register(
    builder: DispatcherBuilder,
    config: &QgaConfig,
) -> Result<DispatcherBuilder, DispatchError> {
    register_with(builder, config, Arc::new(SystemSpawner))
}

/// [`register`], with `guest-exec`'s programs started by `spawner` (a fake in tests).
pub fn register_with(
    builder: DispatcherBuilder,
    config: &QgaConfig,
    spawner: Arc<dyn ProcessSpawner>,
) -> Result<DispatcherBuilder, DispatchError> {
    let freezer = Freezer::new(builder.freeze_flag(), config.freeze_settings());
    let mut builder = builder.lifecycle(std::sync::Arc::new(freezer.clone()));
    for command in [
        system::PING,
        system::INFO,
        system::OSINFO,
        system::HOST_NAME,
        system::TIME,
        network::INTERFACES,
        keys::GET,
        fsinfo::FSINFO,
        fsinfo::DISKS,
        stats::DISKSTATS,
        stats::CPUSTATS,
        stats::LOAD,
        users::USERS,
        time::TIMEZONE,
        hw::GET_VCPUS,
        hw::SET_VCPUS,
        hw::GET_MEMORY_BLOCKS,
        hw::SET_MEMORY_BLOCKS,
        hw::MEMORY_BLOCK_INFO,
        hw::DEVICES,
        route::ROUTES,
        // Not queries: the dispatcher refuses these while the filesystems are frozen (a write
        // would hang until the thaw).
        password::SET_USER_PASSWORD,
        keys::ADD,
        keys::REMOVE,
        shutdown::SHUTDOWN,
        time::SET_TIME,
        power::SUSPEND_DISK,
        power::SUSPEND_RAM,
        power::SUSPEND_HYBRID,
    ] {
        builder = builder.register(command)?;
    }
    builder = builder
        .register(freeze::StatusHandler(freezer.clone()))?
        .register(freeze::FreezeHandler(freezer.clone()))?
        .register(freeze::FreezeListHandler(freezer.clone()))?
        .register(fstrim::FstrimHandler)?;
    builder = exec::register(builder, config, spawner)?;
    builder = file::register(builder, config)?;
    builder.register(freeze::ThawHandler(freezer))
}

/// A stateless qga command: a name and a function from arguments to the return value.
#[derive(Debug, Clone, Copy)]
pub struct QgaCommand {
    pub name: &'static str,
    /// Whether it may block (file or process I/O); see `Handler::may_block`.
    pub blocking: bool,
    /// Whether it only reports state; see `Handler::is_query`.
    pub query: bool,
    pub run: fn(&Context<'_>, &Value) -> Result<Value, HandlerError>,
}

impl Handler for QgaCommand {
    fn name(&self) -> &'static str {
        self.name
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn may_block(&self) -> bool {
        self.blocking
    }

    fn is_query(&self) -> bool {
        self.query
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        (self.run)(ctx, value).map(|v| guestd_core::qga::ok(&v))
    }
}

/// A qga command with state shared with its sibling commands (the exec and file tables).
struct StatefulCommand<S: Send + Sync + 'static> {
    name: &'static str,
    state: Arc<S>,
    /// Whether it runs while this agent holds filesystems frozen (it writes nothing to them);
    /// see `Handler::allowed_while_frozen`.
    while_frozen: bool,
    /// Whether it only reports state; see `Handler::is_query`.
    query: bool,
    run: fn(&S, &Context<'_>, &Value) -> Result<Value, HandlerError>,
}

impl<S: Send + Sync + 'static> std::fmt::Debug for StatefulCommand<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatefulCommand")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Handler for StatefulCommand<S> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn is_query(&self) -> bool {
        self.query
    }

    fn allowed_while_frozen(&self) -> bool {
        self.while_frozen
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        (self.run)(&self.state, ctx, value).map(|v| guestd_core::qga::ok(&v))
    }
}

/// Base64 from the host (`input-data`, `buf-b64`), with qemu's error words; wiped on drop.
pub(crate) fn decode_base64(text: &str) -> Result<Zeroizing<Vec<u8>>, HandlerError> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if !text.bytes().all(valid) {
        return Err(HandlerError::BadRequest(
            "Base64 data contains invalid characters".into(),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| HandlerError::BadRequest("Base64 data is not valid".into()))
}

/// The reason of an OS error as `strerror` words it, without Rust's `(os error N)`.
pub(crate) fn os_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The command's arguments as `T`, refused with qemu-ga's words (`Parameter 'bogus' is
/// unexpected` for `#[serde(deny_unknown_fields)]` structs, `Parameter 'id' is missing`,
/// `Invalid parameter type for 'x', expected: string`); see `guestd_core::qga::arguments`.
pub(crate) fn args<T: DeserializeOwned>(value: &Value) -> Result<T, HandlerError> {
    guestd_core::qga::arguments(value)
}

/// A user from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Look `name` up in the guest's `/etc/passwd`.
pub(crate) fn lookup_user(root: &Root, name: &str) -> Result<User, HandlerError> {
    let text = root.read_to_string("/etc/passwd")?;
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 7 && f[0] == name).then_some(f)
        })
        .find_map(|f| {
            Some(User {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .ok_or_else(|| HandlerError::BadRequest(format!("failed to lookup user '{name}'")))
}
