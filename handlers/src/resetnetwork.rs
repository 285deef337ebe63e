//! `resetnetwork` (spec §4.6, §8, §9): rewrite the guest's network configuration from the host's
//! data and set the hostname.
//!
//! The handler only gathers the raw inputs (the value, the channel's host data, the `[network]`
//! settings) and hands them to `Backend::reset_network`; the network model, its sources, the
//! renderers and the apply/rollback live in the backend (`guestd-distro`), so this crate never
//! depends on a distro module. Success answers `"0"` with an empty message (as the reference
//! agents); any failure answers `"500"` with the reason (nova accepts both).
//!
//! The value is `""` (nova: use XenStore `vm-data`, else a config drive), `"nohostname"` (the
//! same but keep the hostname), or an inline configuration: a JSON list of nova interface
//! objects, or `{"interfaces": [...], "hostname": "..."}` (see `guestd_distro::network::source`).

use std::time::Duration;

use guestd_core::{Context, Handler, HandlerError, NetworkRequest, Reply};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

/// `[network]` in the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Network manager to write for instead of the detected one: `netplan`, `networkmanager`,
    /// `networkd`, `ifupdown`, `network-scripts`, `wicked`, `netifrc`, `freebsd`, `windows`.
    pub manager: Option<String>,
    /// Look for an OpenStack config drive (filesystem labelled `config-2`) when the host sends
    /// no network data.
    pub config_drive: bool,
    /// A directory holding the config drive's contents (skips the search and the mount).
    pub config_drive_path: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            manager: None,
            config_drive: true,
            config_drive_path: None,
        }
    }
}

/// Answers `resetnetwork`.
#[derive(Debug, Default)]
pub struct ResetNetworkHandler {
    config: NetworkConfig,
}

impl ResetNetworkHandler {
    pub fn new(config: NetworkConfig) -> Self {
        Self { config }
    }
}

impl Handler for ResetNetworkHandler {
    fn name(&self) -> &'static str {
        "resetnetwork"
    }

    /// nova waits 60 s for `resetnetwork` (spec §4.6).
    fn default_timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let request = NetworkRequest {
            value,
            host_data: ctx.channel.host_data(),
            manager: self.config.manager.as_deref(),
            config_drive: self.config.config_drive_path.as_deref(),
            use_config_drive: self.config.config_drive,
        };
        let done = ctx.env.backend.reset_network(ctx.env, &request)?;
        info!(summary = %done.summary, "network reset");
        Ok(Reply::ok(done.notice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestd_core::{Backend, BackendError, Channel, DispatcherBuilder, Env};
    use guestd_testkit::{FakeRunner, call, dispatcher, test_env};
    use std::sync::{Arc, Mutex};

    /// Records what the handler passes on and answers as told.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<String>>,
        fail: bool,
        notice: String,
    }

    impl Backend for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn reset_network(
            &self,
            _env: &Env,
            r: &NetworkRequest<'_>,
        ) -> Result<guestd_core::NetworkReset, BackendError> {
            self.seen.lock().unwrap().push(format!(
                "{} {:?} {:?} {} {}",
                r.value,
                r.manager,
                r.config_drive,
                r.use_config_drive,
                r.host_data.is_some()
            ));
            if self.fail {
                Err(BackendError::Invalid(
                    "interface de:ad:be:ef:00:01 has no enabled IP addresses".into(),
                ))
            } else {
                Ok(guestd_core::NetworkReset {
                    summary: "eth0 via ifupdown".into(),
                    notice: self.notice.clone(),
                })
            }
        }
    }

    fn run(backend: Arc<Recorder>, config: NetworkConfig, value: Value) -> Reply {
        let dir = tempfile::tempdir().unwrap();
        let env = test_env(
            guestd_core::Root::sandbox(dir.path()).unwrap(),
            Arc::new(FakeRunner::new()),
            Some(backend),
        );
        let d = dispatcher(
            DispatcherBuilder::new()
                .register(ResetNetworkHandler::new(config))
                .unwrap(),
            env,
        );
        call(&d, &Arc::new(Channel::new("test")), "resetnetwork", value)
    }

    #[test]
    fn passes_value_and_settings_and_answers_zero() {
        let backend = Arc::new(Recorder::default());
        let config = NetworkConfig {
            manager: Some("netplan".into()),
            config_drive: false,
            config_drive_path: Some("/mnt/cd".into()),
        };
        let reply = run(backend.clone(), config, Value::String(String::new()));
        assert_eq!(
            (reply.returncode.as_str(), reply.message.as_str()),
            ("0", "")
        );
        assert_eq!(
            backend.seen.lock().unwrap().as_slice(),
            ["\"\" Some(\"netplan\") Some(\"/mnt/cd\") false false"]
        );
    }

    /// A notice from the backend (a Windows rename pending a reboot) is the reply's message.
    #[test]
    fn the_backends_notice_is_the_message() {
        let backend = Arc::new(Recorder {
            notice: "the new hostname takes effect after a reboot".into(),
            ..Default::default()
        });
        let reply = run(
            backend,
            NetworkConfig::default(),
            Value::String(String::new()),
        );
        assert_eq!(
            (reply.returncode.as_str(), reply.message.as_str()),
            ("0", "the new hostname takes effect after a reboot")
        );
    }

    #[test]
    fn failure_is_500_with_the_reason() {
        let backend = Arc::new(Recorder {
            fail: true,
            ..Default::default()
        });
        let reply = run(backend, NetworkConfig::default(), serde_json::json!([]));
        assert_eq!(reply.returncode, "500");
        assert_eq!(
            reply.message,
            "interface de:ad:be:ef:00:01 has no enabled IP addresses"
        );
    }

    #[test]
    fn unsupported_backend_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let env = test_env(
            guestd_core::Root::sandbox(dir.path()).unwrap(),
            Arc::new(FakeRunner::new()),
            None,
        );
        let d = dispatcher(
            DispatcherBuilder::new()
                .register(ResetNetworkHandler::default())
                .unwrap(),
            env,
        );
        let reply = call(&d, &Arc::new(Channel::new("t")), "resetnetwork", "".into());
        assert_eq!(reply.returncode, "500");
        assert_eq!(reply.message, "resetnetwork is not supported on this OS");
    }

    #[test]
    fn config_rejects_unknown_keys_and_defaults() {
        let c: NetworkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, NetworkConfig::default());
        assert!(c.config_drive);
        assert!(serde_json::from_str::<NetworkConfig>(r#"{"manger": "x"}"#).is_err());
    }
}
