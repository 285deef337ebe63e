//! `resetnetwork` (spec §4.6, §8, §9): rewrite the guest's network configuration from the host's
//! data and set the hostname.
//!
//! The handler finds the network the host asks for ([`gather`]: the inline value when it is
//! not empty, else XenStore `vm-data/networking/*` and `vm-data/hostname` through the channel's
//! host data, else an OpenStack config drive that the backend finds and reads), parses it into
//! the network model (`guestd_network_model`) and hands the model to `Backend::reset_network`,
//! which renders and applies it for the OS. Success answers `"0"` with an empty message (as
//! the reference agents); any failure answers `"500"` with the reason (nova accepts both).
//!
//! The value is `""` (nova: use XenStore `vm-data`, else a config drive), `"nohostname"` (the
//! same but keep the hostname), or an inline configuration: a JSON list of nova interface
//! objects, or `{"interfaces": [...], "hostname": "..."}` (see `guestd_network_model::nova`).

use std::time::Duration;

use guestd_core::{
    BackendError, Context, Env, Handler, HandlerError, HostData, HostDataError, NetworkRequest,
    Reply,
};
use guestd_network_model::nova::{self, Inline, VmData, XENSTORE_HOSTNAME, XENSTORE_NETWORKING};
use guestd_network_model::{NetworkSpec, config_drive};
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

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let spec = gather(ctx.env, ctx.channel.host_data(), &self.config, value)?;
        let request = NetworkRequest {
            spec: &spec,
            manager: self.config.manager.as_deref(),
        };
        let done = ctx.env.backend.reset_network(ctx.env, &request)?;
        info!(summary = %done.summary, "network reset");
        Ok(Reply::ok(done.notice))
    }
}

/// The network the host asks for, from the first source that has one: the inline `value`,
/// then the channel's `host_data` (XenStore `vm-data/`), then a config drive (when
/// `config.config_drive`, or at `config.config_drive_path`). Parsed and validated.
pub fn gather(
    env: &Env,
    host_data: Option<&dyn HostData>,
    config: &NetworkConfig,
    value: &Value,
) -> Result<NetworkSpec, BackendError> {
    let keep_hostname = match nova::parse_inline(value)? {
        Inline::Spec(spec) => return Ok(spec),
        Inline::HostData { keep_hostname } => keep_hostname,
    };
    if let Some(data) = host_data {
        let read =
            read_vm_data(data, keep_hostname).map_err(|e| BackendError::Failed(e.to_string()))?;
        if let Some(spec) = nova::from_vm_data(&read)? {
            return Ok(spec);
        }
    }
    let path = config.config_drive_path.as_deref();
    if config.config_drive || path.is_some() {
        if let Some(files) = env.backend.read_config_drive(env, path, keep_hostname)? {
            return Ok(config_drive::parse(&files)?);
        }
    }
    Err(BackendError::Invalid(
        if host_data.is_some() {
            "empty network list: vm-data/networking has no entries and there is no config drive"
        } else {
            "no network data: the value is empty, this channel has no host data and there is no config drive"
        }
        .into(),
    ))
}

/// Everything under `vm-data/networking/` and, unless it is kept, `vm-data/hostname`.
fn read_vm_data(data: &dyn HostData, keep_hostname: bool) -> Result<VmData, HostDataError> {
    let mut read = VmData::default();
    for key in data.list(XENSTORE_NETWORKING)? {
        // An entry removed between the listing and the read is simply gone.
        if let Some(bytes) = data.read(&format!("{XENSTORE_NETWORKING}/{key}"))? {
            read.networking.push((key, bytes));
        }
    }
    if !keep_hostname && !read.networking.is_empty() {
        read.hostname = data.read(XENSTORE_HOSTNAME)?;
    }
    Ok(read)
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
            let macs: Vec<String> = r
                .spec
                .interfaces
                .iter()
                .map(|i| i.mac.to_string())
                .collect();
            self.seen.lock().unwrap().push(format!(
                "{} {macs:?} {:?} {:?}",
                r.spec.source,
                r.spec.hostname.as_ref().map(|h| h.as_str()),
                r.manager,
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
    fn passes_the_parsed_network_and_the_manager_and_answers_zero() {
        let backend = Arc::new(Recorder::default());
        let config = NetworkConfig {
            manager: Some("netplan".into()),
            config_drive: false,
            config_drive_path: None,
        };
        let value = serde_json::json!({"hostname": "web1", "interfaces": [
            {"mac": "DE:AD:BE:EF:00:01", "ips": [{"ip": "10.0.0.5", "netmask": 24}]}]});
        let reply = run(backend.clone(), config, value);
        assert_eq!(
            (reply.returncode.as_str(), reply.message.as_str()),
            ("0", "")
        );
        assert_eq!(
            backend.seen.lock().unwrap().as_slice(),
            ["inline [\"de:ad:be:ef:00:01\"] Some(\"web1\") Some(\"netplan\")"]
        );
    }

    /// Bad host data is refused by name before the backend sees anything.
    #[test]
    fn bad_data_never_reaches_the_backend() {
        let backend = Arc::new(Recorder::default());
        let reply = run(
            backend.clone(),
            NetworkConfig::default(),
            serde_json::json!({"hostname": "bad_name"}),
        );
        assert_eq!(reply.returncode, "500");
        assert_eq!(
            reply.message,
            "'bad_name' is not a valid hostname: only letters, digits, '-' and '.' are allowed"
        );
        assert!(backend.seen.lock().unwrap().is_empty());
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
            serde_json::json!({"hostname": "WIN-NEW"}),
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
        let value = serde_json::json!([{"mac": "DE:AD:BE:EF:00:01", "ips": [{"ip": "10.0.0.5", "netmask": 24}]}]);
        let reply = run(backend, NetworkConfig::default(), value);
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
        let value = serde_json::json!({"hostname": "web1"});
        let reply = call(&d, &Arc::new(Channel::new("t")), "resetnetwork", value);
        assert_eq!(reply.returncode, "500");
        assert_eq!(reply.message, "resetnetwork is not supported on this OS");
        // Without data and without a config drive there is nothing to do, whatever the OS.
        let reply = call(&d, &Arc::new(Channel::new("t")), "resetnetwork", "".into());
        assert_eq!(
            reply.message,
            "no network data: the value is empty, this channel has no host data and there is no config drive"
        );
    }

    #[test]
    fn config_rejects_unknown_keys_and_defaults() {
        let c: NetworkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, NetworkConfig::default());
        assert!(c.config_drive);
        assert!(serde_json::from_str::<NetworkConfig>(r#"{"manger": "x"}"#).is_err());
    }
}
