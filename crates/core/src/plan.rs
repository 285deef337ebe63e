//! A [`Plan`] is what a backend wants done: files to write or remove (or a kernel file to write
//! in place, [`FileChange::Kernel`]), then commands to run.
//! [`apply`] carries it out with the rules every backend shares: unchanged files are skipped,
//! replaced files are backed up under [`BACKUP_DIR`] (never beside them), writes are atomic and
//! go through [`Root`] (so only regular files are read, with a bound, and replaced), and when a
//! file change or a command fails every file is put back as it was and the plan's rollback
//! commands run. A file guestd must not read (a hard link in a user's directory) is replaced
//! but neither backed up nor put back. A [`Journal`] keeps what several plans changed, so that a
//! caller (`configure` with `"atomic": true`) can put every file back as a whole.
//!
//! Each command says what its result must be ([`Expect`]): success, an exit status among
//! several (a check), success or a known refusal that skips the step ([`Step::Declined`]), or
//! anything at all, reported per step ([`Expect::Report`]). [`Applied::steps`] says what became
//! of each command, so a caller that reports per item (one `fstrim` per filesystem) reads its
//! results from there. A command may carry its own undo ([`PlannedProcess::undone_by`]): when a
//! later step fails, the undo of every step that was done runs, newest first, before the files
//! are put back and the plan's rollback commands run.
//!
//! A command that a `--root` sandbox keeps off the machine ([`ProcessError::NotRun`], see
//! [`crate::effect`]) is not a failure: the plan goes on, [`Applied::not_run`] lists it for the
//! reply, and the plan's later commands that only observe the machine (the checks that
//! addresses came up) are skipped, since they would check an effect that did not happen.

use std::fmt;
use std::path::Path;

use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::effect::{Effect, Reach};
use crate::root::{DEFAULT_READ_LIMIT, FileMeta, Root, RootError, Snapshot, WriteOptions};
use crate::runner::{Output, ProcessError, ProcessRunner, ProcessSpec};

/// One change to the guest's files.
#[derive(Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Write `contents` atomically (contents may be secret: wiped on drop, never printed).
    Write {
        path: String,
        contents: Zeroizing<Vec<u8>>,
        options: WriteOptions,
    },
    /// Remove a file or symlink (missing is fine).
    Remove { path: String },
    /// Point a symlink at `target`.
    Symlink { path: String, target: String },
    /// A directory with this mode (and owner, when given): created if missing (parents with
    /// 0755), its mode and owner set on its handle if they differ.
    Directory {
        path: String,
        mode: u32,
        owner: Option<(u32, u32)>,
    },
    /// Remove an empty directory (missing is fine; one with entries is an error).
    RemoveDir { path: String },
    /// Replace a file the system's own tools also rewrite (`/etc/shadow`), only if it still
    /// holds `prior` (what the plan was made from), with the `lock` file's POSIX lock held from
    /// that comparison to the rename ([`crate::file_lock`]; `lckpwdf`'s `/etc/.pwd.lock`). If
    /// another program changed it in between, nothing is written and the plan fails. Both
    /// contents may be secret: wiped on drop, never printed.
    Update {
        path: String,
        prior: Zeroizing<Vec<u8>>,
        contents: Zeroizing<Vec<u8>>,
        options: WriteOptions,
        lock: Option<String>,
    },
    /// Write `value` to a kernel interface file (`/sys/power/state`) as it is, in place: such
    /// a file is a request to the kernel, not content, so there is no temp file, no backup and
    /// nothing to put back if a later step fails.
    Kernel { path: String, value: Vec<u8> },
}

impl FileChange {
    pub fn write(
        path: impl Into<String>,
        contents: impl Into<Vec<u8>>,
        options: WriteOptions,
    ) -> Self {
        Self::Write {
            path: path.into(),
            contents: Zeroizing::new(contents.into()),
            options,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Self::Write { path, .. }
            | Self::Remove { path }
            | Self::Symlink { path, .. }
            | Self::Directory { path, .. }
            | Self::RemoveDir { path }
            | Self::Update { path, .. }
            | Self::Kernel { path, .. } => path,
        }
    }
}

impl fmt::Debug for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Write {
                path,
                contents,
                options,
            } => {
                write!(
                    f,
                    "Write({path}, {} bytes, mode {:o})",
                    contents.len(),
                    options.mode
                )
            }
            Self::Remove { path } => write!(f, "Remove({path})"),
            Self::Symlink { path, target } => write!(f, "Symlink({path} -> {target})"),
            Self::Directory { path, mode, owner } => {
                write!(f, "Directory({path}, mode {mode:o}, owner {owner:?})")
            }
            Self::RemoveDir { path } => write!(f, "RemoveDir({path})"),
            Self::Update {
                path,
                contents,
                options,
                lock,
                ..
            } => {
                write!(
                    f,
                    "Update({path}, {} bytes, mode {:o}, if unchanged, lock {lock:?})",
                    contents.len(),
                    options.mode
                )
            }
            Self::Kernel { path, value } => {
                write!(f, "Kernel({path} <- {:?})", String::from_utf8_lossy(value))
            }
        }
    }
}

/// What a command's result must look like for the plan to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exit status 0.
    Success,
    /// Any result (the command is best effort).
    Anything,
    /// Exit status 0 and stdout containing this text (e.g. an address after a restart).
    StdoutContains(String),
    /// An exit status among these (a support check: `systemctl status UNIT` answers 1..=3 for
    /// a unit that exists).
    Status(Vec<i32>),
    /// Exit status 0, or a failure whose stderr contains this text: the step does not apply
    /// here and the plan goes on without it ([`Step::Declined`]; `fsfreeze` on a filesystem
    /// whose FIFREEZE answers "Operation not supported").
    SuccessOrDeclined(String),
    /// Whatever happens, also a timeout or a program that cannot start: the plan goes on and
    /// the caller reads each result from [`Applied::steps`] (one `fstrim` per filesystem, each
    /// reported on its own).
    Report,
}

impl Expect {
    /// Whether `out` is a result the plan goes on after (declined counts: the plan goes on).
    pub fn met_by(&self, out: &Output) -> bool {
        match self {
            Self::Anything | Self::Report => true,
            Self::Success => out.success(),
            Self::StdoutContains(text) => {
                out.success() && String::from_utf8_lossy(&out.stdout).contains(text.as_str())
            }
            Self::Status(codes) => out.code.is_some_and(|c| codes.contains(&c)),
            Self::SuccessOrDeclined(text) => {
                out.success() || String::from_utf8_lossy(&out.stderr).contains(text.as_str())
            }
        }
    }
}

/// A command of a plan with what its result must be, and the command that undoes it when a
/// later step of the plan fails (`fsfreeze --unfreeze M` for `fsfreeze --freeze M`). Undo
/// commands run in reverse order, only for steps that were done, before the files are put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProcess {
    pub command: ProcessSpec,
    pub expect: Expect,
    pub undo: Option<ProcessSpec>,
}

impl PlannedProcess {
    /// `command`, expected to succeed, with no undo.
    pub fn new(command: ProcessSpec) -> Self {
        Self {
            command,
            expect: Expect::Success,
            undo: None,
        }
    }

    /// With this expectation instead of success.
    pub fn expecting(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// Undone by `undo` when a later step fails.
    pub fn undone_by(mut self, undo: ProcessSpec) -> Self {
        self.undo = Some(undo);
        self
    }
}

impl From<ProcessSpec> for PlannedProcess {
    fn from(command: ProcessSpec) -> Self {
        Self::new(command)
    }
}

/// Files to change, then commands to run, then checks that the files now hold what the plan
/// asked for; on failure, rollback commands after the files are restored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<FileChange>,
    pub commands: Vec<PlannedProcess>,
    pub rollback_commands: Vec<PlannedProcess>,
    /// Effects that are neither a file nor a process (an OS API call), run after the commands.
    pub native: Vec<NativeStep>,
    /// Checked after the commands and native steps ran (skipped when a sandbox kept one off
    /// the machine: they would check an effect that did not happen).
    pub checks: Vec<FileCheck>,
}

/// An effect that is neither a file nor a process: an OS API call (Windows `NetUserSetInfo`).
/// It names and describes itself for logs and dry runs and says what it reaches, so a
/// `--root` sandbox keeps it off the machine like a command ([`ProcessRunner::allows`]).
pub trait NativeAction: Send + Sync + 'static {
    /// A short name, as a program is named (`NetUserSetInfo`).
    fn name(&self) -> &str;
    /// What it does, for logs and dry runs; never a secret.
    fn describe(&self) -> String;
    /// What it reaches beyond the guest's files.
    fn reach(&self) -> Reach;
    /// Do it. The error is the short reason for the reply (never a secret).
    fn run(&self) -> Result<(), String>;
}

/// A [`NativeAction`] in a plan.
#[derive(Clone)]
pub struct NativeStep(pub std::sync::Arc<dyn NativeAction>);

impl fmt::Debug for NativeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Native({}: {})", self.0.name(), self.0.describe())
    }
}

impl PartialEq for NativeStep {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for NativeStep {}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.commands.is_empty()
    }
}

/// A condition on a guest file after the plan's commands ran: a line of `path` starts with
/// `line_start` (`alice:$6$…:` in `/etc/shadow` after `chpasswd -e`). No false success: a tool
/// that answered 0 without storing what it was given fails the plan. `line_start` may be
/// secret: wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct FileCheck {
    pub path: String,
    pub line_start: Zeroizing<Vec<u8>>,
    /// The error when it does not hold (for the reply: never the secret).
    pub failure: String,
}

impl FileCheck {
    fn holds(&self, root: &Root) -> bool {
        root.read(&self.path).is_ok_and(|text| {
            let text = Zeroizing::new(text);
            text.split(|&b| b == b'\n')
                .any(|line| line.starts_with(&self.line_start))
        })
    }
}

impl fmt::Debug for FileCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FileCheck({}: a line starts with {} given bytes, else {:?})",
            self.path,
            self.line_start.len(),
            self.failure
        )
    }
}

/// How to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Previous versions kept per replaced file under [`BACKUP_DIR`] (0 = none on disk).
    pub keep_backups: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self { keep_backups: 1 }
    }
}

/// Where [`apply`] keeps the previous versions of the files it replaces: the guest path
/// mirrored below it, `.<n>` appended (`/etc/hosts` → `/var/lib/guestd/backup/etc/hosts.3`).
/// Never beside the file: programs read whole directories (`/etc/cron.d`, `interfaces.d/`,
/// `sudoers.d/`, `network-scripts/`), and a backup there would be loaded as configuration.
pub const BACKUP_DIR: &str = "/var/lib/guestd/backup";

/// The same for Windows paths (`C:\x\y` → `C:\ProgramData\guestd\backup\C\x\y.<n>`).
pub const WINDOWS_BACKUP_DIR: &str = r"C:\ProgramData\guestd\backup";

/// The backup directory and file name prefix (`<name>.`) for `path`.
fn backup_location(path: &str) -> Option<(String, String)> {
    let parts = crate::root::check_guest_path(Path::new(path)).ok()?;
    let (name, dirs) = parts.names.split_last()?;
    let (mut dir, sep) = match parts.drive {
        Some(d) => (format!("{WINDOWS_BACKUP_DIR}\\{d}"), '\\'),
        None => (BACKUP_DIR.to_string(), '/'),
    };
    for d in dirs {
        dir.push(sep);
        dir.push_str(&d.to_string_lossy());
    }
    Some((dir, format!("{}.", name.to_string_lossy())))
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Guest paths that changed (backups not included).
    pub changed: Vec<String>,
    /// Backup files written.
    pub backups: Vec<String>,
    /// What each command of the plan printed, in order (for callers that report it).
    pub outputs: Vec<Output>,
    /// Commands a `--root` sandbox kept off the machine, in plan order.
    pub not_run: Vec<NotRun>,
    /// What became of each command of the plan, in plan order (one per command).
    pub steps: Vec<Step>,
}

/// What became of one command of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It ran, and its result met its [`Expect`] (for [`Expect::Report`]: any exit status).
    Ran(Output),
    /// It ran and declined ([`Expect::SuccessOrDeclined`]): the step does not apply here.
    Declined(Output),
    /// A `--root` sandbox kept it off the machine.
    NotRun(Effect),
    /// Not run: it only observes, and an earlier command of the plan was not run.
    Unchecked,
    /// [`Expect::Report`] only: it did not finish within its timeout and was killed.
    TimedOut,
    /// [`Expect::Report`] only: it could not be started (the reason, for the log).
    CouldNotRun(String),
}

impl Step {
    /// Whether the command ran and succeeded (exit status 0).
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Ran(out) if out.success())
    }
}

/// A command of the plan that was not run because of its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRun {
    pub program: String,
    pub effect: Effect,
}

impl Applied {
    /// For the reply: `not run (…): ifdown, ifup (network); hostnamectl (hostname)`, or `None`
    /// when everything ran.
    pub fn not_run_message(&self) -> Option<String> {
        describe_not_run(&self.not_run)
    }

    /// The first command a sandbox kept off the machine, as the runner reported it
    /// (`'shutdown' was not run: …`): for plans whose whole point is that effect, so that
    /// nothing was done without it.
    pub fn not_run_error(&self) -> Option<ProcessError> {
        self.not_run.first().map(|n| ProcessError::NotRun {
            program: n.program.clone(),
            effect: n.effect,
        })
    }
}

/// `not run (the --root sandbox keeps these effects off this machine): ifdown, ifup (network)`,
/// grouped by effect in first-seen order; `None` for an empty list.
pub fn describe_not_run(list: &[NotRun]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    let mut groups: Vec<(Effect, Vec<&str>)> = Vec::new();
    for item in list {
        let at = match groups.iter().position(|(e, _)| *e == item.effect) {
            Some(at) => at,
            None => {
                groups.push((item.effect, Vec::new()));
                groups.len() - 1
            }
        };
        if !groups[at].1.contains(&item.program.as_str()) {
            groups[at].1.push(&item.program);
        }
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(effect, programs)| format!("{} ({effect})", programs.join(", ")))
        .collect();
    Some(format!(
        "not run (the --root sandbox keeps these effects off this machine; [sandbox] \
         allow_effects): {}",
        parts.join("; ")
    ))
}

/// Applying failed; everything was put back (`restored`) or the log says what could not be.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{source}")]
    File {
        #[source]
        source: RootError,
        restored: bool,
    },
    /// Command `step` of the plan (an index into [`Plan::commands`]) failed.
    #[error("{source}")]
    ProcessSpec {
        #[source]
        source: ProcessError,
        step: usize,
        restored: bool,
    },
    #[error("'{program}' did not report the expected result")]
    Unexpected {
        program: String,
        step: usize,
        restored: bool,
    },
    /// A [`FileCheck`] of the plan did not hold.
    #[error("{message}")]
    Check { message: String, restored: bool },
    /// A [`NativeStep`] failed.
    #[error("{message}")]
    Native { message: String, restored: bool },
}

impl ApplyError {
    /// Whether every file was put back as it was.
    pub fn restored(&self) -> bool {
        match self {
            Self::File { restored, .. }
            | Self::ProcessSpec { restored, .. }
            | Self::Unexpected { restored, .. }
            | Self::Check { restored, .. }
            | Self::Native { restored, .. } => *restored,
        }
    }
}

/// A path changed so far and what it was before (`backup`: one of guestd's own backups, changed
/// without the write policy).
struct Undo {
    path: String,
    prior: Prior,
    backup: bool,
}

/// What was at a path before a change.
enum Prior {
    Entry(Snapshot),
    /// A directory change: `None` when there was no directory.
    Dir(Option<FileMeta>),
}

impl From<Snapshot> for Prior {
    fn from(s: Snapshot) -> Self {
        Self::Entry(s)
    }
}

/// What several applied plans changed, oldest first, so that all of it can be put back at
/// once ([`Journal::rollback`]); see [`apply_journaled`].
#[derive(Default)]
pub struct Journal {
    undo: Vec<Undo>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<&str> = self.undo.iter().map(|u| u.path.as_str()).collect();
        f.debug_struct("Journal").field("paths", &paths).finish()
    }
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        self.undo.is_empty()
    }

    /// Put every recorded path back as it was, newest change first (backups guestd wrote on
    /// the way are taken away again). Returns whether all of it worked; what did not is logged.
    pub fn rollback(&mut self, root: &Root) -> bool {
        restore(root, &mut self.undo)
    }
}

/// Carry out `plan`. See the module docs for the rules.
pub fn apply(
    plan: &Plan,
    root: &Root,
    runner: &dyn ProcessRunner,
    options: ApplyOptions,
) -> Result<Applied, ApplyError> {
    apply_journaled(plan, root, runner, options, &mut Journal::default())
}

/// [`apply`], and on success keep what it changed in `journal` (a failed plan has already put
/// its own changes back; earlier plans' changes stay in the journal for the caller to decide).
pub fn apply_journaled(
    plan: &Plan,
    root: &Root,
    runner: &dyn ProcessRunner,
    options: ApplyOptions,
    journal: &mut Journal,
) -> Result<Applied, ApplyError> {
    let mut applied = Applied::default();
    let mut undo: Vec<Undo> = Vec::new();
    for change in &plan.changes {
        if let FileChange::Directory { .. } | FileChange::RemoveDir { .. } = change {
            if let Err(source) = change_dir(root, change, &mut undo, &mut applied) {
                let restored = restore(root, &mut undo);
                return Err(ApplyError::File { source, restored });
            }
            continue;
        }
        if let FileChange::Update { .. } = change {
            if let Err(source) = update(root, change, &mut undo) {
                let restored = restore(root, &mut undo);
                return Err(ApplyError::File { source, restored });
            }
            applied.changed.push(change.path().to_string());
            continue;
        }
        if let FileChange::Kernel { path, value } = change {
            // A request to the kernel: nothing to read back or put back.
            if let Err(source) = root.write_in_place(path, value) {
                let restored = restore(root, &mut undo);
                return Err(ApplyError::File { source, restored });
            }
            applied.changed.push(path.clone());
            continue;
        }
        let result = snapshot(root, change.path()).and_then(|prior| {
            if unchanged(change, &prior) {
                return Ok(());
            }
            if let (Snapshot::File { contents, meta }, true) = (&prior, options.keep_backups > 0) {
                let backup = write_backup(
                    root,
                    change.path(),
                    contents,
                    *meta,
                    options.keep_backups,
                    &mut undo,
                )?;
                applied.backups.push(backup);
            }
            perform(root, change)?;
            undo.push(Undo {
                path: change.path().to_string(),
                prior: prior.into(),
                backup: false,
            });
            applied.changed.push(change.path().to_string());
            Ok(())
        });
        if let Err(source) = result {
            let restored = restore(root, &mut undo);
            return Err(ApplyError::File { source, restored });
        }
    }
    for (step, planned) in plan.commands.iter().enumerate() {
        if !applied.not_run.is_empty() && planned.command.reach == Reach::Observe {
            info!(command = %planned.command, "not checked: an earlier command of this plan was not run");
            applied.steps.push(Step::Unchecked);
            continue;
        }
        let failure = match (runner.run(&planned.command), &planned.expect) {
            (Err(ProcessError::NotRun { program, effect }), _) => {
                applied.not_run.push(NotRun { program, effect });
                applied.steps.push(Step::NotRun(effect));
                None
            }
            (Err(ProcessError::Timeout { .. }), Expect::Report) => {
                applied.steps.push(Step::TimedOut);
                None
            }
            (Err(e), Expect::Report) => {
                applied.steps.push(Step::CouldNotRun(e.to_string()));
                None
            }
            (Err(e), _) => Some(ApplyError::ProcessSpec {
                source: e,
                step,
                restored: false,
            }),
            (Ok(out), expect) => {
                let verdict = if expect.met_by(&out) {
                    None
                } else if let Expect::StdoutContains(_) = expect {
                    Some(ApplyError::Unexpected {
                        program: planned.command.program.clone(),
                        step,
                        restored: false,
                    })
                } else {
                    Some(ApplyError::ProcessSpec {
                        source: ProcessError::Failed {
                            program: planned.command.program.clone(),
                            code: out.code,
                            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                        },
                        step,
                        restored: false,
                    })
                };
                if verdict.is_none() {
                    let declined = matches!(expect, Expect::SuccessOrDeclined(_)) && !out.success();
                    applied.steps.push(if declined {
                        info!(command = %planned.command, "declined: this step does not apply here");
                        Step::Declined(out.clone())
                    } else {
                        Step::Ran(out.clone())
                    });
                }
                applied.outputs.push(out);
                verdict
            }
        };
        if let Some(err) = failure {
            warn!(command = %planned.command, error = %err, "plan failed; rolling back");
            return Err(roll_back(plan, root, runner, &applied, &mut undo, err));
        }
    }
    for step in &plan.native {
        let action = &step.0;
        if !runner.allows(action.reach()) {
            let Reach::Machine(effect) = action.reach() else {
                unreachable!("root-local and observing steps are always allowed")
            };
            info!(step = ?step, %effect, "not run: the --root sandbox keeps this effect off the machine");
            applied.not_run.push(NotRun {
                program: action.name().to_string(),
                effect,
            });
            continue;
        }
        info!(step = ?step, "running");
        if let Err(message) = action.run() {
            warn!(step = ?step, error = %message, "plan failed; rolling back");
            let err = ApplyError::Native {
                message,
                restored: false,
            };
            return Err(roll_back(plan, root, runner, &applied, &mut undo, err));
        }
    }
    if applied.not_run.is_empty() {
        if let Some(check) = plan.checks.iter().find(|c| !c.holds(root)) {
            warn!(path = %check.path, failure = %check.failure, "plan check failed; rolling back");
            let err = ApplyError::Check {
                message: check.failure.clone(),
                restored: false,
            };
            return Err(roll_back(plan, root, runner, &applied, &mut undo, err));
        }
    }
    if !applied.changed.is_empty() {
        info!(files = ?applied.changed, backups = ?applied.backups, "plan applied");
    }
    if let Some(message) = applied.not_run_message() {
        info!("plan applied; {message}");
    }
    journal.undo.append(&mut undo);
    Ok(applied)
}

/// A [`FileChange::Update`]: under its lock, replace the file if it still holds what the plan
/// was made from (no backup: such files hold secrets, and the system keeps its own `-` copy).
fn update(root: &Root, change: &FileChange, undo: &mut Vec<Undo>) -> Result<(), RootError> {
    let FileChange::Update {
        path,
        prior,
        contents,
        options,
        lock,
    } = change
    else {
        unreachable!("only updates come here")
    };
    let _held = lock
        .as_deref()
        .map(|l| crate::file_lock::FileLock::acquire(root, l, crate::file_lock::LOCK_TIMEOUT))
        .transpose()?;
    let now = root.snapshot(path, DEFAULT_READ_LIMIT)?;
    if !matches!(&now, Snapshot::File { contents: c, .. } if c[..] == prior[..]) {
        return Err(RootError::Io {
            op: "replace",
            path: path.clone(),
            source: std::io::Error::other(
                "another program changed it after the plan was made (nothing was written)",
            ),
        });
    }
    root.replace_file(path, contents, *options)?;
    undo.push(Undo {
        path: path.clone(),
        prior: now.into(),
        backup: false,
    });
    Ok(())
}

/// After a failed step or check: undo the steps done, put the files back, run the rollback
/// commands; `err` with whether the files were all put back.
fn roll_back(
    plan: &Plan,
    root: &Root,
    runner: &dyn ProcessRunner,
    applied: &Applied,
    undo: &mut Vec<Undo>,
    mut err: ApplyError,
) -> ApplyError {
    undo_steps(runner, &plan.commands, &applied.steps);
    let ok = restore(root, undo);
    for cmd in &plan.rollback_commands {
        run_rollback(runner, cmd);
    }
    match &mut err {
        ApplyError::ProcessSpec { restored, .. }
        | ApplyError::Unexpected { restored, .. }
        | ApplyError::Check { restored, .. }
        | ApplyError::Native { restored, .. }
        | ApplyError::File { restored, .. } => *restored = ok,
    }
    err
}

/// Run the undo command of every step that was done, newest first (the steps before the one
/// that failed; a declined step or one a sandbox did not run has nothing to undo).
fn undo_steps(runner: &dyn ProcessRunner, commands: &[PlannedProcess], steps: &[Step]) {
    for (planned, step) in commands.iter().zip(steps).rev() {
        if let (Some(undo), Step::Ran(_)) = (&planned.undo, step) {
            run_rollback(runner, &PlannedProcess::new(undo.clone()));
        }
    }
}

/// Run one rollback or undo command; a failure is logged (the rollback goes on).
fn run_rollback(runner: &dyn ProcessRunner, cmd: &PlannedProcess) {
    match runner.run(&cmd.command) {
        Ok(out) if out.success() || cmd.expect == Expect::Anything => {}
        Ok(out) => warn!(command = %cmd.command, code = ?out.code, "rollback command failed"),
        Err(ProcessError::NotRun { .. }) => {}
        Err(e) => warn!(command = %cmd.command, error = %e, "rollback command failed"),
    }
}

/// A [`FileChange::Directory`] or [`FileChange::RemoveDir`]: done through the directory's
/// handle, recorded in `undo` when something changed.
fn change_dir(
    root: &Root,
    change: &FileChange,
    undo: &mut Vec<Undo>,
    applied: &mut Applied,
) -> Result<(), RootError> {
    let path = change.path();
    let prior = if root.is_dir(path) {
        Some(root.metadata(path)?)
    } else {
        None
    };
    match (change, prior) {
        (FileChange::Directory { mode, owner, .. }, None) => {
            if let Some(parent) = Path::new(path).parent() {
                if !root.is_dir(parent) {
                    root.create_dir_all(parent, 0o755)?;
                }
            }
            let (uid, gid) = owner.unwrap_or_else(crate::root::own_ids);
            root.create_dir_owned(path, *mode, uid, gid)?;
        }
        (FileChange::Directory { mode, owner, .. }, Some(meta)) => {
            let want = FileMeta {
                mode: *mode,
                uid: owner.map_or(meta.uid, |o| o.0),
                gid: owner.map_or(meta.gid, |o| o.1),
            };
            if want == meta {
                return Ok(());
            }
            root.set_meta(path, want)?;
        }
        (FileChange::RemoveDir { .. }, None) => return Ok(()),
        (FileChange::RemoveDir { .. }, Some(_)) => root.remove_dir(path)?,
        _ => unreachable!("only directory changes come here"),
    }
    undo.push(Undo {
        path: path.to_string(),
        prior: Prior::Dir(prior),
        backup: false,
    });
    applied.changed.push(path.to_string());
    Ok(())
}

/// The path as it is before the change: bounded, and refusing FIFOs, devices, sockets and
/// directories before anything is read. A file over the read limit can still be replaced; it is
/// not kept (neither backed up nor put back after a failure).
fn snapshot(root: &Root, path: &str) -> Result<Snapshot, RootError> {
    match root.snapshot(path, DEFAULT_READ_LIMIT) {
        Err(RootError::TooLarge { .. }) => Ok(Snapshot::Unread {
            meta: root.metadata(path)?,
            reason: "is larger than what guestd reads back",
        }),
        other => other,
    }
}

fn unchanged(change: &FileChange, prior: &Snapshot) -> bool {
    match (change, prior) {
        (
            FileChange::Write {
                contents, options, ..
            },
            Snapshot::File {
                contents: old,
                meta,
            },
        ) => {
            contents == old
                && (options.preserve
                    || (options.mode == meta.mode
                        && options.owner.is_none_or(|o| o == (meta.uid, meta.gid))))
        }
        (FileChange::Remove { .. }, Snapshot::Absent) => true,
        (FileChange::Symlink { target, .. }, Snapshot::Link(old)) => Path::new(target) == old,
        _ => false,
    }
}

fn perform(root: &Root, change: &FileChange) -> Result<(), RootError> {
    match change {
        FileChange::Write {
            path,
            contents,
            options,
        } => {
            if let Some(parent) = Path::new(path).parent() {
                if !root.is_dir(parent) {
                    root.create_dir_all(parent, 0o755)?;
                }
            }
            // A symlink at the path is replaced by the file, not written through.
            root.replace_file(path, contents, *options)
        }
        FileChange::Remove { path } => root.remove_file(path),
        FileChange::Symlink { path, target } => root.symlink(path, target),
        FileChange::Directory { .. }
        | FileChange::RemoveDir { .. }
        | FileChange::Update { .. }
        | FileChange::Kernel { .. } => {
            unreachable!("directory and kernel changes are done in apply_journaled")
        }
    }
}

/// Put every recorded path back, newest first. Returns whether all of it worked.
fn restore(root: &Root, undo: &mut Vec<Undo>) -> bool {
    let mut ok = true;
    while let Some(Undo {
        path,
        prior,
        backup,
    }) = undo.pop()
    {
        let own = root.without_write_policy();
        let root = if backup { &own } else { root };
        let prior = match prior {
            Prior::Entry(snapshot) => snapshot,
            Prior::Dir(None) => {
                if let Err(e) = root.remove_dir(&path) {
                    warn!(path = %path, error = %e, "could not remove a directory the plan created");
                    ok = false;
                }
                continue;
            }
            Prior::Dir(Some(meta)) => {
                let result = if root.is_dir(&path) {
                    root.set_meta(&path, meta)
                } else {
                    root.create_dir_owned(&path, meta.mode, meta.uid, meta.gid)
                        .map(drop)
                };
                if let Err(e) = result {
                    warn!(path = %path, error = %e, "could not restore a directory");
                    ok = false;
                }
                continue;
            }
        };
        let result = match prior {
            Snapshot::Absent => root.remove_file(&path),
            Snapshot::Link(target) => root.symlink(&path, &target),
            Snapshot::File { contents, meta } => {
                let opts = WriteOptions {
                    mode: meta.mode,
                    owner: Some((meta.uid, meta.gid)),
                    preserve: false,
                };
                root.replace_file(&path, &contents, opts)
            }
            Snapshot::Unread { reason, .. } => {
                warn!(path = %path, reason, "cannot restore a file whose old content was not read");
                ok = false;
                continue;
            }
        };
        if let Err(e) = result {
            warn!(path = %path, error = %e, "could not restore file");
            ok = false;
        }
    }
    ok
}

/// Keep `contents` (the file at `path` before a change, with its mode and owner) as the
/// newest backup under [`BACKUP_DIR`] and remove all but the newest `keep`. Each step is
/// recorded in `undo`, so a failed apply takes the new backup away and puts rotated ones back.
fn write_backup(
    root: &Root,
    path: &str,
    contents: &[u8],
    meta: FileMeta,
    keep: usize,
    undo: &mut Vec<Undo>,
) -> Result<String, RootError> {
    let own = root.without_write_policy();
    let Some((dir, prefix)) = backup_location(path) else {
        return Err(RootError::NotAbsolute(path.to_string()));
    };
    let sep = if dir.contains('\\') { '\\' } else { '/' };
    let file = |n: u64| format!("{dir}{sep}{prefix}{n}");
    let mut existing: Vec<u64> = if own.is_dir(&dir) {
        own.read_dir(&dir)?
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix)?.parse().ok())
            .collect()
    } else {
        own.create_dir_all(&dir, 0o700)?;
        Vec::new()
    };
    existing.sort_unstable();
    let next = existing.last().map_or(1, |n| n + 1);
    let backup = file(next);
    let opts = WriteOptions {
        mode: meta.mode,
        owner: Some((meta.uid, meta.gid)),
        preserve: false,
    };
    let prior = own.snapshot(&backup, DEFAULT_READ_LIMIT)?;
    own.replace_file(&backup, contents, opts)?;
    undo.push(Undo {
        path: backup.clone(),
        prior: prior.into(),
        backup: true,
    });
    existing.push(next);
    let excess = existing.len().saturating_sub(keep.max(1));
    for old in &existing[..excess] {
        let old = file(*old);
        let prior = own.snapshot(&old, DEFAULT_READ_LIMIT)?;
        own.remove_file(&old)?;
        undo.push(Undo {
            path: old,
            prior: prior.into(),
            backup: true,
        });
    }
    Ok(backup)
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;
    use crate::runner::Output;
    use std::sync::Mutex;

    /// Fails every command whose program is in `fail`.
    #[derive(Default)]
    struct Recorder {
        fail: Vec<&'static str>,
        ran: Mutex<Vec<String>>,
    }

    impl ProcessRunner for Recorder {
        fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
            self.ran.lock().unwrap().push(cmd.command_line());
            let code = if self.fail.contains(&cmd.program.as_str()) {
                1
            } else {
                0
            };
            Ok(Output {
                code: Some(code),
                ..Output::default()
            })
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }

    fn setup() -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/a"), b"old a").unwrap();
        let root = Root::sandbox(d.path()).unwrap();
        (d, root)
    }

    fn plan() -> Plan {
        Plan {
            changes: vec![
                FileChange::write("/etc/a", "new a", WriteOptions::default()),
                FileChange::write("/etc/sub/b", "new b", WriteOptions::mode(0o600)),
            ],
            commands: vec![ProcessSpec::new("restart").into()],
            rollback_commands: vec![ProcessSpec::new("restart-again").into()],
            native: vec![],
            checks: vec![],
        }
    }

    #[test]
    fn directories_are_created_and_changed_by_handle_and_a_journal_undoes_several_plans() {
        use std::os::unix::fs::PermissionsExt;
        let (d, root) = setup();
        let runner = Recorder::default();
        let first = Plan {
            changes: vec![
                FileChange::Directory {
                    path: "/opt/app/conf".into(),
                    mode: 0o750,
                    owner: Some((0, 0)),
                },
                FileChange::write("/opt/app/conf/x", "x", WriteOptions::mode(0o640)),
            ],
            ..Plan::default()
        };
        let mut journal = Journal::default();
        let applied = apply_journaled(
            &first,
            &root,
            &runner,
            ApplyOptions::default(),
            &mut journal,
        )
        .unwrap();
        assert_eq!(applied.changed, vec!["/opt/app/conf", "/opt/app/conf/x"]);
        let mode = |p: &str| {
            std::fs::metadata(d.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("opt/app/conf"), 0o750);
        // The same plan again changes nothing; a new mode is set on the existing directory.
        let again = apply_journaled(
            &first,
            &root,
            &runner,
            ApplyOptions::default(),
            &mut journal,
        )
        .unwrap();
        assert!(again.changed.is_empty(), "{again:?}");
        let second = Plan {
            changes: vec![
                FileChange::Directory {
                    path: "/opt/app/conf".into(),
                    mode: 0o755,
                    owner: None,
                },
                FileChange::write("/etc/a", "changed", WriteOptions::default()),
            ],
            ..Plan::default()
        };
        apply_journaled(
            &second,
            &root,
            &runner,
            ApplyOptions::default(),
            &mut journal,
        )
        .unwrap();
        assert_eq!(mode("opt/app/conf"), 0o755);
        assert!(journal.rollback(&root));
        assert_eq!(root.read("/etc/a").unwrap(), b"old a");
        assert!(!d.path().join("opt/app/conf").exists());
        assert!(journal.is_empty());
    }

    #[test]
    fn an_empty_directory_is_removed_and_a_full_one_is_refused() {
        let (d, root) = setup();
        std::fs::create_dir_all(d.path().join("srv/empty")).unwrap();
        std::fs::create_dir_all(d.path().join("srv/full")).unwrap();
        std::fs::write(d.path().join("srv/full/f"), "f").unwrap();
        let remove = |p: &str| Plan {
            changes: vec![FileChange::RemoveDir { path: p.into() }],
            ..Plan::default()
        };
        let runner = Recorder::default();
        apply(
            &remove("/srv/empty"),
            &root,
            &runner,
            ApplyOptions::default(),
        )
        .unwrap();
        assert!(!d.path().join("srv/empty").exists());
        apply(
            &remove("/srv/gone"),
            &root,
            &runner,
            ApplyOptions::default(),
        )
        .unwrap();
        let err = apply(
            &remove("/srv/full"),
            &root,
            &runner,
            ApplyOptions::default(),
        );
        assert!(err.is_err());
        assert!(d.path().join("srv/full/f").exists());
    }

    #[test]
    fn an_exact_owner_that_differs_is_a_change() {
        let (_d, root) = setup();
        let runner = Recorder::default();
        let plan = |uid| Plan {
            changes: vec![FileChange::write(
                "/etc/a",
                "old a",
                WriteOptions::mode(0o644).owner(uid, uid).exact(),
            )],
            ..Plan::default()
        };
        let first = apply(&plan(0), &root, &runner, ApplyOptions::default()).unwrap();
        let moved = apply(&plan(1234), &root, &runner, ApplyOptions::default()).unwrap();
        assert_eq!(moved.changed, vec!["/etc/a"], "{first:?}");
        assert_eq!(root.metadata("/etc/a").unwrap().uid, 1234);
    }

    #[test]
    fn applies_with_backup() {
        let (_d, root) = setup();
        let runner = Recorder::default();
        let applied = apply(&plan(), &root, &runner, ApplyOptions::default()).unwrap();
        assert_eq!(applied.changed, vec!["/etc/a", "/etc/sub/b"]);
        assert_eq!(applied.backups, vec!["/var/lib/guestd/backup/etc/a.1"]);
        assert_eq!(
            root.read("/var/lib/guestd/backup/etc/a.1").unwrap(),
            b"old a"
        );
        assert_eq!(root.read("/etc/sub/b").unwrap(), b"new b");
        // Nothing beside the file: include directories load every file they hold.
        assert_eq!(root.read_dir("/etc").unwrap(), vec!["a", "sub"]);
        assert_eq!(root.metadata("/var/lib/guestd/backup").unwrap().mode, 0o700);
        assert_eq!(*runner.ran.lock().unwrap(), vec!["restart"]);
        // Unchanged files are skipped on a second run.
        let again = apply(&plan(), &root, &runner, ApplyOptions::default()).unwrap();
        assert!(again.changed.is_empty());
    }

    #[test]
    fn failed_command_restores_files_removes_the_backup_and_runs_rollback() {
        let (_d, root) = setup();
        let runner = Recorder {
            fail: vec!["restart"],
            ..Default::default()
        };
        let err = apply(&plan(), &root, &runner, ApplyOptions::default()).unwrap_err();
        assert!(
            matches!(err, ApplyError::ProcessSpec { restored: true, .. }),
            "{err:?}"
        );
        assert_eq!(root.read("/etc/a").unwrap(), b"old a");
        assert!(!root.exists("/etc/sub/b"));
        assert!(!root.exists("/var/lib/guestd/backup/etc/a.1"));
        assert_eq!(
            *runner.ran.lock().unwrap(),
            vec!["restart", "restart-again"]
        );
    }

    #[test]
    fn commands_a_sandbox_keeps_off_the_machine_are_reported_not_failed() {
        let (_d, root) = setup();
        let runner = std::sync::Arc::new(Recorder::default());
        let sandbox = crate::effect::SandboxRunner::new(
            runner.clone(),
            std::collections::BTreeSet::from([Effect::Hostname]),
        );
        let plan = Plan {
            changes: vec![FileChange::write(
                "/etc/a",
                "new a",
                WriteOptions::default(),
            )],
            commands: vec![
                ProcessSpec::new("ip").arg("link").observes().into(),
                ProcessSpec::new("ifdown").effect(Effect::Network).into(),
                ProcessSpec::new("hostname").effect(Effect::Hostname).into(),
                ProcessSpec::new("ifup").effect(Effect::Network).into(),
                PlannedProcess::new(ProcessSpec::new("ip").arg("addr").observes())
                    .expecting(Expect::StdoutContains("10.0.0.2".into())),
                ProcessSpec::new("chpasswd").root_local().into(),
            ],
            rollback_commands: vec![],
            native: vec![],
            checks: vec![],
        };
        let applied = apply(&plan, &root, &sandbox, ApplyOptions::default()).unwrap();
        assert_eq!(root.read("/etc/a").unwrap(), b"new a");
        // The check after the skipped restart is not run (it would fail), the rest is.
        assert_eq!(
            *runner.ran.lock().unwrap(),
            ["ip link", "hostname", "chpasswd"]
        );
        assert_eq!(
            applied.not_run_message().unwrap(),
            "not run (the --root sandbox keeps these effects off this machine; [sandbox] \
             allow_effects): ifdown, ifup (network)"
        );
        assert_eq!(
            applied.not_run_error().unwrap().to_string(),
            "'ifdown' was not run: the --root sandbox keeps network effects off this machine \
             ([sandbox] allow_effects)"
        );
        let everything = apply(&plan, &root, runner.as_ref(), ApplyOptions::default());
        // Without the sandbox the check runs (and fails here: the recorder prints nothing).
        assert!(matches!(everything, Err(ApplyError::Unexpected { .. })));
    }

    #[test]
    fn backups_rotate_and_keep_mode_and_owner() {
        let (d, root) = setup();
        std::fs::set_permissions(
            d.path().join("etc/a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        let runner = Recorder::default();
        for i in 0..5 {
            let plan = Plan {
                changes: vec![FileChange::write(
                    "/etc/a",
                    format!("v{i}"),
                    WriteOptions::default(),
                )],
                ..Plan::default()
            };
            apply(&plan, &root, &runner, ApplyOptions { keep_backups: 2 }).unwrap();
        }
        let dir = "/var/lib/guestd/backup/etc";
        assert_eq!(root.read_dir(dir).unwrap(), vec!["a.4", "a.5"]);
        assert_eq!(root.read(format!("{dir}/a.5")).unwrap(), b"v3");
        assert_eq!(root.metadata(format!("{dir}/a.5")).unwrap().mode, 0o640);
        assert_eq!(root.read("/etc/a").unwrap(), b"v4");
    }

    #[test]
    fn non_regular_targets_are_refused_before_reading() {
        let (d, root) = setup();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            d.path().join("etc/fifo"),
            rustix::fs::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let plan = Plan {
            changes: vec![FileChange::write("/etc/fifo", "x", WriteOptions::default())],
            ..Plan::default()
        };
        // Returns at once (a FIFO is never opened for a blocking read) with a clear error.
        let err = apply(&plan, &root, &Recorder::default(), ApplyOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("'/etc/fifo' is not a regular file (it is a FIFO)"),
            "{err}"
        );
        assert!(matches!(err, ApplyError::File { restored: true, .. }));
    }

    #[test]
    fn a_hard_linked_file_in_a_user_directory_is_replaced_but_never_read() {
        use std::os::unix::fs::MetadataExt;
        let (d, root) = setup();
        let home = d.path().join("home/alice");
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
        std::fs::write(d.path().join("etc/secret"), b"root only").unwrap();
        std::fs::hard_link(d.path().join("etc/secret"), home.join("notes")).unwrap();
        let plan = Plan {
            changes: vec![FileChange::write(
                "/home/alice/notes",
                "new",
                WriteOptions::mode(0o600),
            )],
            ..Plan::default()
        };
        let applied = apply(&plan, &root, &Recorder::default(), ApplyOptions::default()).unwrap();
        assert!(
            applied.backups.is_empty(),
            "the other link's content must not be copied"
        );
        assert_eq!(std::fs::read(home.join("notes")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(d.path().join("etc/secret")).unwrap(),
            b"root only"
        );
        assert_eq!(
            std::fs::metadata(d.path().join("etc/secret"))
                .unwrap()
                .nlink(),
            1
        );
        assert!(!root.exists("/var/lib/guestd/backup/home/alice/notes.1"));
    }

    #[test]
    fn an_oversized_file_is_replaced_without_a_backup() {
        let (d, root) = setup();
        // Sparse: over the read limit without writing 64 MiB.
        let f = std::fs::File::create(d.path().join("etc/huge")).unwrap();
        f.set_len(DEFAULT_READ_LIMIT + 1).unwrap();
        let plan = Plan {
            changes: vec![FileChange::write(
                "/etc/huge",
                "small",
                WriteOptions::default(),
            )],
            ..Plan::default()
        };
        let applied = apply(&plan, &root, &Recorder::default(), ApplyOptions::default()).unwrap();
        assert!(applied.backups.is_empty());
        assert_eq!(root.read("/etc/huge").unwrap(), b"small");
    }

    /// Answers by command line: `("freeze /b", 1, "Operation not supported")`; a `code` of
    /// -1 is a timeout, -2 a program that cannot start; anything unlisted succeeds.
    struct Scripted {
        answers: Vec<(&'static str, i32, &'static str)>,
        ran: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(answers: Vec<(&'static str, i32, &'static str)>) -> Self {
            Self {
                answers,
                ran: Mutex::default(),
            }
        }
    }

    impl ProcessRunner for Scripted {
        fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
            let line = cmd.command_line();
            self.ran.lock().unwrap().push(line.clone());
            let (code, stderr) = self
                .answers
                .iter()
                .find(|(l, _, _)| *l == line)
                .map_or((0, ""), |(_, c, e)| (*c, *e));
            match code {
                -1 => Err(ProcessError::Timeout {
                    program: cmd.program.clone(),
                    timeout: cmd.timeout,
                }),
                -2 => Err(ProcessError::Spawn {
                    program: cmd.program.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                }),
                code => Ok(Output {
                    code: Some(code),
                    stderr: stderr.as_bytes().to_vec(),
                    ..Output::default()
                }),
            }
        }
        fn exists(&self, _: &str) -> bool {
            true
        }
    }

    fn freeze_plan() -> Plan {
        let step = |m: &str| {
            PlannedProcess::new(ProcessSpec::new("freeze").arg(m))
                .expecting(Expect::SuccessOrDeclined("Operation not supported".into()))
                .undone_by(ProcessSpec::new("thaw").arg(m))
        };
        Plan {
            changes: vec![FileChange::write(
                "/etc/a",
                "record",
                WriteOptions::default(),
            )],
            commands: vec![
                PlannedProcess::new(ProcessSpec::new("hook").arg("freeze"))
                    .undone_by(ProcessSpec::new("hook").arg("thaw")),
                step("/a"),
                step("/b"),
                step("/c"),
                step("/d"),
            ],
            ..Plan::default()
        }
    }

    #[test]
    fn steps_are_reported_declined_ones_skipped_and_a_failure_undoes_the_done_ones_newest_first() {
        let (_d, root) = setup();
        let ok = Scripted::new(vec![("freeze /b", 1, "freeze /b: Operation not supported")]);
        let applied = apply(&freeze_plan(), &root, &ok, ApplyOptions::default()).unwrap();
        let kinds: Vec<&str> = applied
            .steps
            .iter()
            .map(|s| match s {
                Step::Ran(_) => "ran",
                Step::Declined(_) => "declined",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["ran", "ran", "declined", "ran", "ran"]);

        let (_d, root) = setup();
        let failing = Scripted::new(vec![
            ("freeze /b", 1, "Operation not supported"),
            ("freeze /d", 1, "Device or resource busy"),
        ]);
        let err = apply(&freeze_plan(), &root, &failing, ApplyOptions::default()).unwrap_err();
        let ApplyError::ProcessSpec {
            step,
            restored: true,
            source: ProcessError::Failed { stderr, .. },
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*step, stderr.as_str()), (4, "Device or resource busy"));
        // Undone: /c, then /a (not the declined /b, not the failed /d), then the hook; and the
        // file is back as it was.
        assert_eq!(
            *failing.ran.lock().unwrap(),
            [
                "hook freeze",
                "freeze /a",
                "freeze /b",
                "freeze /c",
                "freeze /d",
                "thaw /c",
                "thaw /a",
                "hook thaw"
            ]
        );
        assert_eq!(root.read("/etc/a").unwrap(), b"old a");
    }

    #[test]
    fn reported_steps_never_fail_the_plan_and_say_what_happened() {
        let (_d, root) = setup();
        let runner = Scripted::new(vec![
            ("trim /a", 1, "not supported"),
            ("trim /b", -1, ""),
            ("trim /c", -2, ""),
        ]);
        let plan = Plan {
            commands: ["/a", "/b", "/c", "/d"]
                .iter()
                .map(|m| {
                    PlannedProcess::new(ProcessSpec::new("trim").arg(*m)).expecting(Expect::Report)
                })
                .collect(),
            ..Plan::default()
        };
        let applied = apply(&plan, &root, &runner, ApplyOptions::default()).unwrap();
        assert!(matches!(&applied.steps[0], Step::Ran(out) if out.code == Some(1)));
        assert_eq!(applied.steps[1], Step::TimedOut);
        assert!(matches!(&applied.steps[2], Step::CouldNotRun(why) if why.contains("trim")));
        assert!(applied.steps[3].succeeded());
        // A status check: 3 is among the expected ones, 0 is not.
        let check = |code| {
            let plan = Plan {
                commands: vec![
                    PlannedProcess::new(ProcessSpec::new("status").observes())
                        .expecting(Expect::Status(vec![1, 2, 3])),
                ],
                ..Plan::default()
            };
            let runner = Scripted::new(vec![("status", code, "")]);
            apply(&plan, &root, &runner, ApplyOptions::default()).is_ok()
        };
        assert!(check(3));
        assert!(!check(0));
    }

    /// Records that it ran; fails when told to.
    struct Api {
        reach: Reach,
        fail: bool,
        ran: Mutex<bool>,
    }

    impl NativeAction for Api {
        fn name(&self) -> &str {
            "SetThing"
        }
        fn describe(&self) -> String {
            "set the thing".into()
        }
        fn reach(&self) -> Reach {
            self.reach
        }
        fn run(&self) -> Result<(), String> {
            *self.ran.lock().unwrap() = true;
            if self.fail {
                Err("SetThing failed with error 5".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn native_steps_and_file_checks_fail_and_roll_back_like_commands_and_a_sandbox_refuses_them() {
        let (_d, root) = setup();
        let api = |reach, fail| {
            std::sync::Arc::new(Api {
                reach,
                fail,
                ran: Mutex::new(false),
            })
        };
        let plan = |action: std::sync::Arc<Api>, line: &str| Plan {
            changes: vec![FileChange::write(
                "/etc/a",
                "user:HASH:1\n",
                WriteOptions::default(),
            )],
            native: vec![NativeStep(action)],
            checks: vec![FileCheck {
                path: "/etc/a".into(),
                line_start: Zeroizing::new(line.as_bytes().to_vec()),
                failure: "the entry does not hold the new hash".into(),
            }],
            ..Plan::default()
        };
        let runner = Recorder::default();
        // All good.
        let ok = api(Reach::Machine(Effect::Accounts), false);
        apply(
            &plan(ok.clone(), "user:HASH:"),
            &root,
            &runner,
            ApplyOptions::default(),
        )
        .unwrap();
        assert!(*ok.ran.lock().unwrap());
        // The check does not hold: the file is put back.
        let (_d, root) = setup();
        let err = apply(
            &plan(ok, "user:OTHER:"),
            &root,
            &runner,
            ApplyOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ApplyError::Check { restored: true, .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "the entry does not hold the new hash");
        assert_eq!(root.read("/etc/a").unwrap(), b"old a");
        // The native step fails: the same.
        let failing = api(Reach::Machine(Effect::Accounts), true);
        let err = apply(
            &plan(failing, "user:HASH:"),
            &root,
            &runner,
            ApplyOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ApplyError::Native { restored: true, .. }),
            "{err:?}"
        );
        assert_eq!(root.read("/etc/a").unwrap(), b"old a");
        // Under a sandbox: not run, reported, and the checks are not made.
        let sandbox = crate::effect::SandboxRunner::new(
            std::sync::Arc::new(Recorder::default()),
            std::collections::BTreeSet::new(),
        );
        let kept = api(Reach::Machine(Effect::Accounts), false);
        let applied = apply(
            &plan(kept.clone(), "user:NEVER:"),
            &root,
            &sandbox,
            ApplyOptions::default(),
        )
        .unwrap();
        assert!(!*kept.ran.lock().unwrap());
        assert_eq!(
            applied.not_run_error().unwrap().to_string(),
            "'SetThing' was not run: the --root sandbox keeps accounts effects off this machine \
             ([sandbox] allow_effects)"
        );
        // A step that stays inside the root runs under the sandbox too.
        let local = api(Reach::Root, false);
        apply(
            &plan(local.clone(), "user:HASH:"),
            &root,
            &sandbox,
            ApplyOptions::default(),
        )
        .unwrap();
        assert!(*local.ran.lock().unwrap());
        // Neither the check's bytes nor anything secret shows in the plan.
        assert!(!format!("{:?}", plan(api(Reach::Root, false), "user:SECRET:")).contains("SECRET"));
    }
}
