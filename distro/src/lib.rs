//! guestd-distro: everything OS-specific, behind `guestd_core::Backend`.
//!
//! [`family`] detects the OS family from the guest's files (through `Root`, so a sandbox tree
//! is detected like a real system), [`service`] its service manager and whether it runs for
//! the root; all once, at start-up
//! ([`OsBackend::detect`]). [`OsBackend`] is the one `Backend` the daemon uses; its
//! capabilities dispatch on the family. Planners are pure functions over `Root` that return a
//! `guestd_core::Plan`, so the Windows and FreeBSD ones are tested on Linux too.
//!
//! [`password`] plans setting an account's password (chpasswd / locked shadow rewrite on Linux,
//! `pw` on FreeBSD, `NetUserSetInfo` on Windows) and the check of the result.
//! [`network`] plans `resetnetwork` on this OS: finding and reading a config drive, the
//! detection of the network manager in use, one renderer per manager for the network model
//! (`guestd_network_model`, which also parses the host's formats), hostname and resolver files,
//! the Windows computer name; `guestd_core::apply_network_plan` applies the plan.
//!
//! [`power`] plans `guest-shutdown` with each family's own tool and the ways to suspend,
//! [`clock`] `guest-set-time`, [`freeze`] `guest-fsfreeze-*` and `guest-fstrim`, [`hw`]
//! `guest-set-vcpus` and `guest-set-memory-blocks`.
//!
//! [`service`] knows the service managers (systemd, OpenRC, SysV init, rc.d, the Windows SCM):
//! which one runs this guest, how to restart a service and how to start a program outside it.
//!
//! [`configure`] plans `configure`'s resources (accounts, packages, services per family and
//! service manager; files, archives and scripts everywhere).
//!
//! Adding a distro: a variant in [`family::OsFamily`], its detection rule, and its planners.

pub mod clock;
pub mod configure;
pub mod family;
pub mod freeze;
pub mod hw;
pub mod kms;
pub mod network;
pub mod password;
pub mod power;
pub mod service;

use std::sync::Arc;

use guestd_core::configure::{ResourceContext, ResourcePlan, ResourceSpec};
use guestd_core::plan::Plan;
use guestd_core::{
    Alternative, Backend, BackendError, Env, FreezeRequest, KmsRequest, NetworkPlan,
    NetworkRequest, PowerOff, Root, SecretString, SuspendMode,
};

pub use family::OsFamily;
pub use service::ServiceManager;

/// The backend for the guest guestd runs in (or the sandbox it was pointed at).
#[derive(Debug, Clone)]
pub struct OsBackend {
    family: OsFamily,
    service_manager: Option<ServiceManager>,
    /// The service manager runs for the root (see [`ServiceManager::runs_for`]).
    service_manager_runs: bool,
    windows_accounts: password::windows::AccountStore,
    computer_name: Arc<dyn network::ComputerName>,
}

impl OsBackend {
    /// A backend for `family` with no service manager (see [`Self::detect`], and
    /// [`Self::with_service_manager`] in tests).
    pub fn new(family: OsFamily) -> Self {
        Self {
            family,
            service_manager: None,
            service_manager_runs: false,
            windows_accounts: Default::default(),
            computer_name: Arc::new(network::SystemComputerName),
        }
    }

    /// The service manager restarts and `configure`'s services go through, and whether it
    /// `runs` for the root (default: none).
    pub fn with_service_manager(mut self, manager: Option<ServiceManager>, runs: bool) -> Self {
        self.service_manager = manager;
        self.service_manager_runs = runs && manager.is_some();
        self
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

    /// Detect the family and the service manager of the system under `root` (once, at
    /// start-up: everything OS-specific then asks this backend).
    pub fn detect(root: &Root) -> Self {
        let family = OsFamily::detect(root);
        let manager = ServiceManager::detect(root, family);
        let runs = manager.is_some_and(|m| m.runs_for(root));
        Self::new(family).with_service_manager(manager, runs)
    }

    pub fn family(&self) -> OsFamily {
        self.family
    }
}

impl Backend for OsBackend {
    fn name(&self) -> &str {
        self.family.name()
    }

    fn service_manager(&self) -> Option<&str> {
        self.service_manager.map(ServiceManager::name)
    }

    fn plan_service_restart(&self, root: &Root, service: &str) -> Result<Plan, BackendError> {
        let manager = self
            .service_manager
            .ok_or_else(|| BackendError::Unsupported("restarting a service".into()))?;
        service::plan_restart(manager, root, service)
    }

    fn plan_detached_start(&self, argv: &[String], log: &str) -> Result<Plan, BackendError> {
        let manager = self
            .service_manager
            .unwrap_or(ServiceManager::detach_default(self.family));
        Ok(Plan {
            commands: vec![manager.launch_command(argv, log).into()],
            ..Plan::default()
        })
    }

    fn plan_set_clock(&self, env: &Env, time_ns: Option<i64>) -> Result<Plan, BackendError> {
        let hwclock = env.runner.exists(clock::HWCLOCK);
        clock::plan_set_clock(self.family, &env.root, hwclock, time_ns)
    }

    fn plan_shutdown(&self, mode: PowerOff) -> Result<Plan, BackendError> {
        Ok(power::plan_shutdown(self.family, mode))
    }

    fn plan_fsfreeze(&self, _env: &Env, request: &FreezeRequest) -> Result<Plan, BackendError> {
        freeze::plan_fsfreeze(self.family, request)
    }

    fn plan_thaw(&self, _env: &Env, request: &FreezeRequest) -> Result<Plan, BackendError> {
        freeze::plan_thaw(self.family, request)
    }

    fn plan_fstrim(
        &self,
        env: &Env,
        mountpoints: &[String],
        minimum: u64,
    ) -> Result<Plan, BackendError> {
        freeze::plan_fstrim(self.family, env.runner.as_ref(), mountpoints, minimum)
    }

    fn plan_suspend(&self, env: &Env, mode: SuspendMode) -> Result<Vec<Alternative>, BackendError> {
        power::plan_suspend(self.family, env, mode)
    }

    fn plan_set_vcpu(&self, _env: &Env, id: u64, online: bool) -> Result<Plan, BackendError> {
        hw::plan_set_vcpu(self.family, id, online)
    }

    fn plan_set_memory_block(
        &self,
        _env: &Env,
        index: u64,
        online: bool,
    ) -> Result<Plan, BackendError> {
        hw::plan_set_memory_block(self.family, index, online)
    }

    fn plan_set_password(
        &self,
        env: &Env,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<Plan, BackendError> {
        password::plan_set_password(self.family, env, &self.windows_accounts, user, password)
    }

    fn plan_set_password_hash(
        &self,
        env: &Env,
        user: &str,
        hash: &SecretString,
    ) -> Result<Plan, BackendError> {
        password::plan_set_password_hash(self.family, env, user, hash)
    }

    fn read_config_drive(
        &self,
        env: &Env,
        dir: Option<&str>,
        keep_hostname: bool,
    ) -> Result<Option<guestd_network_model::config_drive::ConfigDriveFiles>, BackendError> {
        network::read_config_drive(env, dir, keep_hostname)
    }

    fn plan_reset_network(
        &self,
        env: &Env,
        request: &NetworkRequest<'_>,
    ) -> Result<NetworkPlan, BackendError> {
        network::plan_reset_network(env, request, self.family, &self.computer_name)
    }

    fn plan_resource(
        &self,
        env: &Env,
        resource: &ResourceSpec,
        context: &ResourceContext<'_>,
    ) -> Result<ResourcePlan, BackendError> {
        configure::plan_resource(
            self.family,
            self.service_manager,
            self.service_manager_runs,
            env,
            resource,
            context,
        )
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
