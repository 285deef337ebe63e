//! [`XenstoreHostData`]: handlers' read access to host-provided data (`vm-data/…`) over the
//! transport's current connection.

use std::time::Duration;

use guestd_core::{HostData, HostDataError};
use tokio::runtime::Handle;

use crate::lifecycle::Current;
use crate::store::Store;

/// How long a handler waits for one XenStore read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads through whatever connection the transport currently has.
///
/// Handlers run on blocking threads, so the calls block on the runtime captured at
/// construction; they must not be made from async code.
pub struct XenstoreHostData<S: Store> {
    current: Current<S>,
    runtime: Handle,
}

impl<S: Store> std::fmt::Debug for XenstoreHostData<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenstoreHostData")
            .field("backend", &S::BACKEND)
            .finish_non_exhaustive()
    }
}

impl<S: Store> XenstoreHostData<S> {
    pub(crate) fn new(current: Current<S>, runtime: Handle) -> Self {
        Self { current, runtime }
    }

    fn run<T>(
        &self,
        path: &str,
        op: impl AsyncFnOnce(S) -> Result<T, crate::XsError>,
    ) -> Result<T, HostDataError> {
        let error = |reason: String| HostDataError {
            path: path.to_string(),
            reason,
        };
        if path.starts_with('/') || path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(error("host data paths are relative to the guest's home".into()));
        }
        let session = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| error("XenStore is not connected".into()))?;
        self.runtime
            .block_on(async { tokio::time::timeout(READ_TIMEOUT, op(session)).await })
            .map_err(|_| error(format!("no answer from XenStore in {}s", READ_TIMEOUT.as_secs())))?
            .map_err(|e| error(e.to_string()))
    }
}

impl<S: Store> HostData for XenstoreHostData<S> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, HostDataError> {
        let path_owned = path.to_string();
        self.run(path, async move |s| match s.read(&path_owned).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_enoent() => Ok(None),
            Err(e) => Err(e),
        })
    }

    fn list(&self, path: &str) -> Result<Vec<String>, HostDataError> {
        let path_owned = path.to_string();
        self.run(path, async move |s| match s.directory(&path_owned).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_enoent() => Ok(Vec::new()),
            Err(e) => Err(e),
        })
    }
}
