//! keyinit / keyinit2 / password through the real dispatcher, with a backend that records the
//! password it was asked to set (the real backends are tested in guestd-distro and end to end).

use std::sync::{Arc, Mutex};

use guestd_core::wire::code;
use guestd_core::{
    Backend, BackendError, Channel, Dispatcher, DispatcherBuilder, Env, Reply, Root, SecretString,
};
use guestd_crypto::legacy::{self, LegacyDh, LegacyDigest};
use guestd_crypto::strong::{Role, StrongDh};
use guestd_handlers::{PasswordConfig, register_password_commands};
use guestd_testkit::{FakeRunner, call, test_env};
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct RecordingBackend {
    set: Mutex<Vec<(Option<String>, String)>>,
    fail: bool,
}

impl Backend for RecordingBackend {
    fn name(&self) -> &str {
        "recording"
    }
    fn set_password(
        &self,
        _env: &Env,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<(), BackendError> {
        if self.fail {
            return Err(BackendError::Failed("chpasswd said no".into()));
        }
        self.set
            .lock()
            .unwrap()
            .push((user.map(str::to_string), password.expose().to_string()));
        Ok(())
    }
}

struct Guest {
    dispatcher: Arc<Dispatcher>,
    backend: Arc<RecordingBackend>,
    _dir: tempfile::TempDir,
}

fn guest(config: PasswordConfig, fail: bool) -> Guest {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RecordingBackend {
        fail,
        ..Default::default()
    });
    let env = test_env(
        Root::sandbox(dir.path()).unwrap(),
        Arc::new(FakeRunner::new()),
        Some(backend.clone()),
    );
    let dispatcher = register_password_commands(DispatcherBuilder::new(), config)
        .unwrap()
        .build(env);
    Guest {
        dispatcher: Arc::new(dispatcher),
        backend,
        _dir: dir,
    }
}

impl Guest {
    fn call(&self, channel: &Arc<Channel>, name: &str, value: Value) -> Reply {
        call(&self.dispatcher, channel, name, value)
    }

    /// nova's side of keyinit: returns the shared secret.
    fn keyinit(&self, channel: &Arc<Channel>) -> String {
        let host = LegacyDh::generate().unwrap();
        let reply = self.call(channel, "keyinit", json!(host.public_decimal()));
        assert_eq!(reply.returncode, "D0", "{reply:?}");
        let agent = legacy::parse_public(&reply.message).unwrap();
        host.shared_secret(&agent).to_string()
    }

    fn set(&self) -> Vec<(Option<String>, String)> {
        self.backend.set.lock().unwrap().clone()
    }
}

fn chan(name: &str) -> Arc<Channel> {
    Arc::new(Channel::new(name))
}

#[test]
fn nova_flow_with_both_digests() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("xenstore");
    for (digest, pw) in [
        (LegacyDigest::Md5, "TeStPaSsWoRd"),
        (LegacyDigest::Sha256, "pässwörd-密码-🔑"),
    ] {
        let shared = g.keyinit(&c);
        let value = legacy::encrypt_password(&shared, digest, pw);
        assert_eq!(g.call(&c, "password", json!(value)), Reply::ok(""));
    }
    assert_eq!(
        g.set(),
        vec![
            (None, "TeStPaSsWoRd".to_string()),
            (None, "pässwörd-密码-🔑".to_string())
        ]
    );
}

#[test]
fn error_strings_of_record() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("a");
    let err = |msg: &str| Reply::new(code::ERROR, msg);
    assert_eq!(
        g.call(&c, "password", json!("kjadfkjaf")),
        err("Couldn't decode base64 data")
    );
    assert_eq!(
        g.call(&c, "password", json!(5)),
        err("Couldn't decode base64 data")
    );
    assert_eq!(
        g.call(&c, "password", json!("3c0pbh4DtElXNmWV7BmuxQ==")),
        err("Password without key exchange")
    );
    g.keyinit(&c);
    assert_eq!(
        g.call(&c, "password", json!("3c0pbh4DtElXNmWV7BmuxQ==")),
        err("Invalid password data received")
    );
    assert_eq!(
        g.call(&c, "password", json!("dGhpcyBpcyBhIHRlc3Q=")),
        err("Invalid password data received")
    );
    let r = g.call(&c, "keyinit", json!("not-a-number"));
    assert_eq!(r.returncode, code::ERROR);
    assert!(r.message.contains("decimal"), "{r:?}");
    assert!(g.set().is_empty());
}

#[test]
fn key_is_kept_after_failure_and_forgotten_after_success() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("a");
    let shared = g.keyinit(&c);
    let bad = legacy::encrypt_password("1234567", LegacyDigest::Md5, "x");
    assert_eq!(
        g.call(&c, "password", json!(bad)).message,
        "Invalid password data received"
    );
    let good = legacy::encrypt_password(&shared, LegacyDigest::Md5, "retry");
    assert_eq!(g.call(&c, "password", json!(good)), Reply::ok(""));
    assert_eq!(
        g.call(&c, "password", json!(good)).message,
        "Password without key exchange"
    );
    assert_eq!(g.set(), vec![(None, "retry".to_string())]);
}

#[test]
fn key_is_kept_when_the_backend_fails() {
    let g = guest(PasswordConfig::default(), true);
    let c = chan("a");
    let shared = g.keyinit(&c);
    let value = legacy::encrypt_password(&shared, LegacyDigest::Md5, "pw");
    let first = g.call(&c, "password", json!(value));
    assert_eq!(first, Reply::error("chpasswd said no"));
    // Still decryptable: the key survived the failure.
    assert_eq!(g.call(&c, "password", json!(value)), first);
}

#[test]
fn a_key_cannot_be_used_from_another_channel() {
    let g = guest(PasswordConfig::default(), false);
    let (a, b) = (chan("a"), chan("b"));
    let shared = g.keyinit(&a);
    let value = legacy::encrypt_password(&shared, LegacyDigest::Md5, "pw");
    assert_eq!(
        g.call(&b, "password", json!(value)).message,
        "Password without key exchange"
    );
    assert_eq!(g.call(&a, "password", json!(value)), Reply::ok(""));
}

#[test]
fn keyinit_accepts_a_json_number_and_rejects_out_of_range_keys() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("a");
    assert_eq!(g.call(&c, "keyinit", json!(123456789u64)).returncode, "D0");
    // A host whose private key is 1 has public key 5: send it as a JSON number and use the
    // resulting key for a real password.
    let host = LegacyDh::from_private(1u8.into());
    let r = g.call(&c, "keyinit", json!(5));
    assert_eq!(r.returncode, "D0");
    let shared = host.shared_secret(&legacy::parse_public(&r.message).unwrap());
    let v = legacy::encrypt_password(&shared, LegacyDigest::Sha256, "num");
    assert_eq!(g.call(&c, "password", json!(v)), Reply::ok(""));
    for bad in [
        json!(0),
        json!(1),
        json!(-5),
        json!(1.5),
        json!(null),
        json!([1]),
    ] {
        assert_eq!(
            g.call(&c, "keyinit", bad.clone()).returncode,
            "500",
            "{bad}"
        );
    }
    assert_eq!(
        g.call(&c, "keyinit", json!(legacy::PRIME_DECIMAL))
            .returncode,
        "500"
    );
}

#[test]
fn legacy_can_be_disabled() {
    let g = guest(
        PasswordConfig {
            allow_legacy: false,
            user: Some("admin".into()),
            ..PasswordConfig::default()
        },
        false,
    );
    let c = chan("a");
    let r = g.call(&c, "keyinit", json!("53035888671043549995097077724136"));
    assert_eq!(r.returncode, "403");
    assert!(r.message.contains("allow_legacy"), "{r:?}");
    // The strong exchange still works, for the configured user.
    let host = StrongDh::generate().unwrap();
    let r = g.call(&c, "keyinit2", json!(host.public_base64()));
    assert_eq!(r.returncode, "D0");
    let keys = host.agree(Role::Host, &r.message).unwrap();
    let v = keys.encrypt_password(None, "strong one").unwrap();
    assert_eq!(g.call(&c, "password", json!(v)), Reply::ok(""));
    assert_eq!(
        g.set(),
        vec![(Some("admin".to_string()), "strong one".to_string())]
    );
}

#[test]
fn strong_and_legacy_values_do_not_mix() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("a");
    // A strong value after a legacy exchange, and a legacy value after a strong one.
    let shared = g.keyinit(&c);
    let host = StrongDh::generate().unwrap();
    let other = StrongDh::generate().unwrap();
    let keys = host.agree(Role::Host, &other.public_base64()).unwrap();
    let strong_value = keys.encrypt_password(None, "x").unwrap();
    assert_eq!(
        g.call(&c, "password", json!(strong_value)).message,
        "Password without key exchange"
    );
    let r = g.call(&c, "keyinit2", json!(host.public_base64()));
    let keys = host.agree(Role::Host, &r.message).unwrap();
    let legacy_value = legacy::encrypt_password(&shared, LegacyDigest::Md5, "x");
    assert_eq!(
        g.call(&c, "password", json!(legacy_value)).message,
        "Password without key exchange"
    );
    // Tampered or foreign strong values are invalid, and the key survives them.
    assert_eq!(
        g.call(&c, "password", json!(strong_value)).message,
        "Invalid password data received"
    );
    assert_eq!(
        g.call(&c, "password", json!("$gd2$!!")).message,
        "Couldn't decode base64 data"
    );
    let good = keys.encrypt_password(None, "finally").unwrap();
    assert_eq!(g.call(&c, "password", json!(good)), Reply::ok(""));
    assert_eq!(g.set(), vec![(None, "finally".to_string())]);
    let r = g.call(&c, "keyinit2", json!("AAAA"));
    assert_eq!(r.returncode, "500");
}

#[test]
fn strong_mode_can_choose_the_user_and_the_name_is_authenticated() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("a");
    let host = StrongDh::generate().unwrap();
    let r = g.call(&c, "keyinit2", json!(host.public_base64()));
    let keys = host.agree(Role::Host, &r.message).unwrap();
    let v = keys.encrypt_password(Some("alice"), "for alice").unwrap();
    // Re-labelled for another user: the MAC fails and the key survives.
    assert_eq!(
        g.call(&c, "password", json!({"user": "root", "password": v}))
            .message,
        "Invalid password data received"
    );
    assert_eq!(
        g.call(&c, "password", json!(v)).message,
        "Invalid password data received"
    );
    assert_eq!(
        g.call(&c, "password", json!({"user": "alice", "password": v})),
        Reply::ok("")
    );
    assert_eq!(
        g.set(),
        vec![(Some("alice".to_string()), "for alice".to_string())]
    );
    // Objects are only for strong values, and must be exactly {user, password}.
    let shared = g.keyinit(&c);
    let legacy_value = legacy::encrypt_password(&shared, LegacyDigest::Md5, "x");
    let r = g.call(
        &c,
        "password",
        json!({"user": "alice", "password": legacy_value}),
    );
    assert!(r.message.contains("keyinit2"), "{r:?}");
    let r = g.call(&c, "password", json!({"password": v}));
    assert_eq!(r.returncode, "500");
}

#[test]
fn empty_password_is_refused() {
    let g = guest(PasswordConfig::default(), false);
    let c = chan("a");
    let shared = g.keyinit(&c);
    let v = legacy::encrypt_password(&shared, LegacyDigest::Md5, "");
    assert_eq!(
        g.call(&c, "password", json!(v)),
        Reply::error("Refusing to set an empty password")
    );
    let v = legacy::encrypt_password(&shared, LegacyDigest::Md5, "a\0b");
    assert_eq!(
        g.call(&c, "password", json!(v)),
        Reply::error("Refusing a password that contains a NUL character")
    );
    assert!(g.set().is_empty());
}

#[test]
fn config_defaults_and_unknown_keys() {
    let c: PasswordConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(c, PasswordConfig::default());
    assert!(c.allow_legacy);
    assert_eq!(c.user, None);
    assert!(serde_json::from_value::<PasswordConfig>(json!({"alow_legacy": false})).is_err());
}
