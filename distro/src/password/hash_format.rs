//! Is a host-supplied string a well-formed crypt(3) hash we are willing to store as is
//! (qga's `guest-set-user-password` with `crypted: true`)?
//!
//! The hash goes into a `user:hash` line (chpasswd, `/etc/shadow`) unchanged, so anything that
//! could end the field or the line (`:`, newline, any control character) or is not a known
//! modern scheme is refused. Accepted: MD5-crypt `$1$`, SHA-256/512-crypt `$5$`/`$6$` (with
//! optional `rounds=`), bcrypt `$2a$`/`$2b$`/`$2y$`, yescrypt `$y$`, gost-yescrypt `$gy$` and
//! scrypt `$7$`. Traditional DES and other legacy or platform-specific forms are refused.

use guestd_core::BackendError;

/// Longest hash accepted (yescrypt with large parameters is about 120 bytes).
const MAX_LEN: usize = 512;

/// The crypt(3) base-64 alphabet (also bcrypt's character set).
fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

fn all_b64(s: &str) -> bool {
    s.bytes().all(is_b64)
}

/// The hash schemes accepted, named as in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Md5,
    Sha256,
    Sha512,
    Bcrypt,
    Yescrypt,
    GostYescrypt,
    Scrypt,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5-crypt",
            Self::Sha256 => "SHA-256-crypt",
            Self::Sha512 => "SHA-512-crypt",
            Self::Bcrypt => "bcrypt",
            Self::Yescrypt => "yescrypt",
            Self::GostYescrypt => "gost-yescrypt",
            Self::Scrypt => "scrypt",
        }
    }

    /// MD5-crypt is crackable on a laptop; accepted (the host chose it) but worth a warning.
    pub fn is_weak(self) -> bool {
        self == Self::Md5
    }
}

/// Check `hash` and name its scheme. The error never contains the hash.
pub fn check(hash: &str) -> Result<Scheme, BackendError> {
    if hash.is_empty() || hash.len() > MAX_LEN {
        return Err(invalid("it is empty or too long"));
    }
    if hash
        .bytes()
        .any(|b| b == b':' || b.is_ascii_control() || b == b' ' || !b.is_ascii())
    {
        return Err(invalid(
            "it contains ':', whitespace, a control or a non-ASCII character",
        ));
    }
    let Some(rest) = hash.strip_prefix('$') else {
        return Err(invalid(
            "traditional DES and other legacy forms are not accepted; use $6$, $y$ or $2b$",
        ));
    };
    let (id, rest) = rest
        .split_once('$')
        .ok_or_else(|| invalid("it has no scheme id"))?;
    let ok = match id {
        "1" => modular(rest, 8, 22).then_some(Scheme::Md5),
        "5" => sha_crypt(rest, 43).then_some(Scheme::Sha256),
        "6" => sha_crypt(rest, 86).then_some(Scheme::Sha512),
        "2a" | "2b" | "2y" => bcrypt(rest).then_some(Scheme::Bcrypt),
        "y" => yescrypt(rest).then_some(Scheme::Yescrypt),
        "gy" => yescrypt(rest).then_some(Scheme::GostYescrypt),
        "7" => scrypt(rest).then_some(Scheme::Scrypt),
        _ => return Err(invalid("its scheme is unknown or not supported")),
    };
    ok.ok_or_else(|| invalid("it is not a well-formed hash of its scheme"))
}

fn invalid(why: &str) -> BackendError {
    BackendError::Invalid(format!(
        "the crypted password is not a usable crypt(3) hash: {why}"
    ))
}

/// `salt$hash` with a salt of 1..=`max_salt` and a hash of exactly `hash_len` characters.
fn modular(rest: &str, max_salt: usize, hash_len: usize) -> bool {
    let Some((salt, hash)) = rest.split_once('$') else {
        return false;
    };
    (1..=max_salt).contains(&salt.len()) && all_b64(salt) && hash.len() == hash_len && all_b64(hash)
}

/// `[rounds=N$]salt$hash` (SHA-crypt: salt up to 16, rounds 1000..=999999999 as glibc clamps).
fn sha_crypt(rest: &str, hash_len: usize) -> bool {
    let rest = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let Some((n, after)) = r.split_once('$') else {
                return false;
            };
            let valid = !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u64>()
                    .is_ok_and(|n| (1_000..=999_999_999).contains(&n));
            if !valid {
                return false;
            }
            after
        }
        None => rest,
    };
    modular(rest, 16, hash_len)
}

/// `NN$` cost 04..=31, then 22 characters of salt and 31 of hash.
fn bcrypt(rest: &str) -> bool {
    let Some((cost, body)) = rest.split_once('$') else {
        return false;
    };
    cost.len() == 2
        && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
        && body.len() == 53
        && all_b64(body)
}

/// `params$salt$hash`: parameters starting with `j`, a non-empty salt, a 43-character hash.
fn yescrypt(rest: &str) -> bool {
    let mut parts = rest.split('$');
    let (Some(params), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    params.starts_with('j')
        && params.len() <= 64
        && all_b64(params)
        && !salt.is_empty()
        && salt.len() <= 86
        && all_b64(salt)
        && hash.len() == 43
        && all_b64(hash)
}

/// `$7$`: 11 characters of parameters, then the salt, `$`, a 43-character hash.
fn scrypt(rest: &str) -> bool {
    let Some((head, hash)) = rest.split_once('$') else {
        return false;
    };
    head.len() > 11 && head.len() <= 11 + 64 && all_b64(head) && hash.len() == 43 && all_b64(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

    /// Hashes made by libxcrypt's crypt(3) (python3 `crypt.crypt`), the real producer.
    #[test]
    fn accepts_the_common_schemes() {
        for (hash, scheme) in [
            (SHA512, Scheme::Sha512),
            (
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
                Scheme::Sha512,
            ),
            (
                "$5$saltstring$OH4IDuTlsuTYPdED1gsuiRMyTAwNlRWyA6Xr3I4/dQ5",
                Scheme::Sha256,
            ),
            ("$1$saltstri$qQY4WxjABChYG1ccLpfkz/", Scheme::Md5),
            (
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OoLPwTdOAymPHsrvQP3DDZabggtl0m6W",
                Scheme::Bcrypt,
            ),
            (
                "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$tnSYvahCwPBHKZUspmcxMfb0.WiB9W.zEaKlOBL35rC",
                Scheme::Yescrypt,
            ),
            (
                "$gy$j9T$F5Jx5fExrKuPp53xLKQ..1$Dogv.jai3UfiqXFIeQV0FWiA2xx/QPuuov.EGnMByDD",
                Scheme::GostYescrypt,
            ),
            (
                "$7$CU..../....SodiumChloride$siKSmmZgY8HQ/vgp0LEyi18bSR0Rm2AyTRfe12wvPXB",
                Scheme::Scrypt,
            ),
        ] {
            assert_eq!(check(hash).unwrap(), scheme, "{hash}");
        }
        assert!(Scheme::Md5.is_weak() && !Scheme::Sha512.is_weak());
    }

    #[test]
    fn refuses_hostile_and_malformed_input() {
        let long = format!("$6${}${}", "a".repeat(16), "b".repeat(600));
        for bad in [
            "",
            "plain password",
            "abJnggxhB/yWI",        // traditional DES
            "_J9..CCCCXBrJUJV154M", // BSDi
            "*",
            "!",
            "!$6$saltstring$x",
            "$6$salt:x$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1\nroot::0:0:::",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1:0",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz\x01",
            "$6$saltstring$short",
            "$6$saltstringsaltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$6$rounds=10$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$6$rounds=$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$6$$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1$extra",
            "$2b$99$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMU",
            "$y$x9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
            "$y$j9T$$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7",
            "$sha1$19703$iVdJqfSE$v4qYKl1zqYThwpjJAoKX6UvlHq/a",
            "$md5$rounds=904$Vd3f8vSd$$L0NHuU2kLhn.I7PwmnjHG/",
            "$3$$8846f7eaee8fb117ad06bdd830b7586c",
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz€",
            long.as_str(),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(matches!(err, BackendError::Invalid(_)), "{bad}: {err:?}");
            // The reason is safe to send back: it never echoes the input.
            if bad.len() > 8 {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }
}
