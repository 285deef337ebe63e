//! Shared test helpers: run one request through a real dispatcher, and a recording runner.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use guestd_core::wire::parse_request;
use guestd_core::{
    Backend, Channel, DispatcherBuilder, Env, Handler, NullBackend, Output, ProcessError,
    ProcessRunner, ProcessSpec, Reply, Root, SystemRunner,
};

/// Send `request` (JSON text as the host writes it) to `handler` through a dispatcher.
pub fn call(env: &Env, handler: impl Handler, request: &str) -> Reply {
    let dispatcher = Arc::new(
        DispatcherBuilder::new()
            .register(handler)
            .unwrap()
            .build(env.clone()),
    );
    let channel = Arc::new(Channel::new("test"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(dispatcher.dispatch(&channel, parse_request(request.as_bytes())))
}

pub fn env(root: &Root, runner: Arc<dyn ProcessRunner>) -> Env {
    env_with(root, runner, Arc::new(NullBackend))
}

pub fn env_with(root: &Root, runner: Arc<dyn ProcessRunner>, backend: Arc<dyn Backend>) -> Env {
    Env {
        root: root.clone(),
        runner,
        backend,
    }
}

type Behaviour = dyn Fn(&ProcessSpec) -> Option<Result<Output, ProcessError>> + Send + Sync;

/// Records every command; answers through `behaviour` (None = exit 0), or runs commands whose
/// program is under `real_prefix` (the sandbox) for real.
pub struct Recorder {
    pub ran: Mutex<Vec<ProcessSpec>>,
    real_prefix: Option<String>,
    real_programs: Vec<String>,
    behaviour: Box<Behaviour>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            ran: Mutex::new(Vec::new()),
            real_prefix: None,
            real_programs: Vec::new(),
            behaviour: Box::new(|_| None),
        }
    }

    /// Run programs under `prefix` (and `/bin/sh` scripts that `cd` there) for real.
    pub fn running_under(mut self, prefix: &std::path::Path) -> Self {
        self.real_prefix = Some(prefix.to_string_lossy().into_owned());
        self
    }

    /// Run `program` (an absolute path) for real, e.g. the update helper.
    pub fn running(mut self, program: &std::path::Path) -> Self {
        self.real_programs
            .push(program.to_string_lossy().into_owned());
        self
    }

    pub fn with(
        mut self,
        f: impl Fn(&ProcessSpec) -> Option<Result<Output, ProcessError>> + Send + Sync + 'static,
    ) -> Self {
        self.behaviour = Box::new(f);
        self
    }

    pub fn lines(&self) -> Vec<String> {
        self.ran
            .lock()
            .unwrap()
            .iter()
            .map(ProcessSpec::command_line)
            .collect()
    }
}

impl ProcessRunner for Recorder {
    fn run(&self, cmd: &ProcessSpec) -> Result<Output, ProcessError> {
        self.ran.lock().unwrap().push(cmd.clone());
        if let Some(r) = (self.behaviour)(cmd) {
            return r;
        }
        if self.real_programs.contains(&cmd.program) {
            return SystemRunner.run(cmd);
        }
        if let Some(prefix) = &self.real_prefix {
            let local = cmd.program.starts_with(prefix.as_str())
                || (cmd.program == "/bin/sh"
                    && cmd.args.iter().any(|a| a.starts_with(prefix.as_str())));
            if local {
                return SystemRunner.run(cmd);
            }
        }
        Ok(Output {
            code: Some(0),
            ..Output::default()
        })
    }

    fn exists(&self, _program: &str) -> bool {
        true
    }
}
