//! [`HostClient`]: the dom0 side, as nova's plugin drives a guest (spec §2.1), but with a
//! watch instead of polling: write `/local/domain/D/data/host/<uuid>`, wait for
//! `data/guest/<uuid>`, read it, remove it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use guestd_core::wire::{Reply, Request};
use tracing::debug;

use crate::client::{XsClient, XsError};

/// Where host tools find xenstored when `XENSTORED_PATH` is not set.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";

/// A host-side call failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("domain {0} does not exist in XenStore")]
    NoDomain(u32),
    #[error("TIMEOUT: No response from agent within {0} seconds.")]
    Timeout(u64),
    #[error("xenstore: {0}")]
    Xs(#[from] XsError),
    #[error("the agent's reply is not valid: {0}")]
    BadReply(String),
}

/// A privileged connection to xenstored.
#[derive(Debug, Clone)]
pub struct HostClient {
    client: XsClient,
}

/// `XENSTORED_PATH` if set, else [`DEFAULT_SOCKET`] (what xenstore-utils use).
pub fn default_socket() -> PathBuf {
    std::env::var_os("XENSTORED_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

impl HostClient {
    /// Connect to `path`, or to [`default_socket`].
    pub async fn connect(path: Option<&Path>) -> Result<Self, XsError> {
        let path = path.map(Path::to_path_buf).unwrap_or_else(default_socket);
        Ok(Self {
            client: XsClient::connect(&path).await?,
        })
    }

    pub fn client(&self) -> &XsClient {
        &self.client
    }

    /// Send `request` to domain `domid` and return its decoded reply.
    pub async fn call(
        &self,
        domid: u32,
        request: &Request,
        timeout: Duration,
    ) -> Result<Reply, HostError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.call_with_id(domid, request, &id, timeout).await
    }

    /// Like [`call`](Self::call) with a chosen request id (a XenStore node name).
    pub async fn call_with_id(
        &self,
        domid: u32,
        request: &Request,
        id: &str,
        timeout: Duration,
    ) -> Result<Reply, HostError> {
        let raw = self
            .call_raw_with_id(domid, request.encode().as_bytes(), id, timeout)
            .await?;
        let (_, reply) = Reply::decode(&raw).map_err(HostError::BadReply)?;
        Ok(reply)
    }

    /// Write `value` as a request and return the reply text exactly as the guest wrote it
    /// (surrounding whitespace stripped, as nova's plugin does).
    pub async fn call_raw(
        &self,
        domid: u32,
        value: &[u8],
        timeout: Duration,
    ) -> Result<String, HostError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.call_raw_with_id(domid, value, &id, timeout).await
    }

    async fn call_raw_with_id(
        &self,
        domid: u32,
        value: &[u8],
        id: &str,
        timeout: Duration,
    ) -> Result<String, HostError> {
        let home = format!("/local/domain/{domid}");
        match self.client.read(&home).await {
            Err(e) if e.is_enoent() => return Err(HostError::NoDomain(domid)),
            other => other.map(drop)?,
        }
        let request_path = format!("{home}/data/host/{id}");
        let reply_path = format!("{home}/data/guest/{id}");
        let token = format!("guestctl-{id}");
        let result = async {
            // Watch before writing so the reply cannot slip past.
            let mut watch = self.client.watch(&reply_path, &token).await?;
            // A retry with the same id whose first attempt was answered after we gave up:
            // take that answer instead of running the command again.
            if let Some(reply) = self.client.read_optional(&reply_path).await? {
                let _ = self.client.rm(&reply_path).await;
                return Ok(String::from_utf8_lossy(&reply).trim().to_string());
            }
            self.client.write(&request_path, value).await?;
            debug!(%request_path, "request written; waiting for the reply");
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                tokio::select! {
                    event = watch.next() => {
                        if event.is_none() {
                            return Err(HostError::Xs(XsError::Disconnected));
                        }
                        if let Some(reply) = self.client.read_optional(&reply_path).await? {
                            let _ = self.client.rm(&reply_path).await;
                            return Ok(String::from_utf8_lossy(&reply).trim().to_string());
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(HostError::Timeout(timeout.as_secs()));
                    }
                }
            }
        }
        .await;
        if matches!(result, Err(HostError::Timeout(_))) {
            // As nova's plugin: take the unanswered request back (already gone is fine).
            let _ = self.client.rm(&request_path).await;
        }
        let _ = self.client.unwatch(&reply_path, &token).await;
        result
    }
}
