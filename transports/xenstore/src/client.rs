//! An async XenStore client over any byte stream (xenbus device or xenstored unix socket).
//!
//! One reader task routes replies to their request by `req_id` and watch events to their
//! watch by token; one writer task sends whole messages in order, so dropping a request future
//! (a timeout) can never leave half a message on the wire. When the connection ends every
//! pending request fails with [`XsError::Disconnected`] and every [`WatchStream`] ends.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::wire::{
    HEADER_LEN, Header, Message, MsgType, WireError, errno, path_payload, split_fields,
    watch_payload, write_payload,
};

/// A XenStore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// xenstored answered with this errno name (`ENOENT`, `EACCES`, `E2BIG`, …).
    #[error("{0}")]
    Errno(String),
    #[error("the connection to xenstore was lost")]
    Disconnected,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("xenstore protocol error: {0}")]
    Protocol(String),
}

impl XsError {
    /// Whether xenstored answered with this errno name.
    pub fn is(&self, name: &str) -> bool {
        matches!(self, Self::Errno(n) if n == name)
    }

    pub fn is_enoent(&self) -> bool {
        self.is(errno::ENOENT)
    }

    /// The connection is unusable (as opposed to one operation being refused).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Self::Disconnected | Self::Io { .. } | Self::Protocol(_)
        )
    }
}

/// A watch firing: the path that changed and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// The events of one watch. Ends (`None`) when the connection is lost.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::UnboundedReceiver<WatchEvent>,
    /// What keeps the watch registered, if the backend needs one (xeniface).
    _guard: Option<Guard>,
}

/// Anything dropped with its [`WatchStream`].
struct Guard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Guard")
    }
}

impl WatchStream {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<WatchEvent>) -> Self {
        Self { rx, _guard: None }
    }

    /// A stream that drops `guard` (unregistering its watch) when it goes.
    pub(crate) fn with_guard(
        rx: mpsc::UnboundedReceiver<WatchEvent>,
        guard: impl Send + Sync + 'static,
    ) -> Self {
        Self {
            rx,
            _guard: Some(Guard(Box::new(guard))),
        }
    }

    /// The next event; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    /// An event that is already queued, without waiting.
    pub fn try_next(&mut self) -> Option<WatchEvent> {
        self.rx.try_recv().ok()
    }
}

#[derive(Default)]
struct Routes {
    replies: HashMap<u32, oneshot::Sender<Message>>,
    watches: HashMap<String, mpsc::UnboundedSender<WatchEvent>>,
    closed: bool,
}

impl Routes {
    /// Fail everything in flight: dropping the senders wakes every waiter.
    fn close(&mut self) {
        self.closed = true;
        self.replies.clear();
        self.watches.clear();
    }
}

struct Inner {
    routes: Arc<Mutex<Routes>>,
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU32,
    tasks: [tokio::task::AbortHandle; 2],
    endpoint: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A connection to xenstored. Cheap to clone; the connection closes when the last clone goes.
#[derive(Clone)]
pub struct XsClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for XsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XsClient")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

fn lock(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

impl XsClient {
    /// Connect to a xenstored unix socket or open a xenbus device (`/dev/xen/xenbus`,
    /// `/proc/xen/xenbus`), whichever `path` is.
    pub async fn connect(path: &Path) -> Result<Self, XsError> {
        Self::open(path)
    }

    /// [`connect`](Self::connect) without awaiting: opening a local socket or device does not
    /// block. Needs a tokio runtime context.
    #[cfg(unix)]
    pub fn open(path: &Path) -> Result<Self, XsError> {
        use std::os::unix::fs::FileTypeExt;
        let io = |source| XsError::Io {
            what: format!("connecting to xenstore at {}", path.display()),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let endpoint = path.display().to_string();
        if meta.file_type().is_socket() {
            let std_stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
            std_stream.set_nonblocking(true).map_err(io)?;
            let stream = tokio::net::UnixStream::from_std(std_stream).map_err(io)?;
            Ok(Self::from_stream(stream, endpoint))
        } else {
            let device = crate::device::DeviceStream::open(path).map_err(io)?;
            Ok(Self::from_stream(device, endpoint))
        }
    }

    /// XenStore devices and sockets only exist on unix-like guests.
    #[cfg(not(unix))]
    pub fn open(path: &Path) -> Result<Self, XsError> {
        Err(XsError::Io {
            what: format!("connecting to xenstore at {}", path.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "XenStore over a device or unix socket is not available on this OS",
            ),
        })
    }

    /// Run the protocol over an already open stream. Needs a tokio runtime.
    pub fn from_stream<S>(stream: S, endpoint: impl Into<String>) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let endpoint = endpoint.into();
        let (reader, writer) = tokio::io::split(stream);
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (outgoing, queue) = mpsc::unbounded_channel();
        let read_task = tokio::spawn(read_loop(reader, Arc::clone(&routes), endpoint.clone()));
        let write_task = tokio::spawn(write_loop(writer, queue, Arc::clone(&routes)));
        Self {
            inner: Arc::new(Inner {
                routes,
                outgoing,
                next_id: AtomicU32::new(1),
                tasks: [read_task.abort_handle(), write_task.abort_handle()],
                endpoint,
            }),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.routes).closed
    }

    /// Send one request and wait for its reply payload. An `ERROR` reply is [`XsError::Errno`].
    pub async fn request(
        &self,
        ty: MsgType,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XsError> {
        let mut req_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        if req_id == 0 {
            req_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        }
        let message = Message::new(ty, req_id, tx_id, payload)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = lock(&self.inner.routes);
            if routes.closed {
                return Err(XsError::Disconnected);
            }
            routes.replies.insert(req_id, tx);
        }
        // Unbounded: sending never waits, so a dropped future never splits a message.
        if self.inner.outgoing.send(message.encode()).is_err() {
            lock(&self.inner.routes).replies.remove(&req_id);
            return Err(XsError::Disconnected);
        }
        let reply = ReplyGuard {
            routes: &self.inner.routes,
            req_id,
            rx,
        }
        .wait()
        .await?;
        if let Some(name) = reply.error_name() {
            return Err(XsError::Errno(name));
        }
        if reply.ty != ty {
            return Err(XsError::Protocol(format!(
                "asked {ty:?}, xenstored answered {:?}",
                reply.ty
            )));
        }
        Ok(reply.payload)
    }

    pub async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(0, path).await
    }

    /// [`read`](Self::read) inside transaction `tx` (0: none).
    pub async fn read_in(&self, tx: u32, path: &str) -> Result<Vec<u8>, XsError> {
        self.request(MsgType::Read, tx, path_payload(path)?).await
    }

    /// The value, or `None` when the node does not exist.
    pub async fn read_optional(&self, path: &str) -> Result<Option<Vec<u8>>, XsError> {
        match self.read(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_enoent() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.write_in(0, path, value).await
    }

    /// [`write`](Self::write) inside transaction `tx` (0: none).
    pub async fn write_in(&self, tx: u32, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.request(MsgType::Write, tx, write_payload(path, value)?)
            .await
            .map(drop)
    }

    pub async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.request(MsgType::Mkdir, 0, path_payload(path)?)
            .await
            .map(drop)
    }

    /// Remove a node and its children.
    pub async fn rm(&self, path: &str) -> Result<(), XsError> {
        self.rm_in(0, path).await
    }

    /// [`rm`](Self::rm) inside transaction `tx` (0: none).
    pub async fn rm_in(&self, tx: u32, path: &str) -> Result<(), XsError> {
        self.request(MsgType::Rm, tx, path_payload(path)?)
            .await
            .map(drop)
    }

    /// The names of a node's children. Falls back to `DIRECTORY_PART` paging when the list does
    /// not fit one message (`E2BIG`), as libxenstore does.
    pub async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.directory_in(0, path).await
    }

    /// [`directory`](Self::directory) inside transaction `tx` (0: none).
    pub async fn directory_in(&self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        match self
            .request(MsgType::Directory, tx, path_payload(path)?)
            .await
        {
            Ok(payload) => Ok(names(&payload)),
            Err(e) if e.is(errno::E2BIG) => self.directory_paged(tx, path).await,
            Err(e) => Err(e),
        }
    }

    async fn directory_paged(&self, tx: u32, path: &str) -> Result<Vec<String>, XsError> {
        'restart: loop {
            let mut children = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<Vec<u8>> = None;
            loop {
                let mut payload = path_payload(path)?;
                payload.extend_from_slice(offset.to_string().as_bytes());
                payload.push(0);
                let reply = self.request(MsgType::DirectoryPart, tx, payload).await?;
                let split = reply.iter().position(|b| *b == 0).ok_or_else(|| {
                    XsError::Protocol("DIRECTORY_PART reply without a generation".into())
                })?;
                let (this_gen, rest) = (reply[..split].to_vec(), &reply[split + 1..]);
                if generation.as_ref().is_some_and(|g| *g != this_gen) {
                    // The directory changed between pages: start over.
                    continue 'restart;
                }
                generation = Some(this_gen);
                let complete = rest.is_empty() || rest == b"\0" || rest.ends_with(b"\0\0");
                for name in rest.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                    offset += name.len() + 1;
                    children.push(String::from_utf8_lossy(name).into_owned());
                }
                if complete {
                    return Ok(children);
                }
            }
        }
    }

    pub async fn get_domain_path(&self, domid: u32) -> Result<String, XsError> {
        let payload = self
            .request(MsgType::GetDomainPath, 0, path_payload(&domid.to_string())?)
            .await?;
        Ok(text(&payload))
    }

    pub async fn transaction_start(&self) -> Result<u32, XsError> {
        let payload = self.request(MsgType::TransactionStart, 0, vec![0]).await?;
        text(&payload)
            .parse()
            .map_err(|_| XsError::Protocol("transaction id is not a number".into()))
    }

    /// Commit (`true`) or abort a transaction. A conflicting commit is `Errno("EAGAIN")`.
    pub async fn transaction_end(&self, tx_id: u32, commit: bool) -> Result<(), XsError> {
        let payload = if commit { b"T\0" } else { b"F\0" };
        self.request(MsgType::TransactionEnd, tx_id, payload.to_vec())
            .await
            .map(drop)
    }

    /// Register a watch. It fires once right away, then on every change at or below `path`.
    /// `token` must be unique on this connection.
    pub async fn watch(&self, path: &str, token: &str) -> Result<WatchStream, XsError> {
        let payload = watch_payload(path, token)?;
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut routes = lock(&self.inner.routes);
            if routes.closed {
                return Err(XsError::Disconnected);
            }
            if routes.watches.contains_key(token) {
                return Err(XsError::Errno(errno::EEXIST.into()));
            }
            routes.watches.insert(token.to_string(), tx);
        }
        match self.request(MsgType::Watch, 0, payload).await {
            Ok(_) => Ok(WatchStream::new(rx)),
            Err(e) => {
                lock(&self.inner.routes).watches.remove(token);
                Err(e)
            }
        }
    }

    /// Remove a watch (an already gone watch is fine).
    pub async fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        lock(&self.inner.routes).watches.remove(token);
        match self
            .request(MsgType::Unwatch, 0, watch_payload(path, token)?)
            .await
        {
            Err(e) if e.is_enoent() => Ok(()),
            other => other.map(drop),
        }
    }
}

/// Removes the pending route if the waiting future is dropped (a timeout).
struct ReplyGuard<'a> {
    routes: &'a Mutex<Routes>,
    req_id: u32,
    rx: oneshot::Receiver<Message>,
}

impl ReplyGuard<'_> {
    async fn wait(mut self) -> Result<Message, XsError> {
        (&mut self.rx).await.map_err(|_| XsError::Disconnected)
    }
}

impl Drop for ReplyGuard<'_> {
    fn drop(&mut self) {
        lock(self.routes).replies.remove(&self.req_id);
    }
}

fn names(payload: &[u8]) -> Vec<String> {
    split_fields(payload)
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

fn text(payload: &[u8]) -> String {
    let body = payload.strip_suffix(b"\0").unwrap_or(payload);
    String::from_utf8_lossy(body).into_owned()
}

async fn read_message<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Message, XsError> {
    let io = |source| XsError::Io {
        what: "reading from xenstore".into(),
        source,
    };
    let mut head = [0u8; HEADER_LEN];
    reader.read_exact(&mut head).await.map_err(io)?;
    // Checked before the payload buffer exists.
    let header = Header::decode(&head)?;
    let ty = MsgType::from_u32(header.ty).ok_or(WireError::UnknownType(header.ty))?;
    let mut payload = vec![0u8; header.len as usize];
    reader.read_exact(&mut payload).await.map_err(io)?;
    Ok(Message {
        ty,
        req_id: header.req_id,
        tx_id: header.tx_id,
        payload,
    })
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    routes: Arc<Mutex<Routes>>,
    endpoint: String,
) {
    loop {
        let message = match read_message(&mut reader).await {
            Ok(m) => m,
            Err(e) => {
                debug!(%endpoint, error = %e, "xenstore connection ended");
                break;
            }
        };
        let mut routes = lock(&routes);
        if message.ty == MsgType::WatchEvent {
            let fields = message.fields();
            let (Some(path), Some(token)) = (fields.first(), fields.get(1)) else {
                warn!(%endpoint, "malformed watch event ignored");
                continue;
            };
            let event = WatchEvent {
                path: String::from_utf8_lossy(path).into_owned(),
                token: String::from_utf8_lossy(token).into_owned(),
            };
            if let Some(tx) = routes.watches.get(&event.token) {
                let _ = tx.send(event);
            }
        } else if let Some(tx) = routes.replies.remove(&message.req_id) {
            let _ = tx.send(message);
        } else {
            debug!(%endpoint, req_id = message.req_id, "reply to a request nobody waits for");
        }
    }
    lock(&routes).close();
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    routes: Arc<Mutex<Routes>>,
) {
    while let Some(bytes) = queue.recv().await {
        if let Err(e) = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        }
        .await
        {
            debug!(error = %e, "writing to xenstore failed");
            break;
        }
    }
    lock(&routes).close();
}
