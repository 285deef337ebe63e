//! The `[xen_metrics]` section of guestd's configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[xen_metrics]` in `guestd.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct XenMetricsConfig {
    /// Publish the guest metrics whenever guestd serves XenStore.
    pub enabled: bool,
    /// Seconds between two readings of the memory figures (`data/meminfo_*`); 0: only at
    /// start and after a resume.
    pub memory_interval_secs: u64,
    /// Offer XenCenter's static IP setting (`control/feature-static-ip-setting`) and apply
    /// its requests through resetnetwork's renderers.
    pub static_ip_setting: bool,
}

impl Default for XenMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_interval_secs: 60,
            static_ip_setting: true,
        }
    }
}

impl XenMetricsConfig {
    /// The memory timer's period, if there is one.
    pub fn memory_interval(&self) -> Option<Duration> {
        (self.memory_interval_secs > 0).then(|| Duration::from_secs(self.memory_interval_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: XenMetricsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, XenMetricsConfig::default());
        assert!(c.enabled && c.static_ip_setting);
        assert_eq!(c.memory_interval(), Some(Duration::from_secs(60)));
        let off: XenMetricsConfig =
            serde_json::from_str(r#"{"memory_interval_secs": 0, "enabled": false}"#).unwrap();
        assert_eq!(off.memory_interval(), None);
        assert!(!off.enabled);
        assert!(serde_json::from_str::<XenMetricsConfig>(r#"{"memory_interval": 5}"#).is_err());
    }
}
