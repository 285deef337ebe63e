//! `guest-set-user-password`: the base64 password goes to `Backend::set_password`, the same path
//! as the native `password` command (hashing, `chpasswd -e` or the shadow rewrite, verification).
//! With `crypted: true` the decoded value is a ready crypt(3) hash: `Backend::set_password_hash`
//! checks its form (known scheme, no `:` or control characters), stores it unchanged through the
//! same tools and verifies the entry holds exactly that hash.

use base64::Engine;
use guestd_core::{HandlerError, SecretString};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{QgaCommand, args};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    username: String,
    /// Moved into a `Zeroizing` at once.
    password: String,
    crypted: bool,
}

pub const SET_USER_PASSWORD: QgaCommand = QgaCommand {
    name: "guest-set-user-password",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: Args = args(value)?;
        let encoded = Zeroizing::new(a.password);
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim().as_bytes())
                .map_err(|_| {
                    HandlerError::BadRequest("Base64 data contains invalid characters".into())
                })?,
        );
        let text = std::str::from_utf8(&raw)
            .map_err(|_| HandlerError::BadRequest("the password is not UTF-8".into()))?;
        if text.is_empty() || text.contains(['\n', '\r', '\0']) {
            return Err(HandlerError::BadRequest(
                "the password must be non-empty and free of newlines and NUL".into(),
            ));
        }
        let secret = SecretString::new(Zeroizing::new(text.to_string()));
        if a.crypted {
            ctx.env
                .backend
                .set_password_hash(ctx.env, &a.username, &secret)?;
        } else {
            ctx.env
                .backend
                .set_password(ctx.env, Some(&a.username), &secret)?;
        }
        Ok(json!({}))
    },
};
