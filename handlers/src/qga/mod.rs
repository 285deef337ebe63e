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
//! [`args`] (qemu's error wording). Commands that run arbitrary programs or read arbitrary
//! files (`guest-exec`, `guest-file-*`) are deliberately absent.

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

use std::time::Duration;

use guestd_core::{
    Context, Dialect, DispatchError, DispatcherBuilder, Handler, HandlerError, Reply, Root,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

impl Default for QgaConfig {
    fn default() -> Self {
        Self {
            auto_detect: true,
            freeze_timeout_secs: 600,
            fsfreeze_hook: "/etc/qemu/fsfreeze-hook".into(),
            fsfreeze_hook_timeout_secs: 300,
        }
    }
}

impl QgaConfig {
    fn freeze_settings(&self) -> FreezeSettings {
        FreezeSettings {
            auto_thaw: Duration::from_secs(self.freeze_timeout_secs.max(1)),
            hook: Some(self.fsfreeze_hook.clone()).filter(|h| !h.is_empty()),
            hook_timeout: Duration::from_secs(self.fsfreeze_hook_timeout_secs.max(1)),
        }
    }
}

/// Thaw what a stopped or killed guestd left frozen (its record in `/run/guestd`), with the
/// thaw hook if the freeze hook ran; nothing when there is no record (`guestd --thaw`).
pub fn thaw_recorded(env: &guestd_core::Env, config: &QgaConfig) {
    let freezer = Freezer::new(guestd_core::FreezeFlag::default(), config.freeze_settings());
    guestd_core::Lifecycle::start(&freezer, env);
}

/// Register every qga command on `builder`, and the freezer's [`guestd_core::Lifecycle`] (it
/// thaws on start after a crash and on stop).
pub fn register(
    builder: DispatcherBuilder,
    config: &QgaConfig,
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
    builder
        .register(freeze::StatusHandler(freezer.clone()))?
        .register(freeze::FreezeHandler(freezer.clone()))?
        .register(freeze::FreezeListHandler(freezer.clone()))?
        .register(fstrim::FstrimHandler)?
        .register(freeze::ThawHandler(freezer))
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

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        (self.run)(ctx, value).map(|v| guestd_core::qga::ok(&v))
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
