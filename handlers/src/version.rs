//! `version` (spec §4.1): `"0"` and a purely numeric dotted version, whatever the value
//! (`"agent"`, `""`, or the Windows agent's `xentools`/`updater`).

use guestd_core::{Context, Handler, HandlerError, Reply};
use serde_json::Value;

/// The version reported to hosts: the crate version with any pre-release part dropped, so
/// that nova's `LooseVersion` comparison never meets a non-numeric component.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Answers `version`.
#[derive(Debug, Default)]
pub struct VersionHandler;

impl VersionHandler {
    /// The numeric dotted version (`1.2.3`).
    pub fn numeric_version() -> &'static str {
        AGENT_VERSION
            .split(['-', '+'])
            .next()
            .unwrap_or(AGENT_VERSION)
    }
}

impl Handler for VersionHandler {
    fn name(&self) -> &'static str {
        "version"
    }

    fn may_block(&self) -> bool {
        false
    }

    fn is_query(&self) -> bool {
        true
    }

    fn handle(&self, _ctx: &Context<'_>, _value: &Value) -> Result<Reply, HandlerError> {
        Ok(Reply::ok(Self::numeric_version()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_numeric_dotted() {
        let v = VersionHandler::numeric_version();
        assert!(!v.is_empty());
        assert!(
            v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "{v}"
        );
    }
}
