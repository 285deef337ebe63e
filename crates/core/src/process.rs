//! Programs that guestd starts and leaves running (qemu-ga's `guest-exec`), as opposed to the
//! run-to-completion commands of [`ProcessRunner`](crate::ProcessRunner). They go through a
//! [`ProcessSpawner`] so that tests can fake them; [`SystemSpawner`] is the real one.
//!
//! What the real spawner promises (Unix):
//!
//! - the program gets exactly the environment it is given ([`SpawnSpec::env`]), stdin from
//!   [`SpawnSpec::stdin`] or `/dev/null`, `/` as working directory, its own process group, and
//!   none of guestd's descriptors (everything above 2 is marked close-on-exec in the child, even
//!   a descriptor guestd inherited without that flag);
//! - every child is reaped, whether or not anybody asks for its status (a task of guestd's
//!   runtime waits for it), so no zombie is left;
//! - captured output is bounded twice: at most [`OutputLimits::per_stream`] bytes per stream
//!   (more is read and dropped, and the stream marked truncated, so the program never blocks on
//!   a full pipe) and at most what is left of a shared [`OutputBudget`] across every process;
//! - the report is ready once the program itself has exited and its output has been read to the
//!   end, or for at most [`OUTPUT_DRAIN`] after the exit: a daemon the program started and that
//!   keeps stdout open cannot hold the report back (its later output is not read).

// The real spawner is Unix-only; elsewhere it refuses, and its helpers are unused.
#![cfg_attr(not(unix), allow(dead_code))]

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::runner::ProcessError;

/// `PATH` of a program whose request sets none, and the directories where a bare program name
/// is looked up ([`ProcessSpawner::locate`]).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output is still read after the program exited, when something it started keeps
/// its stdout or stderr open.
pub const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// Which output of the program is captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Capture {
    /// Neither (both go to `/dev/null`).
    #[default]
    None,
    Stdout,
    Stderr,
    /// Both, each on its own.
    Separated,
    /// Both into one stream (reported as stdout).
    Merged,
}

/// Bytes of captured output all processes may hold together. Each captured byte takes from it,
/// and gives it back when the output is dropped (claimed by the host, or discarded).
#[derive(Debug)]
pub struct OutputBudget {
    left: AtomicUsize,
}

impl OutputBudget {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(total),
        })
    }

    /// Bytes not taken now.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    /// Take up to `want` bytes; how many were granted.
    fn take(&self, want: usize) -> usize {
        let mut granted = 0;
        let _ = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                granted = left.min(want);
                Some(left - granted)
            });
        granted
    }

    fn give_back(&self, n: usize) {
        self.left.fetch_add(n, Ordering::AcqRel);
    }
}

/// Bounds of captured output.
#[derive(Debug, Clone)]
pub struct OutputLimits {
    /// Most bytes kept of one stream.
    pub per_stream: usize,
    /// Shared by every process.
    pub budget: Arc<OutputBudget>,
}

/// One captured stream: the bytes kept, and whether more was written than kept.
pub struct Captured {
    data: Vec<u8>,
    truncated: bool,
    budget: Option<Arc<OutputBudget>>,
}

impl Captured {
    /// Output made up by a fake (no budget).
    pub fn new(data: Vec<u8>, truncated: bool) -> Self {
        Self {
            data,
            truncated,
            budget: None,
        }
    }

    fn empty(budget: Arc<OutputBudget>) -> Self {
        Self {
            data: Vec::new(),
            truncated: false,
            budget: Some(budget),
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Keep what fits of `bytes` (the stream's limit, then the shared budget), drop the rest.
    fn push(&mut self, bytes: &[u8], per_stream: usize) {
        let room = per_stream.saturating_sub(self.data.len()).min(bytes.len());
        let granted = match &self.budget {
            Some(budget) => budget.take(room),
            None => room,
        };
        if granted < bytes.len() {
            self.truncated = true;
        }
        if granted > 0 {
            // Grow by doubling, but never past the stream's limit.
            if self.data.capacity() - self.data.len() < granted {
                let want = (self.data.len() + granted)
                    .max(self.data.capacity() * 2)
                    .min(per_stream);
                self.data.reserve_exact(want - self.data.len());
            }
            self.data.extend_from_slice(&bytes[..granted]);
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.data.len());
        }
    }
}

impl fmt::Debug for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Captured({} bytes", self.data.len())?;
        if self.truncated {
            f.write_str(", truncated")?;
        }
        f.write_str(")")
    }
}

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// Waiting for it failed (reported as neither).
    Unknown,
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit code {code}"),
            Self::Signaled(signal) => write!(f, "signal {signal}"),
            Self::Unknown => f.write_str("unknown status"),
        }
    }
}

/// What a finished program left: its termination and the captured output (`None`: that
/// stream was not captured).
#[derive(Debug)]
pub struct ExitReport {
    pub termination: Termination,
    pub stdout: Option<Captured>,
    pub stderr: Option<Captured>,
}

/// A program to start.
pub struct SpawnSpec {
    /// The file executed (absolute, as [`ProcessSpawner::locate`] found it).
    pub program: PathBuf,
    /// What the program sees as `argv[0]` (the name it was asked for).
    pub argv0: String,
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Written to stdin, which is then closed; `None`: stdin is `/dev/null`. Wiped on drop.
    pub stdin: Option<Zeroizing<Vec<u8>>>,
    pub capture: Capture,
    pub limits: OutputLimits,
}

impl fmt::Debug for SpawnSpec {
    /// The program and its arguments; of the environment only the names, of stdin only its
    /// length (either may hold secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SpawnSpec")
            .field("program", &self.program)
            .field("argv0", &self.argv0)
            .field("args", &self.args)
            .field("env", &names)
            .field("stdin_bytes", &self.stdin.as_ref().map(|s| s.len()))
            .field("capture", &self.capture)
            .finish()
    }
}

/// Starts programs that run on their own (the real one, or a fake).
pub trait ProcessSpawner: Send + Sync + 'static {
    /// The file that running `program` would execute: an absolute path with every link
    /// resolved, or a bare name looked up in [`DEFAULT_PATH`]. It must be an executable
    /// regular file.
    fn locate(&self, program: &str) -> Result<PathBuf, ProcessError>;

    /// Start `spec`. Returns at once; the program runs on its own.
    fn spawn(&self, spec: SpawnSpec) -> Result<Box<dyn SpawnedProcess>, ProcessError>;
}

/// A started program.
pub trait SpawnedProcess: Send + Sync + fmt::Debug {
    fn pid(&self) -> u32;

    /// Its report, once it has exited and its output has been read (see the module docs);
    /// `None` before. Returns the report only once.
    fn take_report(&self) -> Option<ExitReport>;
}

/// Under `--root DIR`, programs would still run on this machine: the spawner is wrapped so that
/// they start only when `[sandbox] allow_effects` lists `other` (what guest-exec runs is
/// unclassified). On the real root it is returned as it is. See [`crate::effect`].
pub fn contain(
    root: &crate::Root,
    spawner: Arc<dyn ProcessSpawner>,
    config: &crate::SandboxConfig,
) -> Arc<dyn ProcessSpawner> {
    if root.is_sandbox() && !config.allow_effects.contains(&crate::Effect::Other) {
        Arc::new(SandboxSpawner(spawner))
    } else {
        spawner
    }
}

/// Finds programs but starts none ([`contain`]).
struct SandboxSpawner(Arc<dyn ProcessSpawner>);

impl ProcessSpawner for SandboxSpawner {
    fn locate(&self, program: &str) -> Result<PathBuf, ProcessError> {
        self.0.locate(program)
    }

    fn spawn(&self, spec: SpawnSpec) -> Result<Box<dyn SpawnedProcess>, ProcessError> {
        let effect = crate::Effect::Other;
        tracing::info!(program = %spec.program.display(), %effect,
            "not run: the --root sandbox keeps this effect off the machine ([sandbox] allow_effects)");
        Err(ProcessError::NotRun {
            program: spec.program.display().to_string(),
            effect,
        })
    }
}

/// Where the supervising task leaves the report.
type ReportSlot = Arc<Mutex<Option<ExitReport>>>;

/// A program started by [`SystemSpawner`].
#[derive(Debug)]
struct SystemProcess {
    pid: u32,
    report: ReportSlot,
}

impl SpawnedProcess for SystemProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn take_report(&self) -> Option<ExitReport> {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Starts programs on this machine. Must be called from within guestd's tokio runtime (a
/// handler's blocking thread is): a task of that runtime supervises each program.
#[derive(Debug, Default, Clone)]
pub struct SystemSpawner;

impl ProcessSpawner for SystemSpawner {
    fn locate(&self, program: &str) -> Result<PathBuf, ProcessError> {
        sys::locate(program).map_err(|source| ProcessError::Spawn {
            program: program.to_string(),
            source,
        })
    }

    fn spawn(&self, spec: SpawnSpec) -> Result<Box<dyn SpawnedProcess>, ProcessError> {
        let program = spec.program.display().to_string();
        sys::spawn(spec).map_err(|source| ProcessError::Spawn { program, source })
    }
}

#[cfg(unix)]
mod sys {
    use std::io;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::process::{Child, ChildStdin};
    use zeroize::Zeroizing;

    use super::{
        Capture, Captured, DEFAULT_PATH, ExitReport, OUTPUT_DRAIN, OutputLimits, ReportSlot,
        SpawnSpec, SpawnedProcess, SystemProcess, Termination,
    };

    pub(super) fn locate(program: &str) -> io::Result<PathBuf> {
        let path = Path::new(program);
        let found = if program.contains('/') {
            if !path.is_absolute() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a program path must be absolute",
                ));
            }
            path.to_path_buf()
        } else {
            std::env::split_paths(DEFAULT_PATH)
                .map(|dir| dir.join(program))
                .find(|candidate| is_executable_file(candidate))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("not found in {DEFAULT_PATH}"),
                    )
                })?
        };
        let real = std::fs::canonicalize(&found)?;
        if !is_executable_file(&real) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "not an executable regular file",
            ));
        }
        Ok(real)
    }

    fn is_executable_file(path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|md| md.is_file() && md.permissions().mode() & 0o111 != 0)
    }

    #[allow(clippy::disallowed_methods)] // the one place that starts guest-exec programs
    pub(super) fn spawn(spec: SpawnSpec) -> io::Result<Box<dyn SpawnedProcess>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let _entered = runtime.enter();
        let SpawnSpec {
            program,
            argv0,
            args,
            env,
            stdin,
            capture,
            limits,
        } = spec;
        let mut command = tokio::process::Command::new(&program);
        command
            .arg0(&argv0)
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .process_group(0)
            .kill_on_drop(false)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        // Merged: one pipe behind both stdout and stderr.
        let mut merged = None;
        let (out, err) = match capture {
            Capture::None => (Stdio::null(), Stdio::null()),
            Capture::Stdout => (Stdio::piped(), Stdio::null()),
            Capture::Stderr => (Stdio::null(), Stdio::piped()),
            Capture::Separated => (Stdio::piped(), Stdio::piped()),
            Capture::Merged => {
                let (writer, reader) = tokio::net::unix::pipe::pipe()?;
                let writer = writer.into_blocking_fd()?;
                merged = Some(reader);
                (Stdio::from(writer.try_clone()?), Stdio::from(writer))
            }
        };
        command.stdout(out).stderr(err);
        // SAFETY: the closure only makes system calls that are async-signal-safe (close_range
        // or fcntl) and touches no memory shared with the parent, as `pre_exec` requires.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(close_inherited_descriptors);
        }
        let mut child = command.spawn()?;
        // The command still holds the merged pipe's write end: without dropping it here, the
        // reader would never see the end of the output.
        drop(command);
        let pid = child.id().unwrap_or(0);
        let stdout: Option<Reader> = match merged {
            Some(reader) => Some(Box::new(reader)),
            None => child.stdout.take().map(|s| Box::new(s) as Reader),
        };
        let stderr: Option<Reader> = child.stderr.take().map(|s| Box::new(s) as Reader);
        let report: ReportSlot = Arc::new(Mutex::new(None));
        runtime.spawn(supervise(
            child,
            stdin,
            stdout,
            stderr,
            limits,
            Arc::clone(&report),
        ));
        Ok(Box::new(SystemProcess { pid, report }))
    }

    /// Mark every descriptor above stderr close-on-exec (in the child, before `exec`): std and
    /// tokio open theirs so, but a descriptor guestd inherited may lack the flag.
    fn close_inherited_descriptors() -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
            #[allow(unsafe_code)]
            let done = unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                )
            } == 0;
            if done {
                return Ok(());
            }
        }
        // Kernels without close_range (before 5.11), other systems: one by one.
        // SAFETY: sysconf and fcntl(F_GETFD/F_SETFD) are async-signal-safe and only read or
        // change descriptor flags.
        #[allow(unsafe_code)]
        unsafe {
            let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(256, 65_536) as libc::c_int;
            for fd in 3..max {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
        Ok(())
    }

    type Reader = Box<dyn AsyncRead + Unpin + Send>;

    /// One output pipe being read into its capture.
    struct Stream {
        pipe: Option<Reader>,
        captured: Captured,
        buf: Box<[u8]>,
    }

    impl Stream {
        fn new(pipe: Option<Reader>, limits: &OutputLimits) -> Option<Self> {
            pipe.map(|pipe| Self {
                pipe: Some(pipe),
                captured: Captured::empty(Arc::clone(&limits.budget)),
                buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            })
        }

        fn open(stream: &Option<Self>) -> bool {
            stream.as_ref().is_some_and(|s| s.pipe.is_some())
        }

        /// Read once (cancel-safe); at the end or on an error the pipe is closed.
        async fn read_some(stream: &mut Option<Self>, per_stream: usize) {
            let Some(s) = stream else { return };
            let Some(pipe) = s.pipe.as_mut() else { return };
            match pipe.read(&mut s.buf).await {
                Ok(0) | Err(_) => s.pipe = None,
                Ok(n) => s.captured.push(&s.buf[..n], per_stream),
            }
        }

        fn finish(stream: Option<Self>) -> Option<Captured> {
            stream.map(|s| s.captured)
        }
    }

    /// Feed stdin, read the output, reap the child, then leave the report in `slot`.
    async fn supervise(
        mut child: Child,
        input: Option<Zeroizing<Vec<u8>>>,
        stdout: Option<Reader>,
        stderr: Option<Reader>,
        limits: OutputLimits,
        slot: ReportSlot,
    ) {
        let per_stream = limits.per_stream;
        let mut out = Stream::new(stdout, &limits);
        let mut err = Stream::new(stderr, &limits);
        let mut feeding = Box::pin(feed(child.stdin.take(), input));
        let mut fed = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                () = &mut feeding, if !fed => fed = true,
                () = Stream::read_some(&mut out, per_stream), if Stream::open(&out) => {}
                () = Stream::read_some(&mut err, per_stream), if Stream::open(&err) => {}
            }
        };
        // The program is gone (and reaped): a stdin it never read is closed now.
        drop(feeding);
        let deadline = tokio::time::Instant::now() + OUTPUT_DRAIN;
        while Stream::open(&out) || Stream::open(&err) {
            tokio::select! {
                biased;
                () = Stream::read_some(&mut out, per_stream), if Stream::open(&out) => {}
                () = Stream::read_some(&mut err, per_stream), if Stream::open(&err) => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let termination = match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Termination::Exited(code),
                (None, Some(signal)) => Termination::Signaled(signal),
                (None, None) => Termination::Unknown,
            },
            Err(_) => Termination::Unknown,
        };
        let report = ExitReport {
            termination,
            stdout: Stream::finish(out),
            stderr: Stream::finish(err),
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// Write `input` to stdin and close it. A program that exits or closes stdin early is not
    /// an error.
    async fn feed(stdin: Option<ChildStdin>, input: Option<Zeroizing<Vec<u8>>>) {
        if let (Some(mut pipe), Some(bytes)) = (stdin, input) {
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        }
    }
}

#[cfg(not(unix))]
mod sys {
    use std::io;
    use std::path::PathBuf;

    use super::{SpawnSpec, SpawnedProcess};

    pub(super) fn locate(_program: &str) -> io::Result<PathBuf> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "starting programs for the host is not supported on this OS",
        ))
    }

    pub(super) fn spawn(_spec: SpawnSpec) -> io::Result<Box<dyn SpawnedProcess>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "starting programs for the host is not supported on this OS",
        ))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Instant;

    use super::*;

    fn spec(args: &[&str], capture: Capture, limits: OutputLimits) -> SpawnSpec {
        SpawnSpec {
            program: SystemSpawner.locate("sh").unwrap(),
            argv0: "sh".into(),
            args: std::iter::once("-c")
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
            env: vec![("PATH".into(), DEFAULT_PATH.into())],
            stdin: None,
            capture,
            limits,
        }
    }

    fn limits(per_stream: usize, total: usize) -> OutputLimits {
        OutputLimits {
            per_stream,
            budget: OutputBudget::new(total),
        }
    }

    async fn wait(p: &dyn SpawnedProcess) -> ExitReport {
        let started = Instant::now();
        loop {
            if let Some(r) = p.take_report() {
                return r;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no report");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn captures_each_mode_and_the_termination() {
        let script = "echo out; echo err >&2; exit 3";
        for (capture, out, err) in [
            (Capture::None, None, None),
            (Capture::Stdout, Some("out\n"), None),
            (Capture::Stderr, None, Some("err\n")),
            (Capture::Separated, Some("out\n"), Some("err\n")),
            (Capture::Merged, Some("out\nerr\n"), None),
        ] {
            let p = SystemSpawner
                .spawn(spec(&[script], capture, limits(1 << 20, 1 << 20)))
                .unwrap();
            let r = wait(p.as_ref()).await;
            assert_eq!(r.termination, Termination::Exited(3), "{capture:?}");
            let text = |c: &Option<Captured>| {
                c.as_ref()
                    .map(|c| String::from_utf8(c.data().to_vec()).unwrap())
            };
            assert_eq!(text(&r.stdout).as_deref(), out, "{capture:?}");
            assert_eq!(text(&r.stderr).as_deref(), err, "{capture:?}");
            assert!(p.take_report().is_none(), "reported once");
        }
        let p = SystemSpawner
            .spawn(spec(&["kill -KILL $$"], Capture::None, limits(1, 1)))
            .unwrap();
        assert_eq!(wait(p.as_ref()).await.termination, Termination::Signaled(9));
    }

    #[tokio::test]
    async fn environment_stdin_and_descriptors_are_the_given_ones() {
        let mut s = spec(
            &["cat; echo; env; ls /proc/self/fd"],
            Capture::Separated,
            limits(1 << 20, 1 << 20),
        );
        s.env.push(("ONLY".into(), "this".into()));
        s.stdin = Some(Zeroizing::new(b"input".to_vec()));
        let p = SystemSpawner.spawn(s).unwrap();
        let r = wait(p.as_ref()).await;
        let out = String::from_utf8(r.stdout.unwrap().data().to_vec()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "input");
        let mut env: Vec<&str> = lines[1..]
            .iter()
            .copied()
            .filter(|l| l.contains('='))
            .collect();
        env.sort();
        // PWD is the shell's own.
        assert_eq!(env, ["ONLY=this", &format!("PATH={DEFAULT_PATH}"), "PWD=/"]);
        // 0, 1, 2 and the directory ls reads: nothing of the test process.
        let fds: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
    }

    #[tokio::test]
    async fn output_is_bounded_per_stream_and_by_the_budget() {
        let budget = OutputBudget::new(150_000);
        let big = "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2";
        let p = SystemSpawner
            .spawn(spec(
                &[big],
                Capture::Separated,
                OutputLimits {
                    per_stream: 100_000,
                    budget: Arc::clone(&budget),
                },
            ))
            .unwrap();
        let r = wait(p.as_ref()).await;
        assert_eq!(r.termination, Termination::Exited(0));
        let (out, err) = (r.stdout.as_ref().unwrap(), r.stderr.as_ref().unwrap());
        assert!(out.truncated() && err.truncated());
        assert_eq!(out.data().len() + err.data().len(), 150_000);
        assert!(out.data().len() <= 100_000 && err.data().len() <= 100_000);
        assert_eq!(budget.left(), 0);
        drop(r);
        assert_eq!(budget.left(), 150_000, "dropped output is given back");
    }

    #[tokio::test]
    async fn a_daemon_keeping_stdout_open_does_not_hold_the_report() {
        let p = SystemSpawner
            .spawn(spec(
                &["echo started; sleep 30 & echo $! >&2"],
                Capture::Separated,
                limits(1 << 20, 1 << 20),
            ))
            .unwrap();
        let started = Instant::now();
        let r = wait(p.as_ref()).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(r.stdout.unwrap().data(), b"started\n");
        let daemon: i32 = String::from_utf8(r.stderr.unwrap().data().to_vec())
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill takes no pointers; the pid is the test's own grandchild.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(daemon, libc::SIGKILL);
        }
    }

    #[test]
    fn locate_resolves_links_and_searches_only_the_default_path() {
        let sh = SystemSpawner.locate("sh").unwrap();
        assert!(sh.is_absolute());
        assert_eq!(SystemSpawner.locate("/bin/sh").unwrap(), sh);
        assert!(SystemSpawner.locate("bin/sh").is_err());
        assert!(SystemSpawner.locate("/nonexistent/x").is_err());
        assert!(
            SystemSpawner.locate("/etc/passwd").is_err(),
            "not executable"
        );
        assert!(SystemSpawner.locate("/bin").is_err(), "a directory");
    }

    #[test]
    fn spec_debug_hides_environment_values_and_input() {
        let mut s = spec(&["true"], Capture::None, limits(1, 1));
        s.env.push(("TOKEN".into(), "secret-value".into()));
        s.stdin = Some(Zeroizing::new(b"secret-input".to_vec()));
        let shown = format!("{s:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
