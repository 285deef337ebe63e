//! guestd-handlers: one module per wire command (spec §4).
//!
//! Each handler implements `guestd_core::Handler`, sees the guest only through the `Context`
//! (`Root`, `ProcessRunner`, `Backend`, per-channel state) and is registered explicitly by the
//! daemon. Adding a command: a new module here with its handler (and its config struct, if it
//! has settings), one `pub use` line below, one `register` line in the daemon, tests.

mod channel_key;
pub mod configure;
mod features;
pub mod inject;
mod keyinit;
pub mod kms;
mod password;
pub mod qga;
pub mod resetnetwork;
pub mod update;
mod version;

pub use configure::{ConfigureConfig, ConfigureHandler};
pub use features::FeaturesHandler;
pub use inject::{FileInjectHandler, InjectConfig, InjectFileHandler};
pub use keyinit::{Keyinit2Handler, KeyinitHandler};
pub use kms::KmsActivateHandler;
pub use password::{PasswordConfig, PasswordHandler};
pub use resetnetwork::{NetworkConfig, ResetNetworkHandler};
pub use update::{AgentUpdateHandler, UpdateConfig};
pub use version::{AGENT_VERSION, VersionHandler};

use std::sync::Arc;

use guestd_core::{DispatchError, DispatcherBuilder};

/// Register `keyinit`, `keyinit2` and `password` with one `[password]` configuration: they
/// work together (an exchange leaves the key that `password` uses) and are never registered
/// apart. The daemon and the tests that drive the password flow use this.
pub fn register_password_commands(
    builder: DispatcherBuilder,
    config: PasswordConfig,
) -> Result<DispatcherBuilder, DispatchError> {
    let config = Arc::new(config);
    builder
        .register(KeyinitHandler::new(config.clone()))?
        .register(Keyinit2Handler)?
        .register(PasswordHandler::new(config))
}
