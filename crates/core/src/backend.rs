//! The OS/distro-specific part, seen by handlers only through these traits.
//!
//! A backend *plans* (pure functions over the guest's files read through [`Root`](crate::Root))
//! and lets [`apply`](crate::plan::apply) carry the plan out. Each capability is a method with a
//! default that answers "unsupported", so adding a capability never breaks other backends.
//!
//! [`Env`] (the guest's files, its command runner and its backend) lives here rather than in
//! `dispatch`: backend capabilities take it, and the dispatcher only hands it on, so the
//! dependency goes one way (dispatch → backend).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use guestd_network_model::NetworkSpec;
use guestd_network_model::config_drive::ConfigDriveFiles;
use zeroize::Zeroizing;

use crate::alternatives::Alternative;
use crate::configure::{ResourceContext, ResourcePlan, ResourceSpec};
use crate::network_plan::NetworkPlan;
use crate::plan::{ApplyError, ApplyOptions, Plan};
use crate::root::{Root, RootError};
use crate::runner::{ProcessError, ProcessRunner};

/// Everything a handler may touch on the guest.
#[derive(Clone)]
pub struct Env {
    pub root: Root,
    pub runner: Arc<dyn ProcessRunner>,
    pub backend: Arc<dyn Backend>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("root", &self.root)
            .field("backend", &self.backend.name())
            .finish()
    }
}

/// A backend failure; `Display` is the short reason sent to the host (never secrets).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} is not supported on this OS")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    ProcessSpec(#[from] ProcessError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// A network model error: the host's data is unusable (`Invalid`), or it does not fit this
/// system (`Failed`).
impl From<guestd_network_model::NetworkError> for BackendError {
    fn from(e: guestd_network_model::NetworkError) -> Self {
        match e {
            guestd_network_model::NetworkError::Invalid(m) => Self::Invalid(m),
            guestd_network_model::NetworkError::System(m) => Self::Failed(m),
        }
    }
}

/// One OS family (Debian, RHEL, FreeBSD, Windows, …).
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Short name for logs (`debian`, `freebsd`, `windows`, …).
    fn name(&self) -> &str;

    /// The service manager found at start-up (`systemd`, `OpenRC`, `SysV init`, `rc.d`,
    /// `Windows SCM`), for logs and `--check-config`; `None` when there is none guestd knows.
    fn service_manager(&self) -> Option<&str> {
        None
    }

    /// The plan that restarts the service `service` through the service manager found at
    /// start-up: its commands in order, each but the last best effort. The update watchdog
    /// carries it out later, from outside guestd's service (so it is returned, not applied).
    /// `Unsupported` when this guest has no service manager guestd knows.
    fn plan_service_restart(&self, root: &Root, service: &str) -> Result<Plan, BackendError> {
        let _ = (root, service);
        Err(BackendError::Unsupported("restarting a service".into()))
    }

    /// The plan that starts `argv` detached from guestd's service, so that restarting the
    /// service does not stop it, and returns at once (the update watchdog). Its output goes to
    /// the service manager's log, or to `log` where it keeps none.
    fn plan_detached_start(&self, argv: &[String], log: &str) -> Result<Plan, BackendError> {
        let _ = (argv, log);
        Err(BackendError::Unsupported(
            "starting a program outside guestd's service".into(),
        ))
    }

    /// `guest-shutdown`: the plan that powers the guest off, halts or reboots it at once
    /// through the OS's own tool (which stops the services cleanly). Nothing is run here.
    fn plan_shutdown(&self, mode: PowerOff) -> Result<Plan, BackendError> {
        let _ = mode;
        Err(BackendError::Unsupported("shutting the guest down".into()))
    }

    /// `guest-set-time`: the plan that sets the system clock to `time_ns` (nanoseconds since
    /// the epoch) and writes it to the hardware clock, or, with `None`, sets the system clock
    /// from the hardware clock. `Unsupported` (with the reason) when this guest cannot: no
    /// hardware clock, or no tool for it. Nothing is run here but lookups.
    fn plan_set_clock(&self, env: &Env, time_ns: Option<i64>) -> Result<Plan, BackendError> {
        let _ = (env, time_ns);
        Err(BackendError::Unsupported("setting the clock".into()))
    }

    /// `guest-fsfreeze-freeze`: the plan that freezes `request.mountpoints`, in the order given.
    /// Its commands are, in order: the hook with `freeze` (when there is one), then exactly one
    /// command per mount point, each [`Expect::SuccessOrDeclined`](crate::plan::Expect) (a
    /// filesystem that cannot freeze declines and is skipped) and undone by its thaw, so that a
    /// failure thaws what was frozen and runs the thaw hook. Nothing is run here.
    fn plan_fsfreeze(&self, env: &Env, request: &FreezeRequest) -> Result<Plan, BackendError> {
        let _ = (env, request);
        Err(BackendError::Unsupported("freezing filesystems".into()))
    }

    /// `guest-fsfreeze-thaw` (and the thaw after a timeout, at stop, after a crash): the plan
    /// that thaws `request.mountpoints` in the order given, exactly one command per mount point,
    /// then the hook with `thaw` (when there is one), each [`Expect::Report`](crate::plan::Expect)
    /// (one that fails does not stop the others; the caller reads each result).
    fn plan_thaw(&self, env: &Env, request: &FreezeRequest) -> Result<Plan, BackendError> {
        let _ = (env, request);
        Err(BackendError::Unsupported("thawing filesystems".into()))
    }

    /// `guest-fstrim`: the plan that discards the unused blocks of each of `mountpoints`, in the
    /// order given, exactly one command per mount point, each [`Expect::Report`]
    /// (crate::plan::Expect) so that each has its own result; `minimum` is the smallest free
    /// range to discard in bytes (0: the tool's default). `Unsupported` (with the reason) when
    /// this guest has no tool for it.
    fn plan_fstrim(
        &self,
        env: &Env,
        mountpoints: &[String],
        minimum: u64,
    ) -> Result<Plan, BackendError> {
        let _ = (env, mountpoints, minimum);
        Err(BackendError::Unsupported("trimming filesystems".into()))
    }

    /// `guest-suspend-*`: the ways this guest can suspend as `mode` says, in the order to try
    /// them ([`crate::alternatives::apply_first`]); empty when none is there. Lookups (files
    /// through `env.root`, `env.runner.exists`) only: nothing is run here.
    fn plan_suspend(&self, env: &Env, mode: SuspendMode) -> Result<Vec<Alternative>, BackendError> {
        let _ = (env, mode);
        Err(BackendError::Unsupported("suspending the guest".into()))
    }

    /// `guest-set-vcpus`: the plan that brings logical processor `id` online (`online`) or
    /// takes it offline: one [`FileChange::Kernel`](crate::plan::FileChange) write, applied per
    /// processor so that the caller knows which one failed. Which processors, whether they need
    /// a change and what the reply says are the handler's (qemu-ga's rules). Nothing is read
    /// or written here.
    fn plan_set_vcpu(&self, env: &Env, id: u64, online: bool) -> Result<Plan, BackendError> {
        let _ = (env, id, online);
        Err(BackendError::Unsupported(
            "bringing logical processors online or offline".into(),
        ))
    }

    /// `guest-set-memory-blocks`: the plan that brings memory block `index` online or takes it
    /// offline, one [`FileChange::Kernel`](crate::plan::FileChange) write, applied per block
    /// (each block has its own response). Nothing is read or written here.
    fn plan_set_memory_block(
        &self,
        env: &Env,
        index: u64,
        online: bool,
    ) -> Result<Plan, BackendError> {
        let _ = (env, index, online);
        Err(BackendError::Unsupported(
            "bringing memory blocks online or offline".into(),
        ))
    }

    /// The plan that sets the password of `user` (`None`: the OS's administrator account —
    /// `root` on Unix, the built-in Administrator on Windows) and verifies it took effect (its
    /// [`FileCheck`](crate::plan::FileCheck)s). The password never goes to argv, logs, errors
    /// or the plan's `Debug`. Lookups only: nothing is changed here.
    fn plan_set_password(
        &self,
        env: &Env,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<Plan, BackendError> {
        let _ = (env, user, password);
        Err(BackendError::Unsupported("setting a password".into()))
    }

    /// The plan that stores a ready crypt(3) hash (`$6$salt$…`, qga's `crypted: true`) as
    /// `user`'s password, unchanged, and checks the stored entry is exactly that hash. A
    /// malformed hash (unknown scheme, `:` or control characters) is refused with
    /// [`BackendError::Invalid`]. The hash is never logged or put in argv.
    fn plan_set_password_hash(
        &self,
        env: &Env,
        user: &str,
        hash: &SecretString,
    ) -> Result<Plan, BackendError> {
        let _ = (env, user, hash);
        Err(BackendError::Unsupported(
            "setting a crypted password".into(),
        ))
    }

    /// Set the password of `user`: [`Self::plan_set_password`], carried out by
    /// [`apply_account_plan`]. Backends implement the plan, not this (test fakes may).
    fn set_password(
        &self,
        env: &Env,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<(), BackendError> {
        apply_account_plan(env, &self.plan_set_password(env, user, password)?)
    }

    /// Store a ready crypt(3) hash: [`Self::plan_set_password_hash`], carried out by
    /// [`apply_account_plan`].
    fn set_password_hash(
        &self,
        env: &Env,
        user: &str,
        hash: &SecretString,
    ) -> Result<(), BackendError> {
        apply_account_plan(env, &self.plan_set_password_hash(env, user, hash)?)
    }

    /// `kmsactivate` (spec §4.8): the plan that registers/activates this OS.
    /// Files are read through `root`; nothing is changed here (the handler applies the plan).
    fn kms_activate(&self, _root: &Root, _request: &KmsRequest) -> Result<Plan, BackendError> {
        Err(BackendError::Unsupported("KMS".into()))
    }

    /// `configure`: compare one resource with the guest's state (files through `env.root`,
    /// state queries through `env.runner`, nothing changed) and return what differs and the
    /// plan that changes it. A value the guest cannot take (an unknown owner, a version pin the
    /// package manager cannot do) is [`BackendError::Invalid`].
    fn plan_resource(
        &self,
        env: &Env,
        resource: &ResourceSpec,
        context: &ResourceContext<'_>,
    ) -> Result<ResourcePlan, BackendError> {
        let _ = (env, context);
        Err(BackendError::Unsupported(format!(
            "configure resources of kind '{}'",
            resource.kind()
        )))
    }

    /// Find and read an OpenStack config drive's files (`dir`: a directory holding its
    /// contents, instead of looking for the `config-2` filesystem; `keep_hostname`: leave
    /// `meta_data.json` unread). `Ok(None)` when this guest has none. Parsing them is
    /// `guestd_network_model::config_drive`'s.
    fn read_config_drive(
        &self,
        env: &Env,
        dir: Option<&str>,
        keep_hostname: bool,
    ) -> Result<Option<ConfigDriveFiles>, BackendError> {
        let _ = (env, dir, keep_hostname);
        Ok(None)
    }

    /// `resetnetwork` (and XenCenter's static IP setting): the plan that writes `request.spec`
    /// for the network tool in use (its interfaces matched to this guest's devices by MAC),
    /// restarts the affected interfaces, checks they came up, and says how to put everything
    /// back. Nothing is changed here but lookups (devices, the tool in use, the current files,
    /// read-only checks); [`crate::network_plan::apply_network_plan`] carries the plan out.
    fn plan_reset_network(
        &self,
        env: &Env,
        request: &NetworkRequest<'_>,
    ) -> Result<NetworkPlan, BackendError> {
        let _ = (env, request);
        Err(BackendError::Unsupported("resetnetwork".into()))
    }
}

/// Carry out a password plan: without backups (guestd keeps no copy of old password hashes
/// anywhere), and a step a `--root` sandbox kept off the machine is a failure (the password
/// was not set).
pub fn apply_account_plan(env: &Env, plan: &Plan) -> Result<(), BackendError> {
    let options = ApplyOptions { keep_backups: 0 };
    let applied = crate::plan::apply(plan, &env.root, env.runner.as_ref(), options)?;
    match applied.not_run_error() {
        Some(not_run) => Err(not_run.into()),
        None => Ok(()),
    }
}

/// How `guest-shutdown` stops the guest (qemu-ga's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// Stop and turn the power off (`powerdown`, the default).
    PowerDown,
    /// Stop without turning the power off (`halt`).
    Halt,
    /// Stop and start again (`reboot`).
    Reboot,
}

/// What to freeze or thaw (`guest-fsfreeze-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreezeRequest {
    /// Mount points, in the order to freeze (children before their parents) or to thaw.
    pub mountpoints: Vec<String>,
    /// The fsfreeze hook, already checked (owned by root, writable by no one else).
    pub hook: Option<FreezeHook>,
}

/// qemu-ga's fsfreeze hook: run with `freeze` before freezing and `thaw` after thawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeHook {
    /// The program as this process reaches it (the guest path resolved through `Root`).
    pub program: String,
    /// How long one run may take.
    pub timeout: Duration,
}

/// How `guest-suspend-*` suspends the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendMode {
    /// To disk (hibernate).
    Disk,
    /// To RAM (suspend).
    Ram,
    /// To both (hybrid sleep).
    Hybrid,
}

/// What a successful `resetnetwork` did ([`crate::network_plan::apply_network_plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkReset {
    /// One line for the log.
    pub summary: String,
    /// The reply's message: empty as the reference agents answer, or something the host must
    /// know (a new Windows computer name that only takes effect after a reboot).
    pub notice: String,
}

impl From<String> for NetworkReset {
    fn from(summary: String) -> Self {
        Self {
            summary,
            notice: String::new(),
        }
    }
}

/// What `resetnetwork` (and XenCenter's static IP setting) hands the backend: the network the
/// host asked for, already parsed and validated (`guestd_network_model`), and the manager to
/// write for.
#[derive(Debug, Clone, Copy)]
pub struct NetworkRequest<'a> {
    /// The interfaces (by MAC) and hostname to configure.
    pub spec: &'a NetworkSpec,
    /// Network manager to use instead of the detected one (`netplan`, `ifupdown`, …).
    pub manager: Option<&'a str>,
}

/// A secret (a password) handed to a backend: wiped on drop, never shown by `Debug`.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(secret: Zeroizing<String>) -> Self {
        Self(secret)
    }

    /// The secret itself; keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<hidden>)")
    }
}

/// What `kmsactivate` asks for (spec §4.8).
#[derive(Clone, PartialEq, Eq)]
pub enum KmsRequest {
    /// Linux (RHEL): register with Red Hat Network using an activation key.
    Rhn {
        /// Secret: never logged, never in argv of our commands.
        activation_key: Zeroizing<String>,
        profile: String,
        /// RHN server host names (become `serverURL` in `up2date`).
        domains: Vec<String>,
    },
    /// Windows: activate against this KMS server (`host` or `host:port`).
    Kms { server: String },
}

impl fmt::Debug for KmsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rhn {
                profile, domains, ..
            } => write!(
                f,
                "Rhn {{ profile: {profile:?}, domains: {domains:?}, activation_key: <hidden> }}"
            ),
            Self::Kms { server } => write!(f, "Kms {{ server: {server:?} }}"),
        }
    }
}

/// Read access to host-provided data (XenStore `vm-data/…`), offered by transports that have it.
/// Paths are relative to the guest's home (`vm-data/hostname`).
pub trait HostData: Send + Sync + 'static {
    /// The value at `path`, or `None` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, HostDataError>;
    /// The children of `path` (empty when it does not exist).
    fn list(&self, path: &str) -> Result<Vec<String>, HostDataError>;
}

/// Reading host data failed (the channel is down, permission denied, …).
#[derive(Debug, thiserror::Error)]
#[error("reading host data at '{path}' failed: {reason}")]
pub struct HostDataError {
    pub path: String,
    pub reason: String,
}

/// A backend with no OS-specific capabilities (for tests and unknown systems).
#[derive(Debug, Default)]
pub struct NullBackend;

impl Backend for NullBackend {
    fn name(&self) -> &str {
        "none"
    }
}
