//! `resetnetwork`: one network model, three sources, a renderer per network manager, and apply
//! with rollback.
//!
//! Flow ([`reset_network`]): [`gather`] the model (the inline value when non-empty, else XenStore
//! `vm-data/networking/*` + `vm-data/hostname`, else an OpenStack config drive) → match MACs to
//! devices ([`devices`]) → detect the [`Manager`] (or take the configured one) → [`plan`]
//! (render, hostname, resolv.conf) → `guestd_core::apply` (backups, atomic writes, restart of the
//! affected interfaces, checks; on failure the files are restored and the interfaces restarted
//! with the old configuration).
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
pub mod model;
pub mod render;
pub mod source;

use guestd_core::plan::Expect;
use guestd_core::{
    ApplyError, ApplyOptions, BackendError, CommandRunner, Env, FileChange, NetworkRequest,
    NetworkReset, Plan, PlannedCommand, Root,
};
use tracing::{info, warn};

pub use computer_name::{ComputerName, SystemComputerName};
pub use manager::Manager;
pub use model::{
    Hostname, Interface, InterfaceSpec, IpNet, Mac, Network, NetworkError, NetworkSpec, Route,
};
pub use render::{RenderContext, Rendered};

use crate::OsFamily;

/// Build the model from the request's sources, in order of precedence.
pub fn gather(
    request: &NetworkRequest<'_>,
    root: &Root,
    runner: &dyn CommandRunner,
) -> Result<NetworkSpec, NetworkError> {
    let keep_hostname = match source::parse_inline(request.value)? {
        source::Inline::Spec(spec) => return Ok(spec),
        source::Inline::HostData { keep_hostname } => keep_hostname,
    };
    if let Some(data) = request.host_data {
        if let Some(spec) = source::from_xenstore(data, keep_hostname)? {
            return Ok(spec);
        }
    }
    if request.use_config_drive || request.config_drive.is_some() {
        if let Some(spec) = configdrive::read(root, runner, request.config_drive, keep_hostname)? {
            return Ok(spec);
        }
    }
    Err(model::invalid(if request.host_data.is_some() {
        "empty network list: vm-data/networking has no entries and there is no config drive"
    } else {
        "no network data: the value is empty, this channel has no host data and there is no config drive"
    }))
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
        FileChange::Directory { .. } | FileChange::RemoveDir { .. } => true,
    }
}

/// Whether every check passes right now (read-only commands).
fn checks_pass(runner: &dyn CommandRunner, checks: &[PlannedCommand]) -> bool {
    checks.iter().all(|c| match runner.run(&c.command) {
        Ok(out) => match &c.expect {
            Expect::Anything => true,
            Expect::Success => out.success(),
            Expect::StdoutContains(t) => {
                out.success() && String::from_utf8_lossy(&out.stdout).contains(t.as_str())
            }
        },
        Err(_) => false,
    })
}

/// Plan the whole change for `net` under `manager`. `runner` is only used for read-only checks
/// of the current state (to skip a restart that is not needed).
pub fn plan(
    root: &Root,
    runner: &dyn CommandRunner,
    family: OsFamily,
    manager: Manager,
    net: &Network,
) -> Result<Plan, NetworkError> {
    let ctx = RenderContext { root, family };
    let mut out = Plan::default();
    let mut restart = Vec::new();
    let mut checks = Vec::new();
    let mut rollback = Vec::new();
    let mut manages_dns = true;
    let renders_hostname = matches!(manager, Manager::FreeBsd | Manager::Windows);
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
        if manager == Manager::FreeBsd {
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
        } else if manager != Manager::Windows {
            let h = hostname::plan(root, family, name)?;
            out.changes.extend(h.files);
            out.commands.extend(h.commands);
            out.rollback_commands.extend(h.rollback);
        }
    }
    let dns = net.dns();
    if !dns.is_empty()
        && manager != Manager::Windows
        && hostname::resolv_conf_unmanaged(root, manages_dns)
    {
        out.changes.push(hostname::resolv_conf(root, &dns)?);
    }
    out.commands.extend(restart);
    out.commands.extend(checks);
    out.rollback_commands.splice(0..0, rollback);
    Ok(out)
}

/// The whole command: gather, match, detect, plan, apply; on Windows then the computer name
/// through `names`. Returns a summary for the log and the notice for the host.
pub fn reset_network(
    env: &Env,
    request: &NetworkRequest<'_>,
    family: OsFamily,
    names: &dyn ComputerName,
) -> Result<NetworkReset, BackendError> {
    let fail = |e: NetworkError| match e {
        NetworkError::Invalid(m) => BackendError::Invalid(m),
        NetworkError::System(m) => BackendError::Failed(m),
    };
    let spec = gather(request, &env.root, env.runner.as_ref()).map_err(fail)?;
    let manager = match request.manager {
        Some(name) => Manager::from_name(name).map_err(fail)?,
        None => Manager::detect(&env.root, family).map_err(fail)?,
    };
    let net = if spec.interfaces.is_empty() {
        Network {
            interfaces: Vec::new(),
            hostname: spec.hostname.clone(),
        }
    } else {
        let found = devices::discover(family, &env.root, env.runner.as_ref()).map_err(fail)?;
        devices::resolve(&spec, &found).map_err(fail)?
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
            if let (Manager::Windows, Some(name)) = (manager, &net.hostname) {
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
            let restored = match &e {
                ApplyError::File { restored, .. }
                | ApplyError::Command { restored, .. }
                | ApplyError::Unexpected { restored, .. } => *restored,
            };
            warn!(error = %e, restored, "resetnetwork failed");
            let what = match &e {
                ApplyError::Unexpected { program, .. }
                    if program == "ip" || program == "ifconfig" || program == "powershell" =>
                {
                    "the interfaces did not come up with their addresses".to_string()
                }
                other => other.to_string(),
            };
            if manager == Manager::Windows {
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

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::{HostDataError, Output};
    use guestd_testkit::FakeRunner;
    use serde_json::json;

    const DRIVE_NET: &str = r#"{"links": [{"id": "l0", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
        "networks": [{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "10.0.0.5", "netmask": "255.255.255.0"}]}"#;

    struct OneInterface;

    impl guestd_core::HostData for OneInterface {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, HostDataError> {
            Ok((path == "vm-data/networking/BC764E206C5A").then(|| {
                br#"{"mac": "BC:76:4E:20:6C:5A", "ips": [{"ip": "10.1.0.5", "netmask": "255.255.0.0"}]}"#.to_vec()
            }))
        }
        fn list(&self, _path: &str) -> Result<Vec<String>, HostDataError> {
            Ok(vec!["BC764E206C5A".into()])
        }
    }

    fn request<'a>(
        value: &'a serde_json::Value,
        host: Option<&'a dyn guestd_core::HostData>,
    ) -> NetworkRequest<'a> {
        NetworkRequest {
            value,
            host_data: host,
            manager: None,
            config_drive: None,
            use_config_drive: true,
        }
    }

    /// A sandbox with a `config-2` device (`sr0`) that is not mounted; the fake `mount` fills
    /// the mount point and the mount table as the kernel would.
    fn drive() -> (tempfile::TempDir, Root, FakeRunner) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev/disk/by-label")).unwrap();
        std::os::unix::fs::symlink("../../sr0", d.path().join("dev/disk/by-label/config-2"))
            .unwrap();
        std::fs::create_dir_all(d.path().join("sys/class/block/sr0")).unwrap();
        std::fs::write(d.path().join("sys/class/block/sr0/dev"), "11:0\n").unwrap();
        std::fs::create_dir_all(d.path().join("proc/self")).unwrap();
        std::fs::write(d.path().join("proc/self/mountinfo"), "").unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let runner = FakeRunner::new();
        let base = root.base().unwrap().to_path_buf();
        runner.respond_with("mount ", move |_| {
            let dir = base.join("run/guestd/config-drive/openstack/latest");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("network_data.json"), DRIVE_NET).unwrap();
            std::fs::write(dir.join("meta_data.json"), r#"{"hostname": "cd-host"}"#).unwrap();
            std::fs::write(
                base.join("proc/self/mountinfo"),
                "70 25 11:0 / /run/guestd/config-drive ro,nosuid,nodev,noexec - iso9660 /dev/sr0 ro\n",
            )
            .unwrap();
            Ok(Output {
                code: Some(0),
                ..Output::default()
            })
        });
        (d, root, runner)
    }

    #[test]
    fn sources_in_order_of_precedence() {
        let (_d, root, runner) = drive();
        let inline = json!({"hostname": "inline-host"});
        let empty = json!("");
        let spec = gather(&request(&inline, Some(&OneInterface)), &root, &runner).unwrap();
        assert_eq!(
            (spec.source, spec.hostname.unwrap().as_str()),
            ("inline", "inline-host")
        );
        let spec = gather(&request(&empty, Some(&OneInterface)), &root, &runner).unwrap();
        assert_eq!(spec.source, "xenstore");
        assert!(
            runner.lines().is_empty(),
            "the drive is not touched when XenStore has data"
        );
        let spec = gather(&request(&empty, None), &root, &runner).unwrap();
        assert_eq!(spec.source, "config drive");
        assert_eq!(spec.hostname.unwrap().as_str(), "cd-host");
        assert_eq!(
            runner.lines(),
            [
                "mount -t iso9660,vfat -o ro,nosuid,nodev,noexec /dev/sr0 /run/guestd/config-drive",
                "umount /run/guestd/config-drive"
            ]
        );
        let off = NetworkRequest {
            use_config_drive: false,
            ..request(&empty, None)
        };
        assert_eq!(
            gather(&off, &root, &runner).unwrap_err().to_string(),
            "no network data: the value is empty, this channel has no host data and there is no config drive"
        );
    }

    #[test]
    fn a_failed_mount_is_named() {
        let (_d, root, _) = drive();
        let runner = FakeRunner::new();
        runner.respond("mount ", 32, "");
        let empty = json!("");
        assert_eq!(
            gather(&request(&empty, None), &root, &runner)
                .unwrap_err()
                .to_string(),
            "cannot mount the config drive: 'mount' failed with exit status 32"
        );
    }
}
