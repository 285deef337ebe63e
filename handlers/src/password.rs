//! `password` (spec §4.4): decrypt the value with the key the channel agreed on (`keyinit` or
//! `keyinit2`), set the password through the backend, answer `"0"`. The key is forgotten after
//! a success and kept after any failure, so the host may retry without a new exchange.
//!
//! Errors of record (all `"500"`): `Couldn't decode base64 data`, `Password without key
//! exchange` (checked after decoding, as U1 did), `Invalid password data received`.
//!
//! The value is nova's base64 string, a strong `$gd2$…` string, or (strong mode only) the
//! object `{"user": NAME, "password": "$gd2$…"}` where the user name is authenticated by the
//! MAC and overrides `password.user`.

use std::sync::Arc;

use guestd_core::{Context, Handler, HandlerError, Reply, SecretString};
use guestd_crypto::{Password, PasswordError, decode_base64_lenient, legacy, strong};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

use crate::channel_key::ChannelKey;

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
    /// Windows only: where accounts live. `netapi` (the default: the local account database),
    /// or, only in a guestd built with the test feature `fake-windows-accounts`, `fake:DIR`, a
    /// recording stand-in for tests under Wine (see
    /// `guestd_distro::password::windows::AccountStore`).
    pub windows_accounts: String,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            allow_legacy: true,
            user: None,
            windows_accounts: "netapi".to_string(),
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
    Strong { value: String, user: Option<String> },
}

fn decode(value: &Value) -> Result<Ciphertext, HandlerError> {
    let failed = |e: PasswordError| HandlerError::failed(e.to_string());
    let (text, user) = match value {
        Value::String(text) => (text.as_str(), None),
        Value::Object(obj) => {
            let field = |k: &str| obj.get(k).and_then(Value::as_str);
            let (Some(text), Some(user), 2) = (field("password"), field("user"), obj.len()) else {
                return Err(HandlerError::BadRequest(
                    "a password object must be {\"user\": NAME, \"password\": VALUE}".into(),
                ));
            };
            if !strong::is_strong_value(text) {
                return Err(HandlerError::BadRequest(
                    "a user can only be chosen with the strong key exchange (keyinit2)".into(),
                ));
            }
            (text, Some(user.to_string()))
        }
        _ => return Err(failed(PasswordError::Base64)),
    };
    if strong::is_strong_value(text) {
        strong::decode_value(text).map_err(failed)?;
        Ok(Ciphertext::Strong {
            value: text.to_string(),
            user,
        })
    } else {
        decode_base64_lenient(text)
            .map(Ciphertext::Legacy)
            .map_err(failed)
    }
}

impl Handler for PasswordHandler {
    fn name(&self) -> &'static str {
        "password"
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let failed = |e: PasswordError| HandlerError::failed(e.to_string());
        let ciphertext = decode(value)?;
        // Decrypt inside the state lock so the key is never copied out.
        let (password, mode) =
            ctx.channel
                .with_state::<ChannelKey, _>(|key| match (&*key, &ciphertext) {
                    (ChannelKey::Legacy(shared), Ciphertext::Legacy(ct)) => {
                        let (pw, digest) = legacy::decrypt_password(shared, ct).map_err(failed)?;
                        Ok((pw, format!("legacy, {} key derivation", digest.name())))
                    }
                    (ChannelKey::Strong(keys), Ciphertext::Strong { value, user }) => {
                        let pw = keys
                            .decrypt_password(user.as_deref(), value)
                            .map_err(failed)?;
                        Ok((pw, "keyinit2".to_string()))
                    }
                    _ => Err(HandlerError::failed(NO_KEY_EXCHANGE)),
                })?;
        if password.expose().is_empty() {
            return Err(HandlerError::failed("Refusing to set an empty password"));
        }
        // crypt(3) and PAM see C strings: a NUL would silently truncate the password.
        if password.expose().contains('\0') {
            return Err(HandlerError::failed(
                "Refusing a password that contains a NUL character",
            ));
        }
        let user = match &ciphertext {
            Ciphertext::Strong { user: Some(u), .. } => Some(u.as_str()),
            _ => self.config.user.as_deref(),
        };
        let secret = SecretString::new(Password::into_inner(password));
        ctx.env.backend.set_password(ctx.env, user, &secret)?;
        ctx.channel.with_state::<ChannelKey, _>(ChannelKey::forget);
        info!(user = user.unwrap_or("(default account)"), mode = %mode, "password changed");
        Ok(Reply::ok(""))
    }
}
