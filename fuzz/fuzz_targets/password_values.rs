//! The value parsers of `keyinit`, `keyinit2` and `password`: public keys (legacy decimal and
//! strong base64), lenient base64, and both decryptions with a fixed agreed key. Any text is a
//! value or an error, never a panic.
#![no_main]

use std::sync::OnceLock;

use guestd_crypto::strong::{Role, SessionKeys, StrongDh};
use guestd_crypto::{decode_base64_lenient, legacy, strong};
use libfuzzer_sys::fuzz_target;
use num_bigint::BigUint;

/// Keys agreed once (the modular exponentiation is too slow to repeat per input).
fn session() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let host = StrongDh::from_private(BigUint::from(123_456_789u64));
        let agent = StrongDh::from_private(BigUint::from(987_654_321u64));
        agent
            .agree(Role::Agent, &host.public_base64())
            .expect("fixed keys agree")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(public) = legacy::parse_public(text) {
        // Accepted keys are in range: the exchange with them works.
        let dh = legacy::LegacyDh::from_private(BigUint::from(42u32));
        let _ = dh.shared_secret(&public);
    }
    let _ = strong::parse_public(text);
    let _ = strong::is_strong_value(text);
    if let Ok(ciphertext) = decode_base64_lenient(text) {
        let _ = legacy::decrypt_password("53035888671043549995097077724136", &ciphertext);
    }
    let _ = session().decrypt_password(None, text);
    let _ = session().decrypt_password(Some("root"), text);
});
