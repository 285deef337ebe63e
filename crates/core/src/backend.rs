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

use guestd_network_model::NetworkSpec;
use guestd_network_model::config_drive::ConfigDriveFiles;
use zeroize::Zeroizing;

use crate::configure::{ResourceContext, ResourcePlan, ResourceSpec};
use crate::plan::{ApplyError, Plan};
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

    /// Set the password of `user` (`None`: the OS's administrator account — `root` on Unix, the
    /// built-in Administrator on Windows) and verify it took effect. The password never goes
    /// to argv, logs or errors.
    fn set_password(
        &self,
        env: &Env,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<(), BackendError> {
        let _ = (env, user, password);
        Err(BackendError::Unsupported("setting a password".into()))
    }

    /// Store a ready crypt(3) hash (`$6$salt$…`, qga's `crypted: true`) as `user`'s password,
    /// unchanged, and verify the stored entry is exactly that hash. A malformed hash (unknown
    /// scheme, `:` or control characters) is refused with [`BackendError::Invalid`]. The hash is
    /// never logged or put in argv.
    fn set_password_hash(
        &self,
        env: &Env,
        user: &str,
        hash: &SecretString,
    ) -> Result<(), BackendError> {
        let _ = (env, user, hash);
        Err(BackendError::Unsupported(
            "setting a crypted password".into(),
        ))
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

    /// `resetnetwork`: write `request.spec` for the network manager in use (matching its
    /// interfaces to this guest's devices by MAC), restart the affected interfaces and check
    /// they came up; on failure put everything back. Returns what was done (a summary for the
    /// log, a notice for the host).
    fn reset_network(
        &self,
        env: &Env,
        request: &NetworkRequest<'_>,
    ) -> Result<NetworkReset, BackendError> {
        let _ = (env, request);
        Err(BackendError::Unsupported("resetnetwork".into()))
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

/// What a successful `resetnetwork` did.
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
