//! guestd-transport-socket: listeners whose every connection is one channel running the shared
//! NDJSON conversation (`guestd_core::stream::serve_stream`).
//!
//! - [`unix`]: `unix:PATH`, mode 0600, many clients at once (the default transport when no
//!   hypervisor channel exists).
//!
//! Adding a listener: a module that accepts connections and hands each to
//! [`serve_connections`]-style code with its own `Channel`.

#[cfg(unix)]
pub mod unix;

#[cfg(unix)]
pub use unix::UnixTransport;
