//! `password` (spec §4.4): decrypt the value with the key the channel agreed on (`keyinit` or
//! `keyinit2`), set the password through the backend, answer `"0"`. The key is forgotten after
//! a success and kept after any failure, so the host may retry without a new exchange.
//!
//! Errors of record (all `"500"`): `Couldn't decode base64 data`, `Password without key
//! exchange` (checked after decoding, as U1 did), `Invalid password data received`.

use std::sync::Arc;

use guestd_core::{Context, Handler, HandlerError, Reply, SecretString};
use guestd_crypto::{Password, PasswordError, decode_base64_lenient, legacy, strong};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

use crate::keyinit::ChannelKey;

/// Message when a password arrives without a matching key exchange.
pub const NO_KEY_EXCHANGE: &str = "Password without key exchange";

/// `[password]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Accept nova's legacy `keyinit` (weak 107-bit DH). When false, `keyinit` answers `"403"`
    /// and only `keyinit2` (guestctl) can set the password.
    pub allow_legacy: bool,
    /// The account whose password is set. Unset: `root` (Unix), the built-in Administrator
    /// (Windows, the account whose SID ends in -500, whatever its name).
    pub user: Option<String>,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            allow_legacy: true,
            user: None,
        }
    }
}

/// Answers `password`.
#[derive(Debug, Clone, Default)]
pub struct PasswordHandler {
    config: Arc<PasswordConfig>,
}

impl PasswordHandler {
    pub fn new(config: Arc<PasswordConfig>) -> Self {
        Self { config }
    }
}

/// The value, decoded but not yet decrypted.
enum Ciphertext {
    Legacy(zeroize::Zeroizing<Vec<u8>>),
    Strong(String),
}

fn decode(value: &Value) -> Result<Ciphertext, PasswordError> {
    let Value::String(text) = value else {
        return Err(PasswordError::Base64);
    };
    if strong::is_strong_value(text) {
        strong::decode_value(text)?;
        Ok(Ciphertext::Strong(text.clone()))
    } else {
        decode_base64_lenient(text).map(Ciphertext::Legacy)
    }
}

impl Handler for PasswordHandler {
    fn name(&self) -> &'static str {
        "password"
    }

    fn run(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let failed = |e: PasswordError| HandlerError::failed(e.to_string());
        let ciphertext = decode(value).map_err(failed)?;
        // Decrypt inside the state lock so the key is never copied out.
        let (password, mode) =
            ctx.channel
                .with_state::<ChannelKey, _>(|key| match (&*key, &ciphertext) {
                    (ChannelKey::Legacy(shared), Ciphertext::Legacy(ct)) => {
                        let (pw, digest) = legacy::decrypt_password(shared, ct).map_err(failed)?;
                        Ok((pw, format!("legacy, {} key derivation", digest.name())))
                    }
                    (ChannelKey::Strong(keys), Ciphertext::Strong(text)) => {
                        let pw = keys.decrypt_password(text).map_err(failed)?;
                        Ok((pw, "keyinit2".to_string()))
                    }
                    _ => Err(HandlerError::failed(NO_KEY_EXCHANGE)),
                })?;
        if password.expose().is_empty() {
            return Err(HandlerError::failed("Refusing to set an empty password"));
        }
        let user = self.config.user.as_deref();
        let secret = SecretString::new(Password::into_inner(password));
        ctx.env.backend.set_password(ctx.env, user, &secret)?;
        ctx.channel.with_state::<ChannelKey, _>(ChannelKey::forget);
        info!(user = user.unwrap_or("(administrator)"), mode = %mode, "password changed");
        Ok(Reply::ok(""))
    }
}
