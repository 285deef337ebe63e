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
    use guestd_core::{Reach, Root};
    use guestd_testkit::{FakeRunner, test_env};
    use zeroize::Zeroizing;

    use super::*;

    fn env(root: Root) -> Env {
        test_env(root, Arc::new(FakeRunner::new()), None)
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

    #[allow(clippy::disallowed_methods)] // the test builds its tree by path
    fn shadow_env(chpasswd: bool) -> (tempfile::TempDir, Env, Arc<FakeRunner>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/shadow"),
            "root:*:19700:0:99999:7:::\nalice:!:19700:0:99999:7:::\n",
        )
        .unwrap();
        let runner = Arc::new(FakeRunner::new());
        if !chpasswd {
            runner.mark_missing(CHPASSWD);
        }
        let env = test_env(Root::sandbox(d.path()).unwrap(), runner.clone(), None);
        (d, env, runner)
    }

    fn secret(s: &str) -> SecretString {
        SecretString::new(Zeroizing::new(s.to_string()))
    }

    #[test]
    fn the_password_plan_stores_a_fresh_hash_and_checks_the_entry_holds_it() {
        let (_d, env, runner) = shadow_env(true);
        let plan = plan_set_password(&env, "alice", &secret("pw one")).unwrap();
        assert!(plan.changes.is_empty() && plan.native.is_empty());
        let [planned] = plan.commands.as_slice() else {
            panic!("{plan:?}")
        };
        let line = String::from_utf8(planned.command.stdin.as_deref().unwrap().to_vec()).unwrap();
        let hash = line.strip_prefix("alice:").unwrap().trim_end();
        assert!(crypt::verify(hash, "pw one"), "{hash}");
        let [check] = plan.checks.as_slice() else {
            panic!("{plan:?}")
        };
        assert_eq!(check.path, SHADOW);
        assert_eq!(&check.line_start[..], format!("alice:{hash}:").as_bytes());
        assert_eq!(
            check.failure,
            "the password of 'alice' did not verify after it was set"
        );
        // Neither the password nor its hash shows in the plan; nothing ran to make it.
        let shown = format!("{plan:?}");
        assert!(
            !shown.contains("pw one") && !shown.contains(hash),
            "{shown}"
        );
        assert!(runner.lines().is_empty());
        // A user without an entry is refused before anything is planned.
        let err = plan_set_password(&env, "mallory", &secret("x")).unwrap_err();
        assert!(err.to_string().contains("has no entry"), "{err}");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // another program's write, by path
    fn without_chpasswd_the_plan_rewrites_shadow_under_the_lock_if_unchanged() {
        let (_d, env, _runner) = shadow_env(false);
        let made = crypt::sha512_crypt("pw two", &crypt::fresh_salt().unwrap()).unwrap();
        let hash: &str = &made;
        let plan = plan_set_password_hash(&env, "root", &secret(hash)).unwrap();
        assert!(plan.commands.is_empty());
        let [
            FileChange::Update {
                path,
                prior,
                contents,
                options,
                lock,
            },
        ] = plan.changes.as_slice()
        else {
            panic!("{plan:?}")
        };
        assert_eq!(path, SHADOW);
        assert_eq!(lock.as_deref(), Some(shadow::LOCK_FILE));
        assert_eq!(options.mode, 0o640);
        assert_eq!(&prior[..], &env.root.read(SHADOW).unwrap()[..]);
        let text = String::from_utf8(contents.to_vec()).unwrap();
        assert!(text.starts_with(&format!("root:{hash}:")), "{text}");
        assert!(text.ends_with("alice:!:19700:0:99999:7:::\n"));
        assert_eq!(
            plan.checks[0].failure,
            "the password entry of 'root' does not hold the new hash after it was set"
        );
        assert!(!format!("{plan:?}").contains(hash));
        // Applied: written, and the check holds.
        guestd_core::backend::apply_account_plan(&env, &plan).unwrap();
        assert!(
            env.root
                .read(SHADOW)
                .unwrap()
                .starts_with(format!("root:{hash}:").as_bytes())
        );
        // The same plan again: the file changed since it was made, nothing is written.
        std::fs::write(env.root.resolve(SHADOW).unwrap(), "root:*:1::::::\n").unwrap();
        let err = guestd_core::backend::apply_account_plan(&env, &plan).unwrap_err();
        assert!(
            err.to_string().contains("another program changed it"),
            "{err}"
        );
        assert_eq!(env.root.read(SHADOW).unwrap(), b"root:*:1::::::\n");
    }
}
