//! `resetnetwork` on this OS: the network model (`guestd_network_model`, re-exported as
//! [`model`]) rendered for the network manager in use, and applied with rollback. The host's
//! formats are parsed into the model before it gets here (by the handler); what is OS work
//! about a source stays here: finding and mounting a config drive ([`configdrive`]).
//!
//! Flow ([`reset_network`]): match MACs to devices ([`devices`]) → detect the [`NetworkTool`] (or
//! take the configured one) → [`plan`] (render, hostname, resolv.conf) → `guestd_core::apply`
//! (backups, atomic writes, restart of the affected interfaces, checks; on failure the files
//! are restored and the interfaces restarted with the old configuration).
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

use guestd_core::{
    ApplyError, ApplyOptions, BackendError, Env, FileChange, NetworkRequest, NetworkReset, Plan,
    PlannedProcess, ProcessRunner, Root,
};
use guestd_network_model::config_drive::ConfigDriveFiles;
use tracing::{info, warn};

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
/// Backups kept per file.
const KEEP_BACKUPS: usize = 3;

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

/// The whole command: match, detect, plan, apply; on Windows then the computer name through
/// `names`. Returns a summary for the log and the notice for the host.
pub fn reset_network(
    env: &Env,
    request: &NetworkRequest<'_>,
    family: OsFamily,
    names: &dyn ComputerName,
) -> Result<NetworkReset, BackendError> {
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
    let interfaces: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    info!(source = spec.source, %manager, interfaces = ?interfaces, hostname = ?net.hostname.as_ref().map(Hostname::as_str), "resetnetwork");
    let plan = plan(&env.root, env.runner.as_ref(), family, manager, &net).map_err(fail)?;
    let options = ApplyOptions {
        keep_backups: KEEP_BACKUPS,
    };
    match guestd_core::apply(&plan, &env.root, env.runner.as_ref(), options) {
        Ok(applied) => {
            let changed: Vec<&String> = applied
                .changed
                .iter()
                .filter(|p| !p.starts_with(BACKUP_DIR))
                .collect();
            let mut done = NetworkReset::from(format!(
                "{} via {manager} from {}: changed {changed:?}",
                if interfaces.is_empty() {
                    "hostname".to_string()
                } else {
                    interfaces.join(",")
                },
                spec.source,
            ));
            if let (NetworkTool::Windows, Some(name)) = (manager, &net.hostname) {
                done.notice = computer_name::apply(names, name).map_err(|e| {
                    warn!(error = %e, "setting the computer name failed");
                    let what = if interfaces.is_empty() {
                        String::new()
                    } else {
                        "the network is configured, but ".to_string()
                    };
                    BackendError::Failed(format!("{what}setting the computer name failed: {e}"))
                })?;
                done.summary = format!("{}; {}", done.summary, done.notice);
            }
            // Under a --root sandbox the restart and hostname commands may not have run: the
            // files are written, the host is told what did not happen.
            if let Some(not_run) = applied.not_run_message() {
                done.notice = if done.notice.is_empty() {
                    not_run
                } else {
                    format!("{}; {not_run}", done.notice)
                };
            }
            Ok(done)
        }
        Err(e) => {
            let restored = e.restored();
            warn!(error = %e, restored, "resetnetwork failed");
            let what = match &e {
                ApplyError::Unexpected { program, .. }
                    if program == "ip" || program == "ifconfig" || program == "powershell" =>
                {
                    "the interfaces did not come up with their addresses".to_string()
                }
                other => other.to_string(),
            };
            if manager == NetworkTool::Windows {
                return Err(BackendError::Failed(format!(
                    "network configuration failed ({what}); the adapters were returned to DHCP"
                )));
            }
            Err(BackendError::Failed(if restored {
                format!(
                    "network configuration failed ({what}); the previous configuration was restored"
                )
            } else {
                format!(
                    "network configuration failed ({what}); restoring the previous files also failed, see the log"
                )
            }))
        }
    }
}
