//! `configure`'s planners: one resource in, a [`ResourcePlan`] out (what differs from the
//! guest's state, and the plan that changes it). Nothing here changes the guest; the handler
//! applies the plan with `guestd_core::plan::apply`.
//!
//! Per OS family: [`accounts`] (shadow-utils, busybox, FreeBSD `pw`), [`packages`] (apt,
//! dnf/yum, zypper, apk, pkg, pacman, pip), [`services`] (systemd, OpenRC, SysV, rc.d, the
//! Windows SCM, as [`ServiceManager`] finds them at start-up). Everywhere: [`files`] (file and
//! directory, SELinux labels with the guest's `chcon`/`restorecon`), [`archive`] (a tarball
//! unpacked through `Root` with agentupdate's guards) and [`script`] (`run`: a script that
//! already exists in the scripts directory).
//!
//! # Where the guest's tools run
//!
//! On the guest itself (no `--root`), a tool is run as it is (`useradd`, `apt-get`,
//! `systemctl`). Under `--root DIR` the root is another system's tree, so every tool acts on
//! that tree and never on the machine guestd runs on: the tool's own root option where it has
//! one (`useradd -R DIR`, `systemctl --root=DIR`, `apk --root DIR`, `rpm --root DIR`,
//! `pw -R DIR`, `sysrc -R DIR`), `chroot DIR TOOL` otherwise (`apt-get`, `dnf`, `zypper`, `pip`,
//! `update-rc.d`, a `run` script). A running service cannot be started or stopped in such a
//! tree (no service manager runs for it): that part of a `service` resource is reported, not
//! done (see [`services`]).
//!
//! # What the tools reach
//!
//! Every command says what it reaches (`guestd_core::effect`), so that a `--root` sandbox
//! runs what acts on the tree and refuses the rest unless `[sandbox] allow_effects` lists it.
//! Under `--root` an account, package or service tool acts on the tree only
//! ([`Reach::Root`]); on the guest itself it changes the machine (`accounts`, `install`,
//! `service`) or only looks ([`Reach::Observe`]). A `run` script is always
//! [`Effect::Script`]: `chroot` puts it in the tree, but what it does is up to it.

pub mod accounts;
pub mod archive;
pub mod files;
pub mod packages;
pub mod script;
pub mod services;

use std::path::Path;
use std::time::Duration;

use guestd_core::configure::{Principal, ResourceContext, ResourcePlan, ResourceSpec};
use guestd_core::{BackendError, Effect, Env, ProcessSpec, Reach, Root};

use crate::{OsFamily, ServiceManager};

/// `PATH` for the guest's tools and scripts (their environment is cleared first).
pub const TOOL_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a package manager may take (downloads, maintainer scripts).
pub const PACKAGE_TIMEOUT: Duration = Duration::from_secs(900);

/// How long an account or service tool may take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Plan one resource for an OS family and its service manager found at start-up (with whether
/// it runs for the root).
pub fn plan_resource(
    family: OsFamily,
    service_manager: Option<ServiceManager>,
    service_manager_runs: bool,
    env: &Env,
    spec: &ResourceSpec,
    context: &ResourceContext<'_>,
) -> Result<ResourcePlan, BackendError> {
    match spec {
        ResourceSpec::File(f) => files::plan_file(family, env, f),
        ResourceSpec::Directory(d) => files::plan_directory(family, env, d),
        ResourceSpec::User(u) => accounts::plan_user(family, env, u),
        ResourceSpec::Group(g) => accounts::plan_group(family, env, g),
        ResourceSpec::Package(p) => packages::plan_package(family, env, p),
        ResourceSpec::Service(s) => {
            services::plan_service(service_manager, service_manager_runs, env, s, context)
        }
        ResourceSpec::Archive(a) => archive::plan_archive(family, env, a, context.settings),
        ResourceSpec::Run(r) => script::plan_run(family, env, r, context),
    }
}

/// The sandbox directory as a string for a tool's argv (`None` on the guest itself).
pub fn sandbox_dir(root: &Root) -> Result<Option<&str>, BackendError> {
    root.base()
        .map(|b| {
            b.to_str().ok_or_else(|| {
                BackendError::Invalid("the --root directory's path is not UTF-8".into())
            })
        })
        .transpose()
}

/// What a tool reaches: `on_guest` on the guest itself, only the tree under `--root` (where it
/// acts on the tree through its root option or `chroot`).
fn tool_reach(root: &Root, on_guest: Reach) -> Reach {
    if root.is_sandbox() {
        Reach::Root
    } else {
        on_guest
    }
}

/// A tool that changes the machine's `effect` on the guest itself.
pub fn changes(effect: Effect) -> Reach {
    Reach::Machine(effect)
}

/// `program args…` run inside the guest's tree: as it is on the guest itself (reaching
/// `on_guest`), through `chroot DIR` under `--root DIR` (reaching only the tree). The
/// environment is cleared to [`TOOL_PATH`] and `LC_ALL=C` (tools' output is parsed) plus `env`.
pub fn in_root(
    root: &Root,
    on_guest: Reach,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<ProcessSpec, BackendError> {
    let vars = std::iter::once(("PATH", TOOL_PATH))
        .chain(std::iter::once(("LC_ALL", "C")))
        .chain(env.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cmd = match sandbox_dir(root)? {
        None => ProcessSpec::new(program).args(args.iter().copied()),
        Some(dir) => ProcessSpec::new("chroot")
            .arg(dir)
            .arg(program)
            .args(args.iter().copied()),
    };
    let mut cmd = cmd.clear_env(vars).timeout(TOOL_TIMEOUT);
    cmd.reach = tool_reach(root, on_guest);
    Ok(cmd)
}

/// `program [ROOT_OPTION DIR] args…`: a tool with its own option for acting on another root
/// (`useradd -R DIR`, `systemctl --root=DIR`); `root_option` is how it takes the directory
/// (`"-R"` gives `-R DIR`, `"--root="` gives `--root=DIR`). It reaches `on_guest` on the
/// guest itself, only the tree under `--root`.
pub fn with_root_option(
    root: &Root,
    on_guest: Reach,
    program: &str,
    root_option: &str,
    args: &[&str],
) -> Result<ProcessSpec, BackendError> {
    let mut cmd = ProcessSpec::new(program);
    if let Some(dir) = sandbox_dir(root)? {
        cmd = if let Some(prefix) = root_option.strip_suffix('=') {
            cmd.arg(format!("{prefix}={dir}"))
        } else {
            cmd.arg(root_option).arg(dir)
        };
    }
    let mut cmd = cmd
        .args(args.iter().copied())
        .clear_env(vec![
            ("PATH".into(), TOOL_PATH.into()),
            ("LC_ALL".into(), "C".into()),
        ])
        .timeout(TOOL_TIMEOUT);
    cmd.reach = tool_reach(root, on_guest);
    Ok(cmd)
}

/// Whether the guest has `program`: in its usual directories inside a sandbox tree, on the
/// runner's `PATH` on the guest itself.
pub fn has_tool(env: &Env, program: &str) -> bool {
    if env.root.is_sandbox() {
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .iter()
        .any(|dir| env.root.exists(format!("{dir}/{program}")))
    } else {
        env.runner.exists(program)
    }
}

/// A uid for an owner: a number as it is, a name from the guest's `/etc/passwd`.
pub fn resolve_user(root: &Root, who: &Principal) -> Result<u32, BackendError> {
    match who {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => accounts::Accounts::read(root)?
            .user(name)
            .map(|u| u.uid)
            .ok_or_else(|| BackendError::Invalid(format!("no user '{name}' on this guest"))),
    }
}

/// A gid for a group: a number as it is, a name from the guest's `/etc/group`.
pub fn resolve_group(root: &Root, who: &Principal) -> Result<u32, BackendError> {
    match who {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => accounts::Accounts::read(root)?
            .group(name)
            .map(|g| g.gid)
            .ok_or_else(|| BackendError::Invalid(format!("no group '{name}' on this guest"))),
    }
}

/// The join of a directory and a relative path, for guest paths.
pub fn join(dir: &str, rel: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{rel}")
    }
}

/// Whether `path` is `dir` or below it (whole components).
pub fn is_under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(Path::new(dir))
}

/// The first line of a tool's output, trimmed.
pub fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_act_on_the_sandbox_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let base = root.base().unwrap().display().to_string();
        let install = changes(Effect::Install);
        let cmd = in_root(&root, install, "apt-get", &["install", "-y", "x"], &[]).unwrap();
        assert_eq!(
            cmd.command_line(),
            format!("chroot {base} apt-get install -y x")
        );
        // Acting on the tree only, so the --root sandbox runs it.
        assert_eq!(cmd.reach, Reach::Root);
        let accounts = changes(Effect::Accounts);
        let cmd = with_root_option(&root, accounts, "useradd", "-R", &["app"]).unwrap();
        assert_eq!(cmd.command_line(), format!("useradd -R {base} app"));
        assert_eq!(cmd.reach, Reach::Root);
        let service = changes(Effect::Service);
        let cmd =
            with_root_option(&root, service, "systemctl", "--root=", &["enable", "x"]).unwrap();
        assert_eq!(
            cmd.command_line(),
            format!("systemctl --root={base} enable x")
        );
        assert_eq!(cmd.reach, Reach::Root);
        let env = cmd.env.unwrap();
        assert!(env.contains(&("LC_ALL".into(), "C".into())));
        // On the guest itself the same tools change the machine, or only look.
        let system = Root::system();
        let cmd = in_root(&system, install, "apt-get", &["-y"], &[]).unwrap();
        assert_eq!(cmd.command_line(), "apt-get -y");
        assert_eq!(cmd.reach, Reach::Machine(Effect::Install));
        let cmd = with_root_option(
            &system,
            Reach::Observe,
            "systemctl",
            "--root=",
            &["is-active", "x"],
        )
        .unwrap();
        assert_eq!(cmd.command_line(), "systemctl is-active x");
        assert_eq!(cmd.reach, Reach::Observe);
    }

    #[test]
    fn paths() {
        assert_eq!(join("/opt/app/", "a/b"), "/opt/app/a/b");
        assert_eq!(join("/opt/app", ""), "/opt/app");
        assert!(is_under("/etc/guestd/scripts/x", "/etc/guestd/scripts"));
        assert!(is_under("/etc/guestd/scripts", "/etc/guestd/scripts"));
        assert!(!is_under("/etc/guestd/scripts2", "/etc/guestd/scripts"));
    }
}
