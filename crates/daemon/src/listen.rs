//! Transport specs (`--listen SPEC`, `transports.listen`) and the choice of transports when none
//! is configured.

use std::path::PathBuf;
use std::str::FromStr;

use guestd_core::stream::StreamLimits;
use guestd_core::{Transport, TransportError};
use guestd_transport_xenstore::{XenstoreConfig, XenstoreTransport};

/// Where the default unix socket lives when no hypervisor channel exists.
pub const DEFAULT_UNIX_SOCKET: &str = "/run/guestd/guestd.sock";

/// One channel to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// `unix:PATH`
    Unix(PathBuf),
    /// `xenstore` (the configured or detected device) or `xenstore:PATH` (a xenbus device or a
    /// xenstored socket).
    Xenstore(Option<PathBuf>),
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
            "xenstore" if rest.is_empty() => Ok(Self::Xenstore(None)),
            "xenstore" => Ok(Self::Xenstore(Some(PathBuf::from(rest)))),
            _ => Err(format!(
                "'{spec}': unknown transport '{kind}' (expected unix:PATH, xenstore or xenstore:PATH)"
            )),
        }
    }
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Xenstore(None) => write!(f, "xenstore"),
            Self::Xenstore(Some(path)) => write!(f, "xenstore:{}", path.display()),
        }
    }
}

/// What to serve when nothing is configured: the hypervisor channels this guest has, else the
/// local unix socket. A Xen guest is recognised by its xenbus device on the real file system
/// (`/dev/xen/xenbus`, `/proc/xen/xenbus`; never through a sandbox root).
pub fn detect(xenstore: &XenstoreConfig) -> Vec<ListenSpec> {
    if xenstore.auto_detect {
        if let Some(path) = xenstore
            .path
            .clone()
            .or_else(guestd_transport_xenstore::detect)
        {
            return vec![ListenSpec::Xenstore(Some(path))];
        }
    }
    vec![ListenSpec::Unix(PathBuf::from(DEFAULT_UNIX_SOCKET))]
}

/// Open (bind, connect) one transport. Must run inside the runtime.
pub fn open(
    spec: &ListenSpec,
    limits: StreamLimits,
    xenstore: &XenstoreConfig,
) -> Result<Box<dyn Transport>, TransportError> {
    match spec {
        ListenSpec::Xenstore(path) => Ok(Box::new(XenstoreTransport::open(
            path.as_deref(),
            xenstore,
        )?)),
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
    fn detection_honours_the_xenstore_section() {
        let configured = XenstoreConfig {
            path: Some("/run/test-xenbus".into()),
            ..XenstoreConfig::default()
        };
        assert_eq!(
            detect(&configured),
            vec![ListenSpec::Xenstore(Some("/run/test-xenbus".into()))]
        );
        let off = XenstoreConfig {
            auto_detect: false,
            ..configured
        };
        assert_eq!(
            detect(&off),
            vec![ListenSpec::Unix(PathBuf::from(DEFAULT_UNIX_SOCKET))]
        );
    }

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
        assert_eq!(
            "xenstore".parse::<ListenSpec>(),
            Ok(ListenSpec::Xenstore(None))
        );
        assert_eq!(
            "xenstore:/dev/xen/xenbus".parse::<ListenSpec>(),
            Ok(ListenSpec::Xenstore(Some("/dev/xen/xenbus".into())))
        );
        assert_eq!(ListenSpec::Xenstore(None).to_string(), "xenstore");
        assert_eq!(
            ListenSpec::Xenstore(Some("/s".into())).to_string(),
            "xenstore:/s"
        );
    }
}
