//! What the request lifecycle (and the Xen guest metrics publisher) needs from a XenStore
//! connection, so the pure-Rust client, the libxenstore backend and xeniface run the very same
//! code.

use std::future::Future;
use std::path::Path;

use crate::client::{WatchStream, XsClient, XsError};
use crate::wire::errno;

/// One change of a [`Store::transact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write a value (missing parents are created).
    Write { path: String, value: Vec<u8> },
    /// Remove a node and everything below it; an absent node counts as removed.
    Remove { path: String },
}

impl Change {
    pub fn write(path: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Write {
            path: path.into(),
            value: value.into(),
        }
    }

    pub fn remove(path: impl Into<String>) -> Self {
        Self::Remove { path: path.into() }
    }

    pub fn path(&self) -> &str {
        match self {
            Self::Write { path, .. } | Self::Remove { path } => path,
        }
    }
}

/// What became of each change of a [`Store::transact`], in the same order.
pub type Outcomes = Vec<Result<(), XsError>>;

/// A refused removal of an absent node is a success (xenstored answers `ENOENT` when the
/// parent is missing too).
pub(crate) fn removal_outcome(result: Result<(), XsError>) -> Result<(), XsError> {
    match result {
        Err(e) if e.is_enoent() => Ok(()),
        other => other,
    }
}

/// Whether an error inside a transaction ends it (the connection, or xenstored giving up on
/// the transaction) rather than refusing one operation.
pub(crate) fn ends_transaction(e: &XsError) -> bool {
    e.is_connection_lost() || e.is(errno::EAGAIN)
}

/// One connection to xenstored, as the guest side uses it. Paths may be relative (to the
/// guest's home) or absolute.
pub trait Store: Clone + Send + Sync + 'static {
    /// Short name of the backend for logs (`native`, `libxenstore`).
    const BACKEND: &'static str;

    /// Open a connection (local and quick, so not async). Needs a tokio runtime context.
    fn connect(path: &Path) -> Result<Self, XsError>;
    fn read(&self, path: &str) -> impl Future<Output = Result<Vec<u8>, XsError>> + Send;
    fn write(&self, path: &str, value: &[u8]) -> impl Future<Output = Result<(), XsError>> + Send;
    fn mkdir(&self, path: &str) -> impl Future<Output = Result<(), XsError>> + Send;
    fn rm(&self, path: &str) -> impl Future<Output = Result<(), XsError>> + Send;
    fn directory(&self, path: &str) -> impl Future<Output = Result<Vec<String>, XsError>> + Send;
    /// Fires once right away, then on every change at or below `path`; ends when the
    /// connection is lost.
    fn watch(
        &self,
        path: &str,
        token: &str,
    ) -> impl Future<Output = Result<WatchStream, XsError>> + Send;

    /// Whether [`transact`](Self::transact) is atomic. xeniface has no transactions: there the
    /// changes apply one after the other, and a reader may see some of them before the rest.
    const ATOMIC: bool = true;

    /// Apply `changes` in one transaction. A change xenstored refuses (`EACCES`, a quota) is
    /// reported in its slot of the result and does not stop the others, as a refused operation
    /// does not end a XenStore transaction. The call fails as a whole when the connection is
    /// lost or the commit conflicts with another writer (`Errno("EAGAIN")`: nothing was
    /// applied; the caller starts over).
    fn transact(
        &self,
        changes: &[Change],
    ) -> impl Future<Output = Result<Outcomes, XsError>> + Send;
}

impl Store for XsClient {
    const BACKEND: &'static str = "native";

    fn connect(path: &Path) -> Result<Self, XsError> {
        XsClient::open(path)
    }
    async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        XsClient::read(self, path).await
    }
    async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        XsClient::write(self, path, value).await
    }
    async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        XsClient::mkdir(self, path).await
    }
    async fn rm(&self, path: &str) -> Result<(), XsError> {
        XsClient::rm(self, path).await
    }
    async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        XsClient::directory(self, path).await
    }
    async fn watch(&self, path: &str, token: &str) -> Result<WatchStream, XsError> {
        XsClient::watch(self, path, token).await
    }

    async fn transact(&self, changes: &[Change]) -> Result<Outcomes, XsError> {
        let tx = self.transaction_start().await?;
        let mut outcomes = Vec::with_capacity(changes.len());
        for change in changes {
            let result = match change {
                Change::Write { path, value } => self.write_in(tx, path, value).await,
                Change::Remove { path } => removal_outcome(self.rm_in(tx, path).await),
            };
            if let Err(e) = result {
                if ends_transaction(&e) {
                    // Best effort: a lost connection took the transaction with it anyway.
                    let _ = self.transaction_end(tx, false).await;
                    return Err(e);
                }
                outcomes.push(Err(e));
            } else {
                outcomes.push(Ok(()));
            }
        }
        self.transaction_end(tx, true).await?;
        Ok(outcomes)
    }
}
