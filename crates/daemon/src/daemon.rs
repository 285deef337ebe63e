//! guestd, the in-guest agent daemon: CLI, configuration, logging, runtime and signals.
//!
//! Start-up: parse flags, load the configuration, pick the OS backend, register the commands,
//! open every transport (so the host can talk as soon as we say we are up), then serve until
//! SIGTERM/SIGINT, finishing the request in flight.
//!
//! The binaries are thin: `guestd` calls [`main`] without TLS on Unix (a TCP listener with
//! mutual TLS makes it re-execute `guestd-tls` beside it, see [`continue_as_tls`]), `guestd-tls`
//! and `guestd.exe` with rustls.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use clap::Parser;
use guestd_core::stream::StreamLimits;
use guestd_core::{Backend, Dialect, Env, Root, Shutdown, SystemRunner};
use guestd_distro::OsBackend;
use guestd_transport_socket::tcp::TlsServer;
use tracing::{error, info, warn};

use crate::cli::Cli;
use crate::{commands, config, listen, notify};
use guestd_core::ChannelSpec;
use guestd_core::channel_spec::{ChannelKind, XenstoreTarget};

#[cfg(windows)]
use crate::service;

/// The binary's TLS for `tcp:` listeners (`None`: this binary links none).
static TLS: OnceLock<Option<&'static dyn TlsServer>> = OnceLock::new();

/// The TLS server this binary was started with, if it links one.
pub(crate) fn tls() -> Option<&'static dyn TlsServer> {
    TLS.get().copied().flatten()
}

/// The whole daemon; `tls` is the binary's TLS for `tcp:` listeners, if it links one.
pub fn main(tls: Option<&'static dyn TlsServer>) -> ExitCode {
    let _ = TLS.set(tls);
    return_large_buffers_to_the_system();
    let cli = Cli::parse();
    let outcome = if cli.service {
        run_service(cli)
    } else {
        run(cli)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logging may not be up yet; stderr is where both end up.
            eprintln!("guestd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Buffers of a megabyte or more (a guest-exec's captured output, a guest-file-read, the
/// base64 and JSON copies of their replies) are mapped for themselves and given back to the
/// system when freed. glibc otherwise raises its mmap threshold after the first such buffer is
/// freed and keeps the later ones in its per-thread arenas, so one large reply could leave
/// guestd tens of megabytes bigger for good. musl, which the packages are built with, maps
/// large buffers this way by itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only changes malloc's tuning; it runs first in main, before any thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers_to_the_system() {}

#[cfg(windows)]
fn run_service(cli: Cli) -> anyhow::Result<()> {
    service::run_as_service(cli)
}

#[cfg(not(windows))]
fn run_service(_cli: Cli) -> anyhow::Result<()> {
    anyhow::bail!("--service is for Windows; use the systemd, OpenRC or rc.d unit elsewhere")
}

/// Where the log goes: stderr, or the service's log file.
fn log_file(cli: &Cli) -> Option<std::path::PathBuf> {
    #[cfg(windows)]
    if cli.service {
        return Some(service::log_path());
    }
    let _ = cli;
    None
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    let root = match &cli.root {
        Some(dir) => Root::sandbox(dir).with_context(|| format!("--root {}", dir.display()))?,
        None => Root::system(),
    };
    if let Some(state) = &cli.update_watchdog {
        // Needs nothing from the configuration: everything is in the state file.
        init_logging(cli.log_level.as_deref().unwrap_or("info"), log_file(&cli))?;
        return update_watchdog(&root, state);
    }
    let (mut config, files) = config::load(cli.config.as_deref())?;
    config
        .qga
        .validate()
        .map_err(|e| anyhow::anyhow!("[qga] {e}"))?;
    if let Some(manager) = &config.network.manager {
        guestd_distro::network::NetworkTool::from_name(manager)
            .map_err(|e| anyhow::anyhow!("[network] manager: {e}"))?;
    }
    init_logging(
        cli.log_level.as_deref().unwrap_or(&config.log.level),
        log_file(&cli),
    )?;
    // A new binary's self-test checks the configuration this daemon runs with.
    config.update.self_test_config = cli.config.as_ref().map(|p| p.display().to_string());
    let ready_marker = ReadyMarker {
        root: root.clone(),
        path: config.update.ready_marker.clone(),
    };
    let windows_accounts = guestd_distro::password::windows::AccountStore::from_spec(
        &config.password.windows_accounts,
    )
    .map_err(|e| anyhow::anyhow!("[password] {e}"))?;
    if windows_accounts != Default::default() {
        warn!(store = %config.password.windows_accounts, "[password] windows_accounts: passwords go to a FAKE account store (tests only)");
    }
    let backend = OsBackend::detect(&root).with_windows_accounts(windows_accounts);
    // Under --root, commands that would act on this machine are refused unless [sandbox]
    // allows their effect: the one place that policy is applied.
    let runner = guestd_core::effect::contain(&root, Arc::new(SystemRunner), &config.sandbox);
    let env = Env {
        root,
        runner,
        backend: Arc::new(backend.clone()),
    };
    if cli.thaw {
        guestd_handlers::qga::thaw_recorded(&env, &config.qga);
        return Ok(());
    }
    let dispatcher = Arc::new(commands::build_dispatcher(&config, env.clone())?);

    if cli.check_config {
        return check_config(
            &config,
            &files,
            &env.root,
            &backend,
            &dispatcher,
            &specs_for(&cli, &config)?,
        );
    }
    if cli.self_test {
        println!(
            "guestd {} self-test ok: {} commands",
            env!("CARGO_PKG_VERSION"),
            Dialect::ALL
                .iter()
                .map(|d| dispatcher.enabled_commands(*d).len())
                .sum::<usize>()
        );
        return Ok(());
    }

    let specs: Vec<ChannelSpec> = specs_for(&cli, &config)?;
    if tls().is_none() {
        if let Some(spec) = specs.iter().find(|s| needs_tls(s, &config)) {
            return continue_as_tls(spec);
        }
    }
    // Before serving: undo what a crashed guestd left behind (filesystems it froze).
    dispatcher.start();
    let limits = StreamLimits {
        max_line: config.transports.max_line_bytes.max(64),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let mut transports = Vec::new();
        for spec in &specs {
            transports.push(listen::open(spec, limits, &config).with_context(|| format!("opening {spec}"))?);
        }
        info!(
            version = env!("CARGO_PKG_VERSION"),
            backend = %backend.name(),
            service_manager = %backend.service_manager().unwrap_or("none"),
            root = %cli.root.as_ref().map_or("/".into(), |p| p.display().to_string()),
            config = ?files,
            commands = %dispatcher.enabled_commands(Dialect::Native).join(","),
            qga_commands = %dispatcher.enabled_commands(Dialect::Qga).join(","),
            transports = %transports.iter().map(|t| t.describe()).collect::<Vec<_>>().join(","),
            "guestd ready"
        );
        notify::notify(&format!("READY=1\nSTATUS=serving {} channel(s)", specs.len()));
        ready_marker.write();
        if let Some(every) = notify::watchdog_interval() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    notify::notify("WATCHDOG=1");
                }
            });
        }
        let (trigger, shutdown) = Shutdown::new();
        if let Some(path) = xen_metrics_path(&specs, &config) {
            let settings = guestd_xen_metrics::settings(&config.xen_metrics, &config.xenstore, config.network.manager.clone());
            if let Err(e) = guestd_xen_metrics::spawn(path.as_deref(), &config.xenstore, settings, env.clone(), shutdown.clone()) {
                warn!(error = %e, "not publishing the Xen guest metrics");
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for transport in transports {
            let name = transport.describe();
            let fut = transport.serve(dispatcher.clone(), shutdown.clone());
            tasks.spawn(async move { (name, fut.await) });
        }
        let mut signals = Signals::new()?;
        // Start-up is over: its code need not stay resident.
        let advised = crate::trim::page_out_startup_code();
        tracing::debug!(kib = advised / 1024, "start-up code paged out");
        loop {
            tokio::select! {
                which = signals.recv() => {
                    info!(signal = which, "stopping: finishing requests in flight");
                    notify::notify("STOPPING=1");
                    trigger.trigger();
                    // At once (a request in flight may wait on a frozen filesystem), and again
                    // below once the requests in flight are done.
                    stop_components(&dispatcher).await;
                    break;
                }
                done = tasks.join_next() => match done {
                    None => anyhow::bail!("no transport left to serve"),
                    Some(Ok((name, Ok(())))) => warn!(transport = %name, "transport stopped"),
                    Some(Ok((name, Err(e)))) => error!(transport = %name, error = %e, "transport failed"),
                    Some(Err(e)) => error!(error = %e, "transport task panicked"),
                },
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok((name, Err(e))) = done {
                warn!(transport = %name, error = %e, "transport ended with an error");
            }
        }
        stop_components(&dispatcher).await;
        ready_marker.remove();
        info!("stopped");
        Ok(())
    })
}

/// Whether serving `spec` takes mutual TLS.
fn needs_tls(spec: &ChannelSpec, config: &config::Config) -> bool {
    matches!(spec.kind, ChannelKind::Tcp(_)) && config.tcp.tls_requested()
}

/// `guestd-tls` beside this executable (`.exe` on Windows, where it is not needed).
fn tls_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("finding the guestd executable")?;
    Ok(exe.with_file_name(format!("guestd-tls{}", std::env::consts::EXE_SUFFIX)))
}

/// This guestd links no TLS (so that the resident daemon of every guest without a TCP channel
/// is smaller); a TCP listener with mutual TLS is served by `guestd-tls`, the same daemon with
/// rustls, which replaces this process with the same arguments (same pid, so systemd's
/// `Type=notify` and the service's watchdog see no difference).
#[cfg(unix)]
fn continue_as_tls(spec: &ChannelSpec) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let program = tls_binary()?;
    // A guestd without TLS that was itself started as guestd-tls (a copy installed under that
    // name) must not exec itself forever.
    let arg0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&arg0)
        .file_name()
        .is_some_and(|n| n == "guestd-tls")
    {
        anyhow::bail!(
            "{spec} needs mutual TLS, but {} links no TLS",
            program.display()
        );
    }
    if !program.is_file() {
        anyhow::bail!(
            "{spec} asks for mutual TLS, which guestd serves through guestd-tls: {} not found \
             (the guestd package installs it beside guestd)",
            program.display()
        );
    }
    info!(channel = %spec, program = %program.display(), "mutual TLS: continuing as guestd-tls");
    #[allow(clippy::disallowed_methods)] // exec replaces this process; nothing is spawned
    let err = std::process::Command::new(&program)
        .arg0("guestd-tls")
        .args(std::env::args_os().skip(1))
        .exec();
    Err(err).with_context(|| format!("executing {}", program.display()))
}

#[cfg(not(unix))]
fn continue_as_tls(spec: &ChannelSpec) -> anyhow::Result<()> {
    anyhow::bail!("{spec} needs mutual TLS, which this guestd does not link")
}

/// The components' stop work (thawing frozen filesystems), on a blocking thread: it runs
/// commands.
async fn stop_components(dispatcher: &Arc<guestd_core::Dispatcher>) {
    let d = Arc::clone(dispatcher);
    if let Err(e) = tokio::task::spawn_blocking(move || d.stop()).await {
        error!(error = %e, "stopping a component panicked");
    }
}

/// `--update-watchdog STATE`: see `guestd_handlers::update::watchdog`.
fn update_watchdog(root: &Root, state: &str) -> anyhow::Result<()> {
    use guestd_handlers::update::watchdog::{self, Status};
    info!(state, "update watchdog started");
    match watchdog::supervise(root, &SystemRunner, state).map_err(anyhow::Error::msg)? {
        Status::Ready => Ok(()),
        other => anyhow::bail!("update did not complete: {other:?}"),
    }
}

/// The file that tells the update watchdog (and operators) this daemon is serving.
struct ReadyMarker {
    root: Root,
    path: String,
}

impl ReadyMarker {
    fn write(&self) {
        let version = env!("CARGO_PKG_VERSION");
        if let Err(e) =
            guestd_handlers::update::watchdog::write_ready_marker(&self.root, &self.path, version)
        {
            warn!(error = %e, "cannot write the ready marker; an agent update will roll back");
        }
    }

    fn remove(&self) {
        let _ = self.root.remove_file(&self.path);
    }
}

/// The transports to serve: `--listen`/`--xenstore`, else `transports.listen`, else what this
/// guest has.
fn specs_for(cli: &Cli, config: &config::Config) -> anyhow::Result<Vec<ChannelSpec>> {
    if !cli.listen.is_empty() || cli.xenstore.is_some() {
        let mut specs = cli.listen.clone();
        specs.extend(
            cli.xenstore
                .clone()
                .map(|p| ChannelSpec::native(ChannelKind::Xenstore(XenstoreTarget::Path(p)))),
        );
        return Ok(specs);
    }
    if !config.transports.listen.is_empty() {
        return config
            .transports
            .listen
            .iter()
            .map(|s| listen::parse(s).map_err(|e| anyhow::anyhow!("transports.listen: {e}")))
            .collect();
    }
    Ok(listen::detect(config))
}

/// Where to publish the Xen guest metrics: the XenStore guestd serves (`Some(None)`: the
/// detected one), when `[xen_metrics] enabled`.
fn xen_metrics_path(
    specs: &[ChannelSpec],
    config: &config::Config,
) -> Option<Option<std::path::PathBuf>> {
    if !config.xen_metrics.enabled {
        return None;
    }
    specs.iter().find_map(|s| match &s.kind {
        ChannelKind::Xenstore(XenstoreTarget::Detect) => Some(None),
        ChannelKind::Xenstore(XenstoreTarget::Path(path)) => Some(Some(path.clone())),
        _ => None,
    })
}

/// The network tool `resetnetwork` plans for (the part of its plan that needs no host data):
/// `[network] manager`, or the one detected under `root`.
fn network_tool(config: &config::Config, root: &Root, backend: &OsBackend) -> String {
    use guestd_distro::network::NetworkTool;
    match &config.network.manager {
        Some(name) => match NetworkTool::from_name(name) {
            Ok(tool) => format!("{tool} ([network] manager)"),
            Err(e) => format!("invalid [network] manager: {e}"),
        },
        None => match NetworkTool::detect(root, backend.family()) {
            Ok(tool) => format!("{tool} (detected)"),
            Err(_) => "none found (set [network] manager)".to_string(),
        },
    }
}

/// `--check-config`: what guestd would do, without doing it.
fn check_config(
    config: &config::Config,
    files: &[std::path::PathBuf],
    root: &Root,
    backend: &OsBackend,
    dispatcher: &guestd_core::Dispatcher,
    specs: &[ChannelSpec],
) -> anyhow::Result<()> {
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join(", ")
        }
    };
    println!(
        "# guestd {} configuration check: OK",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "# files: {}",
        list(files.iter().map(|f| f.display().to_string()).collect())
    );
    println!(
        "# os: {} (service manager: {})",
        backend.name(),
        backend.service_manager().unwrap_or("none found")
    );
    println!(
        "# configure: {}",
        if config.configure.kinds.is_empty() {
            "disabled ([configure] kinds is empty)".to_string()
        } else {
            format!(
                "kinds {}; scripts from {}",
                config
                    .configure
                    .kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(","),
                config.configure.scripts_dir
            )
        }
    );
    println!(
        "# network tool (resetnetwork): {}",
        network_tool(config, root, backend)
    );
    println!(
        "# commands enabled: {}",
        dispatcher.enabled_commands(Dialect::Native).join(",")
    );
    println!(
        "# qga commands enabled: {}",
        dispatcher.enabled_commands(Dialect::Qga).join(",")
    );
    println!(
        "# transports: {}",
        list(specs.iter().map(ToString::to_string).collect())
    );
    if tls().is_none() && specs.iter().any(|s| needs_tls(s, config)) {
        let program = tls_binary()?;
        println!(
            "# mutual TLS: served by {} ({})",
            program.display(),
            if program.is_file() {
                "guestd continues as it at start-up"
            } else {
                "MISSING: the TCP listener cannot start"
            }
        );
    }
    println!(
        "# xen guest metrics: {}",
        match xen_metrics_path(specs, config) {
            Some(_) => "published to XenStore",
            None if !config.xen_metrics.enabled => "off ([xen_metrics] enabled = false)",
            None => "off (no XenStore transport)",
        }
    );
    print!(
        "{}",
        toml::to_string_pretty(config).context("printing the configuration")?
    );
    Ok(())
}

/// Log to stderr (journald picks it up under systemd: no timestamps there, it adds its own).
///
/// The level is `info`, or `target=level` directives (`info,guestd_core=debug`). A `Targets`
/// filter rather than `EnvFilter`: the same syntax for everything guestd documents, without a
/// regex engine compiled at start-up (a third of the idle RSS of the binary's own pages).
#[allow(clippy::disallowed_methods)] // the daemon's own log file (Windows service), not guest data
fn init_logging(level: &str, file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = level
        .parse()
        .with_context(|| format!("invalid log level '{level}'"))?;
    if let Some(path) = file {
        // A Windows service has no console: append to the log file.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening the log file {}", path.display()))?;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(out))
            .with_target(false)
            .with_ansi(false);
        tracing_subscriber::registry()
            .with(layer)
            .with(filter)
            .init();
        return Ok(());
    }
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    if under_journald {
        tracing_subscriber::registry()
            .with(layer.without_time())
            .with(filter)
            .init();
    } else {
        tracing_subscriber::registry()
            .with(layer)
            .with(filter)
            .init();
    }
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C and the service's stop request on Windows).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(windows)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                () = service::STOP.notified() => "service stop",
            }
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
