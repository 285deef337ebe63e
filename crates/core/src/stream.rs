//! One conversation over a byte stream (a unix or TCP connection, a vsock, a virtio-serial
//! port), shared by every stream transport.
//!
//! Native requests are `{"id": …, "name": …, "value": …}` lines, replies `{"id": …,
//! "returncode": …, "message": …}` lines, answered in order (the qga dialect: see
//! [`crate::qga`]; its requests are JSON values, newline or not). The built-in `sync` request (`{"id": …, "name":
//! "sync", "value": <token>}`) is answered at once with the token as message and a `0xFF` byte
//! before the reply, so a host that reconnects can skip whatever stale output precedes it.
//!
//! With a [`ReplyCache`] (see [`crate::retry`]) a request repeated with the same id gets the
//! remembered reply instead of running again (a query, which changes nothing, just runs again).
//! A peer that stops reading cannot hold a conversation (or shutdown) forever: a reply that
//! cannot be written within [`StreamOptions::write_timeout`] ends the conversation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

pub use crate::dispatch::Dialect;
use crate::dispatch::{Channel, Dispatcher};
use crate::framing::values::{self, ValueSplitter};
use crate::framing::{Frame, LineDecoder, RESYNC};
use crate::qga;
use crate::reply_cache::ReplyCache;
use crate::transport::Shutdown;
use crate::wire::{Reply, parse_request};

/// Default longest request line.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

/// The name of the built-in resynchronisation request.
pub const SYNC_COMMAND: &str = "sync";

/// Limits of a stream conversation.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_line: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_line: DEFAULT_MAX_LINE,
        }
    }
}

/// Default time a peer has to accept a reply before the conversation is given up.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that shapes a stream conversation besides the stream itself.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub limits: StreamLimits,
    /// Remembered replies of this transport (shared by its connections); `None`: no retries.
    pub replies: Option<Arc<ReplyCache>>,
    /// Longest wait for the peer to accept a reply; `None` waits forever.
    pub write_timeout: Option<Duration>,
    /// The protocol spoken on this stream.
    pub dialect: Dialect,
}

impl StreamOptions {
    /// A channel for one conversation with these options (speaking their dialect).
    pub fn channel(&self, name: impl Into<String>) -> Arc<Channel> {
        Arc::new(Channel::new(name).with_dialect(self.dialect))
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            limits: StreamLimits::default(),
            replies: None,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            dialect: Dialect::Native,
        }
    }
}

/// What a decoded qga value turns into: bytes to write back (none for a command without a
/// success response). No reply cache: qemu-ga has none and its hosts resend with new ids.
async fn answer_qga(
    dispatcher: &Arc<Dispatcher>,
    channel: &Arc<Channel>,
    frame: Frame,
    limits: StreamLimits,
) -> Vec<u8> {
    let mut out = Vec::new();
    let text = match frame {
        Frame::TooLong => {
            debug!(channel = %channel.name(), limit = limits.max_line, "qga request too large");
            Some(qga::encode_error("GenericError", values::TOO_LARGE, None))
        }
        Frame::Malformed(desc) => {
            debug!(channel = %channel.name(), %desc, "malformed qga input");
            Some(qga::encode_error("GenericError", &desc, None))
        }
        Frame::Line(line) => match qga::parse(&line) {
            qga::QgaRequest::ProcessSpec {
                id,
                name,
                arguments,
            } if qga::is_sync(&name) => {
                let reply = if dispatcher.allows(channel.dialect(), &name) {
                    match qga::sync_return(&arguments) {
                        Ok(value) => {
                            debug!(channel = %channel.name(), command = %name, "resync");
                            if name == qga::SYNC_DELIMITED {
                                out.push(RESYNC);
                            }
                            qga::ok(&value)
                        }
                        Err(err) => err.to_reply(),
                    }
                } else {
                    crate::wire::Reply::new(crate::wire::code::FORBIDDEN, "disabled")
                };
                qga::encode_reply(&name, &reply, id.as_ref())
            }
            qga::QgaRequest::Invalid { id, desc } => {
                debug!(channel = %channel.name(), %desc, "unusable qga request");
                Some(qga::encode_error("GenericError", &desc, id.as_ref()))
            }
            qga::QgaRequest::ProcessSpec {
                id,
                name,
                arguments,
            } => {
                let reply = dispatcher
                    .dispatch(channel, qga::incoming(id.clone(), name.clone(), arguments))
                    .await;
                qga::encode_reply(&name, &reply, id.as_ref())
            }
        },
    };
    if let Some(text) = text {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
    out
}

/// A reply ready to be written: a native one is encoded straight into the conversation's
/// reused output buffer (no buffer of its own per request).
enum Answer {
    Native {
        id: Option<Value>,
        reply: Reply,
        resync: bool,
    },
    Bytes(Vec<u8>),
}

impl Answer {
    fn write_to(self, out: &mut Vec<u8>) {
        match self {
            Self::Native { id, reply, resync } => {
                if resync {
                    out.push(RESYNC);
                }
                reply.encode_into(id.as_ref(), out);
                out.push(b'\n');
            }
            Self::Bytes(bytes) => out.extend_from_slice(&bytes),
        }
    }
}

/// What a decoded line turns into: the reply to write back.
async fn answer(
    dispatcher: &Arc<Dispatcher>,
    channel: &Arc<Channel>,
    frame: Frame,
    limits: StreamLimits,
    replies: Option<&ReplyCache>,
) -> Answer {
    let (id, reply, resync) = match frame {
        Frame::TooLong => {
            let r = Reply::error(format!(
                "Request is too large (over {} bytes)",
                limits.max_line
            ));
            (None, r, false)
        }
        // Not produced by the line decoder; answered like any unparsable line.
        Frame::Malformed(_) => (None, Reply::error(crate::wire::msg::MALFORMED), false),
        Frame::Line(line) => {
            let incoming = parse_request(&line);
            match &incoming.request {
                Ok(req) if req.name == SYNC_COMMAND => {
                    debug!(channel = %channel.name(), "sync");
                    let token = match &req.value {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (incoming.id, Reply::ok(token), true)
                }
                // A query is cheap and changes nothing: a retry simply runs it again.
                Ok(req)
                    if incoming.id.is_some()
                        && replies.is_some()
                        && !dispatcher.is_query(channel.dialect(), &req.name) =>
                {
                    let id = incoming.id.clone().expect("checked");
                    let cache = replies.expect("checked");
                    let reply = cache
                        .answer(&id, &line, || dispatcher.dispatch(channel, incoming))
                        .await;
                    (Some(id), reply, false)
                }
                _ => {
                    let id = incoming.id.clone();
                    (id, dispatcher.dispatch(channel, incoming).await, false)
                }
            }
        }
    };
    Answer::Native { id, reply, resync }
}

/// Serve one stream until the peer closes it or shutdown is requested (the request in flight is
/// finished and answered first). No remembered replies; see [`serve_stream_with`].
pub async fn serve_stream<S>(
    stream: S,
    dispatcher: Arc<Dispatcher>,
    channel: Arc<Channel>,
    limits: StreamLimits,
    shutdown: Shutdown,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let options = StreamOptions {
        limits,
        ..StreamOptions::default()
    };
    serve_stream_with(stream, dispatcher, channel, &options, shutdown).await
}

/// [`serve_stream`] with all options. Returns `Ok` when the peer closes the stream (a partial
/// request is dropped) or on shutdown.
pub async fn serve_stream_with<S>(
    mut stream: S,
    dispatcher: Arc<Dispatcher>,
    channel: Arc<Channel>,
    options: &StreamOptions,
    mut shutdown: Shutdown,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = converse(&mut stream, &dispatcher, &channel, options, &mut shutdown).await;
    if result.is_ok() {
        // A clean end is announced (TCP FIN, TLS close_notify), without waiting long on a
        // peer that does not read.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    result
}

async fn converse<S>(
    stream: &mut S,
    dispatcher: &Arc<Dispatcher>,
    channel: &Arc<Channel>,
    options: &StreamOptions,
    shutdown: &mut Shutdown,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = options.limits;
    if channel.dialect() != options.dialect {
        // A transport bug: the channel would see the other dialect's commands.
        warn!(channel = %channel.name(), channel_dialect = %channel.dialect(),
            stream_dialect = %options.dialect, "channel and stream speak different dialects; closed");
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "channel and stream dialects differ (use StreamOptions::channel)",
        ));
    }
    let mut decoder = Decoder::new(options.dialect, limits.max_line);
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames = Vec::new();
    // Replies waiting to be written, reused from one read to the next.
    let mut pending = Vec::new();
    loop {
        let n = tokio::select! {
            read = stream.read(&mut buf) => read?,
            () = shutdown.wait() => return Ok(()),
        };
        if n == 0 {
            if decoder.has_partial() {
                debug!(channel = %channel.name(), "peer closed with a partial request; dropped");
            }
            return Ok(());
        }
        decoder.push(&buf[..n], &mut frames);
        // Replies that are ready at once are written together (one write for a pipelined
        // batch); before a request that has to wait, the replies before it are sent.
        for frame in frames.drain(..) {
            let answer = async {
                match options.dialect {
                    Dialect::Native => {
                        let replies = options.replies.as_deref();
                        answer(dispatcher, channel, frame, limits, replies).await
                    }
                    Dialect::Qga => {
                        Answer::Bytes(answer_qga(dispatcher, channel, frame, limits).await)
                    }
                }
            };
            let mut answer = std::pin::pin!(answer);
            let out = match ready_now(answer.as_mut()).await {
                Some(out) => out,
                None => {
                    if !send(stream, &mut pending, channel, options, shutdown).await? {
                        return Ok(());
                    }
                    answer.await
                }
            };
            out.write_to(&mut pending);
            if pending.len() >= MAX_BATCH
                && !send(stream, &mut pending, channel, options, shutdown).await?
            {
                return Ok(());
            }
        }
        if !send(stream, &mut pending, channel, options, shutdown).await? {
            return Ok(());
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
    }
}

/// The framing of a dialect.
enum Decoder {
    Lines(LineDecoder),
    Values(ValueSplitter),
}

impl Decoder {
    fn new(dialect: Dialect, max: usize) -> Self {
        match dialect {
            Dialect::Native => Self::Lines(LineDecoder::new(max)),
            Dialect::Qga => Self::Values(ValueSplitter::new(max)),
        }
    }

    fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        match self {
            Self::Lines(d) => d.push(data, out),
            Self::Values(d) => d.push(data, out),
        }
    }

    fn has_partial(&self) -> bool {
        match self {
            Self::Lines(d) => d.has_partial(),
            Self::Values(d) => d.has_partial(),
        }
    }
}

/// Most reply bytes held back for one write.
const MAX_BATCH: usize = 64 * 1024;

/// The output of `fut` if it is ready without waiting.
async fn ready_now<F: Future>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}

/// Write and empty `out` (if it holds anything) within the write timeout; its buffer is kept
/// for the next replies unless a large reply grew it beyond a batch. `Ok(false)`:
/// shutdown was requested (the bytes got a short grace period to reach a peer that reads); stop
/// the conversation.
async fn send<S>(
    stream: &mut S,
    out: &mut Vec<u8>,
    channel: &Channel,
    options: &StreamOptions,
    shutdown: &mut Shutdown,
) -> std::io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    if out.is_empty() {
        return Ok(true);
    }
    let result = write_within_timeout(stream, out, channel, options, shutdown).await;
    if out.capacity() > MAX_BATCH {
        // A large reply (a file read, captured output) does not stay allocated.
        *out = Vec::new();
    } else {
        out.clear();
    }
    result
}

async fn write_within_timeout<S>(
    stream: &mut S,
    bytes: &[u8],
    channel: &Channel,
    options: &StreamOptions,
    shutdown: &mut Shutdown,
) -> std::io::Result<bool>
where
    S: AsyncWrite + Unpin,
{
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    // Usually the peer takes the reply at once: no timer then.
    let mut written = std::pin::pin!(written);
    if let Some(result) = ready_now(written.as_mut()).await {
        return result.map(|()| true);
    }
    let timed = async {
        match options.write_timeout {
            Some(limit) => tokio::time::timeout(limit, written)
                .await
                .unwrap_or_else(|_| {
                    warn!(channel = %channel.name(), "peer does not read its replies; closing");
                    Err(std::io::ErrorKind::TimedOut.into())
                }),
            None => written.await,
        }
    };
    // The reply to a request already run is never dropped for a shutdown: it gets a short
    // grace period to reach a peer that reads.
    let mut timed = std::pin::pin!(timed);
    tokio::select! {
        biased;
        result = &mut timed => result.map(|()| true),
        () = shutdown.wait() => {
            let _ = tokio::time::timeout(Duration::from_secs(1), timed).await;
            Ok(false)
        }
    }
}
