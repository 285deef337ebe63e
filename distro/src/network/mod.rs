//! `resetnetwork` on this OS: the network model (`guestd_network_model`, re-exported as
//! [`model`]) rendered for the network manager in use, as a plan. The host's formats are
//! parsed into the model before it gets here (by the handler); what is OS work about a source
//! stays here: finding and mounting a config drive ([`configdrive`]).
//!
//! Flow ([`plan_reset_network`]): match MACs to devices ([`devices`]) → detect the
//! [`NetworkTool`] (or take the configured one) → [`plan`] (render, hostname, resolv.conf; on
//! Windows the computer name, [`computer_name`]) → a `guestd_core::NetworkPlan`. Nothing is changed here:
//! the caller (the `resetnetwork` handler, xen-metrics' static IP setting) hands the plan to
//! `guestd_core::apply_network_plan` (backups, atomic writes, restart of the affected
//! interfaces, checks; on failure the files are restored and the interfaces restarted with
//! the old configuration).
//!
//! The network is restarted only when its files change, or when they are already right but
//! an address is missing (the checks fail before anything is done): a hostname change alone
//! never bounces the network.
//!
//! Adding a manager: see [`render`].

pub mod computer_name;
pub mod configdrive;
pub mod devices;
pub mod hostname;
pub mod manager;
pub mod render;

pub use guestd_network_model as model;

use std::sync::Arc;

use guestd_core::{
    BackendError, Env, FileChange, NetworkPlan, NetworkRequest, OnFailure, Plan, PlannedProcess,
    ProcessRunner, Root,
};
use guestd_network_model::config_drive::ConfigDriveFiles;
use tracing::info;

pub use computer_name::{ComputerName, SystemComputerName};
pub use manager::NetworkTool;
pub use model::{
    Hostname, Interface, InterfaceSpec, IpNet, Mac, Network, NetworkError, NetworkSpec, Route,
};
pub use render::{RenderContext, Rendered};

use crate::OsFamily;

/// Find and read the config drive (see [`configdrive`]).
pub fn read_config_drive(
    env: &Env,
    dir: Option<&str>,
    keep_hostname: bool,
) -> Result<Option<ConfigDriveFiles>, BackendError> {
    Ok(configdrive::read(
        &env.root,
        env.runner.as_ref(),
        dir,
        keep_hostname,
    )?)
}

/// Where resetnetwork (like every plan) keeps the previous versions of the files it replaces;
/// see [`guestd_core::plan::BACKUP_DIR`].
pub use guestd_core::BACKUP_DIR;

/// Whether applying `change` would alter the guest's files.
fn differs(root: &Root, change: &FileChange) -> bool {
    match change {
        FileChange::Write { path, contents, .. } => {
            root.is_symlink(path)
                || root.read_optional(path).ok().flatten().as_deref() != Some(&contents[..])
        }
        FileChange::Remove { path } => root.exists(path) || root.is_symlink(path),
        FileChange::Symlink { path, target } => root
            .read_link(path)
            .map_or(true, |t| t.to_string_lossy() != target.as_str()),
        // Network plans hold no directory changes; if one did, it would count as a change.
        FileChange::Directory { .. }
        | FileChange::RemoveDir { .. }
        | FileChange::Update { .. }
        | FileChange::Kernel { .. } => true,
    }
}

/// Whether every check passes right now (read-only commands).
fn checks_pass(runner: &dyn ProcessRunner, checks: &[PlannedProcess]) -> bool {
    checks.iter().all(|c| match runner.run(&c.command) {
        Ok(out) => c.expect.met_by(&out),
        Err(_) => false,
    })
}

/// Plan the whole change for `net` under `manager`. `runner` is only used for read-only checks
/// of the current state (to skip a restart that is not needed).
pub fn plan(
    root: &Root,
    runner: &dyn ProcessRunner,
    family: OsFamily,
    manager: NetworkTool,
    net: &Network,
) -> Result<Plan, NetworkError> {
    let ctx = RenderContext { root, family };
    let mut out = Plan::default();
    let mut restart = Vec::new();
    let mut checks = Vec::new();
    let mut rollback = Vec::new();
    let mut manages_dns = true;
    let renders_hostname = matches!(manager, NetworkTool::FreeBsd | NetworkTool::Windows);
    if !net.interfaces.is_empty() || renders_hostname {
        let rendered = render::render(manager, net, ctx)?;
        // What changes for the network alone (without the hostname, which some managers keep in
        // the same file).
        let network_only = if net.hostname.is_some() && renders_hostname {
            let without = Network {
                hostname: None,
                ..net.clone()
            };
            render::render(manager, &without, ctx)?.files
        } else {
            Vec::new()
        };
        let compared = if network_only.is_empty() {
            &rendered.files
        } else {
            &network_only
        };
        let files_changed = compared.iter().any(|c| differs(root, c));
        let needed = !net.interfaces.is_empty()
            && (rendered.always_restart || files_changed || !checks_pass(runner, &rendered.checks));
        if !net.interfaces.is_empty() && !needed {
            info!(%manager, "network configuration already in place; no restart");
        }
        out.changes.extend(rendered.files);
        out.commands.extend(rendered.hostname_commands);
        if needed {
            restart = rendered.restart;
            checks = rendered.checks;
            rollback = rendered.rollback;
        }
        manages_dns = rendered.manages_dns;
    }
    if let Some(name) = &net.hostname {
        if manager == NetworkTool::FreeBsd {
            let old = hostname::current_rc_conf(root)?;
            let hosts = root
                .read_optional(hostname::HOSTS)
                .ok()
                .flatten()
                .unwrap_or_default();
            let hosts = String::from_utf8_lossy(&hosts);
            let patched = hostname::patch_hosts(&hosts, old.as_deref(), name);
            if patched != hosts {
                out.changes.push(FileChange::write(
                    hostname::HOSTS,
                    patched,
                    guestd_core::WriteOptions::mode(0o644),
                ));
            }
            // rc.conf goes back with the files; the running kernel's name needs the command.
            let set = |n: &str| render::set_hostname("hostname", &[n]);
            out.rollback_commands
                .extend(hostname::restore(old.as_deref(), set));
        } else if manager != NetworkTool::Windows {
            let h = hostname::plan(root, family, name)?;
            out.changes.extend(h.files);
            out.commands.extend(h.commands);
            out.rollback_commands.extend(h.rollback);
        }
    }
    let dns = net.dns();
    if !dns.is_empty()
        && manager != NetworkTool::Windows
        && hostname::resolv_conf_unmanaged(root, manages_dns)
    {
        out.changes.push(hostname::resolv_conf(root, &dns)?);
    }
    out.commands.extend(restart);
    out.commands.extend(checks);
    out.rollback_commands.splice(0..0, rollback);
    Ok(out)
}

/// `resetnetwork`'s plan for this guest: match the host's interfaces to devices, detect the
/// manager (or take the configured one), [`plan`] the files and commands, and on Windows the
/// computer name through `names`. Only lookups run here (device discovery, reading the current
/// files, read-only checks, the pending computer name); `guestd_core::apply_network_plan`
/// carries the result out.
pub fn plan_reset_network(
    env: &Env,
    request: &NetworkRequest<'_>,
    family: OsFamily,
    names: &Arc<dyn ComputerName>,
) -> Result<NetworkPlan, BackendError> {
    let fail = BackendError::from;
    let spec = request.spec;
    let manager = match request.manager {
        Some(name) => NetworkTool::from_name(name).map_err(fail)?,
        None => NetworkTool::detect(&env.root, family).map_err(fail)?,
    };
    let net = if spec.interfaces.is_empty() {
        Network {
            interfaces: Vec::new(),
            hostname: spec.hostname.clone(),
        }
    } else {
        let found = devices::discover(family, &env.root, env.runner.as_ref()).map_err(fail)?;
        devices::resolve(spec, &found).map_err(fail)?
    };
    let mut planned = NetworkPlan::new(manager.name(), spec.source);
    planned.interfaces = net.interfaces.iter().map(|i| i.name.clone()).collect();
    info!(source = spec.source, %manager, interfaces = ?planned.interfaces, hostname = ?net.hostname.as_ref().map(Hostname::as_str), "resetnetwork");
    planned.plan = plan(&env.root, env.runner.as_ref(), family, manager, &net).map_err(fail)?;
    if manager == NetworkTool::Windows {
        // netsh keeps no files to put back: a failed plan's rollback returns to DHCP.
        planned.on_failure = OnFailure::Dhcp;
        if let Some(name) = &net.hostname {
            (planned.computer_name, planned.notice) = computer_name::plan(names, name)?;
        }
    }
    Ok(planned)
}
