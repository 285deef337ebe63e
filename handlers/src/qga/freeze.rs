//! `guest-fsfreeze-status`, `guest-fsfreeze-freeze`, `guest-fsfreeze-freeze-list`,
//! `guest-fsfreeze-thaw`: Linux FIFREEZE and FITHAW, as qemu-ga does them and safer. This
//! module decides *what* (which filesystems, the hook, the record, the state); the backend
//! plans *how* (`Backend::plan_fsfreeze`/`plan_thaw`: util-linux `fsfreeze` per mount, each
//! step undone by its thaw) and `guestd_core::apply` carries the plan out, reporting each
//! filesystem's result (so tests use the fake runner, and a `--root` sandbox keeps it off the
//! machine):
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
    ApplyError, ApplyOptions, BackendError, Context, Dialect, Env, FileChange, FreezeFlag,
    FreezeHook, FreezeRequest, Handler, HandlerError, Lifecycle, Plan, ProcessError, Reply, Root,
    Step, WriteOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::args;
use super::fsinfo::local_mounts;
use super::platform::not_on_this_os;

/// What this agent froze (or is about to): thawed on the next start if it is still there.
pub const RECORD: &str = "/run/guestd/fsfreeze.json";
/// Filesystem types without FIFREEZE support (the kernel answers EOPNOTSUPP).
const UNFREEZABLE: [&str; 10] = [
    "vfat", "msdos", "exfat", "squashfs", "iso9660", "udf", "erofs", "cramfs", "romfs", "fuseblk",
];
/// The record and its removal are guestd's own state: no copies of it are kept.
const NO_BACKUPS: ApplyOptions = ApplyOptions { keep_backups: 0 };

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
        let root = &env.root;
        let mut mounts = candidates(root, only)?;
        // Children before their parents, as qemu-ga does.
        mounts.reverse();
        let hook = self.hook(root)?;
        let request = FreezeRequest {
            mountpoints: mounts.iter().map(|m| m.mountpoint.clone()).collect(),
            hook: hook.clone().map(|program| FreezeHook {
                program,
                timeout: self.settings.hook_timeout,
            }),
        };
        let mut plan = match env.backend.plan_fsfreeze(env, &request) {
            Err(BackendError::Unsupported(_)) => {
                return Err(not_on_this_os("guest-fsfreeze-freeze"));
            }
            other => other?,
        };
        // Recorded before anything happens (files go before commands): from here on a crash
        // leaves the record, and the next start thaws. Nothing is written while frozen; a
        // failed freeze thaws (each step's undo) and then takes the record away again.
        let record = Record {
            frozen: mounts.clone(),
            hook: hook.is_some(),
        };
        plan.changes.insert(0, record_change(&record));
        self.flag.set(true);
        let applied = match guestd_core::apply(&plan, root, env.runner.as_ref(), NO_BACKUPS) {
            Ok(applied) => applied,
            Err(err) => {
                self.flag.set(false);
                state.hook_froze = false;
                state.generation += 1;
                warn!(error = %err, "freeze failed; what was frozen is thawed");
                return Err(freeze_error(err, &mounts, hook.as_deref()));
            }
        };
        // The plan's steps: the hook's (when there is one), then one per mount.
        let offset = usize::from(hook.is_some());
        state.hook_froze = hook.is_some() && applied.steps[0].succeeded();
        for (mount, step) in mounts.iter().zip(&applied.steps[offset..]) {
            match step {
                Step::Ran(_) => state.frozen.push(mount.clone()),
                Step::Declined(_) => {
                    info!(mount = %mount.mountpoint, "cannot be frozen (EOPNOTSUPP); skipped")
                }
                _ => {}
            }
        }
        if let Some(not_run) = applied.not_run_error() {
            // A --root sandbox kept the freeze off the machine: nothing may stay half done.
            self.thaw_locked(env, &mut state);
            return Err(not_run.into());
        }
        state.generation += 1;
        let count = state.frozen.len();
        if count == 0 {
            // Nothing froze: no thaw will come, nothing to keep (qemu-ga runs no thaw hook
            // here either).
            self.flag.set(false);
            state.hook_froze = false;
            remove_record(env);
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
        self.thaw_mounts(env, &mut state, &done, true)
    }

    /// Thaw what is frozen (the auto-thaw timer, the daemon stopping), with the thaw hook when
    /// the freeze hook ran.
    fn thaw_locked(&self, env: &Env, state: &mut State) {
        let done = std::mem::take(&mut state.frozen);
        let hook = state.hook_froze;
        if let Err(e) = self.thaw_mounts(env, state, &done, hook) {
            warn!(error = %e, "thaw hook failed");
        }
    }

    /// Thaw `frozen` (given in freeze order; thawed in reverse) through the backend's plan,
    /// then run the thaw hook when `hook` says so; nothing is frozen any more and the record
    /// is gone. Returns how many thawed; a failing thaw hook is the error (a filesystem that
    /// fails to thaw is logged, and the others still thaw).
    fn thaw_mounts(
        &self,
        env: &Env,
        state: &mut State,
        frozen: &[Frozen],
        hook: bool,
    ) -> Result<usize, HandlerError> {
        let (hook, refused) = match hook.then(|| self.hook(&env.root)) {
            Some(Ok(hook)) => (hook, None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let request = FreezeRequest {
            mountpoints: frozen.iter().rev().map(|f| f.mountpoint.clone()).collect(),
            hook: hook.clone().map(|program| FreezeHook {
                program,
                timeout: self.settings.hook_timeout,
            }),
        };
        let result = if request.mountpoints.is_empty() && request.hook.is_none() {
            Ok(0)
        } else {
            self.apply_thaw(env, &request)
        };
        state.generation += 1;
        state.hook_froze = false;
        self.flag.set(false);
        remove_record(env);
        match (result, refused) {
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
            (Ok(count), None) => Ok(count),
        }
    }

    /// Apply the thaw plan; the count of filesystems thawed, or the thaw hook's failure.
    fn apply_thaw(&self, env: &Env, request: &FreezeRequest) -> Result<usize, HandlerError> {
        let plan = match env.backend.plan_thaw(env, request) {
            Err(BackendError::Unsupported(_)) => {
                return Err(not_on_this_os("guest-fsfreeze-thaw"));
            }
            other => other?,
        };
        let applied = guestd_core::apply(&plan, &env.root, env.runner.as_ref(), NO_BACKUPS)?;
        let mut count = 0;
        for (mountpoint, step) in request.mountpoints.iter().zip(&applied.steps) {
            if step.succeeded() {
                count += 1;
            } else {
                warn!(mount = %mountpoint, result = ?step, "thaw failed");
            }
        }
        info!(count, "filesystems thawed");
        match (&request.hook, applied.steps.get(request.mountpoints.len())) {
            (Some(hook), Some(step)) => {
                hook_result(&hook.program, "thaw", step, self.settings.hook_timeout).map(|()| count)
            }
            _ => Ok(count),
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
                    remove_record(env);
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
        let mut state = self.lock();
        if let Err(e) = self.thaw_mounts(env, &mut state, &targets, record.hook) {
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

/// The reply for a failed freeze plan: the record could not be written, the hook failed
/// (qemu-ga's words), or one filesystem did not freeze (util-linux's reason).
fn freeze_error(err: ApplyError, mounts: &[Frozen], hook: Option<&str>) -> HandlerError {
    let (source, step) = match err {
        ApplyError::File { source, .. } => {
            return HandlerError::failed(format!(
                "cannot record the freeze in {RECORD} (it is how a restarted agent knows what \
                 to thaw): {source}"
            ));
        }
        ApplyError::ProcessSpec { source, step, .. } => (source, step),
        other => return other.into(),
    };
    let offset = usize::from(hook.is_some());
    if let (Some(hook), 0) = (hook, step) {
        return hook_error(hook, source);
    }
    let Some(mount) = step.checked_sub(offset).and_then(|i| mounts.get(i)) else {
        return source.into();
    };
    let ProcessError::Failed { code, stderr, .. } = &source else {
        return source.into();
    };
    warn!(mount = %mount.mountpoint, stderr = %stderr, "fsfreeze --freeze failed");
    // util-linux: "fsfreeze: /: freeze failed: Device or resource busy".
    let reason = stderr
        .rsplit(": ")
        .next()
        .filter(|r| !r.is_empty())
        .map_or_else(|| format!("fsfreeze exited with {code:?}"), str::to_string);
    HandlerError::failed(format!("failed to freeze {}: {reason}", mount.mountpoint))
}

/// qemu-ga's words for a hook that could not run or failed.
fn hook_error(hook: &str, err: ProcessError) -> HandlerError {
    match err {
        ProcessError::Timeout { timeout, .. } => HandlerError::failed(format!(
            "fsfreeze hook did not finish within {}s and was killed",
            timeout.as_secs()
        )),
        e @ ProcessError::NotRun { .. } => e.into(),
        ProcessError::Failed {
            code: Some(code),
            stderr,
            ..
        } => {
            if !stderr.is_empty() {
                info!(hook, stderr = %stderr, "fsfreeze hook output");
            }
            HandlerError::failed(format!("fsfreeze hook has failed with status {code}"))
        }
        ProcessError::Failed { code: None, .. } => {
            HandlerError::failed("fsfreeze hook has terminated abnormally")
        }
        e => HandlerError::failed(format!("can't run fsfreeze hook '{hook}': {e}")),
    }
}

/// What one run of the hook (reported as a plan step) means: its output is logged, a failure
/// is [`hook_error`].
fn hook_result(hook: &str, arg: &str, step: &Step, timeout: Duration) -> Result<(), HandlerError> {
    let program = hook.to_string();
    let err = match step {
        Step::Ran(out) => {
            for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                let text = String::from_utf8_lossy(bytes);
                if !text.trim().is_empty() {
                    info!(hook, arg, stream, output = %text.trim(), "fsfreeze hook output");
                }
            }
            if out.success() {
                return Ok(());
            }
            ProcessError::Failed {
                program,
                code: out.code,
                stderr: String::new(),
            }
        }
        Step::TimedOut => ProcessError::Timeout { program, timeout },
        Step::NotRun(effect) => ProcessError::NotRun {
            program,
            effect: *effect,
        },
        Step::CouldNotRun(reason) => {
            return Err(HandlerError::failed(format!(
                "can't run fsfreeze hook '{hook}': {reason}"
            )));
        }
        Step::Declined(_) | Step::Unchecked => return Ok(()),
    };
    Err(hook_error(hook, err))
}

/// Writing the record, as the first change of the freeze plan.
fn record_change(record: &Record) -> FileChange {
    let json = serde_json::to_vec_pretty(record).expect("the record serializes");
    FileChange::write(RECORD, json, WriteOptions::mode(0o600))
}

/// Take the record away (a plan of its own: after the thaw, never while frozen).
fn remove_record(env: &Env) {
    let plan = Plan {
        changes: vec![FileChange::Remove {
            path: RECORD.into(),
        }],
        ..Plan::default()
    };
    if let Err(e) = guestd_core::apply(&plan, &env.root, env.runner.as_ref(), NO_BACKUPS) {
        warn!(record = RECORD, error = %e, "cannot remove the freeze record");
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
