//! Which transports to open: the spec of each (`--listen SPEC`, `transports.listen`, parsed by
//! core's one channel grammar), the choice when none is configured, and one registration line
//! per transport in [`open`]. Every stream transport serves either dialect (`qga+KIND:`).

use std::path::PathBuf;
use std::sync::Arc;

use guestd_core::channel_spec::{ChannelKind, ChannelSpec, XenstoreTarget};
use guestd_core::reply_cache::ReplyCache;
use guestd_core::stream::{Dialect, StreamLimits, StreamOptions};
use guestd_core::{Transport, TransportError};
use guestd_transport_xenstore::XenstoreTransport;

use crate::config::Config;

/// Where the default unix socket lives when no hypervisor channel exists.
pub const DEFAULT_UNIX_SOCKET: &str = "/run/guestd/guestd.sock";

/// The local channel on Windows when no hypervisor channel exists.
pub const DEFAULT_PIPE: &str = r"\\.\pipe\guestd";

/// The virtio-serial port libvirt gives the QEMU guest agent.
pub const QGA_PORT: &str = "org.qemu.guest_agent.0";

/// `--listen SPEC` and `transports.listen`: a spec guestd can serve (see
/// `guestd_core::channel_spec`).
pub fn parse(spec: &str) -> Result<ChannelSpec, String> {
    ChannelSpec::listen(spec)
}

/// What to serve when nothing is configured: the hypervisor channels this guest has, else the
/// local unix socket (Windows: the named pipe [`DEFAULT_PIPE`]). A Xen guest is recognised by
/// its xenbus device on the real file system (`/dev/xen/xenbus`, `/proc/xen/xenbus`; never
/// through a sandbox root) or, on Windows, by the PV drivers' xeniface device interface; a KVM
/// guest by its virtio-serial port.
pub fn detect(config: &Config) -> Vec<ChannelSpec> {
    let mut found = Vec::new();
    if config.xenstore.auto_detect {
        if let Some(path) = config
            .xenstore
            .path
            .clone()
            .or_else(guestd_transport_xenstore::detect)
        {
            found.push(ChannelSpec::native(ChannelKind::Xenstore(
                XenstoreTarget::Path(path),
            )));
        }
    }
    if let Some(spec) = guestd_transport_serial::auto_detect(&config.serial) {
        found.push(ChannelSpec::native(ChannelKind::Serial(
            spec.trim_start_matches("serial:").to_owned(),
        )));
    }
    if found.is_empty() {
        found.push(ChannelSpec::native(if cfg!(windows) {
            ChannelKind::Pipe(DEFAULT_PIPE.to_owned())
        } else {
            ChannelKind::Unix(PathBuf::from(DEFAULT_UNIX_SOCKET))
        }));
    }
    // The qga port is served besides the native channels, never instead of them.
    if config.qga.auto_detect && guestd_transport_serial::find_port(QGA_PORT).is_some() {
        found.push(ChannelSpec {
            dialect: Dialect::Qga,
            kind: ChannelKind::Serial(QGA_PORT.to_owned()),
        });
    }
    found
}

/// Open (bind, connect) one transport; a native one has its own reply cache (qemu-ga has
/// none: its hosts resend with new ids). Must run inside the runtime.
pub fn open(
    spec: &ChannelSpec,
    limits: StreamLimits,
    config: &Config,
) -> Result<Box<dyn Transport>, TransportError> {
    let dialect = spec.dialect;
    let options = StreamOptions {
        limits,
        replies: (dialect == Dialect::Native).then(|| Arc::new(ReplyCache::new(&config.retry))),
        dialect,
        ..StreamOptions::default()
    };
    if let Some(why) = spec.unsupported_by(guestd_core::channel_spec::Side::Listen) {
        return Err(TransportError::Config(format!("{spec}: {why}")));
    }
    match &spec.kind {
        ChannelKind::Xenstore(target) => {
            let path = match target {
                XenstoreTarget::Path(path) => Some(path.as_path()),
                _ => None,
            };
            Ok(Box::new(XenstoreTransport::open(path, &config.xenstore)?))
        }
        #[cfg(unix)]
        ChannelKind::Unix(path) => Ok(Box::new(
            guestd_transport_socket::UnixTransport::bind(path, limits)?
                .with_options(options)
                .with_max_connections(config.unix.max_connections),
        )),
        #[cfg(not(unix))]
        ChannelKind::Unix(_) => Err(TransportError::Config(
            "unix sockets are not available on this OS; use pipe:NAME".into(),
        )),
        ChannelKind::Serial(target) => {
            // `qga+serial:` is the port libvirt gives qemu-ga.
            let target = match (target.is_empty(), dialect) {
                (true, Dialect::Qga) => QGA_PORT,
                _ => target.as_str(),
            };
            let port = guestd_transport_serial::SerialTransport::open(
                target,
                &config.serial,
                &config.retry,
                limits,
            )?;
            Ok(Box::new(port.with_dialect(dialect)))
        }
        ChannelKind::Tcp(target) => Ok(Box::new(
            guestd_transport_socket::TcpTransport::bind_with_tls(
                target,
                &config.tcp,
                options,
                crate::daemon::tls(),
            )?,
        )),
        #[cfg(target_os = "linux")]
        ChannelKind::Vsock { port, .. } => Ok(Box::new(
            guestd_transport_socket::VsockTransport::bind(*port, &config.vsock, options)?,
        )),
        #[cfg(not(target_os = "linux"))]
        ChannelKind::Vsock { .. } => Err(TransportError::Config(
            "vsock is only supported on Linux".into(),
        )),
        #[cfg(windows)]
        ChannelKind::Pipe(name) => Ok(Box::new(guestd_transport_socket::PipeTransport::bind(
            name, options,
        )?)),
        #[cfg(not(windows))]
        ChannelKind::Pipe(_) => Err(TransportError::Config(
            "named pipes exist only on Windows; use unix:PATH here".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_honours_the_xenstore_section() {
        let mut config = Config::default();
        config.xenstore.path = Some("/run/test-xenbus".into());
        let xen = parse("xenstore:/run/test-xenbus").unwrap();
        assert!(detect(&config).contains(&xen));
        config.xenstore.auto_detect = false;
        assert!(!detect(&config).contains(&xen));
    }

    #[test]
    fn guestd_refuses_guestctl_forms_with_clear_errors() {
        for (bad, why) in [
            ("vsock:3:5000", "vsock:PORT"),
            ("xenstore:5", "guestctl"),
            ("qga+xenstore", "native protocol only"),
            ("unix:", "needs a path"),
            ("carrier-pigeon:1", "unknown transport"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
