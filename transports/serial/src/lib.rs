//! guestd virtio-serial transport: the host talks to guestd over a named virtio-serial port
//! (KVM/QEMU `virtserialport,name=org.openstack.guest_agent.0`).
//!
//! The port is found by name: `/dev/virtio-ports/<name>` (udev link), else the `/dev/vportNpM`
//! whose `/sys/class/virtio-ports/vportNpM/name` matches; on Windows `\\.\Global\<name>`.
//! The conversation is core's [`serve_stream_with`] (NDJSON, `0xFF` resync, built-in `sync`,
//! remembered replies), run again each time the host comes back.
//!
//! What a virtio port does when the host goes away (see the reference notes in the repository
//! history): `read` returns EOF until the host reconnects, writes block or fail, and replies
//! written meanwhile reach the *next* client. So on EOF the partial input is dropped, the
//! transport waits for the next port event without spinning (edge-triggered epoll on Linux),
//! and a reply the host does not accept in time is dropped and logged; the host gets it again
//! by repeating the request id ([`guestd_core::retry`]).
//!
//! Adding another port flavour (FreeBSD `/dev/vtcon/<name>`, a Windows COM port): add a
//! platform module with a `PortStream` (AsyncRead + AsyncWrite + `wait_for_host`) and its
//! `find_port`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use guestd_core::reply_cache::{ReplyCache, ReplyCacheConfig};
use guestd_core::stream::{Dialect, StreamLimits, StreamOptions, serve_stream_with};
use guestd_core::{BoxFuture, Dispatcher, Shutdown, Transport, TransportError};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::PortStream;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::PortStream;

#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported;
#[cfg(not(any(target_os = "linux", windows)))]
pub use unsupported::PortStream;

/// The port name OpenStack (nova) gives the agent's virtio-serial port.
pub const DEFAULT_PORT_NAME: &str = "org.openstack.guest_agent.0";

/// `[serial]` in the daemon config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SerialConfig {
    /// Name of the virtio-serial port.
    pub port: String,
    /// Use the port without `--listen serial:` when it exists.
    pub auto: bool,
    /// Milliseconds the host has to accept a reply before it is dropped (and logged).
    pub write_timeout_ms: u64,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT_NAME.into(),
            auto: true,
            write_timeout_ms: 2000,
        }
    }
}

impl SerialConfig {
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// What `serial:<target>` names: a port name or a device path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortTarget {
    Name(String),
    Path(PathBuf),
}

impl PortTarget {
    /// `serial:` (empty: the configured name), `serial:NAME`, `serial:/dev/vport0p1`,
    /// `serial:\\.\Global\NAME`.
    pub fn parse(target: &str, config: &SerialConfig) -> Result<Self, TransportError> {
        let target = if target.is_empty() {
            config.port.as_str()
        } else {
            target
        };
        if target.starts_with('/') || target.starts_with(r"\\") {
            return Ok(Self::Path(PathBuf::from(target)));
        }
        if target.is_empty() || target.contains(['/', '\\']) || target.starts_with('.') {
            return Err(TransportError::Config(format!(
                "invalid virtio-serial port name '{target}' (expected a name such as \
                 {DEFAULT_PORT_NAME} or a device path)"
            )));
        }
        Ok(Self::Name(target.to_owned()))
    }
}

/// Where the port called `name` is on this system, if it exists.
pub fn find_port(name: &str) -> Option<PathBuf> {
    #[cfg(target_os = "linux")]
    return find_port_in(name, Path::new("/dev"), Path::new("/sys"));
    #[cfg(windows)]
    return Some(PathBuf::from(format!(r"\\.\Global\{name}"))).filter(|p| p.exists());
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = name;
        None
    }
}

/// [`find_port`] under other `/dev` and `/sys` roots (tests).
pub fn find_port_in(name: &str, dev: &Path, sys: &Path) -> Option<PathBuf> {
    let link = dev.join("virtio-ports").join(name);
    if link.exists() {
        return Some(link);
    }
    let ports = std::fs::read_dir(sys.join("class/virtio-ports")).ok()?;
    let mut found: Vec<PathBuf> = ports
        .flatten()
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("name"))
                .is_ok_and(|n| n.trim_end_matches('\n') == name)
        })
        .map(|entry| dev.join(entry.file_name()))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The spec guestd listens on without configuration: `serial:<name>` when the port exists.
pub fn auto_detect(config: &SerialConfig) -> Option<String> {
    if !config.auto {
        return None;
    }
    find_port(&config.port).map(|_| format!("serial:{}", config.port))
}

/// An open virtio-serial port, ready to serve.
#[derive(Debug)]
pub struct SerialTransport {
    described: String,
    port: PortStream,
    options: StreamOptions,
}

impl SerialTransport {
    /// Open the port named by `target` (see [`PortTarget::parse`]).
    pub fn open(
        target: &str,
        config: &SerialConfig,
        retry: &ReplyCacheConfig,
        limits: StreamLimits,
    ) -> Result<Self, TransportError> {
        let (path, label) = match PortTarget::parse(target, config)? {
            PortTarget::Path(path) => {
                let label = path.display().to_string();
                (path, label)
            }
            PortTarget::Name(name) => {
                let path = find_port(&name).ok_or_else(|| {
                    TransportError::Config(format!(
                        "virtio-serial port '{name}' not found (no /dev/virtio-ports/{name} and \
                         no /sys/class/virtio-ports/*/name matching it; is the \
                         virtio_console module loaded and the port configured on the host?)"
                    ))
                })?;
                let label = format!("{} ({name})", path.display());
                (path, label)
            }
        };
        Self::open_path(&path, label, config, retry, limits)
    }

    fn open_path(
        path: &Path,
        label: String,
        config: &SerialConfig,
        retry: &ReplyCacheConfig,
        limits: StreamLimits,
    ) -> Result<Self, TransportError> {
        let port = PortStream::open(path, config.write_timeout()).map_err(|e| {
            let hint = if e.raw_os_error() == Some(16) {
                " (another program, e.g. a second agent, has the port open)"
            } else {
                ""
            };
            TransportError::Io {
                what: format!("open virtio-serial port {}{hint}", path.display()),
                source: e,
            }
        })?;
        Ok(Self::from_port(port, label, retry, limits))
    }

    /// Serve an already open port (tests use one end of a socket pair).
    pub fn from_port(
        port: PortStream,
        label: String,
        retry: &ReplyCacheConfig,
        limits: StreamLimits,
    ) -> Self {
        Self {
            described: format!("serial:{label}"),
            port,
            options: StreamOptions {
                limits,
                replies: Some(Arc::new(ReplyCache::new(retry))),
                // The port drops replies the host does not take (PortStream), so the
                // conversation itself never has to give up.
                write_timeout: None,
                ..StreamOptions::default()
            },
        }
    }

    /// Speak `dialect` (the qga dialect on `org.qemu.guest_agent.0`) instead of the native one.
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.options.dialect = dialect;
        self
    }
}

impl Transport for SerialTransport {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn serve(
        self: Box<Self>,
        dispatcher: Arc<Dispatcher>,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        Box::pin(async move {
            let Self {
                described,
                mut port,
                options,
            } = *self;
            // One channel for the life of the port: the host is the same hypervisor across
            // reconnects, so a key agreed before a reconnect stays valid after it.
            let channel = options.channel(described.clone());
            info!(transport = %described, "serving");
            loop {
                let before = port.bytes_read();
                let result = serve_stream_with(
                    &mut port,
                    Arc::clone(&dispatcher),
                    Arc::clone(&channel),
                    &options,
                    shutdown.clone(),
                )
                .await;
                if shutdown.is_triggered() {
                    return Ok(());
                }
                match result {
                    Ok(()) if port.bytes_read() != before => {
                        info!(transport = %described, "host disconnected; waiting for it to return")
                    }
                    Ok(()) => debug!(transport = %described, "host not connected; waiting"),
                    Err(e) => {
                        warn!(transport = %described, error = %e, "port error; waiting for the next port event")
                    }
                }
                tokio::select! {
                    waited = port.wait_for_host() => waited.map_err(TransportError::io(format!("wait on {described}")))?,
                    () = shutdown.wait() => return Ok(()),
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let c = SerialConfig::default();
        assert_eq!(
            PortTarget::parse("", &c).unwrap(),
            PortTarget::Name(DEFAULT_PORT_NAME.into())
        );
        assert_eq!(
            PortTarget::parse("my.port", &c).unwrap(),
            PortTarget::Name("my.port".into())
        );
        assert_eq!(
            PortTarget::parse("/dev/vport0p1", &c).unwrap(),
            PortTarget::Path("/dev/vport0p1".into())
        );
        assert!(PortTarget::parse("a/b", &c).is_err());
        assert!(PortTarget::parse("..", &c).is_err());
    }

    #[test]
    fn finds_port_by_sysfs_name_without_udev() {
        let t = tempfile::tempdir().unwrap();
        let (dev, sys) = (t.path().join("dev"), t.path().join("sys"));
        for (port, name) in [("vport0p1", "other.port"), ("vport1p2", DEFAULT_PORT_NAME)] {
            let d = sys.join("class/virtio-ports").join(port);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join(port), b"").unwrap();
        }
        assert_eq!(
            find_port_in(DEFAULT_PORT_NAME, &dev, &sys),
            Some(dev.join("vport1p2"))
        );
        assert_eq!(find_port_in("missing", &dev, &sys), None);
        // The udev link wins.
        std::fs::create_dir_all(dev.join("virtio-ports")).unwrap();
        std::fs::write(dev.join("virtio-ports").join(DEFAULT_PORT_NAME), b"").unwrap();
        assert_eq!(
            find_port_in(DEFAULT_PORT_NAME, &dev, &sys),
            Some(dev.join("virtio-ports").join(DEFAULT_PORT_NAME))
        );
    }

    #[test]
    fn missing_port_is_a_clear_error() {
        let err = SerialTransport::open(
            "no.such.port.for.tests",
            &SerialConfig::default(),
            &ReplyCacheConfig::default(),
            StreamLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
