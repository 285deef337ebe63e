//! guestd core: what every transport, handler and backend shares.
//!
//! - [`wire`]: the request and reply types of the XenServer/OpenStack protocol and their exact
//!   encoding (ASCII-only JSON, string return codes, the spec's error strings).
//! - [`framing`] and [`stream`]: newline-delimited JSON (native) or a stream of JSON values
//!   (qga) with `0xFF` resynchronisation, and the conversation loop every stream transport runs.
//! - [`retry`]: replies remembered by request id, so a host can safely repeat a request.
//! - [`dispatch`]: the [`Handler`] trait and the [`Dispatcher`] (command policy, timeouts, one
//!   reply per error, one log line per request, per-channel state).
//! - [`transport`]: the [`Transport`] trait and the shutdown signal; [`channel_spec`]: the one
//!   grammar naming a channel (`[qga+]KIND:ADDRESS`) for guestd and guestctl.
//! - [`root`], [`runner`], [`plan`]: all file access ([`Root`]), all process spawning
//!   ([`ProcessRunner`]) and the plan/apply/rollback machinery backends use (per-step results
//!   and undo, kernel-file writes); [`alternatives`]: ways to one goal tried in order, each
//!   with its checks and its plan; [`process`]:
//!   programs started for the host that run on their own ([`ProcessSpawner`], qga's
//!   `guest-exec`).
//! - [`effect`]: what each command reaches beyond the files ([`Effect`]), and the
//!   [`SandboxRunner`] that keeps those effects off the machine under `--root`.
//! - [`backend`]: the [`Backend`] trait (OS-specific capabilities) and [`HostData`]
//!   (host-provided data such as XenStore `vm-data/`); [`configure`]: the resources of a
//!   `configure` document and the validators for every value a host may name in one.
//!
//! Adding a command: implement [`Handler`] in the `handlers` crate (its [`Dialect`] says which
//! channels have it) and register it in the daemon. Adding a transport: its form in
//! [`channel_spec`], and a [`Transport`] (stream listeners go through transport-socket's accept
//! loop, which runs [`stream::serve_stream_with`] per connection).

pub mod alternatives;
pub mod backend;
pub mod channel_spec;
pub mod configure;
pub mod dispatch;
pub mod effect;
pub mod file_lock;
pub mod framing;
pub mod plan;
pub mod process;
pub mod qga;
pub mod reply_cache;
pub mod root;
pub mod runner;
pub mod stream;
pub mod transport;
pub mod wire;

pub use alternatives::{Alternative, AlternativesError, apply_first};
pub use backend::{
    Backend, BackendError, Env, FreezeHook, FreezeRequest, HostData, HostDataError, KmsRequest,
    NetworkRequest, NetworkReset, NullBackend, PowerOff, SecretString, SuspendMode,
};
pub use channel_spec::{ChannelKind, ChannelSpec};
pub use dispatch::{
    Channel, CommandPolicy, Context, Dialect, DispatchError, Dispatcher, DispatcherBuilder,
    FreezeFlag, Handler, HandlerError, Lifecycle,
};
pub use effect::{Effect, Reach, SandboxConfig, SandboxRunner};
pub use plan::{
    Applied, ApplyError, ApplyOptions, BACKUP_DIR, Expect, FileChange, FileCheck, Journal,
    NativeAction, NativeStep, Plan, PlannedProcess, Step, apply, apply_journaled,
};
pub use process::{
    Capture, Captured, ExitReport, OutputBudget, OutputLimits, ProcessSpawner, SpawnSpec,
    SpawnedProcess, SystemSpawner, Termination,
};
pub use root::{FileMeta, PathPolicy, Root, RootError, Snapshot, WriteOptions};
pub use runner::{Output, ProcessError, ProcessRunner, ProcessSpec, SystemRunner};
pub use transport::{BoxFuture, Shutdown, ShutdownTrigger, Transport, TransportError};
pub use wire::{Incoming, Reply, Request, RequestError};
