//! The strong key exchange (`keyinit2`): RFC 3526 group 14 Diffie–Hellman, HKDF-SHA256 keys,
//! and the password as AES-256-CBC + HMAC-SHA256 (encrypt-then-MAC). The wire format is in
//! the crate documentation.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{KeyExchangeError, Password, PasswordError, pad_pkcs7, random, unpad_pkcs7};

/// Marks a strong `password` value; `$` never occurs in base64.
pub const PREFIX: &str = "$gd2$";
/// HKDF `info` label (followed by both public keys).
const INFO_LABEL: &[u8] = b"guestd keyinit2 v1";
/// Size of a group-14 element on the wire.
pub const ELEMENT_BYTES: usize = 256;
/// Private exponent size (512 bits: well above twice the group's ~110-bit strength).
const PRIVATE_BYTES: usize = 64;
const IV_BYTES: usize = 16;
const TAG_BYTES: usize = 32;

/// RFC 3526 §3, the 2048-bit MODP group (generator 2).
const GROUP14_PRIME_HEX: &str = "\
FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F\
83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510\
15728E5A8AACAA68FFFFFFFFFFFFFFFF";

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

fn prime() -> BigUint {
    BigUint::parse_bytes(GROUP14_PRIME_HEX.as_bytes(), 16).expect("valid hex constant")
}

/// Which end of the exchange we are (fixes the order of the public keys in the HKDF info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host,
    Agent,
}

/// One side of the strong exchange. The private exponent is wiped on drop.
pub struct StrongDh {
    private: BigUint,
    public: [u8; ELEMENT_BYTES],
}

impl std::fmt::Debug for StrongDh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StrongDh(<private hidden>)")
    }
}

impl Drop for StrongDh {
    fn drop(&mut self) {
        random::wipe(&mut self.private);
    }
}

impl StrongDh {
    pub fn generate() -> Result<Self, KeyExchangeError> {
        Ok(Self::from_private(random::random_exponent(PRIVATE_BYTES)?))
    }

    /// A key pair with a given private exponent (known-answer tests).
    pub fn from_private(private: BigUint) -> Self {
        let public = to_element(&BigUint::from(2u8).modpow(&private, &prime()));
        Self { private, public }
    }

    /// Our public key as sent on the wire (base64 of 256 big-endian bytes).
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.public)
    }

    /// Agree on the session keys with the peer's wire-format public key.
    pub fn agree(&self, role: Role, peer_base64: &str) -> Result<SessionKeys, KeyExchangeError> {
        let peer = parse_public(peer_base64)?;
        let peer_bytes = to_element(&peer);
        let mut z = peer.modpow(&self.private, &prime());
        let z_bytes = Zeroizing::new(to_element(&z));
        random::wipe(&mut z);
        let (host, agent) = match role {
            Role::Host => (&self.public, &peer_bytes),
            Role::Agent => (&peer_bytes, &self.public),
        };
        let mut info = Vec::with_capacity(INFO_LABEL.len() + 2 * ELEMENT_BYTES);
        info.extend_from_slice(INFO_LABEL);
        info.extend_from_slice(host);
        info.extend_from_slice(agent);
        let mut okm = Zeroizing::new([0u8; 64]);
        Hkdf::<Sha256>::new(None, z_bytes.as_slice())
            .expand(&info, okm.as_mut_slice())
            .expect("64 bytes is a valid HKDF-SHA256 length");
        let mut keys = SessionKeys {
            enc: [0; 32],
            mac: [0; 32],
        };
        keys.enc.copy_from_slice(&okm[..32]);
        keys.mac.copy_from_slice(&okm[32..]);
        Ok(keys)
    }
}

/// Parse a wire-format public key: base64 of exactly 256 bytes, value in `[2, p − 2]`.
pub fn parse_public(text: &str) -> Result<BigUint, KeyExchangeError> {
    let bad = |why: &str| KeyExchangeError::BadPublicKey(why.to_string());
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| bad("keyinit2 value must be the host's public key in base64"))?;
    if bytes.len() != ELEMENT_BYTES {
        return Err(bad("keyinit2 public key must be 256 bytes"));
    }
    let value = BigUint::from_bytes_be(&bytes);
    if value < BigUint::from(2u8) || value > prime() - 2u8 {
        return Err(bad("keyinit2 public key is out of range"));
    }
    Ok(value)
}

fn to_element(n: &BigUint) -> [u8; ELEMENT_BYTES] {
    let bytes = Zeroizing::new(n.to_bytes_be());
    let mut out = [0u8; ELEMENT_BYTES];
    out[ELEMENT_BYTES - bytes.len()..].copy_from_slice(&bytes);
    out
}

/// The two keys derived by the strong exchange. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<hidden>)")
    }
}

/// Whether a `password` value carries the strong-mode marker.
pub fn is_strong_value(value: &str) -> bool {
    value.trim_start().starts_with(PREFIX)
}

impl SessionKeys {
    /// The `password` request value for `password` (host side). `user` (if any) is sent
    /// beside the value and bound into the MAC.
    pub fn encrypt_password(
        &self,
        user: Option<&str>,
        password: &str,
    ) -> Result<String, KeyExchangeError> {
        check_user(user).map_err(|_| {
            KeyExchangeError::BadInput(format!("user names are limited to {MAX_USER} bytes"))
        })?;
        let mut iv = [0u8; IV_BYTES];
        random::fill(&mut iv)?;
        Ok(self.encrypt_with_iv(user, password, iv))
    }

    fn encrypt_with_iv(&self, user: Option<&str>, password: &str, iv: [u8; IV_BYTES]) -> String {
        let mut buf = pad_pkcs7(password.as_bytes());
        let len = buf.len();
        let ct = Aes256CbcEnc::new(&self.enc.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("buffer is a whole number of blocks");
        let mut body = Vec::with_capacity(IV_BYTES + ct.len() + TAG_BYTES);
        body.extend_from_slice(&iv);
        body.extend_from_slice(ct);
        let tag = self.mac(user).chain_update(&body).finalize().into_bytes();
        body.extend_from_slice(&tag);
        format!("{PREFIX}{}", STANDARD.encode(body))
    }

    /// HMAC over `"$gd2$" || u16be(len(user)) || user`, to be continued with `IV || C`.
    fn mac(&self, user: Option<&str>) -> HmacSha256 {
        let user = user.unwrap_or("").as_bytes();
        <HmacSha256 as Mac>::new_from_slice(&self.mac)
            .expect("HMAC takes any key length")
            .chain_update(PREFIX.as_bytes())
            .chain_update((user.len() as u16).to_be_bytes())
            .chain_update(user)
    }

    /// Check and decrypt a strong `password` value (agent side); `user` is the account name
    /// sent beside it, if any (it must be the one the host encrypted for).
    pub fn decrypt_password(
        &self,
        user: Option<&str>,
        value: &str,
    ) -> Result<Password, PasswordError> {
        check_user(user)?;
        let body = decode_value(value)?;
        if body.len() < IV_BYTES + 16 + TAG_BYTES || (body.len() - IV_BYTES - TAG_BYTES) % 16 != 0 {
            return Err(PasswordError::Invalid);
        }
        let (signed, tag) = body.split_at(body.len() - TAG_BYTES);
        // `verify_slice` compares in constant time (subtle).
        self.mac(user)
            .chain_update(signed)
            .verify_slice(tag)
            .map_err(|_| PasswordError::Invalid)?;
        let (iv, ct) = signed.split_at(IV_BYTES);
        let iv: [u8; IV_BYTES] = iv.try_into().expect("split at IV size");
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = Aes256CbcDec::new(&self.enc.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| PasswordError::Invalid)?;
        let text = unpad_pkcs7(plain).ok_or(PasswordError::Invalid)?;
        let text = std::str::from_utf8(text).map_err(|_| PasswordError::Invalid)?;
        Ok(Password::new(Zeroizing::new(text.to_string())))
    }
}

/// Longest account name the MAC framing carries.
pub const MAX_USER: usize = 256;

fn check_user(user: Option<&str>) -> Result<(), PasswordError> {
    match user {
        Some(u) if u.len() > MAX_USER => Err(PasswordError::Invalid),
        _ => Ok(()),
    }
}

/// Strip the marker and base64-decode (strictly: this format is ours).
pub fn decode_value(value: &str) -> Result<Zeroizing<Vec<u8>>, PasswordError> {
    let b64 = value
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(PasswordError::Base64)?;
    let mut out = Zeroizing::new(Vec::new());
    STANDARD
        .decode_vec(b64, &mut out)
        .map_err(|_| PasswordError::Base64)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prime_is_group14() {
        let p = prime();
        assert_eq!(p.bits(), 2048);
        // Fermat test base 3 and the safe-prime structure (p-1)/2 also passes.
        let one = BigUint::from(1u8);
        assert_eq!(BigUint::from(3u8).modpow(&(&p - 1u8), &p), one);
        let q = (&p - 1u8) >> 1u32;
        assert_eq!(BigUint::from(3u8).modpow(&(&q - 1u8), &q), one);
    }

    #[test]
    fn both_sides_agree_and_round_trip() {
        let host = StrongDh::generate().unwrap();
        let agent = StrongDh::generate().unwrap();
        let hk = host.agree(Role::Host, &agent.public_base64()).unwrap();
        let ak = agent.agree(Role::Agent, &host.public_base64()).unwrap();
        let value = hk.encrypt_password(None, "pässwörd\nwith newline").unwrap();
        assert!(is_strong_value(&value));
        assert_eq!(
            ak.decrypt_password(None, &value).unwrap().expose(),
            "pässwörd\nwith newline"
        );
        // The user is bound into the MAC: another (or no) user name does not verify.
        let for_alice = hk.encrypt_password(Some("alice"), "pw").unwrap();
        assert_eq!(
            ak.decrypt_password(Some("alice"), &for_alice)
                .unwrap()
                .expose(),
            "pw"
        );
        for other in [None, Some("bob"), Some("alic")] {
            assert_eq!(
                ak.decrypt_password(other, &for_alice).unwrap_err(),
                PasswordError::Invalid
            );
        }
        assert!(
            hk.encrypt_password(Some(&"x".repeat(MAX_USER + 1)), "pw")
                .is_err()
        );
        // Roles matter: the same role on both ends derives different keys.
        let wrong = agent.agree(Role::Host, &host.public_base64()).unwrap();
        assert_eq!(
            wrong.decrypt_password(None, &value).unwrap_err(),
            PasswordError::Invalid
        );
    }

    #[test]
    fn any_tampering_is_rejected() {
        let host = StrongDh::generate().unwrap();
        let agent = StrongDh::generate().unwrap();
        let hk = host.agree(Role::Host, &agent.public_base64()).unwrap();
        let ak = agent.agree(Role::Agent, &host.public_base64()).unwrap();
        let value = hk.encrypt_with_iv(None, "secret", [7; 16]);
        let body = decode_value(&value).unwrap();
        for i in 0..body.len() {
            let mut bad = body.to_vec();
            bad[i] ^= 1;
            let v = format!("{PREFIX}{}", STANDARD.encode(&bad));
            assert_eq!(
                ak.decrypt_password(None, &v).unwrap_err(),
                PasswordError::Invalid
            );
        }
        assert_eq!(
            ak.decrypt_password(None, "$gd2$!!!").unwrap_err(),
            PasswordError::Base64
        );
        assert_eq!(
            ak.decrypt_password(None, "$gd2$AAAA").unwrap_err(),
            PasswordError::Invalid
        );
    }

    #[test]
    fn public_key_checks() {
        assert!(parse_public("AAAA").is_err());
        assert!(parse_public(&STANDARD.encode([0u8; 256])).is_err());
        assert!(parse_public(&STANDARD.encode([0xffu8; 256])).is_err());
        let mut one = [0u8; 256];
        one[255] = 1;
        assert!(parse_public(&STANDARD.encode(one)).is_err());
        let p_minus_1 = to_element(&(prime() - 1u8));
        assert!(parse_public(&STANDARD.encode(p_minus_1)).is_err());
        let mut two = [0u8; 256];
        two[255] = 2;
        assert!(parse_public(&STANDARD.encode(two)).is_ok());
    }
}
