//! FreeBSD: `pw [-R <root>] usermod -n <user> -H 0` with the SHA-512-crypt hash on fd 0 (the
//! password never in argv), then the plan checks `/etc/master.passwd` holds the new hash.

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

/// The plan that sets `user`'s password (hashed here with a fresh salt) with `pw` and checks
/// `master.passwd` then holds the new hash.
pub fn plan_set_password(
    env: &Env,
    user: &str,
    password: &SecretString,
) -> Result<Plan, BackendError> {
    shadow::check_user_name(user)?;
    has_entry(env, user)?;
    let hash = crypt::sha512_crypt(password.expose(), &crypt::fresh_salt()?)?;
    let failure = format!("the password of '{user}' did not verify after it was set");
    let mut plan = pw_plan(env, user, &hash)?;
    plan.checks.push(super::linux::entry_check(
        MASTER_PASSWD,
        user,
        &hash,
        failure,
    ));
    Ok(plan)
}

/// The plan that stores a ready crypt(3) hash with `pw usermod -H 0` and checks
/// `master.passwd` then holds it.
pub fn plan_set_password_hash(
    env: &Env,
    user: &str,
    hash: &SecretString,
) -> Result<Plan, BackendError> {
    shadow::check_user_name(user)?;
    let scheme = hash_format::check(hash.expose())?;
    has_entry(env, user)?;
    info!(user, scheme = scheme.name(), "storing a crypted password");
    let failure =
        format!("the password entry of '{user}' does not hold the new hash after it was set");
    let mut plan = pw_plan(env, user, hash.expose())?;
    plan.checks.push(super::linux::entry_check(
        MASTER_PASSWD,
        user,
        hash.expose(),
        failure,
    ));
    Ok(plan)
}

fn has_entry(env: &Env, user: &str) -> Result<(), BackendError> {
    let current = Zeroizing::new(env.root.read(MASTER_PASSWD)?);
    match shadow::password_field(&current, user) {
        Some(_) => Ok(()),
        None => Err(BackendError::Invalid(format!(
            "user '{user}' has no entry in {MASTER_PASSWD}"
        ))),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;

    use guestd_core::{Reach, Root};
    use guestd_testkit::{FakeRunner, test_env};

    use super::*;

    #[test]
    fn pw_plan_carries_the_hash_on_stdin_only() {
        let hash = "$6$saltsaltsaltsalt$abc";
        let d = tempfile::tempdir().unwrap();
        let env = test_env(
            Root::sandbox(d.path()).unwrap(),
            Arc::new(FakeRunner::new()),
            None,
        );
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

    #[test]
    #[allow(clippy::disallowed_methods)] // the test builds its tree by path
    fn the_password_plan_runs_pw_then_checks_master_passwd() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/master.passwd"),
            "root:*:0:0::0:0:Charlie &:/root:/bin/csh\n",
        )
        .unwrap();
        let runner = Arc::new(FakeRunner::new());
        let env = test_env(Root::sandbox(d.path()).unwrap(), runner.clone(), None);
        let pw = SecretString::new(Zeroizing::new("bsd pw".to_string()));
        let plan = plan_set_password(&env, "root", &pw).unwrap();
        assert_eq!(plan.commands.len(), 1);
        let stdin = plan.commands[0].command.stdin.as_deref().unwrap().to_vec();
        let hash = String::from_utf8(stdin).unwrap().trim_end().to_string();
        assert!(crypt::verify(&hash, "bsd pw"));
        let [check] = plan.checks.as_slice() else {
            panic!("{plan:?}")
        };
        assert_eq!(check.path, MASTER_PASSWD);
        assert_eq!(&check.line_start[..], format!("root:{hash}:").as_bytes());
        assert!(!format!("{plan:?}").contains(&hash));
        assert!(runner.lines().is_empty());
        assert!(plan_set_password(&env, "nobody", &pw).is_err());
    }
}
