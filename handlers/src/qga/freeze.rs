//! `guest-fsfreeze-status`, `guest-fsfreeze-freeze`, `guest-fsfreeze-freeze-list`,
//! `guest-fsfreeze-thaw`: Linux FIFREEZE and FITHAW through util-linux `fsfreeze` (run by the
//! command runner, so tests use the fake runner), as qemu-ga does them and safer:
//!
//! - **Each filesystem once, by device.** The filesystems are qemu-ga's (`fsinfo::local_mounts`:
//!   a device's first mount; its later mounts, such as the bind mounts `PrivateTmp=` makes of
//!   `/`, are the same filesystem, and a second FIFREEZE of it fails with EBUSY). Types that
//!   cannot freeze (vfat `/boot/efi`, squashfs, iso9660, …) are skipped, and so is a filesystem
//!   whose FIFREEZE answers EOPNOTSUPP, as qemu-ga skips it.
//! - **The hook, as qemu-ga runs it**: `[qga] fsfreeze_hook` (`/etc/qemu/fsfreeze-hook`, the
//!   dispatcher of `/etc/qemu/fsfreeze-hook.d/*` that Debian's qemu-guest-agent ships) with
//!   `freeze` before freezing and `thaw` after thawing; a failing freeze hook aborts the freeze,
//!   the thaw hook runs after every thaw (also when a filesystem failed to thaw). It must belong
//!   to root and be writable by no one else (so must its directory), and runs with a timeout.
//! - **Never left frozen.** What is about to be frozen is recorded in
//!   `/run/guestd/fsfreeze.json` (through `Root`, before anything is frozen: nothing is written
//!   while frozen) and thawed by the auto-thaw timer (`[qga] freeze_timeout_secs`), when the
//!   daemon stops (SIGTERM, `systemctl restart`) and when it starts after a crash (the record
//!   exists), each time with the thaw hook if the freeze hook ran.
//! - While frozen, the dispatcher refuses every command that would write ([`FreezeFlag`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use guestd_core::{
    Context, Dialect, Effect, Env, FreezeFlag, Handler, HandlerError, Lifecycle, ProcessError,
    ProcessRunner, ProcessSpec, Reply, Root, WriteOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::args;
use super::fsinfo::local_mounts;

const FSFREEZE: &str = "fsfreeze";
/// What this agent froze (or is about to): thawed on the next start if it is still there.
pub const RECORD: &str = "/run/guestd/fsfreeze.json";
/// Filesystem types without FIFREEZE support (the kernel answers EOPNOTSUPP).
const UNFREEZABLE: [&str; 10] = [
    "vfat", "msdos", "exfat", "squashfs", "iso9660", "udf", "erofs", "cramfs", "romfs", "fuseblk",
];
/// How long one `fsfreeze` may take (a freeze waits for writes in flight to finish).
const PER_MOUNT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// How freezing is set up (`[qga]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeSettings {
    /// Frozen filesystems are thawed by themselves after this.
    pub auto_thaw: Duration,
    /// The fsfreeze hook (guest path); `None`: no hook.
    pub hook: Option<String>,
    /// How long one run of the hook may take.
    pub hook_timeout: Duration,
}

/// One filesystem this agent froze: its device (`major:minor`) and the mount point used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Frozen {
    device: String,
    mountpoint: String,
}

/// `/run/guestd/fsfreeze.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    /// In freeze order.
    frozen: Vec<Frozen>,
    /// Whether the freeze hook ran (then the thaw hook runs after the thaw).
    hook: bool,
}

/// Which filesystems this agent froze; shared by the four commands, the auto-thaw timer and
/// the daemon's start and stop ([`Lifecycle`]).
#[derive(Debug, Clone)]
pub struct Freezer {
    state: Arc<Mutex<State>>,
    flag: FreezeFlag,
    settings: Arc<FreezeSettings>,
}

#[derive(Debug, Default)]
struct State {
    /// Frozen by us, in freeze order.
    frozen: Vec<Frozen>,
    /// The freeze hook ran for the current freeze.
    hook_froze: bool,
    /// Bumped by every freeze and thaw, so a stale auto-thaw timer does nothing.
    generation: u64,
}

impl Freezer {
    /// `flag` is the dispatcher's ([`guestd_core::DispatcherBuilder::freeze_flag`]).
    pub fn new(flag: FreezeFlag, settings: FreezeSettings) -> Self {
        Self {
            state: Arc::default(),
            flag,
            settings: Arc::new(settings),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any filesystem is frozen by this agent.
    pub fn is_frozen(&self) -> bool {
        !self.lock().frozen.is_empty()
    }

    /// Freeze every freezable filesystem, or only those mounted at `only` (mount points that
    /// are not freezable filesystems are ignored, as qemu-ga ignores them). Returns how many
    /// were frozen.
    fn freeze(&self, env: &Env, only: Option<&[String]>) -> Result<usize, HandlerError> {
        let mut state = self.lock();
        if !state.frozen.is_empty() {
            return Err(HandlerError::failed(
                "the filesystems are already frozen; thaw them first",
            ));
        }
        let (root, runner) = (&env.root, env.runner.as_ref());
        let mut mounts = candidates(root, only)?;
        // Children before their parents, as qemu-ga does.
        mounts.reverse();
        let hook = self.hook(root)?;
        // Recorded before anything happens: from here on a crash leaves the record, and the
        // next start thaws. Nothing is written while frozen.
        write_record(
            root,
            &Record {
                frozen: mounts.clone(),
                hook: hook.is_some(),
            },
        )?;
        if let Some(hook) = &hook {
            if let Err(e) = self.run_hook(runner, hook, "freeze") {
                remove_record(root);
                return Err(e);
            }
        }
        state.hook_froze = hook.is_some();
        self.flag.set(true);
        for mount in &mounts {
            match freeze_one(runner, mount) {
                Ok(true) => state.frozen.push(mount.clone()),
                Ok(false) => {}
                Err(err) => {
                    warn!(mount = %mount.mountpoint, error = %err, "freeze failed; thawing what was frozen");
                    self.thaw_locked(env, &mut state);
                    return Err(err);
                }
            }
        }
        state.generation += 1;
        let count = state.frozen.len();
        if count == 0 {
            // Nothing froze: no thaw will come, nothing to keep (qemu-ga runs no thaw hook
            // here either).
            self.flag.set(false);
            state.hook_froze = false;
            remove_record(root);
            return Ok(0);
        }
        info!(
            count,
            mounts = ?state.frozen.iter().map(|f| f.mountpoint.as_str()).collect::<Vec<_>>(),
            auto_thaw_secs = self.settings.auto_thaw.as_secs(),
            "filesystems frozen"
        );
        let generation = state.generation;
        let this = self.clone();
        let timer_env = env.clone();
        std::thread::Builder::new()
            .name("fsfreeze-auto-thaw".into())
            .spawn(move || {
                std::thread::sleep(this.settings.auto_thaw);
                let mut state = this.lock();
                if state.generation == generation && !state.frozen.is_empty() {
                    warn!("no guest-fsfreeze-thaw within the timeout; thawing automatically");
                    this.thaw_locked(&timer_env, &mut state);
                }
            })
            .map_err(|e| {
                // Without the timer a lost host would leave us frozen: undo at once.
                self.thaw_locked(env, &mut state);
                HandlerError::failed(format!("cannot start the auto-thaw timer: {e}"))
            })?;
        Ok(count)
    }

    /// `guest-fsfreeze-thaw`: thaw what this agent froze, then run the thaw hook (always, as
    /// qemu-ga does). Returns how many thawed; a failing thaw hook is the command's error.
    fn thaw(&self, env: &Env) -> Result<usize, HandlerError> {
        let mut state = self.lock();
        let done = std::mem::take(&mut state.frozen);
        let count = thaw_all(env.runner.as_ref(), &done);
        info!(count, "filesystems thawed");
        self.after_thaw(env, &mut state, true).map(|()| count)
    }

    /// Thaw what is frozen (the auto-thaw timer, the daemon stopping), with the thaw hook when
    /// the freeze hook ran.
    fn thaw_locked(&self, env: &Env, state: &mut State) {
        let done = std::mem::take(&mut state.frozen);
        let count = thaw_all(env.runner.as_ref(), &done);
        info!(count, "filesystems thawed");
        let hook = state.hook_froze;
        if let Err(e) = self.after_thaw(env, state, hook) {
            warn!(error = %e, "thaw hook failed");
        }
    }

    /// After a thaw: nothing is frozen any more; forget the record, then run the thaw hook
    /// when `hook` says so.
    fn after_thaw(&self, env: &Env, state: &mut State, hook: bool) -> Result<(), HandlerError> {
        state.generation += 1;
        state.hook_froze = false;
        self.flag.set(false);
        remove_record(&env.root);
        if !hook {
            return Ok(());
        }
        match self.hook(&env.root)? {
            Some(hook) => self.run_hook(env.runner.as_ref(), &hook, "thaw"),
            None => Ok(()),
        }
    }

    /// A previous guestd was killed while it held filesystems frozen: thaw them, and run the
    /// thaw hook if its freeze hook ran.
    fn recover(&self, env: &Env) {
        let root = &env.root;
        let record = match root.read_optional(RECORD) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Record>(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    warn!(record = RECORD, error = %e, "unreadable freeze record; removing it");
                    remove_record(root);
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                warn!(record = RECORD, error = %e, "cannot read the freeze record");
                return;
            }
        };
        warn!(
            count = record.frozen.len(),
            mounts = ?record.frozen.iter().map(|f| f.mountpoint.as_str()).collect::<Vec<_>>(),
            "a previous guestd stopped with filesystems frozen; thawing them"
        );
        // The devices may be mounted elsewhere now: thaw each where it is mounted.
        let current = candidates(root, None).unwrap_or_default();
        let targets: Vec<Frozen> = record
            .frozen
            .iter()
            .map(|f| {
                current
                    .iter()
                    .find(|c| c.device == f.device)
                    .cloned()
                    .unwrap_or_else(|| f.clone())
            })
            .collect();
        let count = thaw_all(env.runner.as_ref(), &targets);
        info!(count, "filesystems thawed");
        let mut state = self.lock();
        if let Err(e) = self.after_thaw(env, &mut state, record.hook) {
            warn!(error = %e, "thaw hook failed");
        }
    }

    /// The hook's host path, when one is configured and present; refused when anyone but
    /// root could change it.
    fn hook(&self, root: &Root) -> Result<Option<String>, HandlerError> {
        let Some(path) = self.settings.hook.as_deref() else {
            return Ok(None);
        };
        if !root.exists(path) {
            debug!(hook = path, "no fsfreeze hook");
            return Ok(None);
        }
        let parent = std::path::Path::new(path)
            .parent()
            .map_or("/".to_string(), |p| p.to_string_lossy().into_owned());
        for (what, guest) in [("hook", path), ("hook's directory", parent.as_str())] {
            let meta = root.metadata(guest).map_err(|e| {
                HandlerError::failed(format!("can't access fsfreeze hook '{path}': {e}"))
            })?;
            if meta.uid != 0 || meta.mode & 0o022 != 0 {
                warn!(
                    hook = path,
                    uid = meta.uid,
                    mode = format!("{:04o}", meta.mode),
                    what,
                    "refusing the fsfreeze hook"
                );
                return Err(HandlerError::failed(format!(
                    "refusing the fsfreeze hook '{path}': the {what} '{guest}' must belong to \
                     root and be writable by no one else (owner uid {}, mode {:04o})",
                    meta.uid, meta.mode
                )));
            }
        }
        let meta = root.metadata(path)?;
        if meta.mode & 0o111 == 0 {
            return Err(HandlerError::failed(format!(
                "can't access fsfreeze hook '{path}': Permission denied"
            )));
        }
        Ok(Some(root.resolve(path)?.to_string_lossy().into_owned()))
    }

    /// Run the hook with `freeze` or `thaw`; qemu-ga's words when it fails.
    fn run_hook(
        &self,
        runner: &dyn ProcessRunner,
        hook: &str,
        arg: &str,
    ) -> Result<(), HandlerError> {
        let timeout = self.settings.hook_timeout;
        info!(hook, arg, "executing fsfreeze hook");
        let cmd = ProcessSpec::new(hook)
            .arg(arg)
            .timeout(timeout)
            .effect(Effect::Freeze);
        let out = match runner.run(&cmd) {
            Ok(out) => out,
            Err(ProcessError::Timeout { .. }) => {
                return Err(HandlerError::failed(format!(
                    "fsfreeze hook did not finish within {}s and was killed",
                    timeout.as_secs()
                )));
            }
            Err(e @ ProcessError::NotRun { .. }) => return Err(e.into()),
            Err(e) => {
                return Err(HandlerError::failed(format!(
                    "can't run fsfreeze hook '{hook}': {e}"
                )));
            }
        };
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            if !text.trim().is_empty() {
                info!(hook, arg, stream, output = %text.trim(), "fsfreeze hook output");
            }
        }
        match out.code {
            Some(0) => Ok(()),
            Some(code) => Err(HandlerError::failed(format!(
                "fsfreeze hook has failed with status {code}"
            ))),
            None => Err(HandlerError::failed(
                "fsfreeze hook has terminated abnormally",
            )),
        }
    }
}

impl Lifecycle for Freezer {
    fn start(&self, env: &Env) {
        self.recover(env);
    }

    fn stop(&self, env: &Env) {
        let mut state = self.lock();
        if !state.frozen.is_empty() {
            warn!("stopping with filesystems frozen; thawing them");
            self.thaw_locked(env, &mut state);
        }
    }
}

/// The filesystems a freeze would freeze, in mount order: qemu-ga's local filesystems (each
/// device once) without the types that cannot freeze, limited to `only` when given.
fn candidates(root: &Root, only: Option<&[String]>) -> Result<Vec<Frozen>, HandlerError> {
    Ok(local_mounts(root)?
        .into_iter()
        .filter(|m| only.is_none_or(|list| list.contains(&m.mountpoint)))
        .filter(|m| {
            let skip = UNFREEZABLE.contains(&m.fstype.as_str());
            if skip {
                debug!(mount = %m.mountpoint, fstype = %m.fstype, "cannot be frozen; skipped");
            }
            !skip
        })
        .map(|m| Frozen {
            device: format!("{}:{}", m.major, m.minor),
            mountpoint: m.mountpoint,
        })
        .collect())
}

fn fsfreeze(flag: &str, mount: &Frozen) -> ProcessSpec {
    ProcessSpec::new(FSFREEZE)
        .args([flag, mount.mountpoint.as_str()])
        .timeout(PER_MOUNT)
        .effect(Effect::Freeze)
}

/// Freeze one filesystem: `Ok(true)` frozen, `Ok(false)` it cannot be frozen (EOPNOTSUPP).
fn freeze_one(runner: &dyn ProcessRunner, mount: &Frozen) -> Result<bool, HandlerError> {
    let out = runner.run(&fsfreeze("--freeze", mount))?;
    if out.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Operation not supported") {
        info!(mount = %mount.mountpoint, "cannot be frozen (EOPNOTSUPP); skipped");
        return Ok(false);
    }
    warn!(mount = %mount.mountpoint, stderr = %stderr.trim(), "fsfreeze --freeze failed");
    // util-linux: "fsfreeze: /: freeze failed: Device or resource busy".
    let reason = stderr
        .trim()
        .rsplit(": ")
        .next()
        .filter(|r| !r.is_empty())
        .map_or_else(
            || format!("fsfreeze exited with {:?}", out.code),
            str::to_string,
        );
    Err(HandlerError::failed(format!(
        "failed to freeze {}: {reason}",
        mount.mountpoint
    )))
}

/// Thaw in reverse freeze order; returns how many thawed. Failures are logged, the rest go on.
fn thaw_all(runner: &dyn ProcessRunner, frozen: &[Frozen]) -> usize {
    frozen
        .iter()
        .rev()
        .filter(|mount| {
            match runner
                .run(&fsfreeze("--unfreeze", mount))
                .map(|o| o.check(FSFREEZE))
            {
                Ok(Ok(_)) => true,
                Ok(Err(e)) | Err(e) => {
                    warn!(mount = %mount.mountpoint, error = %e, "thaw failed");
                    false
                }
            }
        })
        .count()
}

fn write_record(root: &Root, record: &Record) -> Result<(), HandlerError> {
    let json = serde_json::to_vec_pretty(record).expect("the record serializes");
    let dir = std::path::Path::new(RECORD)
        .parent()
        .expect("the record has a directory");
    root.create_dir_all(dir, 0o755)
        .and_then(|()| root.write_atomic(RECORD, &json, WriteOptions::mode(0o600)))
        .map_err(|e| {
            HandlerError::failed(format!(
                "cannot record the freeze in {RECORD} (it is how a restarted agent knows what \
                 to thaw): {e}"
            ))
        })
}

fn remove_record(root: &Root) {
    if let Err(e) = root.remove_file(RECORD) {
        if !e.is_not_found() {
            warn!(record = RECORD, error = %e, "cannot remove the freeze record");
        }
    }
}

/// Answers `guest-fsfreeze-status`: `"thawed"` or `"frozen"`.
#[derive(Debug)]
pub struct StatusHandler(pub Freezer);

impl Handler for StatusHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-status"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn may_block(&self) -> bool {
        false
    }

    fn is_query(&self) -> bool {
        true
    }

    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        args::<NoArgs>(value)?;
        let status = if self.0.is_frozen() {
            "frozen"
        } else {
            "thawed"
        };
        Ok(guestd_core::qga::ok(&json!(status)))
    }
}

/// Answers `guest-fsfreeze-freeze`: the number of filesystems frozen.
#[derive(Debug)]
pub struct FreezeHandler(pub Freezer);

impl Handler for FreezeHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-freeze"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.0.settings.hook_timeout + Duration::from_secs(300))
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        args::<NoArgs>(value)?;
        let count = self.0.freeze(ctx.env, None)?;
        Ok(guestd_core::qga::ok(&json!(count)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    /// Absent: every filesystem, as `guest-fsfreeze-freeze`.
    mountpoints: Option<Vec<String>>,
}

/// Answers `guest-fsfreeze-freeze-list`: the number of the listed filesystems frozen.
#[derive(Debug)]
pub struct FreezeListHandler(pub Freezer);

impl Handler for FreezeListHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-freeze-list"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.0.settings.hook_timeout + Duration::from_secs(300))
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let a: ListArgs = args(value)?;
        let count = self.0.freeze(ctx.env, a.mountpoints.as_deref())?;
        Ok(guestd_core::qga::ok(&json!(count)))
    }
}

/// Answers `guest-fsfreeze-thaw`: the number of filesystems thawed.
#[derive(Debug)]
pub struct ThawHandler(pub Freezer);

impl Handler for ThawHandler {
    fn name(&self) -> &'static str {
        "guest-fsfreeze-thaw"
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn allowed_while_frozen(&self) -> bool {
        true
    }

    fn default_timeout(&self) -> Option<Duration> {
        Some(self.0.settings.hook_timeout + Duration::from_secs(120))
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        args::<NoArgs>(value)?;
        let count = self.0.thaw(ctx.env)?;
        Ok(guestd_core::qga::ok(&json!(count)))
    }
}
