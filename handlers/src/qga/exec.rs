//! `guest-exec` and `guest-exec-status`, as qemu-ga answers them, for the programs `[qga]
//! exec_allow` names (off by default: see `disabled_by_config`).
//!
//! `guest-exec` returns `{"pid": N}` at once; the program runs on its own (core's
//! `ProcessSpawner`: clean environment, own process group, bounded capture, always reaped).
//! `guest-exec-status` answers `{"exited": false}` while it runs, and once it has exited its
//! code or signal and the captured output, after which the entry is gone (a second call gets
//! qemu-ga's `Invalid parameter 'pid'`).
//!
//! What is allowed: the requested program (an absolute path, or a bare name looked up in
//! core's `DEFAULT_PATH`, never in the request's `PATH`) is resolved to the file it would
//! execute, links followed, and must be the very file one of `exec_allow`'s entries resolves
//! to; that file is what runs, with the requested name as `argv[0]`. `"*"` allows any program.
//!
//! Bounds: at most `exec_max_processes` programs run at once; finished programs whose status
//! nobody asked for are kept up to the same number, the oldest dropped (and logged) beyond it;
//! their output is bounded per stream and in total (`exec_output_limit`, `exec_output_total`).
//!
//! Every start is logged with the program and its arguments, never its input or environment
//! values (only the variables' names), and every end with its status.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use guestd_core::process::DEFAULT_PATH;
use guestd_core::{
    Capture, Captured, DispatchError, DispatcherBuilder, ExitReport, HandlerError, OutputBudget,
    OutputLimits, ProcessError, ProcessSpawner, SpawnSpec, SpawnedProcess, Termination,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::{QgaConfig, StatefulCommand, args, decode_base64};

pub const EXEC: &str = "guest-exec";
pub const EXEC_STATUS: &str = "guest-exec-status";

/// Longest argument list shown in a log line.
const MAX_LOGGED_ARGV: usize = 1024;

/// Register `guest-exec` and `guest-exec-status` with one shared table.
pub(super) fn register(
    builder: DispatcherBuilder,
    config: &QgaConfig,
    spawner: Arc<dyn ProcessSpawner>,
) -> Result<DispatcherBuilder, DispatchError> {
    let table = Arc::new(ExecTable::new(config, spawner));
    builder
        .register(StatefulCommand {
            name: EXEC,
            state: Arc::clone(&table),
            // A program writing to a frozen filesystem would hang; qemu-ga refuses it too.
            while_frozen: false,
            query: false,
            run: |table, _, value| table.exec(value),
        })?
        .register(StatefulCommand {
            name: EXEC_STATUS,
            state: table,
            // Hosts poll it: a success is logged at debug level (the table logs each exit).
            while_frozen: true,
            query: true,
            run: |table, _, value| table.status(value),
        })
}

/// Which programs may run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allow {
    Any,
    /// Absolute paths, resolved when a request is checked.
    Programs(Vec<String>),
}

/// The programs `guest-exec` started, shared by the two commands.
pub(crate) struct ExecTable {
    spawner: Arc<dyn ProcessSpawner>,
    allow: Allow,
    limits: OutputLimits,
    max_processes: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for ExecTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecTable")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    running: Vec<Box<dyn SpawnedProcess>>,
    /// Finished, status not asked for yet; oldest first.
    finished: VecDeque<(u32, ExitReport)>,
}

/// `guest-exec`'s arguments (`capture-output` is either qemu-ga's old boolean or the newer
/// `GuestExecCaptureOutputMode`, an alternate decoded by hand for qemu's error words).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecArgs {
    path: String,
    #[serde(default)]
    arg: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(rename = "input-data")]
    input_data: Option<String>,
    #[serde(rename = "capture-output")]
    capture_output: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    pid: i64,
}

impl ExecTable {
    pub(crate) fn new(config: &QgaConfig, spawner: Arc<dyn ProcessSpawner>) -> Self {
        let allow = if config.exec_allow.iter().any(|e| e == "*") {
            Allow::Any
        } else {
            Allow::Programs(config.exec_allow.clone())
        };
        if allow == Allow::Any {
            warn!("[qga] exec_allow = \"*\": guest-exec runs any program the host names");
        }
        if let Allow::Programs(list) = &allow {
            for entry in list {
                if let Err(e) = spawner.locate(entry) {
                    warn!(program = %entry, error = %e, "[qga] exec_allow names a program that cannot run (now)");
                }
            }
        }
        Self {
            spawner,
            allow,
            limits: OutputLimits {
                per_stream: config.exec_output_limit,
                budget: OutputBudget::new(config.exec_output_total),
            },
            max_processes: config.exec_max_processes.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `guest-exec`.
    fn exec(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: ExecArgs = args(value)?;
        if !cfg!(unix) {
            return Err(super::platform::not_on_this_os(EXEC));
        }
        let capture = capture_mode(a.capture_output.as_ref())?;
        let env = environment(&a.env)?;
        let stdin = a.input_data.as_deref().map(decode_base64).transpose()?;
        let program = self.check_allowed(&a.path)?;
        let mut state = self.lock();
        self.refresh(&mut state);
        if state.running.len() >= self.max_processes {
            return Err(HandlerError::failed(format!(
                "{EXEC}: {} programs started by guest-exec are still running; that is the \
                 limit ([qga] exec_max_processes)",
                state.running.len()
            )));
        }
        let argv = shown_argv(&a.path, &a.arg);
        let env_names: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
        let input_bytes = stdin.as_ref().map_or(0, |s| s.len());
        let spec = SpawnSpec {
            program: program.clone(),
            argv0: a.path,
            args: a.arg,
            env,
            stdin,
            capture,
            limits: self.limits.clone(),
        };
        let process = self.spawner.spawn(spec).map_err(|e| {
            warn!(%argv, error = %e, "guest-exec could not start the program");
            spawn_failed(&e)
        })?;
        let pid = process.pid();
        info!(pid, program = %program.display(), %argv, env = ?env_names, input_bytes,
            capture = ?capture, "guest-exec started a program");
        // The OS may reuse the pid of a finished program whose status nobody took.
        if let Some(at) = state.finished.iter().position(|(p, _)| *p == pid) {
            state.finished.remove(at);
            warn!(
                pid,
                "guest-exec: the unclaimed status of an earlier program with this pid is dropped"
            );
        }
        state.running.push(process);
        Ok(json!({ "pid": pid }))
    }

    /// `guest-exec-status`.
    fn status(&self, value: &Value) -> Result<Value, HandlerError> {
        let a: StatusArgs = args(value)?;
        let invalid = || HandlerError::BadRequest("Invalid parameter 'pid'".into());
        let pid = u32::try_from(a.pid).map_err(|_| invalid())?;
        let mut state = self.lock();
        self.collect_finished(&mut state);
        // The status asked for is taken before the cap is applied: it is not unclaimed.
        let report = state
            .finished
            .iter()
            .position(|(p, _)| *p == pid)
            .and_then(|at| state.finished.remove(at))
            .map(|(_, report)| report);
        let running = state.running.iter().any(|p| p.pid() == pid);
        self.drop_unclaimed(&mut state);
        drop(state);
        match report {
            Some(report) => Ok(status_reply(&report)),
            None if running => Ok(json!({ "exited": false })),
            None => Err(invalid()),
        }
    }

    /// [`collect_finished`](Self::collect_finished), then [`drop_unclaimed`](Self::drop_unclaimed).
    fn refresh(&self, state: &mut State) {
        self.collect_finished(state);
        self.drop_unclaimed(state);
    }

    /// Move programs that have finished to `finished`.
    fn collect_finished(&self, state: &mut State) {
        let mut i = 0;
        while i < state.running.len() {
            match state.running[i].take_report() {
                Some(report) => {
                    let process = state.running.swap_remove(i);
                    let pid = process.pid();
                    info!(
                        pid,
                        status = %report.termination,
                        stdout_bytes = report.stdout.as_ref().map(|c| c.data().len()),
                        stderr_bytes = report.stderr.as_ref().map(|c| c.data().len()),
                        truncated = truncated(&report.stdout) || truncated(&report.stderr),
                        "guest-exec program finished"
                    );
                    state.finished.push_back((pid, report));
                }
                None => i += 1,
            }
        }
    }

    /// Keep at most `max_processes` unclaimed statuses, dropping the oldest.
    fn drop_unclaimed(&self, state: &mut State) {
        while state.finished.len() > self.max_processes {
            if let Some((pid, report)) = state.finished.pop_front() {
                warn!(pid, status = %report.termination,
                    kept = self.max_processes,
                    "guest-exec: nobody asked for this program's status; it is dropped to keep \
                     the number of unclaimed statuses bounded");
            }
        }
    }

    /// The file `requested` runs, if `exec_allow` permits it.
    fn check_allowed(&self, requested: &str) -> Result<std::path::PathBuf, HandlerError> {
        let not_allowed = |resolved: Option<&std::path::Path>| {
            let also = resolved
                .filter(|r| r.as_os_str() != requested)
                .map(|r| format!(" (it is {})", r.display()))
                .unwrap_or_default();
            warn!(program = %requested, "guest-exec refused: not in [qga] exec_allow");
            HandlerError::failed(format!(
                "{EXEC}: '{requested}'{also} is not a program this guest allows ([qga] exec_allow)"
            ))
        };
        let resolved = match self.spawner.locate(requested) {
            Ok(resolved) => resolved,
            Err(e) => {
                // Only a program the host may run learns that it does not exist.
                let listed = match &self.allow {
                    Allow::Any => true,
                    Allow::Programs(list) => list.iter().any(|p| p == requested),
                };
                return Err(if listed {
                    spawn_failed(&e)
                } else {
                    not_allowed(None)
                });
            }
        };
        let allowed = match &self.allow {
            Allow::Any => true,
            Allow::Programs(list) => list
                .iter()
                .any(|entry| self.spawner.locate(entry).is_ok_and(|p| p == resolved)),
        };
        if allowed {
            Ok(resolved)
        } else {
            Err(not_allowed(Some(&resolved)))
        }
    }
}

/// qemu-ga's words (GLib's, as qemu-ga 10 passes them on) for a program that could not be
/// started.
fn spawn_failed(e: &ProcessError) -> HandlerError {
    match e {
        ProcessError::Spawn { program, source } => HandlerError::failed(format!(
            "Failed to execute child process \u{201c}{program}\u{201d} ({})",
            super::os_reason(source)
        )),
        other => HandlerError::failed(other.to_string()),
    }
}

fn truncated(c: &Option<Captured>) -> bool {
    c.as_ref().is_some_and(Captured::truncated)
}

/// The capture mode: absent or `false` is none, `true` is separated (qemu-ga's old boolean),
/// or one of `GuestExecCaptureOutputMode`'s names.
fn capture_mode(value: Option<&Value>) -> Result<Capture, HandlerError> {
    Ok(match value {
        None | Some(Value::Bool(false)) => Capture::None,
        Some(Value::Bool(true)) => Capture::Separated,
        Some(Value::String(mode)) => match mode.as_str() {
            "none" => Capture::None,
            "stdout" => Capture::Stdout,
            "stderr" => Capture::Stderr,
            "separated" => Capture::Separated,
            "merged" => Capture::Merged,
            other => {
                return Err(HandlerError::BadRequest(format!(
                    "Parameter 'capture-output' does not accept value '{other}'"
                )));
            }
        },
        Some(_) => {
            return Err(HandlerError::BadRequest(
                "Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput"
                    .into(),
            ));
        }
    })
}

/// The program's whole environment: the request's `NAME=VALUE` entries, plus core's
/// `DEFAULT_PATH` as `PATH` unless they set one. The values are never logged or quoted back.
fn environment(entries: &[String]) -> Result<Vec<(String, String)>, HandlerError> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(entries.len() + 1);
    for (i, entry) in entries.iter().enumerate() {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(HandlerError::BadRequest(format!(
                "Invalid parameter 'env[{i}]': not NAME=VALUE"
            )));
        };
        if name.is_empty() || name.contains('\0') || value.contains('\0') {
            return Err(HandlerError::BadRequest(format!(
                "Invalid parameter 'env[{i}]': not NAME=VALUE"
            )));
        }
        // A later entry wins, as in a shell.
        env.retain(|(n, _)| n != name);
        env.push((name.to_string(), value.to_string()));
    }
    if !env.iter().any(|(n, _)| n == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    Ok(env)
}

/// `path arg…` for a log line: each word in double quotes when it needs them, clipped.
fn shown_argv(path: &str, args: &[String]) -> String {
    let mut out = String::new();
    for word in std::iter::once(path).chain(args.iter().map(String::as_str)) {
        if !out.is_empty() {
            out.push(' ');
        }
        if !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
        {
            out.push_str(word);
        } else {
            let _ = write!(out, "{word:?}");
        }
        if out.len() > MAX_LOGGED_ARGV {
            let mut end = MAX_LOGGED_ARGV;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push_str("...");
            break;
        }
    }
    out
}

/// `GuestExecStatus` of a finished program, as qemu-ga builds it: `exitcode` or `signal`, and
/// each captured stream's data (base64) with its truncation flag, only when it is not empty.
fn status_reply(report: &ExitReport) -> Value {
    let mut reply = Map::new();
    reply.insert("exited".into(), json!(true));
    match report.termination {
        Termination::Exited(code) => {
            reply.insert("exitcode".into(), json!(code));
        }
        Termination::Signaled(signal) => {
            reply.insert("signal".into(), json!(signal));
        }
        Termination::Unknown => {}
    }
    for (captured, data, truncated) in [
        (&report.stdout, "out-data", "out-truncated"),
        (&report.stderr, "err-data", "err-truncated"),
    ] {
        if let Some(c) = captured.as_ref().filter(|c| !c.data().is_empty()) {
            let encoded = Zeroizing::new(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                c.data(),
            ));
            reply.insert(data.into(), json!(encoded.as_str()));
            reply.insert(truncated.into(), json!(c.truncated()));
        }
    }
    Value::Object(reply)
}

// guest-exec is refused off Unix before the spawner is asked: the refusal is the only behaviour
// there.
#[cfg(all(test, not(unix)))]
mod tests_other_os {
    use guestd_testkit::FakeSpawner;

    use super::*;

    #[test]
    fn exec_is_refused_with_the_os_named_and_nothing_spawned() {
        let fake = Arc::new(FakeSpawner::new());
        let config = QgaConfig {
            exec_allow: vec!["*".into()],
            ..QgaConfig::default()
        };
        let t = ExecTable::new(&config, fake);
        let e = t.exec(&json!({"path": "cmd.exe"})).unwrap_err().to_string();
        assert!(e.contains("guest-exec is not available on windows"), "{e}");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::path::Path;

    use guestd_testkit::FakeSpawner;

    use super::*;

    /// /bin is a link to /usr/bin here, and `sh`, `true`, `id` exist.
    fn fake() -> FakeSpawner {
        let mut f = FakeSpawner::new();
        for name in ["sh", "true", "id"] {
            let file = format!("/usr/bin/{name}");
            for asked in [format!("/bin/{name}"), file.clone(), name.to_string()] {
                f = f.program(&asked, &file);
            }
        }
        f
    }

    fn finish(fake: &FakeSpawner, n: usize, termination: Termination, out: &[u8], cut: bool) {
        fake.finish(n, termination, Some((out, cut)), Some((b"", false)));
    }

    fn table(allow: &[&str], max: usize) -> (Arc<FakeSpawner>, ExecTable) {
        let fake = Arc::new(fake());
        let config = QgaConfig {
            exec_allow: allow.iter().map(|s| s.to_string()).collect(),
            exec_max_processes: max,
            ..QgaConfig::default()
        };
        let t = ExecTable::new(&config, fake.clone());
        (fake, t)
    }

    fn error(r: Result<Value, HandlerError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn allow_list_compares_resolved_programs() {
        let (fake, t) = table(&["/bin/sh"], 8);
        // The same file under another name is the same program; argv[0] is what was asked.
        for path in ["/bin/sh", "/usr/bin/sh", "sh"] {
            let pid = t.exec(&json!({"path": path})).unwrap()["pid"]
                .as_u64()
                .unwrap();
            assert!(pid >= 100);
        }
        for n in 0..3 {
            assert_eq!(
                fake.spec(n, |s| s.program.clone()),
                Path::new("/usr/bin/sh")
            );
        }
        assert_eq!(fake.spec(2, |s| s.argv0.clone()), "sh");
        let e = error(t.exec(&json!({"path": "/usr/bin/id"})));
        assert!(
            e.contains("'/usr/bin/id' is not a program this guest allows"),
            "{e}"
        );
        // Whether an unlisted program exists is not revealed.
        let e = error(t.exec(&json!({"path": "/opt/missing"})));
        assert!(e.contains("is not a program this guest allows"), "{e}");
        let e = error(t.exec(&json!({"path": "id"})));
        assert!(e.contains("'id' (it is /usr/bin/id) is not"), "{e}");
        let (_, any) = table(&["*"], 8);
        any.exec(&json!({"path": "/usr/bin/id"})).unwrap();
        let e = error(any.exec(&json!({"path": "/opt/missing"})));
        assert!(
            e.starts_with("Failed to execute child process \u{201c}/opt/missing\u{201d}"),
            "{e}"
        );
    }

    #[test]
    fn arguments_environment_and_input_reach_the_spawner() {
        let (fake, t) = table(&["/bin/sh"], 8);
        t.exec(&json!({
            "path": "/bin/sh", "arg": ["-c", "cat"], "env": ["A=1", "A=2", "B=x=y"],
            "input-data": "aW5wdXQ=", "capture-output": "merged"
        }))
        .unwrap();
        fake.spec(0, |spec| {
            assert_eq!(spec.args, ["-c", "cat"]);
            assert_eq!(
                spec.env,
                [
                    ("A".to_string(), "2".to_string()),
                    ("B".into(), "x=y".into()),
                    ("PATH".into(), DEFAULT_PATH.into())
                ]
            );
            assert_eq!(
                spec.stdin.as_deref().map(Vec::as_slice),
                Some(&b"input"[..])
            );
            assert_eq!(spec.capture, Capture::Merged);
        });
        for (v, want) in [
            (json!(true), Capture::Separated),
            (json!(false), Capture::None),
            (json!("stderr"), Capture::Stderr),
        ] {
            assert_eq!(capture_mode(Some(&v)).unwrap(), want);
        }
        for (args, want) in [
            (
                json!({"path": "/bin/sh", "capture-output": "all"}),
                "Parameter 'capture-output' does not accept value 'all'",
            ),
            (
                json!({"path": "/bin/sh", "capture-output": 1}),
                "Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput",
            ),
            (
                json!({"path": "/bin/sh", "env": ["NOVALUE"]}),
                "Invalid parameter 'env[0]': not NAME=VALUE",
            ),
            (
                json!({"path": "/bin/sh", "input-data": "!!"}),
                "Base64 data contains invalid characters",
            ),
            (
                json!({"path": "/bin/sh", "bogus": 1}),
                "Parameter 'bogus' is unexpected",
            ),
            (json!({}), "Parameter 'path' is missing"),
        ] {
            assert_eq!(error(t.exec(&args)), want, "{args}");
        }
    }

    #[test]
    fn status_is_reported_once_after_the_exit() {
        let (fake, t) = table(&["/bin/sh"], 8);
        let pid = t.exec(&json!({"path": "/bin/sh"})).unwrap()["pid"].clone();
        let status = |t: &ExecTable| t.status(&json!({ "pid": pid }));
        assert_eq!(status(&t).unwrap(), json!({"exited": false}));
        finish(&fake, 0, Termination::Exited(3), b"out", true);
        assert_eq!(
            status(&t).unwrap(),
            json!({"exited": true, "exitcode": 3, "out-data": "b3V0", "out-truncated": true})
        );
        assert_eq!(error(status(&t)), "Invalid parameter 'pid'");
        assert_eq!(
            error(t.status(&json!({"pid": -1}))),
            "Invalid parameter 'pid'"
        );
        t.exec(&json!({"path": "/bin/sh"})).unwrap();
        finish(&fake, 1, Termination::Signaled(9), b"", false);
        assert_eq!(
            t.status(&json!({"pid": 101})).unwrap(),
            json!({"exited": true, "signal": 9})
        );
    }

    #[test]
    fn running_and_unclaimed_programs_are_bounded() {
        let (fake, t) = table(&["/bin/sh"], 2);
        t.exec(&json!({"path": "/bin/sh"})).unwrap();
        t.exec(&json!({"path": "/bin/sh"})).unwrap();
        let e = error(t.exec(&json!({"path": "/bin/sh"})));
        assert!(e.contains("exec_max_processes"), "{e}");
        finish(&fake, 0, Termination::Exited(0), b"", false);
        finish(&fake, 1, Termination::Exited(0), b"", false);
        for n in 2..5 {
            t.exec(&json!({"path": "/bin/sh"})).unwrap();
            finish(&fake, n, Termination::Exited(n as i32), b"", false);
        }
        t.exec(&json!({"path": "/bin/sh"})).unwrap();
        // Five finished, never asked for: only the two newest are kept.
        let state = t.lock();
        let kept: Vec<u32> = state.finished.iter().map(|(p, _)| *p).collect();
        assert_eq!(kept, [103, 104]);
        assert_eq!(state.running.len(), 1);
    }

    #[test]
    fn argv_in_logs_is_quoted_and_clipped() {
        assert_eq!(
            shown_argv("/bin/sh", &["-c".into(), "echo hi".into()]),
            r#"/bin/sh -c "echo hi""#
        );
        let long = shown_argv("/bin/sh", &["x".repeat(5000)]);
        assert!(long.len() < MAX_LOGGED_ARGV + 10 && long.ends_with("..."));
    }
}
