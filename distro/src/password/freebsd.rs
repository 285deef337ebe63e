//! FreeBSD: `pw [-R <root>] usermod -n <user> -H 0` with the SHA-512-crypt hash on fd 0 (the
//! password never in argv), then `/etc/master.passwd` is read back and verified.

use std::time::Duration;

use tracing::info;
use zeroize::Zeroizing;

use guestd_core::{BackendError, Effect, Env, Plan, ProcessSpec, SecretString};

use super::{crypt, hash_format, shadow};

pub const MASTER_PASSWD: &str = "/etc/master.passwd";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The `pw` command that sets `user`'s hash (read from stdin because of `-H 0`).
pub fn pw_command(env: &Env, user: &str, hash: &str) -> Result<ProcessSpec, BackendError> {
    // On the real root it changes the system's accounts; with -R only files under the root.
    let mut cmd = ProcessSpec::new("pw")
        .timeout(TIMEOUT)
        .effect(Effect::Accounts);
    if let Some(base) = env.root.base() {
        let base = base.to_str().ok_or_else(|| {
            BackendError::Invalid("the sandbox root path is not UTF-8".to_string())
        })?;
        cmd = cmd.args(["-R", base]).root_local();
    }
    let line = Zeroizing::new(format!("{hash}\n").into_bytes());
    Ok(cmd.args(["usermod", "-n", user, "-H", "0"]).stdin(line))
}

/// The plan that stores `hash` as `user`'s password with `pw`.
pub fn pw_plan(env: &Env, user: &str, hash: &str) -> Result<Plan, BackendError> {
    Ok(Plan {
        commands: vec![pw_command(env, user, hash)?.into()],
        ..Plan::default()
    })
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
    super::apply(env, &pw_plan(env, user, &hash)?)?;
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
    super::apply(env, &pw_plan(env, user, hash.expose())?)?;
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

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;

    use guestd_core::{NullBackend, Reach, Root};
    use guestd_testkit::FakeRunner;

    use super::*;

    #[test]
    fn pw_plan_carries_the_hash_on_stdin_only() {
        let hash = "$6$saltsaltsaltsalt$abc";
        let d = tempfile::tempdir().unwrap();
        let env = Env {
            root: Root::sandbox(d.path()).unwrap(),
            runner: Arc::new(FakeRunner::new()),
            backend: Arc::new(NullBackend),
        };
        let plan = pw_plan(&env, "alice", hash).unwrap();
        assert!(plan.changes.is_empty() && plan.rollback_commands.is_empty());
        let cmd = &plan.commands[0].command;
        let base = d.path().to_str().unwrap();
        assert_eq!(
            cmd.command_line(),
            format!("pw -R {base} usermod -n alice -H 0")
        );
        assert_eq!(cmd.reach, Reach::Root);
        assert_eq!(
            cmd.stdin.as_deref().map(Vec::as_slice),
            Some(format!("{hash}\n").as_bytes())
        );
        assert!(
            !format!("{plan:?}").contains(hash),
            "the hash is never shown"
        );
    }
}
