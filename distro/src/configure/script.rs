//! `run`: a script that already exists in `[configure] scripts_dir`, run with parameters in its
//! environment.
//!
//! The host names a script and gives parameters; it never sends code. At every run, before
//! anything else, the script is opened by handle (`Root::open_private`): the scripts directory
//! and every directory above it must belong to root and be writable by nobody else, the script
//! must be a regular file (not a link) owned by root, not writable by group or others, and
//! executable. Only root can then change what runs, and a document cannot either: `configure`
//! refuses file, directory and archive writes into the scripts directory.
//!
//! The script runs with an empty environment plus `PATH`, `LANG=C.UTF-8`,
//! `GUESTD_CONFIGURE_ID`, `GUESTD_RESOURCE` and the parameters (names and values checked by
//! `guestd_core::configure`: no control characters, bounded, no name that changes how a
//! program starts), with no arguments and no shell in between. On the guest itself it runs as
//! it is; under `--root DIR` it runs as `chroot DIR SCRIPT`, i.e. inside that tree (chroot is not
//! a security boundary: the script is the guest administrator's own code and runs as root).
//! Whatever the root, the command is classified [`Effect::Script`]: under `--root` the sandbox
//! runs it only when `[sandbox] allow_effects` lists `script`, and reports it as not run
//! otherwise.

use guestd_core::configure::{ResourceContext, ResourcePlan, RunSpec};
use guestd_core::{BackendError, Effect, Env, PlannedProcess, ProcessSpec, RootError};

use super::{TOOL_PATH, join, sandbox_dir};
use crate::OsFamily;

/// Plan a `run` resource: check the script (see the module docs) and build its command.
pub fn plan_run(
    family: OsFamily,
    env: &Env,
    spec: &RunSpec,
    context: &ResourceContext<'_>,
) -> Result<ResourcePlan, BackendError> {
    if family == OsFamily::Windows {
        return Err(BackendError::Unsupported("run on Windows".into()));
    }
    let dir = context.settings.scripts_dir.as_str();
    let path = check_script(env, dir, &spec.script)?;
    let mut out = ResourcePlan::default();
    if let Some(creates) = &spec.creates {
        if env.root.exists(creates) || env.root.is_symlink(creates) {
            out.note(format!("not run: '{creates}' exists"));
            return Ok(out);
        }
    }
    if spec.refresh && !context.dependency_changed {
        out.note("not run: no resource it comes after changed in this run");
        return Ok(out);
    }
    out.change(format!("run {}", spec.script));
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), TOOL_PATH.into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("GUESTD_CONFIGURE_ID".into(), context.run_id.into()),
        ("GUESTD_RESOURCE".into(), context.resource.into()),
    ];
    vars.extend(
        spec.params
            .iter()
            .map(|(name, value)| (name.clone(), value.to_string())),
    );
    let cmd = match sandbox_dir(&env.root)? {
        None => ProcessSpec::new(&path),
        Some(base) => ProcessSpec::new("chroot").arg(base).arg(&path),
    };
    let timeout = spec.timeout.unwrap_or(context.settings.script_timeout);
    out.plan.commands.push(PlannedProcess::from(
        cmd.clear_env(vars).timeout(timeout).effect(Effect::Script),
    ));
    Ok(out)
}

/// The script's guest path after the checks of the module docs.
pub fn check_script(env: &Env, dir: &str, name: &str) -> Result<String, BackendError> {
    guestd_core::configure::check_script_name(name)
        .map_err(|e| BackendError::Invalid(e.to_string()))?;
    let path = join(dir, name);
    let (_, meta) = env.root.open_private(&path).map_err(|e| match e {
        RootError::NotPrivate(p) => BackendError::Invalid(format!(
            "'{p}' can be changed by an account other than root: scripts_dir, the directories \
             above it and each script must belong to root and not be writable by group or \
             others"
        )),
        RootError::IsLink(_) => BackendError::Invalid(format!(
            "script '{name}' is a symbolic link; only regular files in scripts_dir are run"
        )),
        e if e.is_not_found() => {
            BackendError::Invalid(format!("no script '{name}' in scripts_dir '{dir}'"))
        }
        other => BackendError::Invalid(format!("script '{name}': {other}")),
    })?;
    if cfg!(unix) && meta.mode & 0o100 == 0 {
        return Err(BackendError::Invalid(format!(
            "script '{name}' is not executable"
        )));
    }
    Ok(path)
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::configure::ConfigureSettings;
    use guestd_core::{NullBackend, Root};
    use guestd_testkit::FakeRunner;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use zeroize::Zeroizing;

    fn setup() -> (tempfile::TempDir, Env) {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("etc/guestd/scripts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("setup.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("setup.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let env = Env {
            root: Root::sandbox(d.path()).unwrap(),
            runner: Arc::new(FakeRunner::new()),
            backend: Arc::new(NullBackend),
        };
        (d, env)
    }

    fn spec(script: &str) -> RunSpec {
        RunSpec {
            script: script.into(),
            params: vec![("APP_PORT".into(), Zeroizing::new("8080".into()))],
            creates: None,
            refresh: false,
            timeout: None,
        }
    }

    fn context(settings: &ConfigureSettings) -> ResourceContext<'_> {
        ResourceContext {
            settings,
            run_id: "c-1",
            resource: "setup",
            dependency_changed: false,
        }
    }

    #[test]
    fn runs_inside_the_root_with_only_its_parameters() {
        let (_d, env) = setup();
        let settings = ConfigureSettings::default();
        let plan = plan_run(
            OsFamily::Debian,
            &env,
            &spec("setup.sh"),
            &context(&settings),
        )
        .unwrap();
        let cmd = &plan.plan.commands[0].command;
        let base = env.root.base().unwrap().display().to_string();
        assert_eq!(
            cmd.command_line(),
            format!("chroot {base} /etc/guestd/scripts/setup.sh")
        );
        let vars = cmd.env.as_ref().unwrap();
        assert!(vars.contains(&("APP_PORT".into(), "8080".into())));
        assert!(vars.contains(&("GUESTD_RESOURCE".into(), "setup".into())));
        assert_eq!(vars.len(), 5);
        assert_eq!(cmd.timeout, settings.script_timeout);
    }

    #[test]
    fn creates_and_refresh_skip_the_run() {
        let (d, env) = setup();
        let settings = ConfigureSettings::default();
        std::fs::write(d.path().join("etc/done"), "").unwrap();
        let once = RunSpec {
            creates: Some("/etc/done".into()),
            ..spec("setup.sh")
        };
        let plan = plan_run(OsFamily::Debian, &env, &once, &context(&settings)).unwrap();
        assert!(plan.is_unchanged());
        assert!(plan.plan.commands.is_empty());
        let refresh = RunSpec {
            refresh: true,
            ..spec("setup.sh")
        };
        assert!(
            plan_run(OsFamily::Debian, &env, &refresh, &context(&settings))
                .unwrap()
                .is_unchanged()
        );
        let changed = ResourceContext {
            dependency_changed: true,
            ..context(&settings)
        };
        assert!(
            !plan_run(OsFamily::Debian, &env, &refresh, &changed)
                .unwrap()
                .is_unchanged()
        );
    }

    #[test]
    fn scripts_nobody_else_can_change_only() {
        let (d, env) = setup();
        let settings = ConfigureSettings::default();
        let dir = d.path().join("etc/guestd/scripts");
        let err = |name: &str| {
            plan_run(OsFamily::Debian, &env, &spec(name), &context(&settings))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("missing.sh"),
            "no script 'missing.sh' in scripts_dir '/etc/guestd/scripts'"
        );
        assert!(err("../../bin/sh").contains("not a plain file name"));
        std::fs::write(dir.join("noexec.sh"), "").unwrap();
        assert_eq!(err("noexec.sh"), "script 'noexec.sh' is not executable");
        std::os::unix::fs::symlink("/bin/sh", dir.join("link.sh")).unwrap();
        assert!(err("link.sh").contains("symbolic link"));
        // A scripts directory others can write to, then a script others can write to.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = err("setup.sh");
        assert!(
            e.starts_with("'/etc/guestd/scripts' can be changed by an account other than root"),
            "{e}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("setup.sh"), std::fs::Permissions::from_mode(0o757))
            .unwrap();
        assert!(err("setup.sh").starts_with("'/etc/guestd/scripts/setup.sh' can be changed"));
    }
}
