//! guestd-handlers: one module per wire command (spec §4).
//!
//! Each handler implements `guestd_core::Handler`, sees the guest only through the `Context`
//! (`Root`, `CommandRunner`, `Backend`, per-channel state) and is registered explicitly by the
//! daemon. Adding a command: a new module here with its handler (and its config struct, if it
//! has settings), one `pub use` line below, one `register` line in the daemon, tests.

mod features;
mod keyinit;
mod password;
mod resetnetwork;
mod version;

pub use features::FeaturesHandler;
pub use keyinit::{Keyinit2Handler, KeyinitHandler};
pub use password::{PasswordConfig, PasswordHandler};
pub use resetnetwork::{NetworkConfig, ResetNetworkHandler};
pub use version::{AGENT_VERSION, VersionHandler};
