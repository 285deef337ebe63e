//! A `ProcessRunner` that records instead of running.

use std::sync::Mutex;

use guestd_core::{Output, ProcessError, ProcessRunner, ProcessSpec};

/// One recorded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `program arg arg …`
    pub line: String,
    /// What was written to stdin (tests may check it; it is never printed by `Debug` of
    /// `ProcessSpec`).
    pub stdin: Option<Vec<u8>>,
}

type Rule = (
    String,
    Box<dyn Fn(&ProcessSpec) -> Result<Output, ProcessError> + Send + Sync>,
);

/// Records every command; answers with the first matching rule (a prefix of the command line),
/// else success with empty output. `exists` is true unless the program was marked missing.
#[derive(Default)]
pub struct FakeRunner {
    recorded: Mutex<Vec<Recorded>>,
    rules: Mutex<Vec<Rule>>,
    missing: Mutex<Vec<String>>,
}

impl std::fmt::Debug for FakeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRunner")
            .field("recorded", &self.lines())
            .finish_non_exhaustive()
    }
}

impl FakeRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Commands whose line starts with `prefix` exit with `code` and print `stdout`.
    pub fn respond(&self, prefix: &str, code: i32, stdout: &str) -> &Self {
        let stdout = stdout.as_bytes().to_vec();
        self.respond_with(prefix, move |_| {
            Ok(Output {
                code: Some(code),
                stdout: stdout.clone(),
                stderr: Vec::new(),
            })
        })
    }

    /// Commands whose line starts with `prefix` are answered by `f`.
    pub fn respond_with(
        &self,
        prefix: &str,
        f: impl Fn(&ProcessSpec) -> Result<Output, ProcessError> + Send + Sync + 'static,
    ) -> &Self {
        self.rules
            .lock()
            .unwrap()
            .push((prefix.to_string(), Box::new(f)));
        self
    }

    /// `exists(program)` answers false for this program.
    pub fn mark_missing(&self, program: &str) -> &Self {
        self.missing.lock().unwrap().push(program.to_string());
        self
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// Recorded command lines.
    pub fn lines(&self) -> Vec<String> {
        self.recorded().into_iter().map(|r| r.line).collect()
    }

    pub fn clear(&self) {
        self.recorded.lock().unwrap().clear();
    }
}

impl ProcessRunner for FakeRunner {
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        let line = cmd.command_line();
        self.recorded.lock().unwrap().push(Recorded {
            line: line.clone(),
            stdin: cmd.stdin.as_ref().map(|s| s.to_vec()),
        });
        let rules = self.rules.lock().unwrap();
        match rules
            .iter()
            .find(|(prefix, _)| line.starts_with(prefix.as_str()))
        {
            Some((_, f)) => f(cmd),
            None => Ok(Output {
                code: Some(0),
                ..Output::default()
            }),
        }
    }

    fn exists(&self, program: &str) -> bool {
        let missing = self.missing.lock().unwrap();
        let base = program.rsplit('/').next().unwrap_or(program);
        !missing.iter().any(|m| m == program || m == base)
    }
}
