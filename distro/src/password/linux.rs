//! Linux: `chpasswd -e` with a SHA-512-crypt hash (stdin carries `user:hash`), or, without
//! chpasswd, an atomic rewrite of `/etc/shadow` under the shadow lock. Either way the entry is
//! read back and verified before success is reported. A ready hash from the host (qga
//! `crypted: true`) takes the same path after [`hash_format::check`].

use std::time::Duration;

use tracing::{info, warn};
use zeroize::Zeroizing;

use guestd_core::{BackendError, Effect, Env, Plan, ProcessSpec, SecretString, WriteOptions};

use super::{crypt, hash_format, shadow};

pub const SHADOW: &str = "/etc/shadow";
const CHPASSWD: &str = "chpasswd";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Set `user`'s password and verify it.
pub fn set_password(env: &Env, user: &str, password: &SecretString) -> Result<(), BackendError> {
    shadow::check_user_name(user)?;
    let current = read_shadow(env)?;
    if shadow::password_field(&current, user).is_none() {
        return Err(BackendError::Invalid(format!(
            "user '{user}' has no entry in {SHADOW}"
        )));
    }
    let hash = crypt::sha512_crypt(password.expose(), &crypt::fresh_salt()?)?;
    store(env, user, &hash)?;
    verify(env, user, password)?;
    info!(user, "password set and verified");
    Ok(())
}

/// Store a ready crypt(3) hash as `user`'s password (qga `crypted: true`) and check the entry
/// now holds exactly that hash.
pub fn set_password_hash(env: &Env, user: &str, hash: &SecretString) -> Result<(), BackendError> {
    shadow::check_user_name(user)?;
    let scheme = hash_format::check(hash.expose())?;
    if scheme.is_weak() {
        warn!(
            user,
            scheme = scheme.name(),
            "storing a weak password hash chosen by the host"
        );
    }
    let current = read_shadow(env)?;
    if shadow::password_field(&current, user).is_none() {
        return Err(BackendError::Invalid(format!(
            "user '{user}' has no entry in {SHADOW}"
        )));
    }
    store(env, user, hash.expose())?;
    let text = read_shadow(env)?;
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

/// `chpasswd -e`, or the shadow rewrite without it.
fn store(env: &Env, user: &str, hash: &str) -> Result<(), BackendError> {
    if env.runner.exists(CHPASSWD) {
        run_chpasswd(env, user, hash)
    } else {
        warn!("{CHPASSWD} not found; rewriting {SHADOW} directly");
        rewrite_shadow(env, user, hash)
    }
}

fn read_shadow(env: &Env) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    Ok(Zeroizing::new(env.root.read(SHADOW)?))
}

/// `chpasswd -e [-R <root>]`, the hash on stdin: the password itself never leaves the agent.
pub fn chpasswd_command(env: &Env, user: &str, hash: &str) -> Result<ProcessSpec, BackendError> {
    // On the real root it changes the system's accounts; with -R only files under the root.
    let mut cmd = ProcessSpec::new(CHPASSWD)
        .arg("-e")
        .timeout(TIMEOUT)
        .effect(Effect::Accounts);
    if let Some(base) = env.root.base() {
        let base = base.to_str().ok_or_else(|| {
            BackendError::Invalid("the sandbox root path is not UTF-8".to_string())
        })?;
        cmd = cmd.args(["-R", base]).root_local();
    }
    let line = Zeroizing::new(format!("{user}:{hash}\n").into_bytes());
    Ok(cmd.stdin(line))
}

/// The plan that stores `hash` as `user`'s password with chpasswd.
pub fn chpasswd_plan(env: &Env, user: &str, hash: &str) -> Result<Plan, BackendError> {
    Ok(Plan {
        commands: vec![chpasswd_command(env, user, hash)?.into()],
        ..Plan::default()
    })
}

fn run_chpasswd(env: &Env, user: &str, hash: &str) -> Result<(), BackendError> {
    super::apply(env, &chpasswd_plan(env, user, hash)?)
}

/// The fallback: replace the user's field in `/etc/shadow` atomically, under the lock; mode,
/// owner and every other line stay as they were.
fn rewrite_shadow(env: &Env, user: &str, hash: &str) -> Result<(), BackendError> {
    let _lock = shadow::ShadowLock::acquire(&env.root)?;
    // Re-read under the lock: another tool may have changed the file since our check.
    let current = read_shadow(env)?;
    let updated = shadow::replace_password(&current, user, hash, Some(shadow::days_since_epoch()))
        .ok_or_else(|| BackendError::Invalid(format!("user '{user}' has no entry in {SHADOW}")))?;
    env.root
        .write_atomic(SHADOW, &updated, WriteOptions::mode(0o640))?;
    Ok(())
}

/// Re-read the entry and check it against the password (no false success).
fn verify(env: &Env, user: &str, password: &SecretString) -> Result<(), BackendError> {
    let text = read_shadow(env)?;
    let ok = shadow::password_field(&text, user)
        .and_then(|f| std::str::from_utf8(f).ok())
        .is_some_and(|stored| crypt::verify(stored, password.expose()));
    if ok {
        Ok(())
    } else {
        Err(BackendError::Failed(format!(
            "the password of '{user}' did not verify after it was set"
        )))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;

    use guestd_core::plan::Expect;
    use guestd_core::{NullBackend, Reach, Root};
    use guestd_testkit::FakeRunner;

    use super::*;

    fn env(root: Root) -> Env {
        Env {
            root,
            runner: Arc::new(FakeRunner::new()),
            backend: Arc::new(NullBackend),
        }
    }

    #[test]
    fn chpasswd_plan_carries_the_hash_on_stdin_only() {
        let hash = "$6$saltsaltsaltsalt$abc";
        let d = tempfile::tempdir().unwrap();
        let sandbox = env(Root::sandbox(d.path()).unwrap());
        let plan = chpasswd_plan(&sandbox, "alice", hash).unwrap();
        assert!(plan.changes.is_empty() && plan.rollback_commands.is_empty());
        let [planned] = plan.commands.as_slice() else {
            panic!("{plan:?}")
        };
        assert_eq!(planned.expect, Expect::Success);
        let cmd = &planned.command;
        let base = d.path().to_str().unwrap();
        assert_eq!(cmd.command_line(), format!("chpasswd -e -R {base}"));
        // With -R it only changes files under the root.
        assert_eq!(cmd.reach, Reach::Root);
        assert_eq!(
            cmd.stdin.as_deref().map(Vec::as_slice),
            Some(format!("alice:{hash}\n").as_bytes())
        );
        assert!(
            !format!("{plan:?}").contains(hash),
            "the hash is never shown"
        );

        let real = env(Root::system());
        let plan = chpasswd_plan(&real, "root", hash).unwrap();
        assert_eq!(plan.commands[0].command.command_line(), "chpasswd -e");
        assert_eq!(
            plan.commands[0].command.reach,
            Reach::Machine(Effect::Accounts)
        );
    }
}
