//! The transport conformance suite: the behaviour every guestd stream transport (unix, TCP,
//! TCP+TLS, vsock, virtio-serial) must show, checked through a real connection.
//!
//! A test file builds a [`Kit`] (a dispatcher with test commands, limits, a shutdown signal),
//! starts its transport with it and hands back a [`Connector`] that opens host-side
//! connections. [`conformance_suite!`] then expands into one `#[tokio::test]` per check, so a
//! failure names the transport and the check.
//!
//! Adding a check: write an `async fn(&Kit, &mut Connector)` in [`checks`] and add a line to the
//! macro. Adding a transport: one test file calling the macro with its setup function.

// A test crate: its PKI and fixtures are files of the test, outside any guest.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use guestd_core::reply_cache::{ReplyCache, ReplyCacheConfig};
use guestd_core::stream::{StreamLimits, StreamOptions};
use guestd_core::{
    BoxFuture, Context, Dispatcher, DispatcherBuilder, Env, Handler, HandlerError, NullBackend,
    Reply, Root, Shutdown, ShutdownTrigger, SystemRunner, Transport,
};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub mod checks;
pub mod pki;

/// Longest request line of the transports under test (small, so oversized lines are cheap).
pub const MAX_LINE: usize = 8192;
/// How long a check waits for any one reply before it fails.
pub const REPLY_WAIT: Duration = Duration::from_secs(20);

/// A host-side connection.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}
pub type Conn = Box<dyn Duplex>;

/// Opens a new host-side connection to the transport under test.
pub type Connector = Box<dyn FnMut() -> BoxFuture<'static, io::Result<Conn>> + Send>;

/// Test commands: `echo` (the value back), `count` (counts its runs), `tally` (the same as a
/// query, with its own count), `slow` (sleeps value ms).
struct Echo;
struct Count {
    name: &'static str,
    query: bool,
    runs: Arc<AtomicUsize>,
}
struct Slow;

impl Handler for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn handle(&self, _: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        Ok(Reply::ok(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }
}

impl Handler for Count {
    fn name(&self) -> &'static str {
        self.name
    }
    fn is_query(&self) -> bool {
        self.query
    }
    fn handle(&self, _: &Context<'_>, _: &Value) -> Result<Reply, HandlerError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Reply::ok(format!("run {n}")))
    }
}

impl Handler for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn handle(&self, _: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        std::thread::sleep(Duration::from_millis(value.as_u64().unwrap_or(100)));
        Ok(Reply::ok("slept"))
    }
}

/// Everything a transport under test needs, and what the checks inspect.
#[derive(Debug)]
pub struct Kit {
    dispatcher: Arc<Dispatcher>,
    runs: Arc<AtomicUsize>,
    trigger: ShutdownTrigger,
    shutdown: Shutdown,
    dir: tempfile::TempDir,
    /// Whether the transport accepts more than one connection (false: serial framing over a
    /// socket pair), which decides if the reconnect checks apply.
    pub reconnects: bool,
}

impl Default for Kit {
    fn default() -> Self {
        Self::new()
    }
}

impl Kit {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = Arc::new(AtomicUsize::new(0));
        let env = Env {
            root: Root::sandbox(dir.path()).expect("sandbox"),
            runner: Arc::new(SystemRunner),
            backend: Arc::new(NullBackend),
        };
        let dispatcher = DispatcherBuilder::new()
            .register(Echo)
            .and_then(|b| {
                b.register(Count {
                    name: "count",
                    query: false,
                    runs: Arc::clone(&runs),
                })
            })
            .and_then(|b| {
                b.register(Count {
                    name: "tally",
                    query: true,
                    runs: Arc::new(AtomicUsize::new(0)),
                })
            })
            .and_then(|b| b.register(Slow))
            .expect("distinct test commands")
            .build(env);
        let (trigger, shutdown) = Shutdown::new();
        Self {
            dispatcher: Arc::new(dispatcher),
            runs,
            trigger,
            shutdown,
            dir,
            reconnects: true,
        }
    }

    /// A scratch directory (socket paths, certificates).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn limits(&self) -> StreamLimits {
        StreamLimits { max_line: MAX_LINE }
    }

    pub fn retry(&self) -> ReplyCacheConfig {
        ReplyCacheConfig::default()
    }

    /// Stream options of a transport under test (its own reply cache).
    pub fn options(&self) -> StreamOptions {
        StreamOptions {
            limits: self.limits(),
            replies: Some(Arc::new(ReplyCache::new(&self.retry()))),
            write_timeout: Some(Duration::from_secs(2)),
            ..StreamOptions::default()
        }
    }

    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        Arc::clone(&self.dispatcher)
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serve `transport` in the background until [`Kit::stop`].
    pub fn spawn(&self, transport: Box<dyn Transport>) {
        let (d, s) = (self.dispatcher(), self.shutdown());
        tokio::spawn(async move {
            if let Err(e) = transport.serve(d, s).await {
                panic!("transport failed: {e}");
            }
        });
    }

    pub fn stop(&self) {
        self.trigger.trigger();
    }

    /// How often `count` ran.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// The host side of one connection: writes raw bytes, reads reply lines.
pub struct Peer {
    conn: Conn,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}

/// One reply as read: whether a `0xFF` preceded it, its id and the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Got {
    pub resync: bool,
    pub id: Option<Value>,
    pub reply: Reply,
}

impl Peer {
    pub async fn connect(connector: &mut Connector) -> Self {
        let conn = connector()
            .await
            .expect("connect to the transport under test");
        Self {
            conn,
            buf: Vec::new(),
        }
    }

    /// Wrap an open connection.
    pub fn from_conn(conn: Conn) -> Self {
        Self {
            conn,
            buf: Vec::new(),
        }
    }

    /// Write without failing the test if the transport already closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.conn.write_all(bytes).await;
        let _ = self.conn.flush().await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).await.expect("write request");
        self.conn.flush().await.expect("flush");
    }

    /// Send one request line with an optional id.
    pub async fn request(&mut self, id: Option<Value>, name: &str, value: Value) {
        let mut obj = serde_json::Map::new();
        if let Some(id) = id {
            obj.insert("id".into(), id);
        }
        obj.insert("name".into(), name.into());
        obj.insert("value".into(), value);
        let mut line = Value::Object(obj).to_string().into_bytes();
        line.push(b'\n');
        self.send(&line).await;
    }

    /// The next reply line; fails the test after [`REPLY_WAIT`].
    pub async fn reply(&mut self) -> Got {
        tokio::time::timeout(REPLY_WAIT, self.read_line())
            .await
            .expect("a reply within the wait")
            .expect("a reply line, not EOF")
    }

    /// Next line, or `None` at EOF (a partial line at EOF is an error).
    pub async fn read_line(&mut self) -> Option<Got> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let resync = line.first() == Some(&0xFF);
                let text = std::str::from_utf8(&line[usize::from(resync)..line.len() - 1])
                    .expect("replies are ASCII");
                assert!(text.is_ascii(), "reply is not ASCII: {text}");
                let (id, reply) = Reply::decode(text).expect("reply is a reply object");
                return Some(Got { resync, id, reply });
            }
            let mut chunk = [0u8; 4096];
            let n = self.conn.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "partial reply before EOF: {:?}",
                    self.buf
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the transport closes this connection within `wait` (no further bytes).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, self.read_line()).await, Ok(None))
    }

    pub fn into_inner(self) -> Conn {
        self.conn
    }
}

/// One `#[tokio::test]` per check for a transport: `conformance_suite!(setup)` where
/// `fn setup(kit: &mut Kit) -> Connector` starts the transport (inside the test's runtime).
#[macro_export]
macro_rules! conformance_suite {
    ($setup:path) => {
        $crate::conformance_suite!(@one $setup, ordering);
        $crate::conformance_suite!(@one $setup, id_echo);
        $crate::conformance_suite!(@one $setup, sync_resync);
        $crate::conformance_suite!(@one $setup, resync_drops_partial_line);
        $crate::conformance_suite!(@one $setup, oversized_line);
        $crate::conformance_suite!(@one $setup, ten_megabytes_without_newline);
        $crate::conformance_suite!(@one $setup, partial_lines);
        $crate::conformance_suite!(@one $setup, binary_garbage);
        $crate::conformance_suite!(@one $setup, safe_retry);
        $crate::conformance_suite!(@one $setup, half_line_then_disconnect);
        $crate::conformance_suite!(@one $setup, peer_never_reads);
        $crate::conformance_suite!(@one $setup, clean_close_on_shutdown);
    };
    (@one $setup:path, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let mut kit = $crate::Kit::new();
            let mut connector = $setup(&mut kit);
            $crate::checks::$check(&kit, &mut connector).await;
        }
    };
}
