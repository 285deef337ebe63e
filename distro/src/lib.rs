//! guestd-distro: everything OS-specific, behind `guestd_core::Backend`.
//!
//! [`family`] detects the OS family from the guest's files (through `Root`, so a sandbox tree
//! is detected like a real system). [`SystemBackend`] is the one `Backend` the daemon uses; its
//! capabilities dispatch on the family. Planners are pure functions over `Root` that return a
//! `guestd_core::Plan`, so the Windows and FreeBSD ones are tested on Linux too.
//!
//! [`password`] sets an account's password (chpasswd / locked shadow rewrite on Linux, `pw` on
//! FreeBSD, `NetUserSetInfo` on Windows) and verifies the result.
//! [`network`] owns `resetnetwork`: the network model and its sources, the detection of the
//! network manager in use, one renderer per manager, hostname and resolver files.
//! [`configure`] plans `configure`'s resources (accounts, packages, services per family;
//! files, archives and scripts everywhere); [`init`] finds the guest's init system.
//!
//! Adding a distro: a variant in [`family::OsFamily`], its detection rule, and its planners.

pub mod configure;
pub mod family;
pub mod init;
pub mod kms;
pub mod network;
pub mod password;

use std::sync::Arc;

use guestd_core::configure::{ResourceContext, ResourcePlan, ResourceSpec};
use guestd_core::plan::Plan;
use guestd_core::{
    Backend, BackendError, Env, KmsRequest, NetworkRequest, NetworkReset, Root, SecretString,
};

pub use family::OsFamily;
pub use init::InitSystem;

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

    fn reset_network(
        &self,
        env: &Env,
        request: &NetworkRequest<'_>,
    ) -> Result<NetworkReset, BackendError> {
        network::reset_network(env, request, self.family, self.computer_name.as_ref())
    }

    fn plan_resource(
        &self,
        env: &Env,
        resource: &ResourceSpec,
        context: &ResourceContext<'_>,
    ) -> Result<ResourcePlan, BackendError> {
        configure::plan_resource(self.family, env, resource, context)
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
