//! The accept loop shared by the connection-oriented listeners (TCP, vsock): admit a
//! connection, upgrade it (TLS), serve it with core's stream conversation, and bound how many
//! run at once. Each connection is its own channel; the reply cache is the listener's, so a host
//! that reconnects can repeat a request id.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use guestd_core::stream::{StreamOptions, serve_stream_with};
use guestd_core::{Channel, Dispatcher, Shutdown, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Default limit of simultaneous connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// How long a peer may take to complete a connection upgrade (TLS handshake).
pub(crate) const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that yields admitted connections and a label naming the peer.
pub(crate) trait Acceptor: Send + 'static {
    type Stream: Send + 'static;
    /// The next connection; `Ok(None)` means one was refused (already logged).
    fn accept(&mut self)
    -> impl Future<Output = io::Result<Option<(Self::Stream, String)>>> + Send;
}

/// Per-listener settings.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSettings {
    /// `tcp:127.0.0.1:7000`, `vsock:5000`: the prefix of each connection's channel name.
    pub label: String,
    pub options: StreamOptions,
    pub max_connections: usize,
}

/// Serve connections from `acceptor` until shutdown, then wait for the open ones to finish
/// their request in flight.
pub(crate) async fn serve_listener<A, U, Fut, S>(
    mut acceptor: A,
    upgrade: U,
    settings: ListenerSettings,
    dispatcher: Arc<Dispatcher>,
    mut shutdown: Shutdown,
) -> Result<(), TransportError>
where
    A: Acceptor,
    U: Fn(A::Stream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let settings = Arc::new(settings);
    let upgrade = Arc::new(upgrade);
    let mut connections = JoinSet::new();
    info!(transport = %settings.label, "serving");
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.wait() => break,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(Some(conn)) => conn,
            Ok(None) => continue,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                warn!(transport = %settings.label, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(transport = %settings.label, %peer, limit = settings.max_connections,
                "too many connections; refused");
            continue;
        };
        let (settings, upgrade, dispatcher, conn_shutdown) = (
            Arc::clone(&settings),
            Arc::clone(&upgrade),
            Arc::clone(&dispatcher),
            shutdown.clone(),
        );
        connections.spawn(async move {
            let _slot = slot;
            let name = format!("{} from {peer}", settings.label);
            let stream = match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    warn!(transport = %settings.label, %peer, error = %e, "connection refused");
                    return;
                }
                Err(_) => {
                    warn!(transport = %settings.label, %peer, "connection setup timed out; closed");
                    return;
                }
            };
            debug!(channel = %name, "connected");
            let channel = Arc::new(Channel::new(name.clone()));
            match serve_stream_with(
                stream,
                dispatcher,
                channel,
                &settings.options,
                conn_shutdown,
            )
            .await
            {
                Ok(()) => debug!(channel = %name, "closed"),
                Err(e) => info!(channel = %name, error = %e, "connection ended"),
            }
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}
