//! SHA-512-crypt (`$6$`) hashes: a fresh 16-character salt per password, and verification of a
//! stored hash against a password in constant time.

use sha_crypt::{Sha512Params, sha512_crypt_b64};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use guestd_core::BackendError;

/// crypt(3)'s salt alphabet.
const SALT_CHARS: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const SALT_LEN: usize = 16;
/// glibc's default (a hash without `rounds=` means 5000).
const DEFAULT_ROUNDS: usize = 5_000;

/// A fresh random salt: 16 characters of `[./0-9A-Za-z]` (a byte mod 64 is unbiased).
pub fn fresh_salt() -> Result<String, BackendError> {
    let mut bytes = [0u8; SALT_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| BackendError::Failed(format!("the OS random source failed: {e}")))?;
    Ok(bytes
        .iter()
        .map(|b| SALT_CHARS[(b & 63) as usize] as char)
        .collect())
}

/// `$6$<salt>$<hash>` for `password` (salt up to 16 characters of the crypt alphabet).
pub fn sha512_crypt(password: &str, salt: &str) -> Result<Zeroizing<String>, BackendError> {
    sha512_with_rounds(password, salt, None)
}

fn sha512_with_rounds(
    password: &str,
    salt: &str,
    rounds: Option<usize>,
) -> Result<Zeroizing<String>, BackendError> {
    if salt.is_empty() || salt.len() > SALT_LEN || !salt.bytes().all(|b| SALT_CHARS.contains(&b)) {
        return Err(BackendError::Invalid(
            "invalid SHA-512-crypt salt".to_string(),
        ));
    }
    let params = Sha512Params::new(rounds.unwrap_or(DEFAULT_ROUNDS))
        .map_err(|_| BackendError::Invalid("invalid SHA-512-crypt rounds".to_string()))?;
    let hash = Zeroizing::new(
        sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
            .map_err(|_| BackendError::Failed("SHA-512-crypt hashing failed".to_string()))?,
    );
    let prefix = match rounds {
        Some(r) => format!("$6$rounds={r}$"),
        None => "$6$".to_string(),
    };
    Ok(Zeroizing::new(format!("{prefix}{salt}${}", hash.as_str())))
}

/// Whether a stored `$6$` hash (with or without `rounds=`) matches `password`.
pub fn verify(stored: &str, password: &str) -> bool {
    let Some(rest) = stored.strip_prefix("$6$") else {
        return false;
    };
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => match r.split_once('$') {
            Some((n, rest)) => match n.parse::<usize>() {
                Ok(n) => (Some(n), rest),
                Err(_) => return false,
            },
            None => return false,
        },
        None => (None, rest),
    };
    let Some((salt, _)) = rest.split_once('$') else {
        return false;
    };
    match sha512_with_rounds(password, salt, rounds) {
        Ok(expected) => bool::from(expected.as_bytes().ct_eq(stored.as_bytes())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_are_fresh_and_well_formed() {
        let a = fresh_salt().unwrap();
        let b = fresh_salt().unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| SALT_CHARS.contains(&c)));
    }

    #[test]
    fn glibc_reference_vectors() {
        // From Ulrich Drepper's SHA-crypt specification.
        assert_eq!(
            sha512_crypt("Hello world!", "saltstring").unwrap().as_str(),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
        assert_eq!(
            sha512_with_rounds("Hello world!", "saltstringsaltst", Some(10000))
                .unwrap()
                .as_str(),
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."
        );
        assert!(verify(
            "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
            "Hello world!"
        ));
    }

    #[test]
    fn verify_rejects_wrong_passwords_and_other_schemes() {
        let h = sha512_crypt("right", "abcdefghijklmnop").unwrap();
        assert!(verify(&h, "right"));
        assert!(!verify(&h, "wrong"));
        assert!(!verify("*", "right"));
        assert!(!verify("$5$abc$def", "right"));
        assert!(!verify("$6$rounds=x$abc$def", "right"));
        assert!(sha512_crypt("x", "bad:salt").is_err());
    }

    /// The hash matches the real `openssl passwd -6` (a peer implementation).
    #[cfg(unix)]
    #[test]
    #[allow(clippy::disallowed_methods)] // test-only spawn of the reference tool
    fn matches_openssl_passwd() {
        let out = std::process::Command::new("openssl")
            .args([
                "passwd",
                "-6",
                "-salt",
                "AbCdEfGh01234567",
                "pässwörd with space",
            ])
            .output()
            .expect("the openssl CLI is required for this test (apt-get install openssl)");
        assert!(out.status.success());
        let expected = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            sha512_crypt("pässwörd with space", "AbCdEfGh01234567")
                .unwrap()
                .as_str(),
            expected.trim()
        );
    }
}
