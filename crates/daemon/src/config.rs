//! Configuration: TOML, unknown keys rejected, defaults for everything.
//!
//! The main file (`/etc/guestd/guestd.toml`, or `%ProgramData%\guestd\guestd.toml` on Windows)
//! is read first, then every `conf.d/*.toml` beside it in name order; tables merge key by key
//! and a later value wins. Each file is also checked on its own, so an error names the file,
//! the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration. Each section belongs to one area; a handler's settings are its
/// own struct, defined beside the handler.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub commands: CommandsConfig,
    pub transports: TransportsConfig,
    /// Safe retries: replies remembered per transport by request id.
    pub retry: guestd_core::reply_cache::ReplyCacheConfig,
    pub serial: guestd_transport_serial::SerialConfig,
    pub tcp: guestd_transport_socket::TcpConfig,
    pub vsock: guestd_transport_socket::VsockConfig,
    /// `[unix]`: unix-socket listeners.
    pub unix: guestd_transport_socket::UnixConfig,
    pub log: LogConfig,
    pub password: guestd_handlers::PasswordConfig,
    /// `[network]`: how `resetnetwork` finds its data and which network manager it writes for.
    pub network: guestd_handlers::NetworkConfig,
    /// `[inject]`: injectfile / file_inject.
    pub inject: guestd_handlers::InjectConfig,
    /// `[update]`: agentupdate.
    pub update: guestd_handlers::UpdateConfig,
    /// `[configure]`: declarative configuration from local definitions (disabled by default).
    pub configure: guestd_handlers::ConfigureConfig,
    /// `[xenstore]`: the XenStore transport (device or socket, reply pruning, backend).
    pub xenstore: guestd_transport_xenstore::XenstoreConfig,
    /// `[qga]`: the qemu-guest-agent dialect (auto-detected port, fsfreeze auto-thaw).
    pub qga: guestd_handlers::qga::QgaConfig,
    /// `[xen_metrics]`: what XAPI reads about the guest from XenStore, published while
    /// guestd serves XenStore.
    pub xen_metrics: guestd_xen_metrics::XenMetricsConfig,
    /// `[sandbox]`: which command effects reach the machine when `--root` is a sandbox.
    pub sandbox: guestd_core::SandboxConfig,
}

/// `[commands]`: which commands may run and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandsConfig {
    /// Allow list (like qemu-ga's `--allow-rpcs`); absent = every command.
    pub enabled: Option<Vec<String>>,
    /// Block list, applied after the allow list.
    pub disabled: Vec<String>,
    /// Default timeout of a command, in seconds.
    pub timeout_secs: u64,
    /// Per-command timeouts in seconds (`resetnetwork = 120`).
    pub timeouts: BTreeMap<String, u64>,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            disabled: Vec::new(),
            timeout_secs: 60,
            timeouts: BTreeMap::new(),
        }
    }
}

/// `[transports]`: which channels to serve.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportsConfig {
    /// Listen specs (`unix:/run/guestd/guestd.sock`); empty = detect.
    pub listen: Vec<String>,
    /// Longest request line on stream transports, in bytes.
    pub max_line_bytes: usize,
}

impl Default for TransportsConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            max_line_bytes: guestd_core::stream::DEFAULT_MAX_LINE,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// error, warn, info, debug, trace, or a tracing filter.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// The default main configuration file.
pub fn default_path() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("guestd").join("guestd.toml")
    } else {
        PathBuf::from("/etc/guestd/guestd.toml")
    }
}

/// Load `path` (a missing default file means defaults; a missing explicit file is an error)
/// and its `conf.d/` drop-ins. Returns the config and the files read.
pub fn load(path: Option<&Path>) -> anyhow::Result<(Config, Vec<PathBuf>)> {
    let (main, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default_path(), false),
    };
    let mut files = Vec::new();
    if main.exists() {
        files.push(main.clone());
    } else if explicit {
        bail!("configuration file {} does not exist", main.display());
    }
    let dropins = main
        .parent()
        .map(|d| d.join("conf.d"))
        .filter(|d| d.is_dir());
    if let Some(dir) = dropins {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut merged = toml::Table::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        // Check the file on its own first so that the error names it.
        toml::from_str::<Config>(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        merge(&mut merged, table);
    }
    let config =
        Config::deserialize(toml::Value::Table(merged)).context("merging configuration files")?;
    Ok((config, files))
}

/// Tables merge key by key; anything else is replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(Some(&dir.path().join("guestd.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn dropins_merge_in_order_and_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("guestd.toml");
        std::fs::write(
            &main,
            "[commands]\ndisabled = [\"password\"]\ntimeout_secs = 30\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/10-a.toml"),
            "[commands]\ntimeout_secs = 90\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/20-b.toml"),
            "[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/ignored.txt"), "junk").unwrap();
        let (cfg, files) = load(Some(&main)).unwrap();
        assert_eq!(cfg.commands.disabled, vec!["password"]);
        assert_eq!(cfg.commands.timeout_secs, 90);
        assert_eq!(cfg.log.level, "debug");
        assert_eq!(files.len(), 3);

        std::fs::write(
            dir.path().join("conf.d/30-bad.toml"),
            "[commands]\ndisabeld = []\n",
        )
        .unwrap();
        let err = format!("{:#}", load(Some(&main)).unwrap_err());
        assert!(err.contains("30-bad.toml"), "{err}");
        assert!(err.contains("disabeld"), "{err}");
    }

    #[test]
    fn xen_metrics_section() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("guestd.toml");
        std::fs::write(
            &main,
            "[xen_metrics]
memory_interval_secs = 0
",
        )
        .unwrap();
        let (cfg, _) = load(Some(&main)).unwrap();
        assert!(cfg.xen_metrics.enabled, "on by default");
        assert_eq!(cfg.xen_metrics.memory_interval(), None);
        std::fs::write(
            &main,
            "[xen_metrics]
enable = false
",
        )
        .unwrap();
        let err = format!("{:#}", load(Some(&main)).unwrap_err());
        assert!(err.contains("enable"), "{err}");
    }
}
