//! Transport specs (`--listen SPEC`, `transports.listen`) and the choice of transports when none
//! is configured.

use std::path::PathBuf;
use std::str::FromStr;

use guestd_core::stream::StreamLimits;
use guestd_core::{Transport, TransportError};

/// Where the default unix socket lives when no hypervisor channel exists.
pub const DEFAULT_UNIX_SOCKET: &str = "/run/guestd/guestd.sock";

/// One channel to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// `unix:PATH`
    Unix(PathBuf),
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
        match kind {
            "unix" if !rest.is_empty() => Ok(Self::Unix(PathBuf::from(rest))),
            "unix" => Err(format!(
                "'{spec}': unix needs a path (unix:/run/guestd/guestd.sock)"
            )),
            _ => Err(format!(
                "'{spec}': unknown transport '{kind}' (expected unix:PATH)"
            )),
        }
    }
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What to serve when nothing is configured: the hypervisor channels this guest has, else the
/// local unix socket.
pub fn detect() -> Vec<ListenSpec> {
    vec![ListenSpec::Unix(PathBuf::from(DEFAULT_UNIX_SOCKET))]
}

/// Open (bind, connect) one transport. Must run inside the runtime.
pub fn open(spec: &ListenSpec, limits: StreamLimits) -> Result<Box<dyn Transport>, TransportError> {
    match spec {
        #[cfg(unix)]
        ListenSpec::Unix(path) => Ok(Box::new(guestd_transport_socket::UnixTransport::bind(
            path, limits,
        )?)),
        #[cfg(not(unix))]
        ListenSpec::Unix(_) => {
            let _ = limits;
            Err(TransportError::Config(
                "unix sockets are not available on this OS".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs_with_clear_errors() {
        assert_eq!(
            "unix:/tmp/x.sock".parse::<ListenSpec>(),
            Ok(ListenSpec::Unix("/tmp/x.sock".into()))
        );
        assert!(
            "unix:"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("needs a path")
        );
        assert!(
            "carrier-pigeon:1"
                .parse::<ListenSpec>()
                .unwrap_err()
                .contains("unknown transport")
        );
        assert_eq!(ListenSpec::Unix("/a".into()).to_string(), "unix:/a");
    }
}
