//! The [`Transport`] trait: something that moves framed requests with an id to the dispatcher
//! and replies back. It knows nothing about commands.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::dispatch::Dispatcher;

/// A boxed future (transports are stored as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work (e.g. TCP on a public address without TLS).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Protocol(String),
}

impl TransportError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// A channel to the host that is open (listening, connected) and ready to serve.
///
/// Construction opens it, so the daemon knows every transport listens before it reports ready;
/// `serve` runs until shutdown, finishing the request in flight.
pub trait Transport: Send + 'static {
    /// `unix:/run/guestd/guestd.sock`, `xenstore:/dev/xen/xenbus`, …
    fn describe(&self) -> String;

    fn serve(
        self: Box<Self>,
        dispatcher: Arc<Dispatcher>,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>>;
}

/// Fires once when the daemon is asked to stop.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolve once shutdown is requested (immediately if it already was).
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped: treat as shutdown.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}
