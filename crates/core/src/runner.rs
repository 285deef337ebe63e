//! Every process guestd spawns goes through a [`ProcessRunner`], so tests record commands instead
//! of running them. Secrets go through stdin, never argv; a command's `Debug`/`Display` never
//! shows its stdin. Every command says what it reaches beyond the guest's files
//! ([`Reach`](crate::effect::Reach)): by default the machine, so that a `--root` sandbox refuses
//! it unless it is marked as staying inside the root or only observing (see [`crate::effect`]).

use std::fmt;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use wait_timeout::ChildExt;
use zeroize::Zeroizing;

use crate::effect::{Effect, Reach};

/// Default time a command may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A command to run. Build with [`ProcessSpec::new`] and the `arg`/`stdin`/`timeout` methods, and
/// say what it reaches with [`effect`](Self::effect), [`observes`](Self::observes) or
/// [`root_local`](Self::root_local) (unmarked: it acts on the machine, [`Effect::Other`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Bytes written to stdin (secrets go here). Wiped on drop.
    pub stdin: Option<Zeroizing<Vec<u8>>>,
    pub timeout: Duration,
    /// `Some` clears the environment and sets exactly these variables.
    pub env: Option<Vec<(String, String)>>,
    /// What it acts on beyond the guest's files (what a sandbox root checks).
    pub reach: Reach,
}

impl ProcessSpec {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            env: None,
            reach: Reach::default(),
        }
    }

    /// It acts on the machine with this effect (power, network, clock, …).
    pub fn effect(mut self, effect: Effect) -> Self {
        self.reach = Reach::Machine(effect);
        self
    }

    /// It only reads the machine's state (`ip addr show`, `systemctl status`).
    pub fn observes(mut self) -> Self {
        self.reach = Reach::Observe;
        self
    }

    /// It changes nothing outside the root (`chpasswd -R ROOT`, a staged binary's self-test).
    pub fn root_local(mut self) -> Self {
        self.reach = Reach::Root;
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn stdin(mut self, bytes: Zeroizing<Vec<u8>>) -> Self {
        self.stdin = Some(bytes);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Run with an empty environment plus these variables.
    pub fn clear_env(mut self, vars: Vec<(String, String)>) -> Self {
        self.env = Some(vars);
        self
    }

    /// `program arg arg …` (for logs and recorded commands; stdin is never shown).
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({:?}", self.command_line())?;
        if self.stdin.is_some() {
            f.write_str(", stdin: <hidden>")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for ProcessSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command_line())
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit code, or `Failed` naming the program with stderr for the log.
    pub fn check(self, program: &str) -> Result<Output, ProcessError> {
        if self.success() {
            Ok(self)
        } else {
            Err(ProcessError::Failed {
                program: program.to_string(),
                code: self.code,
                stderr: String::from_utf8_lossy(&self.stderr).trim().to_string(),
            })
        }
    }
}

/// Running a command failed. `Display` names the program and the status only.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not run '{program}': {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("'{program}' did not finish within {}s and was killed", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    /// A `--root` sandbox kept this command off the machine (see [`crate::effect`]).
    #[error(
        "'{program}' was not run: the --root sandbox keeps {effect} effects off this machine \
         ([sandbox] allow_effects)"
    )]
    NotRun { program: String, effect: Effect },
    #[error("'{program}' failed with {}", describe_code(*code))]
    Failed {
        program: String,
        code: Option<i32>,
        stderr: String,
    },
}

fn describe_code(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit status {c}"),
        None => "a signal".to_string(),
    }
}

/// Spawns processes (the real one, or a fake that records).
pub trait ProcessRunner: Send + Sync + 'static {
    /// Run to completion (or timeout). A non-zero exit is *not* an error here; see
    /// [`Output::check`].
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError>;

    /// Whether `program` can be run (absolute path exists, or found on `PATH`).
    fn exists(&self, program: &str) -> bool;

    /// Whether an effect that reaches this far may happen (a plan's native steps ask; a
    /// `--root` sandbox answers no for the machine effects it keeps off). Default: yes.
    fn allows(&self, reach: Reach) -> bool {
        let _ = reach;
        true
    }
}

/// Runs commands on this machine.
#[derive(Debug, Default, Clone)]
pub struct SystemRunner;

impl ProcessRunner for SystemRunner {
    #[allow(clippy::disallowed_methods)] // this is the one place that spawns
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        let spawn_err = |source| ProcessError::Spawn {
            program: cmd.program.clone(),
            source,
        };
        let mut command = std::process::Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(vars) = &cmd.env {
            command.env_clear().envs(vars.iter().map(|(k, v)| (k, v)));
        }
        let mut child = command.spawn().map_err(spawn_err)?;
        let stdin = cmd.stdin.clone();
        let writer = child.stdin.take().map(|mut pipe| {
            std::thread::spawn(move || {
                if let Some(bytes) = stdin {
                    // A command that exits without reading its input is not our error.
                    let _ = pipe.write_all(&bytes);
                }
            })
        });
        let out_reader = drain(child.stdout.take());
        let err_reader = drain(child.stderr.take());
        let status = match child.wait_timeout(cmd.timeout).map_err(spawn_err)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcessError::Timeout {
                    program: cmd.program.clone(),
                    timeout: cmd.timeout,
                });
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        Ok(Output {
            code: status.code(),
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        })
    }

    fn exists(&self, program: &str) -> bool {
        let path = std::path::Path::new(program);
        if path.is_absolute() {
            return path.is_file();
        }
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                let candidate = dir.join(program);
                candidate.is_file() || candidate.with_extension("exe").is_file()
            })
        })
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn runs_with_stdin_and_captures_output() {
        let cmd = ProcessSpec::new("sh")
            .args(["-c", "cat; echo err >&2; exit 3"])
            .stdin(Zeroizing::new(b"secret".to_vec()));
        let out = SystemRunner.run(&cmd).unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, b"secret");
        assert_eq!(out.stderr, b"err\n");
        assert!(!format!("{cmd:?}").contains("secret"));
        let err = out.check("sh").unwrap_err().to_string();
        assert_eq!(err, "'sh' failed with exit status 3");
    }

    #[test]
    fn times_out_and_kills() {
        let cmd = ProcessSpec::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(100));
        let started = std::time::Instant::now();
        assert!(matches!(
            SystemRunner.run(&cmd),
            Err(ProcessError::Timeout { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        assert!(matches!(
            SystemRunner.run(&ProcessSpec::new("/nonexistent/x")),
            Err(ProcessError::Spawn { .. })
        ));
        assert!(SystemRunner.exists("sh"));
        assert!(!SystemRunner.exists("/nonexistent/x"));
    }

    #[test]
    fn clear_env_empties_the_environment() {
        let cmd = ProcessSpec::new("/usr/bin/env").clear_env(vec![("A".into(), "1".into())]);
        assert_eq!(SystemRunner.run(&cmd).unwrap().stdout, b"A=1\n");
    }
}
