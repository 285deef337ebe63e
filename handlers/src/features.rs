//! `features` (spec §4.2): `"0"` and the enabled commands, comma-separated, in registration
//! order. Disabled commands are not listed, so a host never tries what would be refused.

use guestd_core::{Context, Handler, HandlerError, Reply};
use serde_json::Value;

/// Answers `features`.
#[derive(Debug, Default)]
pub struct FeaturesHandler;

impl Handler for FeaturesHandler {
    fn name(&self) -> &'static str {
        "features"
    }

    fn may_block(&self) -> bool {
        false
    }

    fn is_query(&self) -> bool {
        true
    }

    fn handle(&self, ctx: &Context<'_>, _value: &Value) -> Result<Reply, HandlerError> {
        Ok(Reply::ok(ctx.enabled_commands().join(",")))
    }
}
