//! The OS/distro-specific part, seen by handlers only through these traits.
//!
//! A backend *plans* (pure functions over the guest's files read through [`Root`](crate::Root))
//! and lets [`apply`](crate::plan::apply) carry the plan out. Each capability is a method with a
//! default that answers "unsupported", so adding a capability never breaks other backends.

use std::fmt;

use zeroize::Zeroizing;

use crate::configure::{ResourceContext, ResourcePlan, ResourceSpec};
use crate::dispatch::Env;
use crate::plan::{ApplyError, Plan};
use crate::root::{Root, RootError};
use crate::runner::CommandError;

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
    Command(#[from] CommandError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// One OS family (Debian, RHEL, FreeBSD, Windows, …).
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Short name for logs (`debian`, `freebsd`, `windows`, …).
    fn name(&self) -> &str;

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

    /// `resetnetwork`: build the network configuration from `request` (inline value, host data
    /// or a config drive), write it for the network manager in use, restart the affected
    /// interfaces and check they came up; on failure put everything back. Returns what was
    /// done (a summary for the log, a notice for the host).
    fn reset_network(
        &self,
        env: &Env,
        request: &NetworkRequest<'_>,
    ) -> Result<NetworkReset, BackendError> {
        let _ = (env, request);
        Err(BackendError::Unsupported("resetnetwork".into()))
    }
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

/// What `resetnetwork` hands the backend. Only raw inputs: the network model and its parsers live
/// in the backend (distro), so core and handlers never depend on them.
#[derive(Clone, Copy)]
pub struct NetworkRequest<'a> {
    /// The command's value: `""` (use host data / config drive) or an inline configuration.
    pub value: &'a serde_json::Value,
    /// The channel's host data (XenStore `vm-data/`), when the transport has it.
    pub host_data: Option<&'a dyn HostData>,
    /// Network manager to use instead of the detected one (`netplan`, `ifupdown`, …).
    pub manager: Option<&'a str>,
    /// A directory holding an OpenStack config drive's contents, instead of looking for the
    /// `config-2` filesystem.
    pub config_drive: Option<&'a str>,
    /// Whether a config drive is looked for at all.
    pub use_config_drive: bool,
}

impl fmt::Debug for NetworkRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkRequest")
            .field("value", self.value)
            .field("host_data", &self.host_data.is_some())
            .field("manager", &self.manager)
            .field("config_drive", &self.config_drive)
            .field("use_config_drive", &self.use_config_drive)
            .finish()
    }
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
