//! FreeBSD: `pw [-R <root>] usermod -n <user> -H 0` with the SHA-512-crypt hash on fd 0 (the
//! password never in argv), then `/etc/master.passwd` is read back and verified.

use std::time::Duration;

use tracing::info;
use zeroize::Zeroizing;

use guestd_core::{BackendError, Command, Effect, Env, SecretString};

use super::{crypt, hash_format, shadow};

pub const MASTER_PASSWD: &str = "/etc/master.passwd";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The `pw` command that sets `user`'s hash (read from stdin because of `-H 0`).
pub fn pw_command(env: &Env, user: &str, hash: &str) -> Result<Command, BackendError> {
    // On the real root it changes the system's accounts; with -R only files under the root.
    let mut cmd = Command::new("pw").timeout(TIMEOUT).effect(Effect::Accounts);
    if let Some(base) = env.root.base() {
        let base = base.to_str().ok_or_else(|| {
            BackendError::Invalid("the sandbox root path is not UTF-8".to_string())
        })?;
        cmd = cmd.args(["-R", base]).root_local();
    }
    let line = Zeroizing::new(format!("{hash}\n").into_bytes());
    Ok(cmd.args(["usermod", "-n", user, "-H", "0"]).stdin(line))
}

pub fn set_password(env: &Env, user: &str, password: &SecretString) -> Result<(), BackendError> {
    shadow::check_user_name(user)?;
    let current = Zeroizing::new(env.root.read(MASTER_PASSWD)?);
    if shadow::password_field(&current, user).is_none() {
        return Err(BackendError::Invalid(format!(
            "user '{user}' has no entry in {MASTER_PASSWD}"
        )));
    }
    let hash = crypt::sha512_crypt(password.expose(), &crypt::fresh_salt()?)?;
    env.runner
        .run(&pw_command(env, user, &hash)?)?
        .check("pw")?;
    let text = Zeroizing::new(env.root.read(MASTER_PASSWD)?);
    let ok = shadow::password_field(&text, user)
        .and_then(|f| std::str::from_utf8(f).ok())
        .is_some_and(|stored| crypt::verify(stored, password.expose()));
    if !ok {
        return Err(BackendError::Failed(format!(
            "the password of '{user}' did not verify after it was set"
        )));
    }
    info!(user, "password set and verified");
    Ok(())
}

/// Store a ready crypt(3) hash with `pw usermod -H 0` and check `master.passwd` holds it.
pub fn set_password_hash(env: &Env, user: &str, hash: &SecretString) -> Result<(), BackendError> {
    shadow::check_user_name(user)?;
    let scheme = hash_format::check(hash.expose())?;
    let current = Zeroizing::new(env.root.read(MASTER_PASSWD)?);
    if shadow::password_field(&current, user).is_none() {
        return Err(BackendError::Invalid(format!(
            "user '{user}' has no entry in {MASTER_PASSWD}"
        )));
    }
    env.runner
        .run(&pw_command(env, user, hash.expose())?)?
        .check("pw")?;
    let text = Zeroizing::new(env.root.read(MASTER_PASSWD)?);
    if shadow::password_field(&text, user) != Some(hash.expose().as_bytes()) {
        return Err(BackendError::Failed(format!(
            "the password entry of '{user}' does not hold the new hash after it was set"
        )));
    }
    info!(
        user,
        scheme = scheme.name(),
        "crypted password stored and verified"
    );
    Ok(())
}
