//! guestd's Xen guest metrics: what XAPI, xenopsd and squeezed learn about a guest from
//! XenStore, so that XenServer and XCP-ng need neither xe-guest-utilities nor
//! xen-guest-agent beside guestd.
//!
//! - [`keys`]: which keys, computed from what the guest knows (pure);
//! - [`publisher`]: write only what changed, remove what went away, one transaction per
//!   publication, `data/updated` last; refusals logged once;
//! - [`agent`]: when to publish — platform events, XenStore watches on the domain's identity
//!   (resume and migration), the connection coming back, the memory timer — and XenCenter's
//!   static IP requests ([`static_ip`]), applied through resetnetwork's backend;
//! - [`facts`]: the platform-neutral facts and the [`facts::Platform`] trait, implemented in
//!   [`platform`] for Linux (rtnetlink, sysfs, procfs), FreeBSD and Windows.
//!
//! The daemon starts it with [`spawn`] when it serves XenStore and `[xen_metrics] enabled`.
//! Adding a key: a line in [`keys::desired`] (and in the README's table). Adding an OS: a
//! module in [`platform`] implementing [`facts::Platform`].

pub mod agent;
mod config;
pub mod facts;
pub mod keys;
pub mod os_release;
pub mod platform;
pub mod publisher;
pub mod static_ip;

use std::path::Path;

use guestd_core::{Env, Shutdown, TransportError};
use guestd_transport_xenstore::{Store, StoreUser, XenstoreConfig, with_configured_store};

pub use agent::Settings;
pub use config::XenMetricsConfig;

/// Start publishing on the current tokio runtime, over the XenStore backend and path the
/// `[xenstore]` configuration chooses (`path` first, as for the transport). The task ends
/// on `shutdown`. An error means the configured backend cannot exist here (the XenStore
/// transport fails the same way).
pub fn spawn(
    path: Option<&Path>,
    xenstore: &XenstoreConfig,
    settings: Settings,
    env: Env,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, TransportError> {
    struct Spawn {
        settings: Settings,
        env: Env,
        shutdown: Shutdown,
    }
    impl StoreUser for Spawn {
        type Output = tokio::task::JoinHandle<()>;
        fn run<S: Store>(self, path: &Path) -> Self::Output {
            let path = path.to_path_buf();
            tokio::spawn(async move {
                #[cfg(any(target_os = "linux", target_os = "freebsd", windows))]
                match platform::system().await {
                    Ok(platform) => {
                        agent::publish::<S, _>(
                            path,
                            self.settings,
                            platform,
                            self.env,
                            self.shutdown,
                        )
                        .await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the Xen guest metrics cannot read this OS's interfaces; not publishing")
                    }
                }
                #[cfg(not(any(target_os = "linux", target_os = "freebsd", windows)))]
                {
                    let _ = (path, self);
                    tracing::warn!("Xen guest metrics are not available on this OS");
                }
            })
        }
    }
    with_configured_store(
        path,
        xenstore,
        Spawn {
            settings,
            env,
            shutdown,
        },
    )
}

/// The agent's settings from guestd's configuration sections.
pub fn settings(
    metrics: &XenMetricsConfig,
    xenstore: &XenstoreConfig,
    network_manager: Option<String>,
) -> Settings {
    Settings {
        memory_interval: metrics.memory_interval(),
        static_ip: metrics.static_ip_setting,
        network_manager,
        reconnect_max: std::time::Duration::from_secs(xenstore.reconnect_max_secs.max(1)),
    }
}
