//! An in-memory `Transport`: the test holds a [`MemoryClient`] and sends raw request bytes.

use std::sync::Arc;

use guestd_core::{
    BoxFuture, Channel, Dispatcher, Reply, Shutdown, Transport, TransportError, wire::parse_request,
};
use tokio::sync::{mpsc, oneshot};

type Job = (Vec<u8>, oneshot::Sender<Reply>);

/// The transport half, handed to the daemon side.
#[derive(Debug)]
pub struct MemoryTransport {
    jobs: mpsc::Receiver<Job>,
    channel: Arc<Channel>,
}

/// The test's half: send bytes, get the reply.
#[derive(Debug, Clone)]
pub struct MemoryClient {
    jobs: mpsc::Sender<Job>,
}

impl MemoryTransport {
    /// A transport with one channel named `name`.
    pub fn new(name: &str) -> (Self, MemoryClient) {
        Self::with_channel(Channel::new(name))
    }

    pub fn with_channel(channel: Channel) -> (Self, MemoryClient) {
        let (tx, rx) = mpsc::channel(64);
        (
            Self {
                jobs: rx,
                channel: Arc::new(channel),
            },
            MemoryClient { jobs: tx },
        )
    }
}

impl Transport for MemoryTransport {
    fn describe(&self) -> String {
        format!("memory:{}", self.channel.name())
    }

    fn serve(
        mut self: Box<Self>,
        dispatcher: Arc<Dispatcher>,
        mut shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        Box::pin(async move {
            loop {
                let job = tokio::select! {
                    job = self.jobs.recv() => job,
                    () = shutdown.wait() => None,
                };
                let Some((bytes, reply_to)) = job else {
                    return Ok(());
                };
                let reply = dispatcher
                    .dispatch(&self.channel, parse_request(&bytes))
                    .await;
                let _ = reply_to.send(reply);
            }
        })
    }
}

impl MemoryClient {
    /// Send raw request bytes; `None` when the transport is gone.
    pub async fn send(&self, bytes: impl Into<Vec<u8>>) -> Option<Reply> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((bytes.into(), tx)).await.ok()?;
        rx.await.ok()
    }
}
