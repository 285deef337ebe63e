//! Linux: `chpasswd -e` with a SHA-512-crypt hash (stdin carries `user:hash`), or, without
//! chpasswd, a rewrite of `/etc/shadow` made from the file as it is now and carried out under
//! the shadow lock only if nobody changed the file in between (`FileChange::Update`). Either
//! way the plan ends with a check that the entry now holds exactly the new hash (no false
//! success). A ready hash from the host (qga `crypted: true`) takes the same path after
//! [`hash_format::check`].

use std::time::Duration;

use tracing::{info, warn};
use zeroize::Zeroizing;

use guestd_core::{
    BackendError, Effect, Env, FileChange, FileCheck, Plan, ProcessSpec, SecretString, WriteOptions,
};

use super::{crypt, hash_format, shadow};

pub const SHADOW: &str = "/etc/shadow";
const CHPASSWD: &str = "chpasswd";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The plan that sets `user`'s password (hashed here with a fresh salt) and verifies it.
pub fn plan_set_password(
    env: &Env,
    user: &str,
    password: &SecretString,
) -> Result<Plan, BackendError> {
    shadow::check_user_name(user)?;
    let current = read_shadow(env)?;
    has_entry(&current, user)?;
    let hash = crypt::sha512_crypt(password.expose(), &crypt::fresh_salt()?)?;
    let failure = format!("the password of '{user}' did not verify after it was set");
    info!(user, "password planned");
    plan_store(env, &current, user, &hash, failure)
}

/// The plan that stores a ready crypt(3) hash as `user`'s password (qga `crypted: true`) and
/// checks the entry then holds exactly that hash.
pub fn plan_set_password_hash(
    env: &Env,
    user: &str,
    hash: &SecretString,
) -> Result<Plan, BackendError> {
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
    has_entry(&current, user)?;
    let failure =
        format!("the password entry of '{user}' does not hold the new hash after it was set");
    plan_store(env, &current, user, hash.expose(), failure)
}

fn has_entry(shadow_text: &[u8], user: &str) -> Result<(), BackendError> {
    match shadow::password_field(shadow_text, user) {
        Some(_) => Ok(()),
        None => Err(BackendError::Invalid(format!(
            "user '{user}' has no entry in {SHADOW}"
        ))),
    }
}

/// `chpasswd -e`, or without it the locked shadow rewrite; then the check of the entry.
fn plan_store(
    env: &Env,
    current: &[u8],
    user: &str,
    hash: &str,
    failure: String,
) -> Result<Plan, BackendError> {
    let mut plan = if env.runner.exists(CHPASSWD) {
        chpasswd_plan(env, user, hash)?
    } else {
        warn!("{CHPASSWD} not found; rewriting {SHADOW} directly");
        shadow_rewrite_plan(current, user, hash)?
    };
    plan.checks.push(entry_check(SHADOW, user, hash, failure));
    Ok(plan)
}

/// "A line of `path` starts with `user:hash:`" (the hash is a secret: never shown).
pub fn entry_check(path: &str, user: &str, hash: &str, failure: String) -> FileCheck {
    FileCheck {
        path: path.into(),
        line_start: Zeroizing::new(format!("{user}:{hash}:").into_bytes()),
        failure,
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

/// The fallback: the user's field in `/etc/shadow` replaced (and its "last change" day), every
/// other byte as it was, written atomically with mode 0640 under the shadow lock, and only if
/// the file still holds `current`.
pub fn shadow_rewrite_plan(current: &[u8], user: &str, hash: &str) -> Result<Plan, BackendError> {
    let updated = shadow::replace_password(current, user, hash, Some(shadow::days_since_epoch()))
        .ok_or_else(|| {
        BackendError::Invalid(format!("user '{user}' has no entry in {SHADOW}"))
    })?;
    Ok(Plan {
        changes: vec![FileChange::Update {
            path: SHADOW.into(),
            prior: Zeroizing::new(current.to_vec()),
            contents: updated,
            options: WriteOptions::mode(0o640),
            lock: Some(shadow::LOCK_FILE.into()),
        }],
        ..Plan::default()
    })
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
