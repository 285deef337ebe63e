//! Command-line flags of `guestd`.

use std::path::PathBuf;

use clap::Parser;

use guestd_core::ChannelSpec;

/// guestd: the guest agent. Takes commands from the host over a host-only channel (XenStore,
/// virtio-serial, vsock, or a local socket) and carries them out with the guest's own tools.
#[derive(Debug, Clone, Parser)]
#[command(name = "guestd", version)]
pub struct Cli {
    /// Configuration file (drop-ins are read from `conf.d/*.toml` beside it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Act on this directory tree instead of `/` (a sandbox: every file a command reads or
    /// writes is below it, and commands that would act on this machine, such as shutdown,
    /// fsfreeze or a network restart, are reported as not run unless `[sandbox]
    /// allow_effects` allows their effect).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Serve this channel (repeatable): `unix:PATH`, `serial:[NAME|PATH]`, `tcp:HOST:PORT`,
    /// `vsock:PORT`, `pipe:\\.\pipe\NAME` (Windows named pipe, SYSTEM and Administrators
    /// only), `xenstore` (the detected xenbus device; on Windows the Xen PV drivers' xeniface
    /// device) or `xenstore:PATH` (a xenbus device or a xenstored socket; on Windows a xeniface
    /// interface path); `qga+` before any stream transport (`qga+unix:PATH`,
    /// `qga+serial:[NAME|PATH]`, `qga+vsock:PORT`, ...) serves the qemu-guest-agent dialect. Overrides `transports.listen`.
    #[arg(long = "listen", value_name = "SPEC", value_parser = ChannelSpec::listen)]
    pub listen: Vec<ChannelSpec>,

    /// Serve XenStore at PATH (a xenbus device or a xenstored unix socket); the same as
    /// `--listen xenstore:PATH`.
    #[arg(long, value_name = "PATH")]
    pub xenstore: Option<PathBuf>,

    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Check that this binary can start with the configuration (load it, build every command)
    /// and exit; used before a self-update is installed.
    #[arg(long)]
    pub self_test: bool,

    /// Run the update watchdog for this state file (started by `agentupdate`, not by hand):
    /// restart guestd, wait for the new daemon to report ready, roll back if it does not.
    #[arg(long, value_name = "STATE", hide = true)]
    pub update_watchdog: Option<String>,

    /// Thaw the filesystems a stopped or killed guestd left frozen (recorded in
    /// `/run/guestd/fsfreeze.json`), run the fsfreeze hook with `thaw` if its freeze ran, and
    /// exit. The systemd unit runs this after guestd stops (`ExecStopPost=`), so a crash while
    /// frozen cannot leave the guest frozen; a start does the same.
    #[arg(long)]
    pub thaw: bool,

    /// Print the effective configuration and the transports guestd would serve, then exit
    /// (non-zero when the configuration is invalid). For image builders.
    #[arg(long)]
    pub check_config: bool,

    /// Windows: run as a service under the Service Control Manager (how `install.ps1`
    /// registers guestd); logs go to `%ProgramData%\guestd\guestd.log`.
    #[arg(long)]
    pub service: bool,
}
