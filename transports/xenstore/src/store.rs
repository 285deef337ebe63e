//! What the request lifecycle needs from a XenStore connection, so the pure-Rust client and
//! the libxenstore backend run the very same lifecycle code.

use std::future::Future;
use std::path::Path;

use crate::client::{WatchStream, XsClient, XsError};

/// One connection to xenstored, as the guest side uses it. Paths may be relative (to the
/// guest's home) or absolute.
pub trait Store: Clone + Send + Sync + 'static {
    /// Short name of the backend for logs (`native`, `libxenstore`).
    const BACKEND: &'static str;

    fn connect(path: &Path) -> impl Future<Output = Result<Self, XsError>> + Send;
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
}

impl Store for XsClient {
    const BACKEND: &'static str = "native";

    async fn connect(path: &Path) -> Result<Self, XsError> {
        XsClient::connect(path).await
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
}
