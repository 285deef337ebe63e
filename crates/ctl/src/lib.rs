//! guestctl, the host side of guestd: connect to a guest over one of its channels and call
//! commands.
//!
//! [`connect`] turns a spec (`unix:PATH`, …) into a [`Client`]; [`Client::call`] sends one
//! request and returns the agent's reply. The stream client resynchronises on connect (a `0xFF`
//! byte, then the built-in `sync` request with a random token) and ignores replies whose id is
//! not the one it waits for, so stale output from an earlier conversation never reaches the
//! caller.
//!
//! [`password`] is `set-password`: the strong (`keyinit2`) or legacy key exchange, then
//! `password`.
//!
//! Adding a transport: a module with a `Client` implementation and one arm in [`connect`].

pub mod password;
mod stream;

use std::time::Duration;

use guestd_core::{Reply, Request};

pub use stream::StreamClient;

/// The default spec: the local unix socket guestd serves when no hypervisor channel exists.
pub const DEFAULT_CONNECT: &str = "unix:/run/guestd/guestd.sock";

/// A connection to one guest.
pub trait Client {
    /// Send `request` and wait up to `timeout` for its reply.
    fn call(&mut self, request: &Request, timeout: Duration) -> Result<Reply, ClientError>;
}

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {spec}: {source}")]
    Connect {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no reply within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent sent something that is not a reply: {0}")]
    Protocol(String),
    #[error("{0}")]
    Spec(String),
}

/// Open a client for `spec`.
pub fn connect(spec: &str, timeout: Duration) -> Result<Box<dyn Client>, ClientError> {
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    #[cfg(not(unix))]
    let _ = (rest, timeout);
    match kind {
        #[cfg(unix)]
        "unix" if !rest.is_empty() => Ok(Box::new(StreamClient::connect_unix(rest, timeout)?)),
        _ => Err(ClientError::Spec(format!(
            "'{spec}': unknown or incomplete connect spec (expected unix:PATH)"
        ))),
    }
}

/// A fresh random request id (hex).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
