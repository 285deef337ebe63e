//! The one accept loop every listener (unix, TCP, vsock, named pipe) goes through: admit a
//! connection, upgrade it (the TLS handshake), serve it with core's stream conversation, and
//! bound both stages.
//!
//! - **Handshakes** have their own pool ([`ListenerSettings::max_handshakes`]) and a short
//!   deadline ([`HANDSHAKE_TIMEOUT`]), and hold no served slot. When the pool is full, the
//!   oldest pending handshake gives way to the newcomer, so peers that connect and stall can
//!   delay the real host by at most one deadline, never lock it out.
//! - **Served connections** (handshake done) hold one of [`ListenerSettings::max_connections`]
//!   slots; one more is refused and logged.
//!
//! Each connection is its own channel, speaking the listener's dialect; the reply cache is the
//! listener's, so a host that reconnects can repeat a request id.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use guestd_core::stream::{StreamOptions, serve_stream_with};
use guestd_core::{Dispatcher, Shutdown, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

/// Default limit of simultaneous served connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// Default limit of simultaneous pending handshakes per listener.
pub const DEFAULT_MAX_HANDSHAKES: usize = 32;

/// How long a peer may take to complete its handshake (TLS) before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A listener that yields admitted connections and a label naming the peer.
pub(crate) trait Acceptor: Send + 'static {
    type Stream: Send + 'static;
    /// The next connection; `Ok(None)` means one was refused (already logged).
    fn accept(&mut self)
    -> impl Future<Output = io::Result<Option<(Self::Stream, String)>>> + Send;
}

/// A connection being served.
pub(crate) trait Served: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Cut the peer off after the conversation ended in an error (a peer that does not read
    /// its replies). Dropping the stream is enough for sockets.
    fn cut_off(&mut self) {}
}

impl Served for tokio::net::TcpStream {}
impl Served for Box<dyn crate::tcp::TlsStream> {}
#[cfg(unix)]
impl Served for tokio::net::UnixStream {}
#[cfg(target_os = "linux")]
impl Served for tokio_vsock::VsockStream {}

/// Per-listener settings.
#[derive(Debug, Clone)]
pub(crate) struct ListenerSettings {
    /// `tcp:127.0.0.1:7000`, `vsock:5000`: the prefix of each connection's channel name.
    pub label: String,
    pub options: StreamOptions,
    pub max_connections: usize,
    pub max_handshakes: usize,
    pub handshake_timeout: Duration,
}

impl ListenerSettings {
    pub fn new(label: impl Into<String>, options: StreamOptions, max_connections: usize) -> Self {
        Self {
            label: label.into(),
            options,
            max_connections,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// A connection still in its handshake. Whoever flips `handshaking` first decides its fate:
/// the task (handshake done: it is served) or the loop (evicted: it is aborted).
struct Pending {
    handshaking: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Pending {
    fn is_pending(&self) -> bool {
        self.handshaking.load(Ordering::Acquire) && !self.task.is_finished()
    }

    /// Abort it if it is still handshaking; whether it was.
    fn evict(&self) -> bool {
        let claimed = self.handshaking.swap(false, Ordering::AcqRel);
        if claimed {
            self.task.abort();
        }
        claimed
    }
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
    S: Served,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let settings = Arc::new(settings);
    let upgrade = Arc::new(upgrade);
    let mut connections = JoinSet::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
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
        pending.retain(Pending::is_pending);
        if pending.len() >= settings.max_handshakes.max(1) {
            // Connections accepted in a burst may simply not have run yet (a unix socket has
            // no handshake at all): let them, before taking the full pool for stalled peers.
            tokio::task::yield_now().await;
            pending.retain(Pending::is_pending);
        }
        while pending.len() >= settings.max_handshakes.max(1) {
            let Some(oldest) = pending.pop_front() else {
                break;
            };
            if oldest.evict() {
                warn!(transport = %settings.label, limit = settings.max_handshakes,
                    "too many pending handshakes; the oldest was dropped");
            }
        }
        let handshaking = Arc::new(AtomicBool::new(true));
        let conn = Connection {
            settings: Arc::clone(&settings),
            slots: Arc::clone(&slots),
            dispatcher: Arc::clone(&dispatcher),
            shutdown: shutdown.clone(),
            handshaking: Arc::clone(&handshaking),
            peer,
        };
        let upgraded = upgrade(stream);
        let task = connections.spawn(conn.run(upgraded));
        pending.push_back(Pending { handshaking, task });
    }
    // Handshakes still pending at shutdown are not waited for.
    for p in &pending {
        p.evict();
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// What one connection's task needs.
struct Connection {
    settings: Arc<ListenerSettings>,
    slots: Arc<Semaphore>,
    dispatcher: Arc<Dispatcher>,
    shutdown: Shutdown,
    handshaking: Arc<AtomicBool>,
    peer: String,
}

impl Connection {
    async fn run<S: Served>(self, upgraded: impl Future<Output = io::Result<S>>) {
        let (label, peer) = (&self.settings.label, &self.peer);
        let mut stream = match tokio::time::timeout(self.settings.handshake_timeout, upgraded).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                warn!(transport = %label, %peer, error = %e, "connection refused");
                return;
            }
            Err(_) => {
                warn!(transport = %label, %peer, "handshake not completed in time; closed");
                return;
            }
        };
        if !self.handshaking.swap(false, Ordering::AcqRel) {
            return; // evicted just now: the abort is on its way
        }
        let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            warn!(transport = %label, %peer, limit = self.settings.max_connections,
                "too many connections; refused");
            return;
        };
        let name = format!("{label} from {peer}");
        debug!(channel = %name, "connected");
        let options = &self.settings.options;
        let channel = options.channel(name.clone());
        let dispatcher = self.dispatcher;
        match serve_stream_with(&mut stream, dispatcher, channel, options, self.shutdown).await {
            Ok(()) => debug!(channel = %name, "closed"),
            Err(e) => {
                info!(channel = %name, error = %e, "connection ended");
                stream.cut_off();
            }
        }
    }
}
