//! guestd-crypto: the key exchanges and password encryption of the `keyinit`/`keyinit2` and
//! `password` commands, shared by the agent (decrypting) and `guestctl` (encrypting).
//!
//! It owns no I/O except the OS random source. Everything secret (private exponents, shared
//! secrets, derived keys, plaintexts) lives in zeroizing buffers and is wiped on drop.
//!
//! # Legacy mode (nova, spec §6) — [`legacy`]
//!
//! - Diffie–Hellman with `p = 2^107 − 1`, `g = 5`; public keys and the shared secret are decimal
//!   ASCII without leading zeros. Our private exponent is 256 bits from the OS random source.
//! - The host runs `openssl aes-128-cbc -A -a -nosalt -pass pass:<shared-secret-decimal>` over
//!   `password + "\n"`; OpenSSL derives key and IV with `EVP_BytesToKey` (one round, no salt),
//!   using MD5 before OpenSSL 1.1.0 and SHA-256 since.
//! - Acceptance rule (spec §6.5): try MD5 first, then SHA-256; a candidate is accepted only if
//!   the PKCS#7 padding is entirely valid, the unpadded plaintext ends with `\n` and is valid
//!   UTF-8. The password is the plaintext without that one final `\n`.
//!
//! This mode is only as strong as a 107-bit DH over a non-safe prime: it protects against
//! nothing more than casual observation. Use the strong mode when the host is `guestctl`.
//!
//! # Strong mode (`keyinit2`) — [`strong`]
//!
//! Exact wire format, version 1:
//!
//! 1. Group: RFC 3526 group 14 (2048-bit MODP prime, generator 2). Each side draws a 512-bit
//!    private exponent from the OS random source. A public key is sent as **standard base64
//!    (with padding) of its 256-byte big-endian encoding** (left-padded with zeros). A peer key
//!    outside `[2, p − 2]` is rejected.
//! 2. Host → agent: `{"name": "keyinit2", "value": "<host public, base64>"}`.
//!    Agent → host: `{"returncode": "D0", "message": "<agent public, base64>"}`.
//! 3. Both sides compute `Z = peer^own mod p` as 256 big-endian bytes and derive 64 bytes with
//!    HKDF-SHA256 (RFC 5869): no salt, `IKM = Z`,
//!    `info = "guestd keyinit2 v1" || host_public(256 bytes) || agent_public(256 bytes)`.
//!    Bytes 0..32 are the AES-256 key, bytes 32..64 the HMAC-SHA256 key.
//! 4. Host → agent: `{"name": "password", "value": V}`. `V` is the string
//!    `"$gd2$" + base64(IV || C || T)` (the agent's configured account), or the object
//!    `{"user": NAME, "password": "$gd2$…"}` to choose the account. `IV` is 16 random bytes,
//!    `C` = AES-256-CBC(key, IV, PKCS#7(password as UTF-8)) (no `\n` is appended), and
//!    `T = HMAC-SHA256(mac_key, "$gd2$" || u16be(len(NAME)) || NAME || IV || C)` (32 bytes,
//!    encrypt-then-MAC; `NAME` is empty when no user is sent, at most 256 bytes). The agent
//!    checks `T` in constant time before decrypting, then the padding and UTF-8. `$` is not a
//!    base64 character, so a strong value can never be mistaken for a legacy one (and a legacy
//!    agent rejects it as undecodable).
//! 5. Errors use the legacy strings (`Couldn't decode base64 data`,
//!    `Invalid password data received`). Keys are single-use: the agent forgets them after a
//!    successful `password`.
//!
//! Adding another mode: a module with its own key-exchange type and a `PasswordError`-returning
//! decrypt function, and a marker prefix that cannot occur in the existing encodings.

pub mod legacy;
pub mod random;
pub mod strong;

use zeroize::Zeroizing;

/// Why a `password` value was refused. `Display` is the exact reply message of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("Couldn't decode base64 data")]
    Base64,
    #[error("Invalid password data received")]
    Invalid,
}

/// A key-exchange input was unusable. `Display` is safe to send to the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyExchangeError {
    #[error("{0}")]
    BadPublicKey(String),
    #[error("{0}")]
    BadInput(String),
    #[error("the OS random source failed: {0}")]
    Random(String),
}

/// A decrypted password (without nova's trailing newline). Wiped on drop; `Debug` hides it.
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(text: Zeroizing<String>) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> Zeroizing<String> {
        self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// Decode base64 the way the old agents' Python decoder did: characters outside the alphabet
/// (whitespace, line breaks) are ignored, wrong padding is an error.
pub fn decode_base64_lenient(value: &str) -> Result<Zeroizing<Vec<u8>>, PasswordError> {
    use base64::Engine;
    let filtered: Zeroizing<String> = Zeroizing::new(
        value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            .collect(),
    );
    let mut out = Zeroizing::new(Vec::new());
    base64::engine::general_purpose::STANDARD
        .decode_vec(filtered.as_bytes(), &mut out)
        .map_err(|_| PasswordError::Base64)?;
    Ok(out)
}

/// Strip a full, valid PKCS#7 padding (1..=16 bytes, all equal to their count).
pub(crate) fn unpad_pkcs7(plain: &[u8]) -> Option<&[u8]> {
    let n = *plain.last()? as usize;
    if n == 0 || n > 16 || n > plain.len() {
        return None;
    }
    let (data, pad) = plain.split_at(plain.len() - n);
    pad.iter().all(|&b| b as usize == n).then_some(data)
}

/// Append PKCS#7 padding for a 16-byte block cipher.
pub(crate) fn pad_pkcs7(data: &[u8]) -> Zeroizing<Vec<u8>> {
    let n = 16 - data.len() % 16;
    let mut out = Zeroizing::new(Vec::with_capacity(data.len() + n));
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(n as u8, n));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_base64_ignores_noise_but_not_bad_padding() {
        assert_eq!(decode_base64_lenient(" YWJj\n").unwrap().as_slice(), b"abc");
        assert_eq!(
            decode_base64_lenient("kjadfkjaf").unwrap_err(),
            PasswordError::Base64
        );
        assert_eq!(
            decode_base64_lenient("YWJjZA").unwrap_err(),
            PasswordError::Base64
        );
    }

    #[test]
    fn pkcs7_is_checked_entirely() {
        assert_eq!(unpad_pkcs7(b"abc\x02\x02"), Some(&b"abc"[..]));
        assert_eq!(unpad_pkcs7(b"abc\x01\x02"), None);
        assert_eq!(unpad_pkcs7(b"abc\x00"), None);
        assert_eq!(unpad_pkcs7(&[17u8; 32]), None);
        assert_eq!(unpad_pkcs7(&[16u8; 16]), Some(&b""[..]));
        assert_eq!(pad_pkcs7(b"").as_slice(), &[16u8; 16]);
        assert_eq!(pad_pkcs7(&[b'a'; 15]).last(), Some(&1));
    }
}
