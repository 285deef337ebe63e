//! `set-password`: the host side of `keyinit`/`keyinit2` + `password`.
//!
//! The strong exchange (`keyinit2`, see `guestd_crypto`) is used whenever the agent lists it in
//! `features`; otherwise nova's legacy exchange, unless the caller requires the strong one.

use std::time::Duration;

use guestd_core::{Reply, Request, wire::code};
use guestd_crypto::legacy::{self, LegacyDh, LegacyDigest};
use guestd_crypto::strong::{Role, StrongDh};
use serde_json::json;

use crate::{Client, ClientError};

/// How the password is protected on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `keyinit2`: group-14 DH, AES-256-CBC + HMAC-SHA256.
    Strong,
    /// nova's `keyinit`: 107-bit DH, AES-128-CBC with this key derivation.
    Legacy(LegacyDigest),
}

/// What `set-password` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetPasswordOptions {
    /// The account (strong mode only); `None`: the agent's configured one.
    pub user: Option<String>,
    /// Key derivation for the legacy mode (MD5 is what every old agent understands).
    pub legacy_digest: LegacyDigest,
    /// Refuse the legacy exchange.
    pub require_strong: bool,
}

impl Default for SetPasswordOptions {
    fn default() -> Self {
        Self {
            user: None,
            legacy_digest: LegacyDigest::Md5,
            require_strong: false,
        }
    }
}

/// Why the password was not set.
#[derive(Debug, thiserror::Error)]
pub enum SetPasswordError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("agent answered {command} with {}: {}", .reply.returncode, .reply.message)]
    Agent { command: &'static str, reply: Reply },
    #[error("{0}")]
    Refused(String),
    #[error("key exchange failed: {0}")]
    KeyExchange(String),
}

/// Ask the agent's `features` which exchange to use.
pub fn choose_mode(
    client: &mut dyn Client,
    opts: &SetPasswordOptions,
    timeout: Duration,
) -> Result<Mode, SetPasswordError> {
    let reply = client.call(&Request::new("features", ""), timeout)?;
    let strong = reply.is_success() && reply.message.split(',').any(|f| f.trim() == "keyinit2");
    if strong {
        return Ok(Mode::Strong);
    }
    if opts.require_strong {
        return Err(SetPasswordError::Refused(
            "the agent does not offer the strong key exchange (keyinit2); refusing the legacy one"
                .into(),
        ));
    }
    if opts.user.is_some() {
        return Err(SetPasswordError::Refused(
            "choosing the user needs the strong key exchange (keyinit2), which this agent does \
             not offer"
                .into(),
        ));
    }
    Ok(Mode::Legacy(opts.legacy_digest))
}

/// Run the key exchange of `mode` and send the password.
pub fn send_password(
    client: &mut dyn Client,
    mode: Mode,
    user: Option<&str>,
    password: &str,
    timeout: Duration,
) -> Result<(), SetPasswordError> {
    let kx = |e: guestd_crypto::KeyExchangeError| SetPasswordError::KeyExchange(e.to_string());
    let value = match mode {
        Mode::Strong => {
            let own = StrongDh::generate().map_err(kx)?;
            let reply = expect(
                client,
                "keyinit2",
                Request::new("keyinit2", own.public_base64()),
                code::KEYINIT_OK,
                timeout,
            )?;
            let keys = own.agree(Role::Host, &reply.message).map_err(kx)?;
            let encrypted = keys.encrypt_password(user, password).map_err(kx)?;
            match user {
                Some(u) => json!({"user": u, "password": encrypted}),
                None => json!(encrypted),
            }
        }
        Mode::Legacy(digest) => {
            let own = LegacyDh::generate().map_err(kx)?;
            let reply = expect(
                client,
                "keyinit",
                Request::new("keyinit", own.public_decimal()),
                code::KEYINIT_OK,
                timeout,
            )?;
            let peer = legacy::parse_public(&reply.message).map_err(kx)?;
            let shared = own.shared_secret(&peer);
            json!(legacy::encrypt_password(&shared, digest, password))
        }
    };
    expect(
        client,
        "password",
        Request::new("password", value),
        code::OK,
        timeout,
    )?;
    Ok(())
}

fn expect(
    client: &mut dyn Client,
    command: &'static str,
    request: Request,
    want: &str,
    timeout: Duration,
) -> Result<Reply, SetPasswordError> {
    let reply = client.call(&request, timeout)?;
    if reply.returncode == want {
        Ok(reply)
    } else {
        Err(SetPasswordError::Agent { command, reply })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `features` with a fixed reply and fails anything else.
    struct Features(Reply);

    impl Client for Features {
        fn call_with_id(
            &mut self,
            request: &Request,
            _id: &str,
            _timeout: Duration,
        ) -> Result<Reply, ClientError> {
            assert_eq!(request.name, "features");
            Ok(self.0.clone())
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn strong_when_offered() {
        let mut c = Features(Reply::ok("version,features,keyinit,keyinit2,password"));
        let opts = SetPasswordOptions {
            require_strong: true,
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(choose_mode(&mut c, &opts, T).unwrap(), Mode::Strong);
    }

    #[test]
    fn legacy_otherwise_unless_refused() {
        let mut c = Features(Reply::ok(
            "kmsactivate,resetnetwork,version,keyinit,features,password",
        ));
        let opts = SetPasswordOptions {
            legacy_digest: LegacyDigest::Sha256,
            ..Default::default()
        };
        assert_eq!(
            choose_mode(&mut c, &opts, T).unwrap(),
            Mode::Legacy(LegacyDigest::Sha256)
        );
        let strict = SetPasswordOptions {
            require_strong: true,
            ..Default::default()
        };
        assert!(matches!(
            choose_mode(&mut c, &strict, T),
            Err(SetPasswordError::Refused(_))
        ));
        let with_user = SetPasswordOptions {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert!(matches!(
            choose_mode(&mut c, &with_user, T),
            Err(SetPasswordError::Refused(_))
        ));
        // An agent whose features fails (or lists keyinit2 only in an error) is legacy.
        let mut c = Features(Reply::new("404", "keyinit2"));
        assert_eq!(
            choose_mode(&mut c, &SetPasswordOptions::default(), T).unwrap(),
            Mode::Legacy(LegacyDigest::Md5)
        );
    }
}
