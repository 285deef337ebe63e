//! `injectfile` and `file_inject` (spec §4.5): write one file the host sends.
//!
//! `injectfile` carries base64 of `path,contents` (split at the FIRST comma, contents may hold
//! commas and any bytes); `file_inject` carries `{"b64_path", "b64_file"}`. Both end in
//! [`inject`]: the path is checked (absolute, no `..`, the configured allow/deny prefixes, on the
//! path as sent here and on the path reached after links by `Root` at the moment of each
//! change), missing parent directories are created (by handle; a user's are handed over with
//! `fchown` on the open directory), the previous file is kept under
//! `guestd_core::BACKUP_DIR` (never beside it) and the new one replaces it atomically (readers
//! and a crash see the old or the new content, never a mix). An existing file keeps its mode
//! and owner; a new one is 0600 root, and inside a user's `~/.ssh` it belongs to that user
//! (directories created there 0700). `Root` refuses FIFOs, devices and sockets at the path and
//! never follows a link in a directory another account owns.

use std::path::{Component, Path, PathBuf, Prefix};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use guestd_core::plan::{ApplyOptions, FileChange, Plan, apply};
use guestd_core::{
    ApplyError, Context, Env, Handler, HandlerError, PathPolicy, Reply, Root, RootError,
    WriteOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;
use zeroize::Zeroizing;

/// Error strings sent to the host. The first is U1's (spec §4.5); the others are ours.
pub mod msg {
    pub const BAD_BASE64: &str = "Error doing base64 decoding of data";
    pub const NOT_A_STRING: &str = "Invalid arguments: injectfile expects a base64 string";
    pub const NO_COMMA: &str = "Invalid file injection data: no comma between path and contents";
    pub const BAD_OBJECT: &str = "Missing b64_path or b64_file in arguments";
    pub const PATH_NOT_UTF8: &str = "File path is not valid UTF-8";
}

/// `[inject]` in guestd.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectConfig {
    /// Largest file accepted, in bytes.
    pub max_size: u64,
    /// If not empty, only paths under one of these prefixes may be written.
    pub allow: Vec<String>,
    /// Paths under these prefixes may never be written (wins over `allow`).
    pub deny: Vec<String>,
    /// Previous versions kept under `/var/lib/guestd/backup/<path>.<n>` (0 keeps none).
    pub keep_backups: usize,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            max_size: 16 * 1024 * 1024,
            allow: Vec::new(),
            deny: Vec::new(),
            keep_backups: 1,
        }
    }
}

/// `injectfile`: value = base64(`path,contents`).
#[derive(Debug, Clone, Default)]
pub struct InjectFileHandler {
    config: InjectConfig,
}

impl InjectFileHandler {
    pub fn new(config: InjectConfig) -> Self {
        Self { config }
    }
}

impl Handler for InjectFileHandler {
    fn name(&self) -> &'static str {
        "injectfile"
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let Value::String(text) = value else {
            return Err(HandlerError::failed(msg::NOT_A_STRING));
        };
        let data = decode_b64(text)?;
        let comma = data
            .iter()
            .position(|&b| b == b',')
            .ok_or_else(|| HandlerError::failed(msg::NO_COMMA))?;
        let path = path_text(&data[..comma])?;
        let contents = Zeroizing::new(data[comma + 1..].to_vec());
        inject(ctx.env, &self.config, &path, &contents)?;
        Ok(Reply::ok(""))
    }
}

/// `file_inject`: value = `{"b64_path": …, "b64_file": …}` (any key order).
#[derive(Debug, Clone, Default)]
pub struct FileInjectHandler {
    config: InjectConfig,
}

impl FileInjectHandler {
    pub fn new(config: InjectConfig) -> Self {
        Self { config }
    }
}

impl Handler for FileInjectHandler {
    fn name(&self) -> &'static str {
        "file_inject"
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let field = |key: &str| match value.get(key) {
            Some(Value::String(s)) => Ok(s.as_str()),
            _ => Err(HandlerError::failed(msg::BAD_OBJECT)),
        };
        let (b64_path, b64_file) = (field("b64_path")?, field("b64_file")?);
        let path = path_text(&decode_b64(b64_path)?)?;
        let contents = decode_b64(b64_file)?;
        inject(ctx.env, &self.config, &path, &contents)?;
        Ok(Reply::ok(""))
    }
}

/// Base64 as Python's `b64decode` takes it from nova: standard alphabet, whitespace ignored,
/// padding optional.
fn decode_b64(text: &str) -> Result<Zeroizing<Vec<u8>>, HandlerError> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    ENGINE
        .decode(compact)
        .map(Zeroizing::new)
        .map_err(|_| HandlerError::failed(msg::BAD_BASE64))
}

fn path_text(bytes: &[u8]) -> Result<String, HandlerError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| HandlerError::failed(msg::PATH_NOT_UTF8))
}

/// Write `contents` to `path` under `root` following the rules in the module docs.
pub fn inject(
    env: &Env,
    config: &InjectConfig,
    path: &str,
    contents: &[u8],
) -> Result<(), HandlerError> {
    check_path(path)?;
    if contents.len() as u64 > config.max_size {
        return Err(HandlerError::failed(format!(
            "File for '{path}' is too large: {} bytes, the limit is {}",
            contents.len(),
            config.max_size
        )));
    }
    // The path as sent is judged here; the path each change really reaches (links followed)
    // is judged again by `Root` at the moment of the change, so a race cannot get past it.
    let policy = PathPolicy::new(config.allow.clone(), config.deny.clone());
    if !policy.permits(path) {
        return Err(not_allowed(path));
    }
    let root = &env.root.with_write_policy(policy);
    if root.is_dir(path) {
        return Err(HandlerError::failed(format!(
            "Cannot inject '{path}': it is a directory"
        )));
    }
    let owner = ssh_owner(root, path);
    create_parents(root, path, owner.as_ref())?;
    let (uid, gid) = owner.as_ref().map_or((0, 0), |o| (o.uid, o.gid));
    let options = WriteOptions::mode(0o600).owner(uid, gid);
    let plan = Plan {
        changes: vec![FileChange::write(path, contents.to_vec(), options)],
        ..Plan::default()
    };
    let applied = apply(
        &plan,
        root,
        env.runner.as_ref(),
        ApplyOptions {
            keep_backups: config.keep_backups,
        },
    )
    .map_err(|e| match e {
        ApplyError::File {
            source: RootError::Denied(_),
            ..
        } => not_allowed(path),
        e => HandlerError::failed(format!("Cannot inject '{path}': {e}")),
    })?;
    sweep_stale_temps(root, path);
    info!(
        path,
        bytes = contents.len(),
        changed = !applied.changed.is_empty(),
        backups = ?applied.backups,
        "file injected"
    );
    Ok(())
}

fn not_allowed(path: &str) -> HandlerError {
    HandlerError::failed(format!(
        "Injecting '{path}' is not allowed by this guest's configuration"
    ))
}

/// Remove temp files an earlier guestd left beside `path` when it was killed mid-write.
/// `Root::write_atomic` names them `.<file>.guestd-tmp.<pid>.<n>` (older versions also wrote
/// `.<file>.bak.<n>.guestd-tmp.…` for backups kept beside the file); only those of other
/// processes are removed.
fn sweep_stale_temps(root: &Root, path: &str) {
    let p = Path::new(path);
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        return;
    };
    let name = name.to_string_lossy();
    let ours = std::process::id().to_string();
    for entry in root.read_dir(parent).unwrap_or_default() {
        let Some((file, rest)) = entry.split_once(".guestd-tmp.") else {
            continue;
        };
        let of_target = file == format!(".{name}")
            || file
                .strip_prefix(&format!(".{name}.bak."))
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if of_target && rest.split('.').next() != Some(ours.as_str()) {
            let stale = parent.join(&entry);
            match root.remove_file(&stale) {
                Ok(()) => info!(file = %stale.display(), "removed a temp file left by a crash"),
                Err(e) => tracing::warn!(error = %e, "cannot remove a stale temp file"),
            }
        }
    }
}

/// Absolute, no `..`, no NUL, names a file (not `/` or `dir/`).
fn check_path(path: &str) -> Result<(), HandlerError> {
    let p = Path::new(path);
    if path.contains('\0') {
        return Err(HandlerError::failed("File path contains a NUL byte"));
    }
    if !p.has_root() {
        return Err(HandlerError::failed(format!(
            "File path '{path}' is not absolute"
        )));
    }
    let local_drive = |c: &Component| match c {
        Component::Prefix(x) => matches!(x.kind(), Prefix::Disk(_) | Prefix::VerbatimDisk(_)),
        _ => true,
    };
    if !p.components().all(|c| local_drive(&c)) {
        return Err(HandlerError::failed(format!(
            "File path '{path}' is not on a local drive"
        )));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(HandlerError::failed(format!(
            "File path '{path}' contains '..'"
        )));
    }
    if path.ends_with('/') || path.ends_with('\\') || p.file_name().is_none() {
        return Err(HandlerError::failed(format!(
            "File path '{path}' does not name a file"
        )));
    }
    Ok(())
}

/// The account whose home holds `path`'s `.ssh`, from the guest's `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SshOwner {
    uid: u32,
    gid: u32,
    home: PathBuf,
    /// `<home>/.ssh`
    ssh_dir: PathBuf,
}

/// The owner of a file under some account's `~/.ssh`: the account that home belongs to. The
/// deepest home wins (a user whose home is `/` must not own every `/.ssh`-less path). Several
/// accounts often share a home (RHEL's `operator` has `/root`, FreeBSD's `toor` too): then
/// root when it is one of them (a root-owned key file is safe; `operator` owning root's keys is
/// not), the one account when they all are the same, and otherwise nobody (root-owned 0600,
/// which sshd's StrictModes may refuse, but which no account can rewrite).
fn ssh_owner(root: &Root, path: &str) -> Option<SshOwner> {
    let passwd = root.read_to_string("/etc/passwd").ok()?;
    let candidates: Vec<SshOwner> = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || !f[5].starts_with('/') {
                return None;
            }
            Some(SshOwner {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                ssh_dir: Path::new(f[5]).join(".ssh"),
            })
        })
        .filter(|o| Path::new(path).starts_with(&o.ssh_dir) && Path::new(path) != o.ssh_dir)
        .collect();
    let deepest = candidates
        .iter()
        .map(|o| o.ssh_dir.components().count())
        .max()?;
    let sharing: Vec<&SshOwner> = candidates
        .iter()
        .filter(|o| o.ssh_dir.components().count() == deepest)
        .collect();
    if let Some(superuser) = sharing.iter().find(|o| o.uid == 0) {
        return Some((*superuser).clone());
    }
    let first = sharing[0];
    if sharing
        .iter()
        .all(|o| (o.uid, o.gid) == (first.uid, first.gid))
    {
        return Some(first.clone());
    }
    tracing::warn!(
        home = %first.home.display(),
        accounts = sharing.len(),
        "several accounts share this home; the injected file stays root's"
    );
    None
}

/// Create missing parents: 0755 root, except the home and `~/.ssh` of the user the file is for
/// (0700, the user's) and any other `.ssh` directory (0700), so that sshd's StrictModes
/// accepts them. Each directory is created and then given its mode and owner through its own
/// handle; a link put in its place is refused.
fn create_parents(root: &Root, path: &str, owner: Option<&SshOwner>) -> Result<(), HandlerError> {
    let Some(parent) = Path::new(path).parent() else {
        return Ok(());
    };
    let missing: Vec<&Path> = parent
        .ancestors()
        .take_while(|dir| !root.is_dir(dir))
        .collect();
    for dir in missing.into_iter().rev() {
        let in_ssh = owner.filter(|o| dir.starts_with(&o.home));
        // sshd wants `.ssh` private even when the account is unknown (no passwd entry).
        let ssh_like = dir.components().any(|c| c.as_os_str() == ".ssh");
        let mode = if in_ssh.is_some() || ssh_like {
            0o700
        } else {
            0o755
        };
        let made = match in_ssh {
            Some(o) => root.create_dir_owned(dir, mode, o.uid, o.gid).map(drop),
            None => root.create_dir_all(dir, mode),
        };
        made.map_err(|e| match e {
            RootError::Denied(_) => not_allowed(path),
            e => HandlerError::failed(format!("Cannot create directory for '{path}': {e}")),
        })?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn env(root: &Root) -> Env {
        Env {
            root: root.clone(),
            runner: std::sync::Arc::new(guestd_core::SystemRunner),
            backend: std::sync::Arc::new(guestd_core::NullBackend),
        }
    }

    fn sandbox() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1001::/home/alice:/bin/sh\n",
        )
        .unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        (d, root)
    }

    #[test]
    fn path_checks() {
        for (path, want) in [
            ("etc/x", "is not absolute"),
            ("/etc/../x", "contains '..'"),
            ("/etc/", "does not name a file"),
            ("/", "does not name a file"),
            ("/a\0b", "NUL"),
        ] {
            let err = check_path(path).unwrap_err().to_string();
            assert!(err.contains(want), "{path}: {err}");
        }
        check_path("/root/.ssh/authorized_keys").unwrap();
    }

    #[test]
    fn ssh_owner_from_passwd() {
        let (_d, root) = sandbox();
        let o = ssh_owner(&root, "/home/alice/.ssh/authorized_keys").unwrap();
        assert_eq!((o.uid, o.gid), (1000, 1001));
        assert_eq!(ssh_owner(&root, "/root/.ssh/x").unwrap().uid, 0);
        assert_eq!(ssh_owner(&root, "/home/alice/notes"), None);
        assert_eq!(ssh_owner(&root, "/home/alice/.ssh"), None);
        assert_eq!(ssh_owner(&root, "/home/alice/.sshx/y"), None);
    }

    #[test]
    fn the_owner_of_a_shared_home_is_root_or_the_one_account() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        // RHEL's passwd: operator shares /root; two unrelated accounts share /srv/shared.
        fs::write(
            d.path().join("etc/passwd"),
            "operator:x:11:0:operator:/root:/sbin/nologin
\
             root:x:0:0:root:/root:/bin/bash
\
             bin:x:1:1:bin:/bin:/sbin/nologin
\
             a:x:2001:2001::/srv/shared:/bin/sh
\
             b:x:2002:2002::/srv/shared:/bin/sh
\
             alice:x:1000:1001::/home/alice:/bin/sh
\
             alice2:x:1000:1001::/home/alice:/bin/sh
",
        )
        .unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        let o = ssh_owner(&root, "/root/.ssh/authorized_keys").unwrap();
        assert_eq!((o.uid, o.gid), (0, 0), "never operator");
        assert_eq!(ssh_owner(&root, "/srv/shared/.ssh/authorized_keys"), None);
        assert_eq!(ssh_owner(&root, "/home/alice/.ssh/k").unwrap().uid, 1000);
        inject(
            &env(&root),
            &InjectConfig::default(),
            "/root/.ssh/authorized_keys",
            b"ssh-ed25519 AAAA root\n",
        )
        .unwrap();
        let md = fs::metadata(d.path().join("root/.ssh/authorized_keys")).unwrap();
        assert_eq!((md.uid(), md.gid()), (0, 0));
    }

    #[test]
    fn policy_is_judged_on_the_path_sent_and_on_the_path_reached() {
        let (d, root) = sandbox();
        let cfg = InjectConfig {
            allow: vec!["/root".into(), "/srv".into()],
            deny: vec!["/root/secret".into(), "/etc".into()],
            ..InjectConfig::default()
        };
        let e = env(&root);
        inject(&e, &cfg, "/root/.ssh/authorized_keys", b"k\n").unwrap();
        for denied in ["/rootkit/x", "/root/secret/x", "/etc/passwd"] {
            let err = inject(&e, &cfg, denied, b"x").unwrap_err().to_string();
            assert_eq!(
                err,
                format!("Injecting '{denied}' is not allowed by this guest's configuration")
            );
        }
        fs::create_dir_all(d.path().join("srv")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("srv/etc")).unwrap();
        let err = inject(&e, &cfg, "/srv/etc/passwd", b"x").unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
        let err = inject(&e, &cfg, "/srv/etc/new/x", b"x").unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
        assert!(!d.path().join("etc/new").exists());
        assert_eq!(
            fs::read_to_string(d.path().join("etc/passwd")).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1001::/home/alice:/bin/sh\n"
        );
        inject(&e, &InjectConfig::default(), "/srv/etc/motd", b"hi").unwrap();
    }

    #[test]
    fn backups_are_kept_outside_the_target_directory() {
        let (d, root) = sandbox();
        fs::create_dir_all(d.path().join("etc/cron.d")).unwrap();
        fs::write(d.path().join("etc/cron.d/job"), b"old\n").unwrap();
        inject(
            &env(&root),
            &InjectConfig::default(),
            "/etc/cron.d/job",
            b"new\n",
        )
        .unwrap();
        assert_eq!(root.read_dir("/etc/cron.d").unwrap(), vec!["job"]);
        assert_eq!(
            root.read("/var/lib/guestd/backup/etc/cron.d/job.1")
                .unwrap(),
            b"old\n"
        );
    }

    #[test]
    fn limits_and_directories() {
        let (d, root) = sandbox();
        let cfg = InjectConfig {
            max_size: 4,
            ..InjectConfig::default()
        };
        let err = inject(&env(&root), &cfg, "/x", b"12345")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "File for '/x' is too large: 5 bytes, the limit is 4");
        assert!(!d.path().join("x").exists());
        let err = inject(&env(&root), &cfg, "/etc", b"1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn stale_temp_files_of_other_processes_are_swept() {
        let (d, root) = sandbox();
        let stale = d.path().join("etc/.motd.guestd-tmp.999999999.3");
        let stale_bak = d.path().join("etc/.motd.bak.12.guestd-tmp.999999999.0");
        let other = d.path().join("etc/.other.guestd-tmp.999999999.3");
        let ours = d
            .path()
            .join(format!("etc/.motd.guestd-tmp.{}.77", std::process::id()));
        for f in [&stale, &stale_bak, &other, &ours] {
            fs::write(f, b"half").unwrap();
        }
        inject(&env(&root), &InjectConfig::default(), "/etc/motd", b"hi").unwrap();
        assert!(!stale.exists());
        assert!(!stale_bak.exists());
        assert!(ours.exists(), "a temp file of this process may be in use");
        assert!(
            other.exists(),
            "only temps of the injected file are touched"
        );
    }

    #[test]
    fn new_dirs_under_ssh_belong_to_the_user() {
        let (d, root) = sandbox();
        inject(
            &env(&root),
            &InjectConfig::default(),
            "/home/alice/.ssh/authorized_keys",
            b"ssh-ed25519 AAAA alice\n",
        )
        .unwrap();
        let md = |p: &str| fs::metadata(d.path().join(p)).unwrap();
        assert_eq!(md("home").permissions().mode() & 0o7777, 0o755);
        assert_eq!(md("home").uid(), 0);
        assert_eq!(md("home/alice").permissions().mode() & 0o7777, 0o700);
        assert_eq!(md("home/alice").uid(), 1000);
        assert_eq!(md("home/alice/.ssh").permissions().mode() & 0o7777, 0o700);
        assert_eq!(
            (md("home/alice/.ssh").uid(), md("home/alice/.ssh").gid()),
            (1000, 1001)
        );
        let f = md("home/alice/.ssh/authorized_keys");
        assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o600, 1000, 1001));
    }
}
