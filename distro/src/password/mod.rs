//! Setting an account's password (the `password` command's backend capability).
//!
//! - Linux ([`linux`]): SHA-512-crypt hash with a fresh 16-character salt ([`crypt`]), set
//!   with `chpasswd -e` (`-R <root>` for a sandbox root), or by an atomic rewrite of
//!   `/etc/shadow` under the shadow lock ([`shadow`]) when chpasswd is missing.
//! - FreeBSD ([`freebsd`]): `pw usermod -n <user> -H 0` with the hash on fd 0.
//! - Windows ([`windows`]): `NetUserSetInfo` on the built-in Administrator (RID 500).
//!
//! Every path re-reads the stored hash and verifies it against the password before reporting
//! success (except Windows, where `NetUserSetInfo`'s own status is the answer). The password is
//! never put in argv, logs or errors.

pub mod crypt;
pub mod freebsd;
pub mod linux;
pub mod shadow;
pub mod windows;

use guestd_core::{BackendError, Env, SecretString};

use crate::OsFamily;

/// The default account on Unix.
pub const DEFAULT_UNIX_USER: &str = "root";

/// Set the password of `user` (`None`: root, or the built-in Administrator on Windows).
pub fn set_password(
    family: OsFamily,
    env: &Env,
    accounts: &windows::AccountStore,
    user: Option<&str>,
    password: &SecretString,
) -> Result<(), BackendError> {
    match family {
        OsFamily::Windows => windows::set_password_in(accounts, user, password),
        OsFamily::FreeBsd => {
            freebsd::set_password(env, user.unwrap_or(DEFAULT_UNIX_USER), password)
        }
        _ => linux::set_password(env, user.unwrap_or(DEFAULT_UNIX_USER), password),
    }
}
