//! `keyinit` (spec §4.3, nova's legacy Diffie–Hellman) and `keyinit2` (the strong exchange of
//! `guestd-crypto`). Both answer `"D0"` with our public key and leave the agreed key in the
//! channel's state for the next `password`; a later exchange replaces it. A failed exchange
//! leaves any earlier key in place.

use std::sync::Arc;

use guestd_core::wire::code;
use guestd_core::{Context, Handler, HandlerError, Reply};
use guestd_crypto::KeyExchangeError;
use guestd_crypto::legacy::{self, LegacyDh};
use guestd_crypto::strong::{Role, StrongDh};
use serde_json::Value;
use tracing::info;

use crate::channel_key::ChannelKey;
use crate::password::PasswordConfig;

fn exchange_error(e: KeyExchangeError) -> HandlerError {
    match e {
        KeyExchangeError::BadPublicKey(msg) | KeyExchangeError::BadInput(msg) => {
            HandlerError::BadRequest(msg)
        }
        other => HandlerError::failed(other.to_string()),
    }
}

/// The host's public key from the request value: a decimal string, or a JSON integer (U1/D1 did
/// `long(value)`). A JSON number too large for 64 bits has lost its digits unless serde_json
/// kept them (its `arbitrary_precision` feature); then we ask for a string instead of guessing.
fn legacy_public_text(value: &Value) -> Result<String, HandlerError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => {
            let text = n.to_string();
            if text.bytes().all(|b| b.is_ascii_digit()) {
                Ok(text)
            } else {
                Err(HandlerError::BadRequest(
                    "keyinit value is a JSON number that is not an exact integer; send the \
                     public key as a decimal string"
                        .into(),
                ))
            }
        }
        _ => Err(HandlerError::BadRequest(
            "keyinit value must be the host's public key as a decimal string".into(),
        )),
    }
}

/// Answers `keyinit` (nova's exchange).
#[derive(Debug, Clone, Default)]
pub struct KeyinitHandler {
    config: Arc<PasswordConfig>,
}

impl KeyinitHandler {
    pub fn new(config: Arc<PasswordConfig>) -> Self {
        Self { config }
    }
}

impl Handler for KeyinitHandler {
    fn name(&self) -> &'static str {
        "keyinit"
    }

    /// The agreed key lives in memory only.
    fn allowed_while_frozen(&self) -> bool {
        true
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        if !self.config.allow_legacy {
            return Err(HandlerError::Reply {
                returncode: code::FORBIDDEN.into(),
                message: "Legacy key exchange is disabled on this guest \
                          (password.allow_legacy = false); use keyinit2"
                    .into(),
            });
        }
        let peer = legacy::parse_public(&legacy_public_text(value)?).map_err(exchange_error)?;
        let own = LegacyDh::generate().map_err(exchange_error)?;
        let shared = own.shared_secret(&peer);
        ctx.channel
            .with_state::<ChannelKey, _>(|key| *key = ChannelKey::Legacy(shared));
        info!("legacy key exchange done; waiting for password");
        Ok(Reply::new(code::KEYINIT_OK, own.public_decimal()))
    }
}

/// Answers `keyinit2` (the strong exchange; see `guestd_crypto` for the wire format).
#[derive(Debug, Clone, Default)]
pub struct Keyinit2Handler;

impl Handler for Keyinit2Handler {
    fn name(&self) -> &'static str {
        "keyinit2"
    }

    /// The agreed key lives in memory only.
    fn allowed_while_frozen(&self) -> bool {
        true
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let Value::String(peer) = value else {
            return Err(HandlerError::BadRequest(
                "keyinit2 value must be the host's public key in base64".into(),
            ));
        };
        let own = StrongDh::generate().map_err(exchange_error)?;
        let keys = own.agree(Role::Agent, peer).map_err(exchange_error)?;
        ctx.channel
            .with_state::<ChannelKey, _>(|key| *key = ChannelKey::Strong(keys));
        info!("strong key exchange done; waiting for password");
        Ok(Reply::new(code::KEYINIT_OK, own.public_base64()))
    }
}
