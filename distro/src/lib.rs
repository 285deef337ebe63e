//! guestd-distro: everything OS-specific, behind `guestd_core::Backend`.
//!
//! [`family`] detects the OS family from the guest's files (through `Root`, so a sandbox tree
//! is detected like a real system). [`SystemBackend`] is the one `Backend` the daemon uses; its
//! capabilities dispatch on the family. Planners are pure functions over `Root` that return a
//! `guestd_core::Plan`, so the Windows and FreeBSD ones are tested on Linux too.
//!
//! [`password`] sets an account's password (chpasswd / locked shadow rewrite on Linux, `pw` on
//! FreeBSD, `NetUserSetInfo` on Windows) and verifies the result.
//! [`network`] owns `resetnetwork` on this OS: finding and reading a config drive, the detection
//! of the network manager in use, one renderer per manager for the network model
//! (`guestd_network_model`, which also parses the host's formats), hostname and resolver files.
//!
//! Adding a distro: a variant in [`family::OsFamily`], its detection rule, and its planners.

pub mod family;
pub mod kms;
pub mod network;
pub mod password;

use std::sync::Arc;

use guestd_core::plan::Plan;
use guestd_core::{
    Backend, BackendError, Env, KmsRequest, NetworkRequest, NetworkReset, Root, SecretString,
};

pub use family::OsFamily;

/// The backend for the guest guestd runs in (or the sandbox it was pointed at).
#[derive(Debug, Clone)]
pub struct SystemBackend {
    family: OsFamily,
    windows_accounts: password::windows::AccountStore,
    computer_name: Arc<dyn network::ComputerName>,
}

impl SystemBackend {
    pub fn new(family: OsFamily) -> Self {
        Self {
            family,
            windows_accounts: Default::default(),
            computer_name: Arc::new(network::SystemComputerName),
        }
    }

    /// Where the Windows computer name is read and set (default: the real one; tests give a
    /// [`network::computer_name::RecordingComputerName`]).
    pub fn with_computer_name(mut self, names: Arc<dyn network::ComputerName>) -> Self {
        self.computer_name = names;
        self
    }

    /// Where Windows passwords are set (default: the real account database).
    pub fn with_windows_accounts(mut self, store: password::windows::AccountStore) -> Self {
        self.windows_accounts = store;
        self
    }

    /// Detect the family of the system under `root`.
    pub fn detect(root: &Root) -> Self {
        Self::new(OsFamily::detect(root))
    }

    pub fn family(&self) -> OsFamily {
        self.family
    }
}

impl Backend for SystemBackend {
    fn name(&self) -> &str {
        self.family.name()
    }

    fn set_password(
        &self,
        env: &Env,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<(), BackendError> {
        password::set_password(self.family, env, &self.windows_accounts, user, password)
    }

    fn set_password_hash(
        &self,
        env: &Env,
        user: &str,
        hash: &SecretString,
    ) -> Result<(), BackendError> {
        password::set_password_hash(self.family, env, user, hash)
    }

    fn read_config_drive(
        &self,
        env: &Env,
        dir: Option<&str>,
        keep_hostname: bool,
    ) -> Result<Option<guestd_network_model::config_drive::ConfigDriveFiles>, BackendError> {
        network::read_config_drive(env, dir, keep_hostname)
    }

    fn reset_network(
        &self,
        env: &Env,
        request: &NetworkRequest<'_>,
    ) -> Result<NetworkReset, BackendError> {
        network::reset_network(env, request, self.family, self.computer_name.as_ref())
    }

    fn kms_activate(&self, root: &Root, request: &KmsRequest) -> Result<Plan, BackendError> {
        match (self.family, request) {
            (
                OsFamily::RedHat,
                KmsRequest::Rhn {
                    activation_key,
                    profile,
                    domains,
                },
            ) => kms::plan_rhn(root, activation_key, profile, domains),
            (OsFamily::Windows, KmsRequest::Kms { server }) => {
                let system_root =
                    std::env::var("SystemRoot").unwrap_or_else(|_| "C:\\Windows".into());
                kms::plan_windows(&system_root, server)
            }
            (OsFamily::RedHat, KmsRequest::Kms { .. }) => Err(BackendError::Invalid(
                "Invalid arguments: RHN activation needs activation_key and profile".into(),
            )),
            (OsFamily::Windows, KmsRequest::Rhn { .. }) => Err(BackendError::Invalid(
                "Invalid arguments: KMS activation needs \"host:port\"".into(),
            )),
            _ => Err(BackendError::Unsupported("KMS".into())),
        }
    }
}
