//! `file` and `directory`: compared with what is at the path (read through `Root`: only regular
//! files, bounded, never through a link a user planted), changed by a plan of file changes
//! (atomic writes with mode and owner set on the open file, backups under
//! `/var/lib/guestd/backup`).
//!
//! A new file is 0644 and a new directory 0755, both root's, unless the resource says
//! otherwise; an existing one keeps whatever the resource does not name. Owners and groups
//! given by name are looked up in the guest's `/etc/passwd` and `/etc/group`.
//!
//! SELinux (Linux): when the guest has SELinux enabled (`/sys/fs/selinux/enforce` exists), the
//! label is read with `stat -c %C` and set with `chcon -h CONTEXT PATH`, or, for `"default"`,
//! checked with `restorecon -n -v` and set with `restorecon PATH`. Without SELinux (or under
//! `--root`, whose tree the running kernel's policy does not label) a requested context is
//! not applied and the report says so in its notes; elsewhere (FreeBSD, Windows) likewise.

use guestd_core::configure::{
    DirectorySpec, Ensure, FileSpec, Principal, ResourcePlan, SelinuxContext,
};
use guestd_core::{BackendError, Env, FileChange, PlannedProcess, ProcessSpec, Root, Snapshot};
use zeroize::Zeroizing;

use super::{first_line, resolve_group, resolve_user};
use crate::OsFamily;

/// Largest existing file read to compare it with the resource.
const COMPARE_LIMIT: u64 = 64 * 1024 * 1024;

fn owner_ids(
    family: OsFamily,
    root: &Root,
    owner: Option<&Principal>,
    group: Option<&Principal>,
) -> Result<(Option<u32>, Option<u32>), BackendError> {
    if family == OsFamily::Windows && (owner.is_some() || group.is_some()) {
        return Err(BackendError::Invalid(
            "owner and group are not supported on Windows (a file takes its directory's ACL)"
                .into(),
        ));
    }
    Ok((
        owner.map(|o| resolve_user(root, o)).transpose()?,
        group.map(|g| resolve_group(root, g)).transpose()?,
    ))
}

/// Plan a `file` resource.
pub fn plan_file(
    family: OsFamily,
    env: &Env,
    spec: &FileSpec,
) -> Result<ResourcePlan, BackendError> {
    let root = &env.root;
    let path = spec.path.as_str();
    let mut out = ResourcePlan::default();
    if root.is_dir(path) && !root.is_symlink(path) {
        return Err(BackendError::Invalid(format!("'{path}' is a directory")));
    }
    let current = root.snapshot(path, COMPARE_LIMIT)?;
    if spec.ensure == Ensure::Absent {
        if current != Snapshot::Absent {
            out.change("remove");
            out.plan
                .changes
                .push(FileChange::Remove { path: path.into() });
        }
        return Ok(out);
    }
    let (uid, gid) = owner_ids(family, root, spec.owner.as_ref(), spec.group.as_ref())?;
    let (old_contents, old_meta) = match &current {
        Snapshot::File { contents, meta } => (Some(contents.clone()), Some(*meta)),
        Snapshot::Absent => (None, None),
        Snapshot::Link(target) => {
            out.change(format!(
                "replace the symbolic link (to {}) with a file",
                target.display()
            ));
            (None, None)
        }
        Snapshot::Unread { reason, .. } => {
            // Root does not read it (it could be another file's link); it can be replaced.
            if spec.content.is_none() {
                return Err(BackendError::Invalid(format!(
                    "'{path}' {reason}, in a directory an unprivileged user controls: guestd \
                     does not read it, and the resource gives no content to replace it with"
                )));
            }
            out.change(format!(
                "replace without comparing (the existing file {reason}, in a directory an \
                 unprivileged user controls, and is not read)"
            ));
            (None, None)
        }
    };
    let contents: Zeroizing<Vec<u8>> = match (&spec.content, &old_contents) {
        (Some(new), _) => new.clone(),
        (None, Some(old)) => old.clone(),
        (None, None) => {
            return Err(BackendError::Invalid(format!(
                "'{path}' does not exist and the resource gives no content"
            )));
        }
    };
    let mode = spec
        .mode
        .or(old_meta.map(|m| m.mode & 0o7777))
        .unwrap_or(0o644);
    let uid = uid.or(old_meta.map(|m| m.uid)).unwrap_or(0);
    let gid = gid.or(old_meta.map(|m| m.gid)).unwrap_or(0);
    match (&old_contents, old_meta) {
        (None, _) if matches!(current, Snapshot::Absent) => out.change(format!(
            "create ({} bytes, mode {mode:04o})",
            contents.len()
        )),
        (None, _) => {}
        (Some(old), Some(meta)) => {
            if *old != contents {
                out.change(format!(
                    "content ({} -> {} bytes)",
                    old.len(),
                    contents.len()
                ));
            }
            if meta.mode & 0o7777 != mode {
                out.change(format!("mode {:04o} -> {mode:04o}", meta.mode & 0o7777));
            }
            if (meta.uid, meta.gid) != (uid, gid) {
                out.change(format!("owner {}:{} -> {uid}:{gid}", meta.uid, meta.gid));
            }
        }
        (Some(_), None) => unreachable!("a read file has its metadata"),
    }
    if !out.is_unchanged() {
        out.plan.changes.push(FileChange::write(
            path,
            contents.to_vec(),
            guestd_core::WriteOptions::mode(mode)
                .owner(uid, gid)
                .exact(),
        ));
    }
    if let Some(context) = &spec.selinux {
        plan_label(
            family,
            env,
            path,
            context,
            current == Snapshot::Absent,
            &mut out,
        )?;
    }
    Ok(out)
}

/// Plan a `directory` resource.
pub fn plan_directory(
    family: OsFamily,
    env: &Env,
    spec: &DirectorySpec,
) -> Result<ResourcePlan, BackendError> {
    let root = &env.root;
    let path = spec.path.as_str();
    let mut out = ResourcePlan::default();
    let is_dir = root.is_dir(path);
    if !is_dir && root.exists(path) {
        return Err(BackendError::Invalid(format!(
            "'{path}' exists and is not a directory"
        )));
    }
    if spec.ensure == Ensure::Absent {
        if is_dir {
            if !root.read_dir(path)?.is_empty() {
                return Err(BackendError::Invalid(format!(
                    "'{path}' is not empty; only an empty directory is removed"
                )));
            }
            out.change("remove");
            out.plan
                .changes
                .push(FileChange::RemoveDir { path: path.into() });
        }
        return Ok(out);
    }
    let (uid, gid) = owner_ids(family, root, spec.owner.as_ref(), spec.group.as_ref())?;
    let current = if is_dir {
        Some(root.metadata(path)?)
    } else {
        None
    };
    let mode = spec
        .mode
        .or(current.map(|m| m.mode & 0o7777))
        .unwrap_or(0o755);
    let uid = uid.or(current.map(|m| m.uid)).unwrap_or(0);
    let gid = gid.or(current.map(|m| m.gid)).unwrap_or(0);
    match current {
        None => out.change(format!("create (mode {mode:04o})")),
        Some(meta) => {
            if meta.mode & 0o7777 != mode {
                out.change(format!("mode {:04o} -> {mode:04o}", meta.mode & 0o7777));
            }
            if (meta.uid, meta.gid) != (uid, gid) {
                out.change(format!("owner {}:{} -> {uid}:{gid}", meta.uid, meta.gid));
            }
        }
    }
    if !out.is_unchanged() {
        out.plan.changes.push(FileChange::Directory {
            path: path.into(),
            mode,
            owner: if family == OsFamily::Windows {
                None
            } else {
                Some((uid, gid))
            },
        });
    }
    if let Some(context) = &spec.selinux {
        plan_label(family, env, path, context, current.is_none(), &mut out)?;
    }
    Ok(out)
}

/// Whether the guest labels files with SELinux: its kernel has selinuxfs mounted. Never for a
/// `--root` tree (the running kernel's policy is this machine's, not the tree's).
pub fn selinux_enabled(family: OsFamily, root: &Root) -> bool {
    !matches!(family, OsFamily::FreeBsd | OsFamily::Windows)
        && !root.is_sandbox()
        && root.exists("/sys/fs/selinux/enforce")
}

fn plan_label(
    family: OsFamily,
    env: &Env,
    path: &str,
    context: &SelinuxContext,
    created: bool,
    out: &mut ResourcePlan,
) -> Result<(), BackendError> {
    if !selinux_enabled(family, &env.root) {
        out.note(
            "SELinux is not enabled for this root: the SELinux context is not applied".to_string(),
        );
        return Ok(());
    }
    let host = env.root.resolve_nofollow(path)?;
    let host = host
        .to_str()
        .ok_or_else(|| BackendError::Invalid(format!("'{path}' is not UTF-8")))?;
    match context {
        SelinuxContext::Exact(want) => {
            let current = if created {
                None
            } else {
                let out = env.runner.run(&tool("stat", &["-c", "%C", host]))?;
                out.success().then(|| first_line(&out.stdout))
            };
            if current.as_deref() != Some(want.as_str()) {
                out.change(format!(
                    "SELinux context {} -> {want}",
                    current.as_deref().unwrap_or("(none)")
                ));
                out.plan
                    .commands
                    .push(PlannedProcess::from(tool("chcon", &["-h", want, host])));
            }
        }
        SelinuxContext::Default => {
            let differs = created || {
                let check = env.runner.run(&tool("restorecon", &["-n", "-v", host]))?;
                !check.stdout.iter().all(u8::is_ascii_whitespace)
            };
            if differs {
                out.change("SELinux context -> the policy's default");
                out.plan
                    .commands
                    .push(PlannedProcess::from(tool("restorecon", &[host])));
            }
        }
    }
    Ok(())
}

/// `chcon`/`restorecon` on a path of the guest's tree: they change or read labels of the
/// guest's files, nothing beyond them.
fn tool(program: &str, args: &[&str]) -> ProcessSpec {
    ProcessSpec::new(program)
        .args(args.iter().copied())
        .clear_env(vec![
            ("PATH".into(), super::TOOL_PATH.into()),
            ("LC_ALL".into(), "C".into()),
        ])
        .timeout(super::TOOL_TIMEOUT)
        .root_local()
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use guestd_core::NullBackend;
    use guestd_testkit::FakeRunner;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    fn setup() -> (tempfile::TempDir, Env) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1001:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\napp:x:1001:\n").unwrap();
        let env = Env {
            root: Root::sandbox(d.path()).unwrap(),
            runner: Arc::new(FakeRunner::new()),
            backend: Arc::new(NullBackend),
        };
        (d, env)
    }

    fn file(path: &str, content: &str) -> FileSpec {
        FileSpec {
            path: path.into(),
            ensure: Ensure::Present,
            content: Some(Zeroizing::new(content.as_bytes().to_vec())),
            mode: None,
            owner: None,
            group: None,
            selinux: None,
        }
    }

    #[test]
    fn a_file_is_created_then_unchanged_then_its_mode_and_owner_change() {
        let (d, env) = setup();
        let spec = file("/etc/app.conf", "port=80\n");
        let plan = plan_file(OsFamily::Debian, &env, &spec).unwrap();
        assert_eq!(plan.changes, ["create (8 bytes, mode 0644)"]);
        guestd_core::apply(
            &plan.plan,
            &env.root,
            env.runner.as_ref(),
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(d.path().join("etc/app.conf")).unwrap(),
            b"port=80\n"
        );
        assert!(
            plan_file(OsFamily::Debian, &env, &spec)
                .unwrap()
                .is_unchanged()
        );
        let owned = FileSpec {
            mode: Some(0o640),
            owner: Some(Principal::Name("app".into())),
            group: Some(Principal::Id(1001)),
            ..spec.clone()
        };
        let plan = plan_file(OsFamily::Debian, &env, &owned).unwrap();
        assert_eq!(
            plan.changes,
            ["mode 0644 -> 0640", "owner 0:0 -> 1001:1001"]
        );
        guestd_core::apply(
            &plan.plan,
            &env.root,
            env.runner.as_ref(),
            Default::default(),
        )
        .unwrap();
        let md = std::fs::metadata(d.path().join("etc/app.conf")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o640);
        assert!(
            plan_file(OsFamily::Debian, &env, &owned)
                .unwrap()
                .is_unchanged()
        );
        // Without content the existing file keeps its content; its mode is managed.
        let meta_only = FileSpec {
            content: None,
            mode: Some(0o600),
            ..owned.clone()
        };
        assert_eq!(
            plan_file(OsFamily::Debian, &env, &meta_only)
                .unwrap()
                .changes,
            ["mode 0640 -> 0600"]
        );
        let err = plan_file(
            OsFamily::Debian,
            &env,
            &FileSpec {
                path: "/etc/missing".into(),
                ..meta_only
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("gives no content"), "{err}");
        let unknown = FileSpec {
            owner: Some(Principal::Name("nobody-here".into())),
            ..owned
        };
        assert_eq!(
            plan_file(OsFamily::Debian, &env, &unknown)
                .unwrap_err()
                .to_string(),
            "no user 'nobody-here' on this guest"
        );
    }

    #[test]
    fn selinux_is_noted_when_it_is_not_enabled() {
        let (_d, env) = setup();
        let spec = FileSpec {
            selinux: Some(SelinuxContext::Exact("system_u:object_r:etc_t:s0".into())),
            ..file("/etc/x", "x")
        };
        let plan = plan_file(OsFamily::RedHat, &env, &spec).unwrap();
        assert_eq!(plan.changes.len(), 1);
        assert!(plan.plan.commands.is_empty());
        assert!(plan.notes[0].contains("SELinux is not enabled"), "{plan:?}");
    }

    #[test]
    fn directories() {
        let (d, env) = setup();
        let spec = DirectorySpec {
            path: "/srv/app".into(),
            ensure: Ensure::Present,
            mode: Some(0o750),
            owner: Some(Principal::Name("app".into())),
            group: None,
            selinux: None,
        };
        let plan = plan_directory(OsFamily::Debian, &env, &spec).unwrap();
        assert_eq!(plan.changes, ["create (mode 0750)"]);
        guestd_core::apply(
            &plan.plan,
            &env.root,
            env.runner.as_ref(),
            Default::default(),
        )
        .unwrap();
        let md = std::fs::metadata(d.path().join("srv/app")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        assert!(
            plan_directory(OsFamily::Debian, &env, &spec)
                .unwrap()
                .is_unchanged()
        );
        std::fs::write(d.path().join("srv/app/f"), "").unwrap();
        let absent = DirectorySpec {
            ensure: Ensure::Absent,
            ..spec
        };
        let err = plan_directory(OsFamily::Debian, &env, &absent).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
