//! `xenstore:DOMID`: call a guest from dom0 through XenStore, as nova's plugin does (request at
//! `/local/domain/DOMID/data/host/<uuid>`, reply read from `data/guest/<uuid>` and removed),
//! waiting with a watch instead of polling. The socket is `XENSTORED_PATH`, else
//! `/var/run/xenstored/socket`.

use std::time::Duration;

use guestd_core::{Reply, Request};
use guestd_transport_xenstore::{HostClient, HostError, XsError, default_socket};

use crate::{Client, ClientError};

/// A dom0 connection to xenstored, aimed at one domain.
pub struct XenstoreClient {
    runtime: tokio::runtime::Runtime,
    host: HostClient,
    domid: u32,
}

impl std::fmt::Debug for XenstoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenstoreClient")
            .field("domid", &self.domid)
            .finish_non_exhaustive()
    }
}

impl XenstoreClient {
    /// Connect to xenstored (see the module docs) for domain `domid`.
    pub fn connect(domid: u32) -> Result<Self, ClientError> {
        let socket = default_socket();
        let spec = format!("xenstore:{domid} (xenstored at {})", socket.display());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClientError::Connect {
                spec: spec.clone(),
                source,
            })?;
        let host = runtime
            .block_on(HostClient::connect(Some(&socket)))
            .map_err(|e| ClientError::Connect {
                spec,
                source: match e {
                    XsError::Io { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            })?;
        Ok(Self {
            runtime,
            host,
            domid,
        })
    }
}

impl Client for XenstoreClient {
    fn call_with_id(
        &mut self,
        request: &Request,
        id: &str,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        self.runtime
            .block_on(self.host.call_with_id(self.domid, request, id, timeout))
            .map_err(|e| match e {
                HostError::Timeout(_) => ClientError::Timeout(timeout),
                HostError::BadReply(why) => ClientError::Protocol(why),
                HostError::NoDomain(_) => ClientError::Spec(e.to_string()),
                HostError::Xs(XsError::Io { source, .. }) => ClientError::Io(source),
                HostError::Xs(other) => ClientError::Io(std::io::Error::other(other.to_string())),
            })
    }
}
