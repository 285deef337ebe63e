//! guestd-handlers: one module per wire command.
//!
//! Adding a command: a module with a type implementing `guestd_core::Handler`, its config
//! struct (if any) with `#[serde(deny_unknown_fields, default)]`, a `pub use` here, and one
//! `.register(...)` line in the daemon.

pub mod inject;
pub mod kms;
pub mod update;

pub use inject::{FileInjectHandler, InjectConfig, InjectFileHandler};
pub use kms::KmsActivateHandler;
pub use update::{AgentUpdateHandler, UpdateConfig};
