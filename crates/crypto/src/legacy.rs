//! nova's key exchange and password encryption (spec §6): DH over `2^107 − 1`, OpenSSL
//! `EVP_BytesToKey` with MD5 or SHA-256, AES-128-CBC.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use md5::Md5;
use num_bigint::BigUint;
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{KeyExchangeError, Password, PasswordError, pad_pkcs7, random, unpad_pkcs7};

/// The legacy prime `2^107 − 1` (M107), in decimal.
pub const PRIME_DECIMAL: &str = "162259276829213363391578010288127";
/// The legacy generator.
pub const GENERATOR: u32 = 5;
/// Size of our private exponent in bytes (256 bits; nova uses 80, U1 128).
const PRIVATE_BYTES: usize = 32;

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

fn prime() -> BigUint {
    (BigUint::from(1u8) << 107u32) - 1u8
}

/// One side of the legacy Diffie–Hellman exchange. The private exponent is wiped on drop.
pub struct LegacyDh {
    private: BigUint,
    public: BigUint,
}

impl std::fmt::Debug for LegacyDh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyDh")
            .field("public", &self.public_decimal())
            .finish_non_exhaustive()
    }
}

impl Drop for LegacyDh {
    fn drop(&mut self) {
        random::wipe(&mut self.private);
    }
}

impl LegacyDh {
    /// A fresh key pair with a 256-bit private exponent from the OS random source.
    pub fn generate() -> Result<Self, KeyExchangeError> {
        Ok(Self::from_private(random::random_exponent(PRIVATE_BYTES)?))
    }

    /// A key pair with a given private exponent (known-answer tests).
    pub fn from_private(private: BigUint) -> Self {
        let public = BigUint::from(GENERATOR).modpow(&private, &prime());
        Self { private, public }
    }

    /// Our public key, as sent on the wire (decimal, no leading zeros).
    pub fn public_decimal(&self) -> String {
        self.public.to_str_radix(10)
    }

    /// The shared secret with `peer` as the decimal string OpenSSL uses as passphrase.
    pub fn shared_secret(&self, peer: &BigUint) -> Zeroizing<String> {
        let mut shared = peer.modpow(&self.private, &prime());
        let text = Zeroizing::new(shared.to_str_radix(10));
        random::wipe(&mut shared);
        text
    }
}

/// Parse a peer's public key: decimal digits (surrounding whitespace allowed), in `[2, p − 2]`.
pub fn parse_public(text: &str) -> Result<BigUint, KeyExchangeError> {
    let digits = text.trim();
    let bad = |why: &str| KeyExchangeError::BadPublicKey(why.to_string());
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "keyinit value must be the host's public key as a decimal integer",
        ));
    }
    // Anything longer than p's 33 digits plus leading zeros is garbage; bound the work.
    if digits.len() > 256 {
        return Err(bad("keyinit public key is out of range"));
    }
    let value = BigUint::parse_bytes(digits.as_bytes(), 10)
        .ok_or_else(|| bad("keyinit value must be a decimal integer"))?;
    if value < BigUint::from(2u8) || value > prime() - 2u8 {
        return Err(bad("keyinit public key is out of range"));
    }
    Ok(value)
}

/// Which digest OpenSSL's `enc` used to derive key and IV from the passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyDigest {
    /// OpenSSL before 1.1.0 (every old agent).
    Md5,
    /// OpenSSL 1.1.0 and later.
    Sha256,
}

impl LegacyDigest {
    /// The order in which the agent tries them (spec §6.5).
    pub const TRY_ORDER: [LegacyDigest; 2] = [LegacyDigest::Md5, LegacyDigest::Sha256];

    /// The name `openssl enc -md` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
        }
    }
}

impl std::str::FromStr for LegacyDigest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "md5" => Ok(Self::Md5),
            "sha256" | "sha-256" => Ok(Self::Sha256),
            other => Err(format!("unknown digest '{other}' (expected md5 or sha256)")),
        }
    }
}

/// AES-128 key and IV. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyIv {
    pub key: [u8; 16],
    pub iv: [u8; 16],
}

impl std::fmt::Debug for KeyIv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyIv(<hidden>)")
    }
}

/// OpenSSL's `EVP_BytesToKey` with one iteration and no salt, for a 16-byte key and IV.
pub fn evp_bytes_to_key(digest: LegacyDigest, passphrase: &[u8]) -> KeyIv {
    let mut out = KeyIv {
        key: [0; 16],
        iv: [0; 16],
    };
    match digest {
        LegacyDigest::Md5 => {
            let mut d1 = Md5::digest(passphrase);
            let mut d2 = Md5::new()
                .chain_update(d1)
                .chain_update(passphrase)
                .finalize();
            out.key.copy_from_slice(&d1);
            out.iv.copy_from_slice(&d2);
            d1.zeroize();
            d2.zeroize();
        }
        LegacyDigest::Sha256 => {
            let mut d = Sha256::digest(passphrase);
            out.key.copy_from_slice(&d[..16]);
            out.iv.copy_from_slice(&d[16..]);
            d.zeroize();
        }
    }
    out
}

/// Decrypt nova's `password` ciphertext (already base64-decoded) with the shared secret,
/// trying MD5 then SHA-256 and accepting only under the full rule of spec §6.5.
pub fn decrypt_password(
    shared_secret: &str,
    ciphertext: &[u8],
) -> Result<(Password, LegacyDigest), PasswordError> {
    if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
        return Err(PasswordError::Invalid);
    }
    for digest in LegacyDigest::TRY_ORDER {
        let kiv = evp_bytes_to_key(digest, shared_secret.as_bytes());
        if let Some(password) = decrypt_with(&kiv, ciphertext) {
            return Ok((password, digest));
        }
    }
    Err(PasswordError::Invalid)
}

/// AES-128-CBC decryption without removing the padding (`None` unless whole blocks).
pub fn decrypt_raw(kiv: &KeyIv, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = Aes128CbcDec::new(&kiv.key.into(), &kiv.iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// One candidate key/IV under the acceptance rule: full padding, trailing `\n`, UTF-8.
pub fn decrypt_with(kiv: &KeyIv, ciphertext: &[u8]) -> Option<Password> {
    let plain = decrypt_raw(kiv, ciphertext)?;
    let text = unpad_pkcs7(&plain)?.strip_suffix(b"\n")?;
    let text = std::str::from_utf8(text).ok()?;
    Some(Password::new(Zeroizing::new(text.to_string())))
}

/// What nova does: `printf '%s\n' PASSWORD | openssl aes-128-cbc -A -a -nosalt -pass
/// pass:SHARED -md DIGEST`. Returns the single-line base64 value of the `password` request.
pub fn encrypt_password(shared_secret: &str, digest: LegacyDigest, password: &str) -> String {
    use base64::Engine;
    let kiv = evp_bytes_to_key(digest, shared_secret.as_bytes());
    let mut plain = Zeroizing::new(password.as_bytes().to_vec());
    plain.push(b'\n');
    let mut buf = pad_pkcs7(&plain);
    let len = buf.len();
    let ct = Aes128CbcEnc::new(&kiv.key.into(), &kiv.iv.into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("buffer is a whole number of blocks");
    base64::engine::general_purpose::STANDARD.encode(ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prime_is_m107() {
        assert_eq!(prime().to_str_radix(10), PRIME_DECIMAL);
    }

    #[test]
    fn public_key_parsing() {
        assert!(parse_public(" 53035888671043549995097077724136\r\n").is_ok());
        assert!(parse_public("not-a-number").is_err());
        assert!(parse_public("").is_err());
        assert!(parse_public("-5").is_err());
        assert!(parse_public("1").is_err());
        assert!(parse_public(PRIME_DECIMAL).is_err());
        assert!(parse_public(&"9".repeat(1000)).is_err());
    }

    #[test]
    fn generated_keys_are_large_and_agree() {
        let a = LegacyDh::generate().unwrap();
        let b = LegacyDh::generate().unwrap();
        assert!(a.private.bits() >= 128);
        assert_ne!(a.public_decimal(), b.public_decimal());
        let sa = a.shared_secret(&parse_public(&b.public_decimal()).unwrap());
        let sb = b.shared_secret(&parse_public(&a.public_decimal()).unwrap());
        assert_eq!(*sa, *sb);
        assert!(!format!("{a:?}").contains(&a.private.to_string()));
    }

    #[test]
    fn round_trip_both_digests() {
        for digest in LegacyDigest::TRY_ORDER {
            let ct = encrypt_password("12345", digest, "héllo");
            let raw = crate::decode_base64_lenient(&ct).unwrap();
            let (pw, used) = decrypt_password("12345", &raw).unwrap();
            assert_eq!(pw.expose(), "héllo");
            assert_eq!(used, digest);
        }
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(
            decrypt_password("1", &[0u8; 15]).unwrap_err(),
            PasswordError::Invalid
        );
        assert_eq!(
            decrypt_password("1", &[]).unwrap_err(),
            PasswordError::Invalid
        );
    }
}
