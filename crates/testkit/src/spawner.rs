//! A `ProcessSpawner` that starts nothing: programs "run" until the test finishes them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use guestd_core::{
    Captured, ExitReport, ProcessError, ProcessSpawner, SpawnSpec, SpawnedProcess, Termination,
};

type Slot = Arc<Mutex<Option<ExitReport>>>;

/// Records every program it is asked to start (the whole [`SpawnSpec`]); each gets a pid from
/// 100 up and runs until [`finish`](Self::finish). `locate` knows only the programs given to
/// [`program`](Self::program).
#[derive(Default)]
pub struct FakeSpawner {
    programs: Mutex<Vec<(String, PathBuf)>>,
    started: Mutex<Vec<(SpawnSpec, Slot)>>,
}

impl std::fmt::Debug for FakeSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSpawner")
            .field("started", &self.started.lock().unwrap().len())
            .finish_non_exhaustive()
    }
}

impl FakeSpawner {
    pub fn new() -> Self {
        Self::default()
    }

    /// `locate(name)` answers `file` (as if `name` were a link to it, or found on `PATH`).
    pub fn program(self, name: &str, file: impl AsRef<Path>) -> Self {
        self.programs
            .lock()
            .unwrap()
            .push((name.to_string(), file.as_ref().to_path_buf()));
        self
    }

    /// How many programs were started.
    pub fn count(&self) -> usize {
        self.started.lock().unwrap().len()
    }

    /// Run `f` on the `n`th program's spec.
    pub fn spec<R>(&self, n: usize, f: impl FnOnce(&SpawnSpec) -> R) -> R {
        f(&self.started.lock().unwrap()[n].0)
    }

    /// Let the `n`th program end with `termination` and this output (`None`: not captured).
    pub fn finish(
        &self,
        n: usize,
        termination: Termination,
        stdout: Option<(&[u8], bool)>,
        stderr: Option<(&[u8], bool)>,
    ) {
        let captured = |c: Option<(&[u8], bool)>| c.map(|(d, t)| Captured::new(d.to_vec(), t));
        let started = self.started.lock().unwrap();
        *started[n].1.lock().unwrap() = Some(ExitReport {
            termination,
            stdout: captured(stdout),
            stderr: captured(stderr),
        });
    }
}

#[derive(Debug)]
struct FakeProcess {
    pid: u32,
    report: Slot,
}

impl SpawnedProcess for FakeProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn take_report(&self) -> Option<ExitReport> {
        self.report.lock().unwrap().take()
    }
}

impl ProcessSpawner for FakeSpawner {
    fn locate(&self, program: &str) -> Result<PathBuf, ProcessError> {
        self.programs
            .lock()
            .unwrap()
            .iter()
            .find(|(name, _)| name == program)
            .map(|(_, file)| file.clone())
            .ok_or_else(|| ProcessError::Spawn {
                program: program.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }

    fn spawn(&self, spec: SpawnSpec) -> Result<Box<dyn SpawnedProcess>, ProcessError> {
        let mut started = self.started.lock().unwrap();
        let pid = 100 + started.len() as u32;
        let report: Slot = Arc::default();
        started.push((spec, Arc::clone(&report)));
        Ok(Box::new(FakeProcess { pid, report }))
    }
}
