//! Running under the Windows Service Control Manager (`guestd --service`, as
//! `packaging/windows/install.ps1` registers it).
//!
//! The SCM starts the process; `--service` hands the main thread to the SCM dispatcher, which
//! calls [`service_main`] on a thread of its own. That reports `Running`, runs the same daemon
//! as a console start (logging to `%ProgramData%\guestd\guestd.log`, since a service has no
//! console) and reports `Stopped` with the outcome. `SERVICE_CONTROL_STOP` and `_SHUTDOWN`
//! wake [`STOP`], which the daemon's main loop treats like SIGTERM: requests in flight finish,
//! then the transports close.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

use crate::cli::Cli;

/// Woken by the SCM's stop (or shutdown) request.
pub static STOP: Notify = Notify::const_new();

/// The command line, handed from `main` to the dispatcher's thread.
static CLI: OnceLock<Cli> = OnceLock::new();

/// Any name works for an own-process service; this one is only used in messages.
const NAME: &str = "guestd";

define_windows_service!(ffi_service_main, service_main);

/// The log file of a service: `%ProgramData%\guestd\guestd.log`.
pub fn log_path() -> PathBuf {
    let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
    PathBuf::from(base).join("guestd").join("guestd.log")
}

/// Connect to the SCM and serve until it stops us. Fails fast (with the SCM's error) when the
/// process was not started by the SCM.
pub fn run_as_service(cli: Cli) -> anyhow::Result<()> {
    let _ = CLI.set(cli);
    service_dispatcher::start(NAME, ffi_service_main).map_err(|e| {
        anyhow::anyhow!("--service: cannot connect to the Service Control Manager ({e}); start guestd without --service to run it in a console")
    })
}

fn service_main(_arguments: Vec<OsString>) {
    let handler = |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            STOP.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(status) = service_control_handler::register(NAME, handler) else {
        return;
    };
    let report = |state, exit_code, accept| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::from_secs(30),
            process_id: None,
        });
    };
    report(
        ServiceState::Running,
        ServiceExitCode::Win32(0),
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
    );
    let cli = CLI
        .get()
        .expect("the command line is set before the dispatcher starts");
    let outcome = crate::daemon::run(cli.clone());
    let code = match &outcome {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(e) => {
            // The log may not be up (a bad configuration): the file gets the reason anyway.
            tracing::error!("{e:#}");
            append_to_log(&format!("guestd: {e:#}\n"));
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    report(ServiceState::Stopped, code, ServiceControlAccept::empty());
}

#[allow(clippy::disallowed_methods)] // the daemon's own log file, not guest data
fn append_to_log(line: &str) {
    use std::io::Write;
    let path = log_path();
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
