//! vsock listener (`vsock:PORT`): the host reaches the guest over AF_VSOCK (KVM
//! `vhost-vsock-pci`, Firecracker, Hyper-V sockets via the kernel's vsock core).
//!
//! Only the host (CID 2) may connect unless `[vsock] allowed_cids` says otherwise: other
//! guests on the same host can reach this port too (with some hypervisors, sibling VMs or
//! local processes get other CIDs), and they must not be able to drive the agent.

//!
//! The configuration is platform-neutral (the spec is core's `ChannelSpec`); the listener is
//! Linux-only.

#[cfg(target_os = "linux")]
pub use listener::VsockTransport;

use serde::{Deserialize, Serialize};

use crate::accept::DEFAULT_MAX_CONNECTIONS;

/// The host's context id.
pub const HOST_CID: u32 = 2;
/// Bind on every local CID.
#[cfg(target_os = "linux")]
const CID_ANY: u32 = u32::MAX;

/// `[vsock]` in the daemon config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VsockConfig {
    /// Peer CIDs allowed to connect.
    pub allowed_cids: Vec<u32>,
    /// Simultaneous connections; more are refused.
    pub max_connections: usize,
}

impl Default for VsockConfig {
    fn default() -> Self {
        Self {
            allowed_cids: vec![HOST_CID],
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[cfg(target_os = "linux")]
mod listener {
    use std::fmt;
    use std::io;
    use std::sync::Arc;

    use guestd_core::stream::StreamOptions;
    use guestd_core::{BoxFuture, Dispatcher, Shutdown, Transport, TransportError};
    use tokio_vsock::{VsockAddr, VsockListener, VsockStream};
    use tracing::warn;

    use super::{CID_ANY, VsockConfig};
    use crate::accept::{Acceptor, ListenerSettings, Served, serve_listener};

    /// A bound vsock listener.
    pub struct VsockTransport {
        listener: VsockListener,
        port: u32,
        config: VsockConfig,
        options: StreamOptions,
    }

    impl fmt::Debug for VsockTransport {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("VsockTransport")
                .field("port", &self.port)
                .field("allowed_cids", &self.config.allowed_cids)
                .finish_non_exhaustive()
        }
    }

    impl VsockTransport {
        /// Bind `vsock:PORT` on every local CID. Must run inside a tokio runtime.
        pub fn bind(
            port: u32,
            config: &VsockConfig,
            options: StreamOptions,
        ) -> Result<Self, TransportError> {
            if config.allowed_cids.is_empty() {
                return Err(TransportError::Config(
                    "[vsock] allowed_cids is empty: no host could ever connect".into(),
                ));
            }
            let listener = VsockListener::bind(VsockAddr::new(CID_ANY, port)).map_err(|e| {
                let hint = if e.raw_os_error() == Some(97) {
                    " (no vsock support: load the vmw_vsock_virtio_transport module, and give the \
                 VM a vhost-vsock device)"
                } else {
                    ""
                };
                TransportError::Io {
                    what: format!("bind vsock:{port}{hint}"),
                    source: e,
                }
            })?;
            Ok(Self {
                listener,
                port,
                config: config.clone(),
                options,
            })
        }
    }

    /// Where connections come from, before the CID check (a vsock listener, or a test feed).
    pub(crate) trait VsockSource: Send + 'static {
        type Stream: Served;
        /// The next connection with the peer's CID and port.
        fn next(&mut self) -> impl Future<Output = io::Result<(Self::Stream, u32, u32)>> + Send;
    }

    impl VsockSource for VsockListener {
        type Stream = VsockStream;
        async fn next(&mut self) -> io::Result<(VsockStream, u32, u32)> {
            let (stream, addr) = self.accept().await?;
            Ok((stream, addr.cid(), addr.port()))
        }
    }

    /// Admits connections from the allowed CIDs only.
    pub(crate) struct Admitting<S> {
        pub source: S,
        pub allowed: Vec<u32>,
    }

    impl<S: VsockSource> Acceptor for Admitting<S> {
        type Stream = S::Stream;
        async fn accept(&mut self) -> io::Result<Option<(S::Stream, String)>> {
            let (stream, cid, port) = self.source.next().await?;
            if !self.allowed.contains(&cid) {
                warn!(cid, port, allowed = ?self.allowed, "vsock connection from a CID that is not allowed; refused");
                return Ok(None);
            }
            Ok(Some((stream, format!("cid {cid} port {port}"))))
        }
    }

    /// Serve vsock-style connections from `source` (shared by the real listener and the tests).
    pub(crate) fn serve_source<S: VsockSource>(
        source: S,
        label: String,
        config: &VsockConfig,
        options: StreamOptions,
        dispatcher: Arc<Dispatcher>,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        let settings = ListenerSettings::new(label, options, config.max_connections);
        let acceptor = Admitting {
            source,
            allowed: config.allowed_cids.clone(),
        };
        Box::pin(serve_listener(
            acceptor,
            |s: S::Stream| async move { Ok(s) },
            settings,
            dispatcher,
            shutdown,
        ))
    }

    impl Transport for VsockTransport {
        fn describe(&self) -> String {
            format!("vsock:{}", self.port)
        }

        fn serve(
            self: Box<Self>,
            dispatcher: Arc<Dispatcher>,
            shutdown: Shutdown,
        ) -> BoxFuture<'static, Result<(), TransportError>> {
            let label = self.describe();
            serve_source(
                self.listener,
                label,
                &self.config,
                self.options,
                dispatcher,
                shutdown,
            )
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    //! vsock framing and the CID check, with unix socket pairs standing in for vsock
    //! connections (this machine has no vsock loopback); the listener itself is the kernel's.
    use super::listener::*;
    use super::*;
    use guestd_transport_conformance::{Conn, Connector, Kit, Peer, conformance_suite};
    use serde_json::json;
    use std::io;
    use tokio::net::UnixStream;
    use tokio::sync::mpsc;
    use tokio_vsock::{VsockAddr, VsockStream};

    struct Feed(mpsc::UnboundedReceiver<(UnixStream, u32)>);

    impl VsockSource for Feed {
        type Stream = UnixStream;
        async fn next(&mut self) -> io::Result<(UnixStream, u32, u32)> {
            match self.0.recv().await {
                Some((s, cid)) => Ok((s, cid, 1024)),
                None => std::future::pending().await,
            }
        }
    }

    fn start(kit: &Kit, cid: u32) -> Connector {
        let (tx, rx) = mpsc::unbounded_channel();
        let serve = serve_source(
            Feed(rx),
            "vsock:test".into(),
            &VsockConfig::default(),
            kit.options(),
            kit.dispatcher(),
            kit.shutdown(),
        );
        tokio::spawn(serve);
        Box::new(move || {
            let pair = UnixStream::pair();
            let tx = tx.clone();
            Box::pin(async move {
                let (guest, host) = pair?;
                tx.send((guest, cid))
                    .map_err(|_| io::Error::other("listener gone"))?;
                Ok(Box::new(host) as Conn)
            })
        })
    }

    fn from_host(kit: &mut Kit) -> Connector {
        start(kit, HOST_CID)
    }

    mod framing {
        use super::*;
        conformance_suite!(from_host);
    }

    #[tokio::test]
    async fn other_cids_are_refused() {
        let kit = Kit::new();
        let mut sibling = start(&kit, 3);
        let mut peer = Peer::connect(&mut sibling).await;
        peer.request(Some(json!(1)), "echo", json!("x")).await;
        assert!(
            peer.closed_within(std::time::Duration::from_secs(5)).await,
            "a connection from CID 3 was served"
        );
        let mut host = start(&kit, HOST_CID);
        let mut peer = Peer::connect(&mut host).await;
        peer.request(Some(json!(1)), "echo", json!("x")).await;
        assert_eq!(peer.reply().await.reply.message, "x");
    }

    /// A real AF_VSOCK round trip through the kernel's loopback transport.
    #[tokio::test]
    #[ignore = "needs the vsock_loopback kernel module (CID 1), absent in this sandbox"]
    async fn real_vsock_loopback() {
        let kit = Kit::new();
        let config = VsockConfig {
            allowed_cids: vec![1],
            ..VsockConfig::default()
        };
        let t = VsockTransport::bind(47011, &config, kit.options()).expect("bind");
        kit.spawn(Box::new(t));
        let stream = VsockStream::connect(VsockAddr::new(1, 47011))
            .await
            .expect("connect over vsock loopback");
        let mut c: Connector = {
            let mut s = Some(stream);
            Box::new(move || {
                let s = s.take();
                Box::pin(async move {
                    s.map(|s| Box::new(s) as Conn)
                        .ok_or(io::ErrorKind::Other.into())
                })
            })
        };
        let mut peer = Peer::connect(&mut c).await;
        peer.request(Some(json!(1)), "echo", json!("vsock")).await;
        assert_eq!(peer.reply().await.reply.message, "vsock");
    }
}
