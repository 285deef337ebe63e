//! The daemon's side of `guestd-update`, the helper executable that downloads and unpacks an
//! update (its crate documents the protocol). guestd links no HTTP, TLS or archive code: it
//! hands the helper a request on stdin through the `ProcessRunner`, gets the body or the
//! archive's files back on stdout, and checks the host's checksum itself.

use std::time::Duration;

use guestd_core::{HandlerError, Output, ProcessError, ProcessRunner, ProcessSpec};
use serde::Serialize;
use tracing::info;
use zeroize::Zeroizing;

use super::payload::{self, Entry};

/// Time the helper may take beyond the download's own limit (start-up, handing the body over).
const SLACK: Duration = Duration::from_secs(30);
/// Time `unpack` may take.
const UNPACK_TIMEOUT: Duration = Duration::from_secs(120);

/// `fetch`'s request (the helper's `FetchRequest`).
#[derive(Serialize)]
struct FetchRequest<'a> {
    url: &'a str,
    max_size: u64,
    timeout_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_pem: Option<&'a str>,
}

/// How to run the helper.
#[derive(Clone)]
pub struct Helper<'a> {
    /// Host path of the executable.
    pub program: String,
    /// User it becomes when started as root (empty: stay).
    pub user: &'a str,
    pub runner: &'a dyn ProcessRunner,
}

impl std::fmt::Debug for Helper<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper")
            .field("program", &self.program)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Helper<'_> {
    fn command(&self, mode: &str) -> ProcessSpec {
        // It changes nothing on the machine: it reads a URL or stdin and writes only to stdout
        // (the daemon stages what it returns through Root), so a sandbox lets it run, as it
        // let the download run when guestd did it in-process.
        let mut cmd = ProcessSpec::new(&self.program).arg(mode).observes();
        if !self.user.is_empty() {
            cmd = cmd.args(["--user", self.user]);
        }
        // Nothing from guestd's environment (proxies, credentials) leaks into the download.
        // Windows sockets need SystemRoot to load their providers.
        let keep = ["SystemRoot"]
            .into_iter()
            .filter(|_| cfg!(windows))
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        cmd.clear_env(keep)
    }

    fn run(&self, cmd: &ProcessSpec) -> Result<Output, HandlerError> {
        let out = self.runner.run(cmd).map_err(|e| match e {
            ProcessError::Spawn { source, .. } => HandlerError::failed(format!(
                "Cannot run the update helper '{}': {source}",
                self.program
            )),
            other => HandlerError::failed(format!("Update helper failed: {other}")),
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            if let Some(progress) = line.strip_prefix("info: ") {
                info!(helper = %self.program, "{progress}");
            }
        }
        if out.success() {
            return Ok(out);
        }
        // The helper's last `error: ` line is the message for the host.
        let message = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .map(str::to_string)
            .unwrap_or_else(|| {
                let status = out
                    .code
                    .map_or("a signal".into(), |c| format!("exit status {c}"));
                format!("Update helper failed with {status}")
            });
        Err(HandlerError::failed(message))
    }

    /// Download `url` (at most `max_size` bytes within `timeout`).
    pub fn fetch(
        &self,
        url: &str,
        max_size: u64,
        timeout: Duration,
        ca_pem: Option<&str>,
    ) -> Result<Vec<u8>, HandlerError> {
        let request = FetchRequest {
            url,
            max_size,
            timeout_secs: timeout.as_secs(),
            ca_pem,
        };
        // The URL may hold credentials: stdin only, wiped after use.
        let input = Zeroizing::new(serde_json::to_vec(&request).expect("request serializes"));
        let cmd = self.command("fetch").stdin(input).timeout(timeout + SLACK);
        let body = self.run(&cmd)?.stdout;
        if body.len() as u64 > max_size {
            return Err(HandlerError::failed(format!(
                "Update helper returned {} bytes, more than the limit of {max_size}",
                body.len()
            )));
        }
        Ok(body)
    }

    /// The regular files of the `.tar.gz` in `archive` (at most `max_unpacked` bytes).
    pub fn unpack(&self, archive: &[u8], max_unpacked: u64) -> Result<Vec<Entry>, HandlerError> {
        let cmd = self
            .command("unpack")
            .args(["--max-unpacked".to_string(), max_unpacked.to_string()])
            .stdin(Zeroizing::new(archive.to_vec()))
            .timeout(UNPACK_TIMEOUT);
        let out = self.run(&cmd)?;
        payload::decode(&out.stdout, max_unpacked)
            .map_err(|e| HandlerError::failed(format!("Update helper output: {e}")))
    }
}
