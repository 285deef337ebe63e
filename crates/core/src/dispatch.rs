//! The dispatcher: decodes nothing itself, applies the command policy, runs the handler with a
//! timeout on a blocking thread, turns every error into a reply (in this one place) and logs
//! one line per request. One bad request never takes the daemon down.
//!
//! A channel speaks one [`Dialect`], and only that dialect's commands exist on it: on a qga
//! channel a native name such as `file_inject` is unknown (qemu-ga's `CommandNotFound`), on a
//! native channel a `guest-*` name is (`404`). Each handler says which dialect it belongs to
//! ([`Handler::dialect`]); `features` and `guest-info` list exactly what their channel accepts.
//!
//! While this agent holds the guest's filesystems frozen ([`FreezeFlag`], set by the fsfreeze
//! commands), a command that may write to them is refused here at once instead of hanging until
//! the thaw ([`Handler::allowed_while_frozen`]). Components that must act when the daemon starts
//! serving or stops (thawing what a stopped or crashed daemon left frozen) register a
//! [`Lifecycle`].

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{Instrument, Level, debug, info, info_span, warn};

use crate::backend::{BackendError, Env, HostData};
use crate::plan::ApplyError;
use crate::root::RootError;
use crate::runner::ProcessError;
use crate::wire::{Incoming, Reply, Request, RequestError, code, msg};

/// The protocol a channel speaks, and the one a command belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// guestd's own `{"name", "value"}` requests (the XenAPI agent protocol).
    #[default]
    Native,
    /// qemu-guest-agent's QMP-style `{"execute", "arguments"}` requests (see [`crate::qga`]).
    Qga,
}

impl Dialect {
    pub const ALL: [Dialect; 2] = [Dialect::Native, Dialect::Qga];

    fn index(self) -> usize {
        match self {
            Self::Native => 0,
            Self::Qga => 1,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Qga => "qga",
        })
    }
}

/// One wire command.
pub trait Handler: Send + Sync + 'static {
    /// The command name on the wire (`version`, `keyinit`, …).
    fn name(&self) -> &'static str;

    /// The dialect whose channels have this command (the other dialect's channels do not).
    fn dialect(&self) -> Dialect {
        Dialect::Native
    }

    /// Carry out the command. Runs on a blocking thread; may do file and process I/O.
    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError>;

    /// A command-specific default timeout, overridable by configuration.
    fn default_timeout(&self) -> Option<Duration> {
        None
    }

    /// Whether `run` may block (file or process I/O, slow work): then it runs on a blocking
    /// thread under its timeout. A handler that only builds its reply from memory returns
    /// `false` and runs on the transport's thread, without the hand-off to another thread (the
    /// round trip of `version` or `features` is then a fraction of qemu-ga's `guest-ping`).
    fn may_block(&self) -> bool {
        true
    }

    /// Whether this command only reports state (`version`, `features`, `guest-ping`, …). Hosts
    /// poll these, so a success is logged at debug level instead of info; a failure still at
    /// info.
    fn is_query(&self) -> bool {
        false
    }

    /// Whether it may run while this agent holds the guest's filesystems frozen: it writes
    /// nothing to them (a write would block until the thaw). Default: only queries. Others are
    /// refused at once with a clear error while frozen.
    fn allowed_while_frozen(&self) -> bool {
        self.is_query()
    }
}

/// Whether this agent holds the guest's filesystems frozen. Shared by the fsfreeze commands,
/// which set it, and the dispatcher, which refuses commands that would write while it is set.
#[derive(Debug, Clone, Default)]
pub struct FreezeFlag(Arc<AtomicBool>);

impl FreezeFlag {
    pub fn set(&self, frozen: bool) {
        self.0.store(frozen, Ordering::SeqCst);
    }

    pub fn is_frozen(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Work a component does when the daemon starts serving and when it stops (the fsfreeze
/// commands thaw what a crashed daemon or a stopping one left frozen). Not run by
/// `--self-test` or `--check-config`, which only build the dispatcher.
pub trait Lifecycle: Send + Sync + 'static {
    /// Before the first request is served.
    fn start(&self, env: &Env) {
        let _ = env;
    }

    /// On SIGTERM/SIGINT (possibly more than once: before and after the requests in flight
    /// finish).
    fn stop(&self, env: &Env) {
        let _ = env;
    }
}

/// A handler failure. The reply carries a short stable reason; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The host sent an unusable value; the text is safe to send back.
    #[error("{0}")]
    BadRequest(String),
    /// Reply with this exact code and message (e.g. the spec's strings).
    #[error("{message}")]
    Reply { returncode: String, message: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    ProcessSpec(#[from] ProcessError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl HandlerError {
    /// `"500"` with exactly this message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Reply {
            returncode: code::ERROR.into(),
            message: message.into(),
        }
    }

    /// The reply sent to the host.
    pub fn to_reply(&self) -> Reply {
        match self {
            Self::Reply {
                returncode,
                message,
            } => Reply::new(returncode.clone(), message.clone()),
            other => Reply::error(other.to_string()),
        }
    }
}

/// What a handler sees of the world while it runs.
#[derive(Debug)]
pub struct Context<'a> {
    pub env: &'a Env,
    pub channel: &'a Channel,
    enabled: &'a [&'static str],
    registered: &'a [&'static str],
}

impl Context<'_> {
    /// Enabled commands of this channel's dialect in registration order (what `features`
    /// reports).
    pub fn enabled_commands(&self) -> &[&'static str] {
        self.enabled
    }

    /// Every command of this channel's dialect, enabled or not, in registration order (what
    /// qga's `guest-info` lists).
    pub fn registered_commands(&self) -> &[&'static str] {
        self.registered
    }
}

/// One conversation with the host (a unix connection, a serial port, a XenStore domain).
/// Handler state that spans requests (the key agreed by `keyinit`) lives here, so that a key
/// agreed on one channel cannot be used from another.
pub struct Channel {
    name: String,
    dialect: Dialect,
    host_data: Option<Arc<dyn HostData>>,
    /// Longest reply (encoded JSON, bytes) the transport can deliver whole.
    reply_limit: Option<usize>,
    state: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
    /// Held while a handler of this channel runs, so requests never overlap even after a timeout.
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A native channel.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            dialect: Dialect::Native,
            host_data: None,
            reply_limit: None,
            state: Mutex::new(HashMap::new()),
            busy: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// A channel whose transport can read host-provided data (XenStore `vm-data/`).
    pub fn with_host_data(mut self, data: Arc<dyn HostData>) -> Self {
        self.host_data = Some(data);
        self
    }

    /// A channel whose transport delivers replies of at most `bytes` (encoded JSON) whole
    /// (XenStore's value quota); longer ones are shortened by the transport.
    pub fn with_reply_limit(mut self, bytes: usize) -> Self {
        self.reply_limit = Some(bytes);
        self
    }

    /// The transport's reply limit, if it has one (handlers with long answers fit them in).
    pub fn reply_limit(&self) -> Option<usize> {
        self.reply_limit
    }

    /// A channel speaking `dialect` (only that dialect's commands exist on it).
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn host_data(&self) -> Option<&dyn HostData> {
        self.host_data.as_deref()
    }

    /// Run `f` on this channel's state of type `T` (created with `Default` on first use).
    pub fn with_state<T: Default + Send + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        f(slot
            .downcast_mut::<T>()
            .expect("state slot holds its own type"))
    }
}

/// Which commands may run (`commands.enabled` / `commands.disabled` in the config).
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    /// Allow list; `None` allows every registered command.
    pub enabled: Option<Vec<String>>,
    /// Block list, applied after the allow list.
    pub disabled: Vec<String>,
}

impl CommandPolicy {
    pub fn allows(&self, name: &str) -> bool {
        self.enabled
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == name))
            && !self.disabled.iter().any(|n| n == name)
    }
}

/// A start-up configuration error.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("command '{0}' is registered twice")]
    Duplicate(&'static str),
    /// qemu-ga's commands are all `guest-*`, and no native one is: a handler that says
    /// otherwise would appear on the wrong channels.
    #[error("command '{name}' declares the {dialect} dialect, but {why}")]
    WrongDialect {
        name: &'static str,
        dialect: Dialect,
        why: &'static str,
    },
}

/// The prefix of every qemu-guest-agent command name.
const QGA_PREFIX: &str = "guest-";

/// Builds a [`Dispatcher`]: handlers are registered explicitly.
pub struct DispatcherBuilder {
    handlers: Vec<Arc<dyn Handler>>,
    policy: CommandPolicy,
    default_timeout: Duration,
    timeouts: HashMap<String, Duration>,
    frozen: FreezeFlag,
    lifecycles: Vec<Arc<dyn Lifecycle>>,
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.handlers.iter().map(|h| h.name()).collect();
        f.debug_struct("DispatcherBuilder")
            .field("handlers", &names)
            .finish_non_exhaustive()
    }
}

impl Default for DispatcherBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DispatcherBuilder {
    /// A builder holding the built-in commands: qga's `guest-sync` and `guest-sync-delimited`
    /// (answered by the stream layer; registered so that the policy and `guest-info` see them).
    pub fn new() -> Self {
        let builtins: Vec<Arc<dyn Handler>> = crate::qga::SyncHandler::ALL
            .into_iter()
            .map(|h| Arc::new(h) as Arc<dyn Handler>)
            .collect();
        Self {
            handlers: builtins,
            policy: CommandPolicy::default(),
            default_timeout: Duration::from_secs(60),
            timeouts: HashMap::new(),
            frozen: FreezeFlag::default(),
            lifecycles: Vec::new(),
        }
    }

    /// The flag the dispatcher checks before running a command that is not
    /// [allowed while frozen](Handler::allowed_while_frozen); whoever freezes sets it.
    pub fn freeze_flag(&self) -> FreezeFlag {
        self.frozen.clone()
    }

    /// Run `lifecycle` when the daemon starts serving and when it stops.
    pub fn lifecycle(mut self, lifecycle: Arc<dyn Lifecycle>) -> Self {
        self.lifecycles.push(lifecycle);
        self
    }

    /// Register one command. A second handler with the same name, or a `guest-*` name outside
    /// the qga dialect (or the reverse), is a start-up error.
    pub fn register(mut self, handler: impl Handler) -> Result<Self, DispatchError> {
        let name = handler.name();
        if self.handlers.iter().any(|h| h.name() == name) {
            return Err(DispatchError::Duplicate(name));
        }
        let dialect = handler.dialect();
        let why = match (dialect, name.starts_with(QGA_PREFIX)) {
            (Dialect::Native, true) => Some("guest-* names are qemu-guest-agent commands"),
            (Dialect::Qga, false) => Some("qemu-guest-agent commands are named guest-*"),
            _ => None,
        };
        if let Some(why) = why {
            return Err(DispatchError::WrongDialect { name, dialect, why });
        }
        self.handlers.push(Arc::new(handler));
        Ok(self)
    }

    pub fn policy(mut self, policy: CommandPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Timeout of commands that have no specific one.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Per-command timeout from the configuration (wins over the handler's default).
    pub fn timeout(mut self, name: impl Into<String>, timeout: Duration) -> Self {
        self.timeouts.insert(name.into(), timeout);
        self
    }

    pub fn build(self, env: Env) -> Dispatcher {
        let registered: BTreeSet<&str> = self.handlers.iter().map(|h| h.name()).collect();
        let named = self
            .policy
            .enabled
            .iter()
            .flatten()
            .chain(&self.policy.disabled);
        for name in named.chain(self.timeouts.keys()) {
            if !registered.contains(name.as_str()) {
                warn!(command = %name, "configuration names a command this guestd does not have");
            }
        }
        let lists = Dialect::ALL.map(|dialect| {
            let registered: Vec<&'static str> = self
                .handlers
                .iter()
                .filter(|h| h.dialect() == dialect)
                .map(|h| h.name())
                .collect();
            // guest-sync* resynchronise the stream, like the native `sync`: no policy applies
            // (an allow list that forgot them would cut every qemu-ga client off).
            let enabled = registered
                .iter()
                .copied()
                .filter(|n| self.policy.allows(n) || crate::qga::is_sync(n))
                .collect();
            CommandLists {
                enabled,
                registered,
            }
        });
        Dispatcher {
            handlers: self.handlers,
            lists,
            default_timeout: self.default_timeout,
            timeouts: self.timeouts,
            frozen: self.frozen,
            lifecycles: self.lifecycles,
            env,
        }
    }
}

/// The commands of one dialect.
#[derive(Debug)]
struct CommandLists {
    enabled: Vec<&'static str>,
    registered: Vec<&'static str>,
}

/// Runs requests. Shared by every transport.
pub struct Dispatcher {
    handlers: Vec<Arc<dyn Handler>>,
    /// Per dialect, indexed by `Dialect::index`.
    lists: [CommandLists; 2],
    default_timeout: Duration,
    timeouts: HashMap<String, Duration>,
    frozen: FreezeFlag,
    lifecycles: Vec<Arc<dyn Lifecycle>>,
    env: Env,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("commands", &self.lists)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Enabled commands of `dialect`, in registration order.
    pub fn enabled_commands(&self, dialect: Dialect) -> &[&'static str] {
        &self.lists[dialect.index()].enabled
    }

    /// Every registered command of `dialect`, enabled or not.
    pub fn registered_commands(&self, dialect: Dialect) -> &[&'static str] {
        &self.lists[dialect.index()].registered
    }

    /// Whether `name` is a command of `dialect` that the policy lets run.
    pub fn allows(&self, dialect: Dialect, name: &str) -> bool {
        self.enabled_commands(dialect).contains(&name)
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Run every [`Lifecycle::start`] (the daemon calls this once, before serving).
    pub fn start(&self) {
        for l in &self.lifecycles {
            l.start(&self.env);
        }
    }

    /// Run every [`Lifecycle::stop`] (the daemon calls this when it is told to stop).
    pub fn stop(&self) {
        for l in &self.lifecycles {
            l.stop(&self.env);
        }
    }

    fn timeout_for(&self, handler: &dyn Handler) -> Duration {
        self.timeouts
            .get(handler.name())
            .copied()
            .or_else(|| handler.default_timeout())
            .unwrap_or(self.default_timeout)
    }

    /// Answer one decoded request (or decoding failure) on `channel`, logging one line.
    pub async fn dispatch(self: &Arc<Self>, channel: &Arc<Channel>, incoming: Incoming) -> Reply {
        let incoming = match incoming {
            Incoming {
                id,
                request: Ok(request),
            } if self.is_query(channel.dialect(), &request.name) => {
                return self.dispatch_query(channel, id, request).await;
            }
            other => other,
        };
        let command = incoming.request.as_ref().map_or("", |r| r.name.as_str());
        let (id, command) = log_fields(incoming.id.as_ref(), command);
        let span = info_span!("request", channel = %channel.name(), id = %id, command = %command);
        async move {
            let started = Instant::now();
            let reply = match incoming.request {
                Err(RequestError(reply)) => reply,
                Ok(request) => self.answer(channel, &request.name, request.value).await,
            };
            info!(
                returncode = %reply.returncode,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "{}",
                if reply.is_success() { "done" } else { reply.message.as_str() }
            );
            reply
        }
        .instrument(span)
        .await
    }

    /// A query: no span, and its success is logged at debug level only.
    async fn dispatch_query(
        self: &Arc<Self>,
        channel: &Arc<Channel>,
        id: Option<Value>,
        request: Request,
    ) -> Reply {
        let started = Instant::now();
        let Request {
            name: command,
            value,
        } = request;
        let reply = self.answer(channel, &command, value).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if reply.is_success() {
            if tracing::enabled!(Level::DEBUG) {
                let (id, command) = log_fields(id.as_ref(), &command);
                debug!(channel = %channel.name(), %id, %command,
                    returncode = %reply.returncode, elapsed_ms, "done");
            }
        } else {
            let (id, command) = log_fields(id.as_ref(), &command);
            info!(channel = %channel.name(), %id, %command,
                returncode = %reply.returncode, elapsed_ms, "{}", reply.message);
        }
        reply
    }

    /// Whether `name` is an enabled query command of `dialect` (see [`Handler::is_query`]).
    pub fn is_query(&self, dialect: Dialect, name: &str) -> bool {
        self.handler(dialect, name)
            .is_some_and(|h| h.is_query() && self.allows(dialect, h.name()))
    }

    /// The command `name` as it exists on a `dialect` channel.
    fn handler(&self, dialect: Dialect, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers
            .iter()
            .find(|h| h.name() == name && h.dialect() == dialect)
    }

    async fn answer(self: &Arc<Self>, channel: &Arc<Channel>, name: &str, value: Value) -> Reply {
        let dialect = channel.dialect();
        let Some(handler) = self.handler(dialect, name).cloned() else {
            return Reply::new(
                code::NOT_FOUND,
                format!("No such agent command '{}'", clip(name)),
            );
        };
        if !self.allows(dialect, handler.name()) {
            return Reply::new(
                code::FORBIDDEN,
                format!("Command '{name}' is disabled by this guest's configuration"),
            );
        }
        if self.frozen.is_frozen() && !handler.allowed_while_frozen() {
            return Reply::error(match dialect {
                // qemu-ga's words for the commands it disables while frozen.
                Dialect::Qga => format!(
                    "Command {name} has been disabled: the filesystems are frozen \
                     (guest-fsfreeze-thaw first)"
                ),
                Dialect::Native => format!(
                    "Command '{name}' refused: the guest's filesystems are frozen \
                     (guest-fsfreeze-freeze); it would block until they are thawed"
                ),
            });
        }
        let timeout = self.timeout_for(handler.as_ref());
        let timed_out = || {
            Reply::error(format!(
                "Command '{name}' timed out after {}s",
                timeout.as_secs()
            ))
        };
        // Wait for a previous (timed-out) handler of this channel; never start late work after
        // the host was told it timed out. Usually the channel is free: no timer then.
        let (guard, deadline) = match channel.busy.clone().try_lock_owned() {
            Ok(guard) => (guard, None),
            Err(_) => {
                let deadline = tokio::time::Instant::now() + timeout;
                let lock = channel.busy.clone().lock_owned();
                let Ok(guard) = tokio::time::timeout_at(deadline, lock).await else {
                    warn!("the previous command of this channel is still running");
                    return timed_out();
                };
                (guard, Some(deadline))
            }
        };
        if !handler.may_block() {
            let lists = &self.lists[dialect.index()];
            let ctx = Context {
                env: &self.env,
                channel,
                enabled: &lists.enabled,
                registered: &lists.registered,
            };
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.handle(&ctx, &value)
            }));
            drop(guard);
            return match result {
                Err(_) => {
                    warn!("handler panicked");
                    Reply::error(msg::INTERNAL)
                }
                Ok(Ok(reply)) => reply,
                Ok(Err(err)) => {
                    warn!(error = ?err, "command failed");
                    err.to_reply()
                }
            };
        }
        let this = Arc::clone(self);
        let chan = Arc::clone(channel);
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let lists = &this.lists[dialect.index()];
            let ctx = Context {
                env: &this.env,
                channel: &chan,
                enabled: &lists.enabled,
                registered: &lists.registered,
            };
            handler.handle(&ctx, &value)
        });
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + timeout);
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => {
                warn!("handler still running after its timeout; its result will be dropped");
                timed_out()
            }
            Ok(Err(join)) => {
                warn!(error = %join, "handler panicked");
                Reply::error(msg::INTERNAL)
            }
            Ok(Ok(Ok(reply))) => reply,
            Ok(Ok(Err(err))) => {
                warn!(error = ?err, "command failed");
                err.to_reply()
            }
        }
    }
}

/// The id and command of a request as its log lines show them.
fn log_fields(id: Option<&Value>, command: &str) -> (String, String) {
    // Clipped: a hostile host must not turn one request into a megabyte log line.
    let id = clip(&id.map(id_text).unwrap_or_default()).into_owned();
    (id, clip(command).into_owned())
}

/// Longest command name or id quoted back in a reply or a log line.
const MAX_QUOTED: usize = 128;

/// `text`, cut to [`MAX_QUOTED`] bytes (at a character boundary) with `...` appended when cut.
fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_QUOTED {
        return text.into();
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end]).into()
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
