//! The `[xenstore]` section of guestd's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::Tunables;

/// Which implementation talks to xenstored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The pure-Rust client over the xenbus device or a xenstored socket (default on unix).
    #[cfg_attr(not(any(windows, feature = "libxenstore")), default)]
    Native,
    /// The system libxenstore (needs the `libxenstore` cargo feature; its default then).
    #[cfg_attr(all(feature = "libxenstore", not(windows)), default)]
    Libxenstore,
    /// The Xen PV drivers' xeniface device (Windows only; the default there).
    #[cfg_attr(windows, default)]
    Xeniface,
}

/// `[xenstore]` in `guestd.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct XenstoreConfig {
    /// Use XenStore when guestd finds `/dev/xen/xenbus` or `/proc/xen/xenbus` and no listener
    /// was configured explicitly.
    pub auto_detect: bool,
    /// The xenbus device or xenstored socket (Windows: the xeniface interface path); unset
    /// means detect.
    pub path: Option<PathBuf>,
    pub backend: BackendKind,
    /// Seconds after which guestd removes the replies it wrote (the host reads them within
    /// seconds or never), so a long-lived guest never reaches its node quota.
    pub reply_max_age_secs: u64,
    /// Largest reply value guestd writes (oxenstored's guest `quota-maxsize`).
    pub max_reply_bytes: usize,
    /// Longest wait between reconnection attempts, in seconds.
    pub reconnect_max_secs: u64,
}

impl Default for XenstoreConfig {
    fn default() -> Self {
        Self {
            auto_detect: true,
            path: None,
            backend: BackendKind::default(),
            reply_max_age_secs: 600,
            max_reply_bytes: 2048,
            reconnect_max_secs: 5,
        }
    }
}

impl XenstoreConfig {
    pub(crate) fn tunables(&self) -> Tunables {
        Tunables {
            reply_max_age: Duration::from_secs(self.reply_max_age_secs),
            max_reply_bytes: self.max_reply_bytes.max(64),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(self.reconnect_max_secs.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: XenstoreConfig = toml_like(r#"{"path": "/tmp/xs"}"#);
        assert_eq!(c.path.as_deref(), Some(std::path::Path::new("/tmp/xs")));
        assert_eq!(c.reply_max_age_secs, 600);
        assert_eq!(c.max_reply_bytes, 2048);
        assert!(serde_json::from_str::<XenstoreConfig>(r#"{"pth": "/x"}"#).is_err());
    }

    #[test]
    fn backend_names_and_the_platform_default() {
        for (name, kind) in [
            ("native", BackendKind::Native),
            ("libxenstore", BackendKind::Libxenstore),
            ("xeniface", BackendKind::Xeniface),
        ] {
            let c = toml_like(&format!(r#"{{"backend": "{name}"}}"#));
            assert_eq!(c.backend, kind);
        }
        assert!(serde_json::from_str::<XenstoreConfig>(r#"{"backend": "wmi"}"#).is_err());
        let expected = if cfg!(windows) {
            BackendKind::Xeniface
        } else if cfg!(feature = "libxenstore") {
            BackendKind::Libxenstore
        } else {
            BackendKind::Native
        };
        assert_eq!(XenstoreConfig::default().backend, expected);
    }

    fn toml_like(json: &str) -> XenstoreConfig {
        serde_json::from_str(json).unwrap()
    }
}
