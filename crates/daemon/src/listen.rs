//! Transport specs (`--listen SPEC`, `transports.listen`) and the choice of transports when none
//! is configured.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use guestd_core::retry::ReplyCache;
use guestd_core::stream::{Dialect, StreamLimits, StreamOptions};
use guestd_core::{Transport, TransportError};
use guestd_transport_xenstore::XenstoreTransport;

use crate::config::Config;

/// Where the default unix socket lives when no hypervisor channel exists.
pub const DEFAULT_UNIX_SOCKET: &str = "/run/guestd/guestd.sock";

/// The local channel on Windows when no hypervisor channel exists.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\guestd";

/// One channel to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// `unix:PATH`
    Unix(PathBuf),
    /// `serial:` (the configured port name), `serial:NAME` or `serial:/dev/vportNpM`
    Serial(String),
    /// `tcp:HOST:PORT`
    Tcp(String),
    /// `vsock:PORT`
    Vsock(String),
    /// `xenstore` (the configured or detected device: xenbus, or xeniface on Windows) or
    /// `xenstore:PATH` (a xenbus device or a xenstored socket; on Windows a xeniface interface
    /// path).
    Xenstore(Option<PathBuf>),
    /// `qga+unix:PATH`: the qemu-guest-agent dialect on a unix socket.
    QgaUnix(PathBuf),
    /// `qga+serial:` (the port `org.qemu.guest_agent.0`), `qga+serial:NAME` or
    /// `qga+serial:/dev/vportNpM`: the qemu-guest-agent dialect on a virtio-serial port.
    QgaSerial(String),
    /// `pipe:\\.\pipe\NAME` (Windows): a local named pipe; holds the full pipe path.
    Pipe(String),
    /// `qga+pipe:\\.\pipe\NAME` (Windows): the qemu-guest-agent dialect on a named pipe.
    QgaPipe(String),
}

/// The virtio-serial port libvirt gives the QEMU guest agent.
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";

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
            "serial" => Ok(Self::Serial(rest.to_owned())),
            "qga+unix" if !rest.is_empty() => Ok(Self::QgaUnix(PathBuf::from(rest))),
            "qga+unix" => Err(format!(
                "'{spec}': qga+unix needs a path (qga+unix:/run/guestd/qga.sock)"
            )),
            "qga+serial" if rest.is_empty() => Ok(Self::QgaSerial(QGA_PORT.to_owned())),
            "qga+serial" => Ok(Self::QgaSerial(rest.to_owned())),
            "tcp"
                if rest
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty()) =>
            {
                Ok(Self::Tcp(rest.to_owned()))
            }
            "tcp" => Err(format!(
                "'{spec}': tcp needs HOST:PORT (tcp:127.0.0.1:7000)"
            )),
            "pipe" => pipe_name(spec, rest).map(Self::Pipe),
            "qga+pipe" => pipe_name(spec, rest).map(Self::QgaPipe),
            "vsock" => guestd_transport_socket::vsock::parse_port(rest)
                .map(|_| Self::Vsock(rest.to_owned()))
                .map_err(|e| format!("'{spec}': {e}")),
            _ => Err(format!(
                "'{spec}': unknown transport '{kind}' (expected unix:PATH, serial:[NAME|PATH], \
                 tcp:HOST:PORT, vsock:PORT, pipe:\\\\.\\pipe\\NAME, xenstore, xenstore:PATH, \
                 qga+unix:PATH, qga+serial:[NAME|PATH] or qga+pipe:\\\\.\\pipe\\NAME)"
            )),
        }
    }
}

/// The full `\\.\pipe\NAME` of a `pipe:` spec (checked on every OS, refused at open off Windows).
fn pipe_name(spec: &str, rest: &str) -> Result<String, String> {
    guestd_transport_socket::pipe::parse_name(rest).map_err(|e| format!("'{spec}': {e}"))
}

impl std::fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Serial(target) => write!(f, "serial:{target}"),
            Self::Tcp(target) => write!(f, "tcp:{target}"),
            Self::Vsock(port) => write!(f, "vsock:{port}"),
            Self::Xenstore(None) => write!(f, "xenstore"),
            Self::Xenstore(Some(path)) => write!(f, "xenstore:{}", path.display()),
            Self::QgaUnix(path) => write!(f, "qga+unix:{}", path.display()),
            Self::QgaSerial(target) => write!(f, "qga+serial:{target}"),
            Self::Pipe(name) => write!(f, "pipe:{name}"),
            Self::QgaPipe(name) => write!(f, "qga+pipe:{name}"),
        }
    }
}

/// What to serve when nothing is configured: the hypervisor channels this guest has, else the
/// local unix socket (Windows: the named pipe [`DEFAULT_PIPE`]). A Xen guest is recognised by
/// its xenbus device on the real file system (`/dev/xen/xenbus`, `/proc/xen/xenbus`; never
/// through a sandbox root) or, on Windows, by the PV drivers' xeniface device interface; a KVM
/// guest by its virtio-serial port.
pub fn detect(config: &Config) -> Vec<ListenSpec> {
    let mut found = Vec::new();
    if config.xenstore.auto_detect {
        if let Some(path) = config
            .xenstore
            .path
            .clone()
            .or_else(guestd_transport_xenstore::detect)
        {
            found.push(ListenSpec::Xenstore(Some(path)));
        }
    }
    if let Some(spec) = guestd_transport_serial::auto_detect(&config.serial) {
        found.push(ListenSpec::Serial(
            spec.trim_start_matches("serial:").to_owned(),
        ));
    }
    if found.is_empty() {
        found.push(if cfg!(windows) {
            ListenSpec::Pipe(DEFAULT_PIPE.to_owned())
        } else {
            ListenSpec::Unix(PathBuf::from(DEFAULT_UNIX_SOCKET))
        });
    }
    // The qga port is served besides the native channels, never instead of them.
    if config.qga.auto_detect && guestd_transport_serial::find_port(QGA_PORT).is_some() {
        found.push(ListenSpec::QgaSerial(QGA_PORT.to_owned()));
    }
    found
}

/// Open (bind, connect) one transport with its own reply cache. Must run inside the runtime.
pub fn open(
    spec: &ListenSpec,
    limits: StreamLimits,
    config: &Config,
) -> Result<Box<dyn Transport>, TransportError> {
    let options = StreamOptions {
        limits,
        replies: Some(Arc::new(ReplyCache::new(&config.retry))),
        ..StreamOptions::default()
    };
    match spec {
        ListenSpec::Xenstore(path) => Ok(Box::new(XenstoreTransport::open(
            path.as_deref(),
            &config.xenstore,
        )?)),
        #[cfg(unix)]
        ListenSpec::Unix(path) => Ok(Box::new(
            guestd_transport_socket::UnixTransport::bind(path, limits)?.with_options(options),
        )),
        ListenSpec::Serial(target) => Ok(Box::new(guestd_transport_serial::SerialTransport::open(
            target,
            &config.serial,
            &config.retry,
            limits,
        )?)),
        ListenSpec::QgaSerial(target) => Ok(Box::new(
            guestd_transport_serial::SerialTransport::open(
                target,
                &config.serial,
                &config.retry,
                limits,
            )?
            .with_dialect(Dialect::Qga),
        )),
        #[cfg(unix)]
        ListenSpec::QgaUnix(path) => Ok(Box::new(
            guestd_transport_socket::UnixTransport::bind(path, limits)?.with_options(
                StreamOptions {
                    replies: None,
                    dialect: Dialect::Qga,
                    ..options
                },
            ),
        )),
        ListenSpec::Tcp(target) => Ok(Box::new(guestd_transport_socket::TcpTransport::bind(
            target,
            &config.tcp,
            options,
        )?)),
        #[cfg(target_os = "linux")]
        ListenSpec::Vsock(port) => Ok(Box::new(guestd_transport_socket::VsockTransport::bind(
            port,
            &config.vsock,
            options,
        )?)),
        #[cfg(not(target_os = "linux"))]
        ListenSpec::Vsock(_) => Err(TransportError::Config(
            "vsock is only supported on Linux".into(),
        )),
        #[cfg(windows)]
        ListenSpec::Pipe(name) => Ok(Box::new(guestd_transport_socket::PipeTransport::bind(
            name, options,
        )?)),
        #[cfg(windows)]
        ListenSpec::QgaPipe(name) => Ok(Box::new(guestd_transport_socket::PipeTransport::bind(
            name,
            StreamOptions {
                replies: None,
                dialect: Dialect::Qga,
                ..options
            },
        )?)),
        #[cfg(not(windows))]
        ListenSpec::Pipe(_) | ListenSpec::QgaPipe(_) => Err(TransportError::Config(
            "named pipes exist only on Windows; use unix:PATH here".into(),
        )),
        #[cfg(not(unix))]
        ListenSpec::Unix(_) | ListenSpec::QgaUnix(_) => {
            let _ = options;
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
        let mut config = Config::default();
        config.xenstore.path = Some("/run/test-xenbus".into());
        let xen = ListenSpec::Xenstore(Some("/run/test-xenbus".into()));
        assert!(detect(&config).contains(&xen));
        config.xenstore.auto_detect = false;
        assert!(!detect(&config).contains(&xen));
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
        for spec in [
            "serial:",
            "serial:org.x.0",
            "serial:/dev/vport0p1",
            "tcp:127.0.0.1:7000",
            "tcp:[::1]:7",
            "vsock:5000",
            "qga+unix:/run/q.sock",
            "qga+serial:org.qemu.guest_agent.0",
            "qga+serial:/dev/vport1p1",
            r"pipe:\\.\pipe\guestd",
            r"qga+pipe:\\.\pipe\qga",
        ] {
            assert_eq!(spec.parse::<ListenSpec>().unwrap().to_string(), spec);
        }
        for (bad, why) in [
            ("tcp:7000", "HOST:PORT"),
            ("tcp:", "HOST:PORT"),
            ("vsock:x", "invalid vsock port"),
            ("qga+unix:", "needs a path"),
            ("pipe:", "needs a name"),
            (r"pipe:\\host\pipe\x", "not a local pipe"),
        ] {
            let err = bad.parse::<ListenSpec>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert_eq!(
            "xenstore".parse::<ListenSpec>(),
            Ok(ListenSpec::Xenstore(None))
        );
        assert_eq!(
            "xenstore:/dev/xen/xenbus".parse::<ListenSpec>(),
            Ok(ListenSpec::Xenstore(Some("/dev/xen/xenbus".into())))
        );
        assert_eq!(
            "pipe:guestd".parse::<ListenSpec>(),
            Ok(ListenSpec::Pipe(DEFAULT_PIPE.into()))
        );
        assert_eq!(ListenSpec::Xenstore(None).to_string(), "xenstore");
        assert_eq!(
            ListenSpec::Xenstore(Some("/s".into())).to_string(),
            "xenstore:/s"
        );
    }
}
