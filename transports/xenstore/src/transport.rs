//! [`XenstoreTransport`]: the guest side, as a [`guestd_core::Transport`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use guestd_core::{BoxFuture, Channel, Dispatcher, Shutdown, Transport, TransportError};

use crate::config::{BackendKind, XenstoreConfig};
use crate::hostdata::XenstoreHostData;
use crate::lifecycle::Lifecycle;
use crate::store::Store;

/// Where a Xen guest finds XenStore, in order of preference.
pub const DEVICE_PATHS: [&str; 2] = ["/dev/xen/xenbus", "/proc/xen/xenbus"];

/// The XenStore device of this machine, if it is a Xen guest: the xenbus device (looked up on
/// the real file system: this is about the machine guestd runs on, not a sandbox), or on
/// Windows the xeniface device interface of the Xen PV drivers.
pub fn detect() -> Option<PathBuf> {
    #[cfg(windows)]
    {
        crate::xeniface::windows::find_interface()
            .inspect_err(|e| tracing::debug!(error = %e, "looking for xeniface failed"))
            .ok()
            .flatten()
    }
    #[cfg(not(windows))]
    {
        detect_among(&DEVICE_PATHS.map(Path::new))
    }
}

/// [`detect`] over given candidates.
pub fn detect_among(candidates: &[&Path]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|p| p.exists())
        .map(|p| p.to_path_buf())
}

type Serve = Box<dyn FnOnce(Arc<Dispatcher>, Shutdown) -> BoxFuture<'static, ()> + Send>;

/// Serves requests written under `data/host` of this guest (see the crate docs).
pub struct XenstoreTransport {
    describe: String,
    serve: Serve,
}

impl std::fmt::Debug for XenstoreTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenstoreTransport")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

impl XenstoreTransport {
    /// Connect to XenStore at `path`, or at `config.path`, or at the detected device, with
    /// the configured backend: a xenbus device or xenstored unix socket (`native`,
    /// `libxenstore`), or the xeniface device interface on Windows (`xeniface`). Needs a
    /// tokio runtime context.
    pub fn open(path: Option<&Path>, config: &XenstoreConfig) -> Result<Self, TransportError> {
        struct Open<'a>(&'a XenstoreConfig);
        impl StoreUser for Open<'_> {
            type Output = Result<XenstoreTransport, TransportError>;
            fn run<S: Store>(self, path: &Path) -> Self::Output {
                XenstoreTransport::with_store::<S>(path, self.0)
            }
        }
        with_configured_store(path, config, Open(config))?
    }

    /// Serve over the [`Store`] implementation `S` connected at `path` (the tests run the
    /// xeniface backend over its emulated device this way). Needs a tokio runtime context.
    pub fn with_store<S: Store>(
        path: &Path,
        config: &XenstoreConfig,
    ) -> Result<Self, TransportError> {
        let lifecycle = lifecycle::<S>(path, config)?;
        Ok(Self {
            describe: format!("xenstore:{}", path.display()),
            serve: Box::new(move |dispatcher, shutdown| {
                Box::pin(lifecycle.serve(dispatcher, shutdown))
            }),
        })
    }
}

/// Code that runs over whichever [`Store`] implementation the configuration picks (see
/// [`with_configured_store`]): the request lifecycle, the guest metrics publisher.
pub trait StoreUser {
    type Output;
    /// Run over backend `S` at `path` (a xenbus device, a xenstored socket or a xeniface
    /// interface path).
    fn run<S: Store>(self, path: &Path) -> Self::Output;
}

/// Run `user` over the backend `config.backend` names, at `path`, or at `config.path`, or at
/// the detected device. A backend this build or OS lacks is a configuration error that says
/// which one to use instead.
pub fn with_configured_store<U: StoreUser>(
    path: Option<&Path>,
    config: &XenstoreConfig,
    user: U,
) -> Result<U::Output, TransportError> {
    let path = match path.or(config.path.as_deref()) {
        Some(p) => p.to_path_buf(),
        None => detect().ok_or_else(|| TransportError::Config(not_found()))?,
    };
    match config.backend {
        #[cfg(not(windows))]
        BackendKind::Native => Ok(user.run::<crate::client::XsClient>(&path)),
        #[cfg(windows)]
        BackendKind::Native => Err(TransportError::Config(
            "xenstore backend 'native' needs a xenbus device or a xenstored unix socket, \
             which Windows has not; use 'xeniface' (the default on Windows)"
                .into(),
        )),
        #[cfg(feature = "libxenstore")]
        BackendKind::Libxenstore => Ok(user.run::<crate::libxs::LibClient>(&path)),
        #[cfg(not(feature = "libxenstore"))]
        BackendKind::Libxenstore => Err(TransportError::Config(
            "xenstore backend 'libxenstore' needs a guestd built with the libxenstore \
             feature"
                .into(),
        )),
        #[cfg(windows)]
        BackendKind::Xeniface => Ok(user
            .run::<crate::xeniface::XenifaceStore<crate::xeniface::windows::WindowsDevice>>(&path)),
        #[cfg(not(windows))]
        BackendKind::Xeniface => Err(TransportError::Config(
            "xenstore backend 'xeniface' is the Xen PV drivers' interface of Windows guests; \
             on this OS use 'native' (the default)"
                .into(),
        )),
    }
}

/// Why [`detect`] found nothing, for the error of a transport asked to detect.
fn not_found() -> String {
    if cfg!(windows) {
        "no XenStore found: no xeniface device interface (GUID_INTERFACE_XENIFACE) is present \
         (are the Xen PV drivers installed?)"
            .into()
    } else {
        format!(
            "no XenStore found: neither {} exists (is this a Xen guest?)",
            DEVICE_PATHS.join(" nor ")
        )
    }
}

fn lifecycle<S: Store>(
    path: &Path,
    config: &XenstoreConfig,
) -> Result<Lifecycle<S>, TransportError> {
    let session = S::connect(path).map_err(|e| TransportError::Io {
        what: format!("opening XenStore at {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    let current = Arc::new(RwLock::new(None));
    let host_data = XenstoreHostData::new(Arc::clone(&current), tokio::runtime::Handle::current());
    let channel = Channel::new(format!("xenstore:{}", path.display()))
        .with_host_data(Arc::new(host_data))
        .with_reply_limit(config.tunables().max_reply_bytes);
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
        let serve = (self.serve)(dispatcher, shutdown);
        Box::pin(async move {
            serve.await;
            Ok(())
        })
    }
}
