//! `package`: installed (at a version where the manager can pin one) or removed, with the
//! guest's own package manager. What is installed is read first: dpkg's and apk's databases
//! through `Root`, `rpm -q`, `pkg query`, `pacman -Q` and `pip show` otherwise.
//!
//! | family | install / remove | version pin |
//! |---|---|---|
//! | Debian | `apt-get install -y NAME[=VERSION]` / `apt-get remove -y` | yes (`--allow-downgrades`) |
//! | RedHat | `dnf -y install NAME[-VERSION]` (`yum` without dnf) / `remove` | yes |
//! | SUSE | `zypper --non-interactive install [--oldpackage] NAME[=VERSION]` / `remove` | yes |
//! | Alpine | `apk add NAME[=VERSION]` / `apk del` | yes |
//! | FreeBSD | `pkg install -y NAME` / `pkg delete -y` | no |
//! | Arch | `pacman -S --noconfirm --needed NAME` / `pacman -R --noconfirm` | no |
//! | pip (`"manager": "pip"`) | `python3 -m pip install NAME[==VERSION]` / `uninstall -y` | yes |
//!
//! The managers install from the repositories (or local caches) the guest is configured with;
//! nothing here adds a repository or refreshes an index.

use guestd_core::configure::{Ensure, PackageSource, PackageSpec, ResourcePlan};
use guestd_core::{BackendError, Effect, Env, PlannedProcess, ProcessSpec, Reach, Root};

use super::{PACKAGE_TIMEOUT, changes, first_line, has_tool, in_root, with_root_option};
use crate::OsFamily;

/// What is installed of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    No,
    Version(String),
}

/// Plan a `package` resource.
pub fn plan_package(
    family: OsFamily,
    env: &Env,
    spec: &PackageSpec,
) -> Result<ResourcePlan, BackendError> {
    let manager = Manager::for_guest(family, env, spec)?;
    if spec.version.is_some() && !manager.pins_versions() {
        return Err(BackendError::Invalid(format!(
            "{} cannot install a given version of a package",
            manager.name()
        )));
    }
    let installed = manager.installed(env, &spec.name)?;
    let mut out = ResourcePlan::default();
    let name = spec.name.as_str();
    let command = match (spec.ensure, &installed) {
        (Ensure::Absent, Installed::No) => return Ok(out),
        (Ensure::Absent, Installed::Version(v)) => {
            out.change(format!("remove {name} {v}"));
            manager.remove(env, name)?
        }
        (Ensure::Present, Installed::Version(v))
            if spec
                .version
                .as_deref()
                .is_none_or(|want| version_matches(v, want)) =>
        {
            return Ok(out);
        }
        (Ensure::Present, installed) => {
            let target = spec
                .version
                .as_deref()
                .map_or(String::new(), |v| format!(" {v}"));
            out.change(match installed {
                Installed::No => format!("install {name}{target}"),
                Installed::Version(v) => format!("{name} {v} ->{target}"),
            });
            manager.install(env, name, spec.version.as_deref(), installed)?
        }
    };
    out.plan.commands.push(PlannedProcess::from(command));
    Ok(out)
}

/// Whether an installed version is the one asked for: equal, or equal without the epoch or the
/// release the manager adds (`1:2.4-1` for `2.4-1`, `2.4-1.el9` for `2.4`).
pub fn version_matches(installed: &str, wanted: &str) -> bool {
    if installed == wanted {
        return true;
    }
    let no_epoch = installed.split_once(':').map_or(installed, |(_, v)| v);
    no_epoch == wanted
        || (!wanted.contains('-')
            && no_epoch
                .split_once('-')
                .is_some_and(|(version, _)| version == wanted))
}

/// The package manager for a resource on this guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Apt,
    Dnf,
    Yum,
    Zypper,
    Apk,
    Pkg,
    Pacman,
    Pip,
}

impl Manager {
    fn for_guest(family: OsFamily, env: &Env, spec: &PackageSpec) -> Result<Self, BackendError> {
        if spec.source == PackageSource::Pip {
            if family == OsFamily::Windows {
                return Err(BackendError::Unsupported("pip packages on Windows".into()));
            }
            return Ok(Self::Pip);
        }
        Ok(match family {
            OsFamily::Debian => Self::Apt,
            OsFamily::RedHat if has_tool(env, "dnf") => Self::Dnf,
            OsFamily::RedHat => Self::Yum,
            OsFamily::Suse => Self::Zypper,
            OsFamily::Alpine => Self::Apk,
            OsFamily::FreeBsd => Self::Pkg,
            OsFamily::Arch => Self::Pacman,
            other => {
                return Err(BackendError::Unsupported(format!(
                    "packages on {}",
                    other.name()
                )));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Apt => "apt",
            Self::Dnf => "dnf",
            Self::Yum => "yum",
            Self::Zypper => "zypper",
            Self::Apk => "apk",
            Self::Pkg => "pkg",
            Self::Pacman => "pacman",
            Self::Pip => "pip",
        }
    }

    fn pins_versions(self) -> bool {
        !matches!(self, Self::Pkg | Self::Pacman)
    }

    fn installed(self, env: &Env, name: &str) -> Result<Installed, BackendError> {
        match self {
            Self::Apt => dpkg_installed(&env.root, name),
            Self::Apk => apk_installed(&env.root, name),
            Self::Dnf | Self::Yum | Self::Zypper => {
                let cmd = with_root_option(
                    &env.root,
                    Reach::Observe,
                    "rpm",
                    "--root",
                    &["-q", "--qf", "%{EPOCH}:%{VERSION}-%{RELEASE}\\n", name],
                )?;
                let out = env.runner.run(&cmd)?;
                Ok(if out.success() {
                    let v = first_line(&out.stdout);
                    // rpm prints "(none)" for a package without an epoch.
                    Installed::Version(v.strip_prefix("(none):").unwrap_or(&v).to_string())
                } else {
                    Installed::No
                })
            }
            Self::Pkg => {
                let cmd = with_root_option(
                    &env.root,
                    Reach::Observe,
                    "pkg",
                    "-c",
                    &["query", "%v", name],
                )?;
                let out = env.runner.run(&cmd)?;
                Ok(if out.success() {
                    Installed::Version(first_line(&out.stdout))
                } else {
                    Installed::No
                })
            }
            Self::Pacman => {
                let cmd =
                    with_root_option(&env.root, Reach::Observe, "pacman", "--root", &["-Q", name])?;
                let out = env.runner.run(&cmd)?;
                Ok(if out.success() {
                    let line = first_line(&out.stdout);
                    Installed::Version(line.split_whitespace().nth(1).unwrap_or("").to_string())
                } else {
                    Installed::No
                })
            }
            Self::Pip => {
                let cmd = pip(&env.root, Reach::Observe, &["show", name])?;
                let out = env.runner.run(&cmd)?;
                if !out.success() {
                    return Ok(Installed::No);
                }
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(Installed::Version(
                    text.lines()
                        .find_map(|l| l.strip_prefix("Version:"))
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                ))
            }
        }
    }

    fn install(
        self,
        env: &Env,
        name: &str,
        version: Option<&str>,
        installed: &Installed,
    ) -> Result<ProcessSpec, BackendError> {
        let root = &env.root;
        let cmd = match self {
            Self::Apt => {
                let target = version.map_or(name.to_string(), |v| format!("{name}={v}"));
                let mut args = vec!["install", "-y", "-q"];
                if version.is_some() {
                    args.push("--allow-downgrades");
                }
                args.push(&target);
                return apt(root, &args);
            }
            Self::Dnf | Self::Yum => {
                let target = version.map_or(name.to_string(), |v| format!("{name}-{v}"));
                in_root(
                    root,
                    changes(Effect::Install),
                    self.name(),
                    &["-y", "install", &target],
                    &[],
                )?
            }
            Self::Zypper => {
                let target = version.map_or(name.to_string(), |v| format!("{name}={v}"));
                let mut args = vec!["--non-interactive", "install"];
                if version.is_some() && *installed != Installed::No {
                    args.push("--oldpackage");
                }
                args.push(&target);
                in_root(root, changes(Effect::Install), "zypper", &args, &[])?
            }
            Self::Apk => {
                let target = version.map_or(name.to_string(), |v| format!("{name}={v}"));
                with_root_option(
                    root,
                    changes(Effect::Install),
                    "apk",
                    "--root",
                    &["add", &target],
                )?
            }
            Self::Pkg => with_root_option(
                root,
                changes(Effect::Install),
                "pkg",
                "-c",
                &["install", "-y", name],
            )?
            .clear_env(vec![
                ("PATH".into(), super::TOOL_PATH.into()),
                ("ASSUME_ALWAYS_YES".into(), "yes".into()),
            ]),
            Self::Pacman => with_root_option(
                root,
                changes(Effect::Install),
                "pacman",
                "--root",
                &["-S", "--noconfirm", "--needed", name],
            )?,
            Self::Pip => {
                let target = version.map_or(name.to_string(), |v| format!("{name}=={v}"));
                pip(
                    root,
                    changes(Effect::Install),
                    &[
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        &target,
                    ],
                )?
            }
        };
        Ok(cmd.timeout(PACKAGE_TIMEOUT))
    }

    fn remove(self, env: &Env, name: &str) -> Result<ProcessSpec, BackendError> {
        let root = &env.root;
        let cmd = match self {
            Self::Apt => return apt(root, &["remove", "-y", "-q", name]),
            Self::Dnf | Self::Yum => in_root(
                root,
                changes(Effect::Install),
                self.name(),
                &["-y", "remove", name],
                &[],
            )?,
            Self::Zypper => in_root(
                root,
                changes(Effect::Install),
                "zypper",
                &["--non-interactive", "remove", name],
                &[],
            )?,
            Self::Apk => with_root_option(
                root,
                changes(Effect::Install),
                "apk",
                "--root",
                &["del", name],
            )?,
            Self::Pkg => with_root_option(
                root,
                changes(Effect::Install),
                "pkg",
                "-c",
                &["delete", "-y", name],
            )?,
            Self::Pacman => with_root_option(
                root,
                changes(Effect::Install),
                "pacman",
                "--root",
                &["-R", "--noconfirm", name],
            )?,
            Self::Pip => pip(root, changes(Effect::Install), &["uninstall", "-y", name])?,
        };
        Ok(cmd.timeout(PACKAGE_TIMEOUT))
    }
}

fn apt(root: &Root, args: &[&str]) -> Result<ProcessSpec, BackendError> {
    Ok(in_root(
        root,
        changes(Effect::Install),
        "apt-get",
        args,
        &[("DEBIAN_FRONTEND", "noninteractive")],
    )?
    .timeout(PACKAGE_TIMEOUT))
}

fn pip(root: &Root, on_guest: Reach, args: &[&str]) -> Result<ProcessSpec, BackendError> {
    let mut all = vec!["-m", "pip"];
    all.extend_from_slice(args);
    in_root(root, on_guest, "python3", &all, &[])
}

/// dpkg's database (`/var/lib/dpkg/status`): the version of `name` when its status is
/// `install ok installed` (any architecture).
pub fn dpkg_installed(root: &Root, name: &str) -> Result<Installed, BackendError> {
    let Some(bytes) = root.read_optional("/var/lib/dpkg/status")? else {
        return Ok(Installed::No);
    };
    let text = String::from_utf8_lossy(&bytes);
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        if field("Package") == Some(name)
            && field("Status").is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"))
        {
            return Ok(Installed::Version(
                field("Version").unwrap_or("").to_string(),
            ));
        }
    }
    Ok(Installed::No)
}

/// apk's database (`/lib/apk/db/installed`): `P:name` then `V:version`.
pub fn apk_installed(root: &Root, name: &str) -> Result<Installed, BackendError> {
    let Some(bytes) = root.read_optional("/lib/apk/db/installed")? else {
        return Ok(Installed::No);
    };
    let text = String::from_utf8_lossy(&bytes);
    for stanza in text.split("\n\n") {
        let field = |key: &str| stanza.lines().find_map(|l| l.strip_prefix(key));
        if field("P:") == Some(name) {
            return Ok(Installed::Version(field("V:").unwrap_or("").to_string()));
        }
    }
    Ok(Installed::No)
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::NullBackend;
    use guestd_testkit::FakeRunner;
    use std::sync::Arc;

    const STATUS: &str = "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n\n\
                          Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n";

    fn env(d: &tempfile::TempDir, runner: Arc<FakeRunner>) -> Env {
        Env {
            root: Root::sandbox(d.path()).unwrap(),
            runner,
            backend: Arc::new(NullBackend),
        }
    }

    fn lines(env: &Env, plan: &ResourcePlan) -> Vec<String> {
        let base = env.root.base().unwrap().display().to_string();
        plan.plan
            .commands
            .iter()
            .map(|c| c.command.command_line().replace(&base, "ROOT"))
            .collect()
    }

    fn spec(name: &str, version: Option<&str>, ensure: Ensure) -> PackageSpec {
        PackageSpec {
            name: name.into(),
            version: version.map(Into::into),
            ensure,
            source: PackageSource::System,
        }
    }

    #[test]
    fn apt_reads_dpkg_status() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(d.path().join("var/lib/dpkg/status"), STATUS).unwrap();
        let env = env(&d, Arc::new(FakeRunner::new()));
        let deb = OsFamily::Debian;
        assert!(
            plan_package(deb, &env, &spec("hello", None, Ensure::Present))
                .unwrap()
                .is_unchanged()
        );
        assert!(
            plan_package(deb, &env, &spec("hello", Some("2.10-3"), Ensure::Present))
                .unwrap()
                .is_unchanged()
        );
        let plan = plan_package(deb, &env, &spec("hello", Some("2.9-1"), Ensure::Present)).unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["chroot ROOT apt-get install -y -q --allow-downgrades hello=2.9-1"]
        );
        assert_eq!(plan.changes, ["hello 2.10-3 -> 2.9-1"]);
        let cmd = &plan.plan.commands[0].command;
        assert!(
            cmd.env
                .as_ref()
                .unwrap()
                .contains(&("DEBIAN_FRONTEND".into(), "noninteractive".into()))
        );
        let plan = plan_package(deb, &env, &spec("gone", None, Ensure::Present)).unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["chroot ROOT apt-get install -y -q gone"]
        );
        let plan = plan_package(deb, &env, &spec("hello", None, Ensure::Absent)).unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["chroot ROOT apt-get remove -y -q hello"]
        );
        assert!(
            plan_package(deb, &env, &spec("gone", None, Ensure::Absent))
                .unwrap()
                .is_unchanged()
        );
    }

    #[test]
    fn rpm_managers_and_pins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        std::fs::write(d.path().join("usr/bin/dnf"), "").unwrap();
        let runner = Arc::new(FakeRunner::new());
        runner.respond("rpm", 0, "(none):2.4.57-5.el9\n");
        let env = env(&d, runner.clone());
        let rh = OsFamily::RedHat;
        assert!(
            plan_package(rh, &env, &spec("httpd", Some("2.4.57"), Ensure::Present))
                .unwrap()
                .is_unchanged()
        );
        let plan = plan_package(rh, &env, &spec("httpd", Some("2.4.51"), Ensure::Present)).unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["chroot ROOT dnf -y install httpd-2.4.51"]
        );
        let plan = plan_package(
            OsFamily::Suse,
            &env,
            &spec("httpd", Some("2.4.51"), Ensure::Present),
        )
        .unwrap();
        assert_eq!(
            lines(&env, &plan),
            ["chroot ROOT zypper --non-interactive install --oldpackage httpd=2.4.51"]
        );
        assert!(runner.lines().iter().any(|l| l.contains("rpm --root")
            && l.ends_with("-q --qf %{EPOCH}:%{VERSION}-%{RELEASE}\\n httpd")));
        let err = plan_package(
            OsFamily::FreeBsd,
            &env,
            &spec("nginx", Some("1.2"), Ensure::Present),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pkg cannot install a given version of a package"
        );
    }

    #[test]
    fn apk_and_pip() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/apk/db")).unwrap();
        std::fs::write(
            d.path().join("lib/apk/db/installed"),
            "C:x\nP:musl\nV:1.2.4-r2\n\nP:curl\nV:8.5.0-r0\n",
        )
        .unwrap();
        let runner = Arc::new(FakeRunner::new());
        runner.respond("chroot", 1, "");
        let env = env(&d, runner);
        assert!(
            plan_package(
                OsFamily::Alpine,
                &env,
                &spec("curl", Some("8.5.0-r0"), Ensure::Present)
            )
            .unwrap()
            .is_unchanged()
        );
        let plan =
            plan_package(OsFamily::Alpine, &env, &spec("jq", None, Ensure::Present)).unwrap();
        assert_eq!(lines(&env, &plan), ["apk --root ROOT add jq"]);
        let mut pip_spec = spec("requests", Some("2.31.0"), Ensure::Present);
        pip_spec.source = PackageSource::Pip;
        let plan = plan_package(OsFamily::Debian, &env, &pip_spec).unwrap();
        assert_eq!(
            lines(&env, &plan),
            [
                "chroot ROOT python3 -m pip install --disable-pip-version-check --no-input requests==2.31.0"
            ]
        );
    }

    #[test]
    fn versions() {
        assert!(version_matches("1:2.4-1", "2.4-1"));
        assert!(version_matches("2.4-1.el9", "2.4"));
        assert!(!version_matches("2.4-1.el9", "2.4-2"));
        assert!(!version_matches("2.40-1", "2.4"));
    }
}
