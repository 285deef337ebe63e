//! Setting an account's password (the `password` command's backend capability).
//!
//! - Linux ([`linux`]): SHA-512-crypt hash with a fresh 16-character salt ([`crypt`]), set
//!   with `chpasswd -e` (`-R <root>` for a sandbox root), or by an atomic rewrite of
//!   `/etc/shadow` under the shadow lock ([`shadow`]) when chpasswd is missing.
//! - FreeBSD ([`freebsd`]): `pw usermod -n <user> -H 0` with the hash on fd 0.
//! - Windows ([`windows`]): `NetUserSetInfo` on the built-in Administrator (RID 500).
//!
//! A ready crypt(3) hash from the host (qga `crypted: true`, [`set_password_hash`]) is checked
//! by [`hash_format`] and stored unchanged through the same tools (Linux, FreeBSD; Windows
//! cannot take a hash).
//!
//! The tools run as a `Plan` (`linux::chpasswd_plan`, `freebsd::pw_plan`) carried out by
//! `guestd_core::apply`, without backups: guestd keeps no copy of old password hashes.
//!
//! Every path re-reads the stored hash and verifies it against the password before reporting
//! success (except Windows, where `NetUserSetInfo`'s own status is the answer). The password is
//! never put in argv, logs or errors.

pub mod crypt;
pub mod freebsd;
pub mod hash_format;
pub mod linux;
pub mod shadow;
pub mod windows;

use guestd_core::{ApplyOptions, BackendError, Env, Plan, SecretString};

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

/// Store a ready crypt(3) hash as `user`'s password (Linux, FreeBSD) and verify the entry.
pub fn set_password_hash(
    family: OsFamily,
    env: &Env,
    user: &str,
    hash: &SecretString,
) -> Result<(), BackendError> {
    match family {
        OsFamily::Windows => Err(BackendError::Unsupported(
            "setting a crypted password (Windows stores no crypt(3) hashes)".into(),
        )),
        OsFamily::FreeBsd => freebsd::set_password_hash(env, user, hash),
        _ => linux::set_password_hash(env, user, hash),
    }
}

/// Carry out a password plan: no backups (no copy of old hashes is kept anywhere), and a
/// command a sandbox kept off the machine is a failure (the password was not set).
fn apply(env: &Env, plan: &Plan) -> Result<(), BackendError> {
    let options = ApplyOptions { keep_backups: 0 };
    let applied = guestd_core::apply(plan, &env.root, env.runner.as_ref(), options)?;
    match applied.not_run_error() {
        Some(not_run) => Err(not_run.into()),
        None => Ok(()),
    }
}
