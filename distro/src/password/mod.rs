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
//! Each is a `Plan` the caller carries out with `guestd_core::apply` (without backups: guestd
//! keeps no copy of old password hashes): the tool (`linux::chpasswd_plan`,
//! `freebsd::pw_plan`), or the locked `/etc/shadow` rewrite (`FileChange::Update`), or on
//! Windows one native step (`NetUserSetInfo`); then a check that the stored entry holds exactly
//! the new hash (`FileCheck`; on Windows `NetUserSetInfo`'s own status is the answer). The
//! password is never put in argv, logs, errors or a plan's `Debug`.

pub mod crypt;
pub mod freebsd;
pub mod hash_format;
pub mod linux;
pub mod shadow;
pub mod windows;

use guestd_core::{BackendError, Env, Plan, SecretString};

use crate::OsFamily;

/// The default account on Unix.
pub const DEFAULT_UNIX_USER: &str = "root";

/// The plan that sets the password of `user` (`None`: root, or the built-in Administrator on
/// Windows) and verifies it.
pub fn plan_set_password(
    family: OsFamily,
    env: &Env,
    accounts: &windows::AccountStore,
    user: Option<&str>,
    password: &SecretString,
) -> Result<Plan, BackendError> {
    match family {
        OsFamily::Windows => Ok(windows::plan_set_password(accounts, user, password)),
        OsFamily::FreeBsd => {
            freebsd::plan_set_password(env, user.unwrap_or(DEFAULT_UNIX_USER), password)
        }
        _ => linux::plan_set_password(env, user.unwrap_or(DEFAULT_UNIX_USER), password),
    }
}

/// The plan that stores a ready crypt(3) hash as `user`'s password (Linux, FreeBSD) and checks
/// the entry holds it.
pub fn plan_set_password_hash(
    family: OsFamily,
    env: &Env,
    user: &str,
    hash: &SecretString,
) -> Result<Plan, BackendError> {
    match family {
        OsFamily::Windows => Err(BackendError::Unsupported(
            "setting a crypted password (Windows stores no crypt(3) hashes)".into(),
        )),
        OsFamily::FreeBsd => freebsd::plan_set_password_hash(env, user, hash),
        _ => linux::plan_set_password_hash(env, user, hash),
    }
}
