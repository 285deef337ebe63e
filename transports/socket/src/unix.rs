//! `unix:PATH`: a unix-socket listener, mode 0600, serving up to `[unix] max_connections`
//! ([`DEFAULT_MAX_CONNECTIONS`]) clients at once through the shared accept loop (`accept.rs`).
//!
//! The socket is bound under a temporary name, restricted to 0600 and then renamed into place,
//! so there is never a moment when another user could connect. A stale socket left by a crashed
//! guestd is replaced; a live one (something answers) is an error. Each connection's channel is
//! named after the peer's process and user (`SO_PEERCRED`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use guestd_core::stream::{StreamLimits, StreamOptions};
use guestd_core::{BoxFuture, Dispatcher, Shutdown, Transport, TransportError};
use tokio::net::{UnixListener, UnixStream};
use tracing::info;

use crate::accept::{Acceptor, DEFAULT_MAX_CONNECTIONS, ListenerSettings, serve_listener};

/// A listening unix socket.
#[derive(Debug)]
pub struct UnixTransport {
    path: PathBuf,
    listener: UnixListener,
    options: StreamOptions,
    max_connections: usize,
}

impl UnixTransport {
    /// Bind `path` (creating its directory with mode 0755 if needed). Must be called inside a
    /// tokio runtime.
    ///
    /// The socket is the daemon's own host file (a configured path, the same under `--root`),
    /// not guest data, hence plain path calls here. It is bound inside a fresh private (0700)
    /// directory beside `path`, given mode 0600 there, and renamed into place: no other
    /// account can swap it for a link between the bind and the chmod (in a sticky `/tmp` they
    /// cannot rename the root-owned directory either).
    #[allow(clippy::disallowed_methods)] // the daemon's own socket, see above
    pub fn bind(path: impl AsRef<Path>, limits: StreamLimits) -> Result<Self, TransportError> {
        let path = path.as_ref().to_path_buf();
        let what = format!("unix socket {}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(TransportError::io(what.clone()))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(TransportError::Config(format!(
                    "{what}: another process is already listening there"
                )));
            }
            std::fs::remove_file(&path).map_err(TransportError::io(what.clone()))?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let private = path.with_file_name(format!(
            ".{}.{}.{nanos}.d",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&private)
                .map_err(TransportError::io(what.clone()))?;
        }
        let tmp = private.join("sock");
        let bound = UnixListener::bind(&tmp).and_then(|listener| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, &path)?;
            Ok(listener)
        });
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&private);
        let listener = bound.map_err(TransportError::io(what))?;
        info!(path = %path.display(), "listening");
        Ok(Self {
            path,
            listener,
            options: StreamOptions {
                limits,
                ..StreamOptions::default()
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
        })
    }

    /// Serve at most `max` clients at once (more are refused and logged).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Serve with these stream options (the transport's reply cache for safe retries).
    pub fn with_options(mut self, options: StreamOptions) -> Self {
        self.options = options;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Transport for UnixTransport {
    fn describe(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    fn serve(
        self: Box<Self>,
        dispatcher: Arc<Dispatcher>,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        Box::pin(async move {
            let label = self.describe();
            let settings = ListenerSettings::new(label, self.options, self.max_connections);
            let served = serve_listener(
                Listener(self.listener),
                |s: UnixStream| async move { Ok(s) },
                settings,
                dispatcher,
                shutdown,
            )
            .await;
            #[allow(clippy::disallowed_methods)] // the daemon's own socket (see `bind`)
            let _ = std::fs::remove_file(&self.path);
            served
        })
    }
}

struct Listener(UnixListener);

impl Acceptor for Listener {
    type Stream = UnixStream;

    async fn accept(&mut self) -> io::Result<Option<(UnixStream, String)>> {
        let (stream, _) = self.0.accept().await?;
        let peer = match stream.peer_cred() {
            Ok(cred) => match cred.pid() {
                Some(pid) => format!("pid {pid} uid {}", cred.uid()),
                None => format!("uid {}", cred.uid()),
            },
            Err(_) => "a local process".into(),
        };
        Ok(Some((stream, peer)))
    }
}
