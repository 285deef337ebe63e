//! The qemu-guest-agent commands (`guest-ping`, `guest-info`, …), answered by the same
//! dispatcher, policy and backends as the native commands. The qga framing (`execute`,
//! `return`/`error`, `guest-sync`) is core's `qga` module; a handler here answers with
//! `guestd_core::qga::ok(&json)` and its errors become `GenericError` replies (a command this OS
//! cannot do answers `platform::not_on_this_os`, which qemu-ga's clients see as a blocked
//! command). Kernel files (/proc, /sys) are read and written through `Root` (`sysfs`), effects
//! that run programs are `Plan`s applied through the command runner.
//!
//! Adding one more command: a `QgaCommand` (stateless) or a `Handler` in the module it belongs
//! to, one line in [`register`], a test in `tests/tests/qga.rs`. Commands that run arbitrary
//! programs or read arbitrary files (`guest-exec`, `guest-file-*`) are deliberately absent.

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

use guestd_core::{Context, DispatchError, DispatcherBuilder, Handler, HandlerError, Reply, Root};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use freeze::Freezer;

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
}

impl Default for QgaConfig {
    fn default() -> Self {
        Self {
            auto_detect: true,
            freeze_timeout_secs: 600,
        }
    }
}

/// Register every qga command on `builder`.
pub fn register(
    builder: DispatcherBuilder,
    config: &QgaConfig,
) -> Result<DispatcherBuilder, DispatchError> {
    let freezer = Freezer::new(Duration::from_secs(config.freeze_timeout_secs.max(1)));
    let mut builder = builder;
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
    ] {
        builder = builder.register(command)?;
    }
    // Writing to a frozen filesystem would hang the command until the thaw: refused instead.
    for command in [
        password::SET_USER_PASSWORD,
        keys::ADD,
        keys::REMOVE,
        shutdown::SHUTDOWN,
        time::SET_TIME,
        power::SUSPEND_DISK,
        power::SUSPEND_RAM,
        power::SUSPEND_HYBRID,
    ] {
        builder = builder.register(NotWhileFrozen {
            command,
            freezer: freezer.clone(),
        })?;
    }
    builder
        .register(freeze::StatusHandler(freezer.clone()))?
        .register(freeze::FreezeHandler(freezer.clone()))?
        .register(freeze::FreezeListHandler(freezer.clone()))?
        .register(fstrim::FstrimHandler(freezer.clone()))?
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

    fn may_block(&self) -> bool {
        self.blocking
    }

    fn is_query(&self) -> bool {
        self.query
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        only_on_qga(ctx, self.name)?;
        (self.run)(ctx, value).map(|v| guestd_core::qga::ok(&v))
    }
}

/// A command refused while this agent holds filesystems frozen.
#[derive(Debug)]
struct NotWhileFrozen {
    command: QgaCommand,
    freezer: Freezer,
}

impl Handler for NotWhileFrozen {
    fn name(&self) -> &'static str {
        self.command.name
    }

    fn may_block(&self) -> bool {
        self.command.blocking
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        if self.freezer.is_frozen() {
            return Err(HandlerError::failed(format!(
                "Command {} has been disabled: the filesystems are frozen \
                 (guest-fsfreeze-thaw first)",
                self.command.name
            )));
        }
        self.command.run(ctx, value)
    }
}

/// qga commands run only on qga channels (see `guestd_core::qga::QgaChannel`).
pub(crate) fn only_on_qga(ctx: &Context<'_>, name: &str) -> Result<(), HandlerError> {
    if guestd_core::qga::is_qga_channel(ctx.channel) {
        Ok(())
    } else {
        Err(HandlerError::BadRequest(format!(
            "'{name}' is a qemu-guest-agent command: send it on a qga channel \
             (qga+unix:, qga+serial:)"
        )))
    }
}

/// The command's arguments as `T` (unknown members are refused, as qemu-ga does). A native
/// request with a null value counts as no arguments.
pub(crate) fn args<T: DeserializeOwned>(value: &Value) -> Result<T, HandlerError> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value.clone()
    };
    serde_json::from_value(value)
        .map_err(|e| HandlerError::BadRequest(format!("Invalid arguments: {e}")))
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
