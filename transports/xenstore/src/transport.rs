//! [`XenstoreTransport`]: the guest side, as a [`guestd_core::Transport`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use guestd_core::{BoxFuture, Channel, Dispatcher, Shutdown, Transport, TransportError};

use crate::client::XsClient;
use crate::config::{BackendKind, XenstoreConfig};
use crate::hostdata::XenstoreHostData;
use crate::lifecycle::Lifecycle;
use crate::store::Store;

/// Where a Xen guest finds XenStore, in order of preference.
pub const DEVICE_PATHS: [&str; 2] = ["/dev/xen/xenbus", "/proc/xen/xenbus"];

/// The XenStore device of this machine, if it is a Xen guest with xenbus (looked up on the
/// real file system: this is about the machine guestd runs on, not a sandbox).
pub fn detect() -> Option<PathBuf> {
    detect_among(&DEVICE_PATHS.map(Path::new))
}

/// [`detect`] over given candidates.
pub fn detect_among(candidates: &[&Path]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|p| p.exists())
        .map(|p| p.to_path_buf())
}

enum Opened {
    Native(Lifecycle<XsClient>),
    #[cfg(feature = "libxenstore")]
    Lib(Lifecycle<crate::libxs::LibClient>),
}

/// Serves requests written under `data/host` of this guest (see the crate docs).
pub struct XenstoreTransport {
    describe: String,
    opened: Opened,
}

impl std::fmt::Debug for XenstoreTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenstoreTransport")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

impl XenstoreTransport {
    /// Connect to XenStore at `path` (a xenbus device or a xenstored unix socket), or at
    /// `config.path`, or at the detected device. Needs a tokio runtime.
    pub async fn open(path: Option<&Path>, config: &XenstoreConfig) -> Result<Self, TransportError> {
        let path = match path.or(config.path.as_deref()) {
            Some(p) => p.to_path_buf(),
            None => detect().ok_or_else(|| {
                TransportError::Config(format!(
                    "no XenStore found: neither {} exists (is this a Xen guest?)",
                    DEVICE_PATHS.join(" nor ")
                ))
            })?,
        };
        let describe = format!("xenstore:{}", path.display());
        let opened = match config.backend {
            BackendKind::Native => Opened::Native(lifecycle(&path, config).await?),
            #[cfg(feature = "libxenstore")]
            BackendKind::Libxenstore => Opened::Lib(lifecycle(&path, config).await?),
            #[cfg(not(feature = "libxenstore"))]
            BackendKind::Libxenstore => {
                return Err(TransportError::Config(
                    "xenstore backend 'libxenstore' needs a guestd built with the libxenstore \
                     feature"
                        .into(),
                ));
            }
        };
        Ok(Self { describe, opened })
    }
}

async fn lifecycle<S: Store>(path: &Path, config: &XenstoreConfig) -> Result<Lifecycle<S>, TransportError> {
    let session = S::connect(path).await.map_err(|e| {
        TransportError::Io {
            what: format!("opening XenStore at {}", path.display()),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let current = Arc::new(RwLock::new(None));
    let host_data = XenstoreHostData::new(Arc::clone(&current), tokio::runtime::Handle::current());
    let channel = Channel::new(format!("xenstore:{}", path.display())).with_host_data(Arc::new(host_data));
    Ok(Lifecycle::new(
        path.to_path_buf(),
        session,
        Arc::new(channel),
        current,
        config.tunables(),
    ))
}

impl Transport for XenstoreTransport {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn serve(
        self: Box<Self>,
        dispatcher: Arc<Dispatcher>,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        match self.opened {
            Opened::Native(l) => Box::pin(async move {
                l.serve(dispatcher, shutdown).await;
                Ok(())
            }),
            #[cfg(feature = "libxenstore")]
            Opened::Lib(l) => Box::pin(async move {
                l.serve(dispatcher, shutdown).await;
                Ok(())
            }),
        }
    }
}
