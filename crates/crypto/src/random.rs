//! The OS random source (`getrandom`: `getrandom(2)` on Linux, `BCryptGenRandom` on Windows).

use num_bigint::BigUint;
use zeroize::Zeroizing;

use crate::KeyExchangeError;

/// Fill `buf` from the OS random source.
pub fn fill(buf: &mut [u8]) -> Result<(), KeyExchangeError> {
    getrandom::fill(buf).map_err(|e| KeyExchangeError::Random(e.to_string()))
}

/// A uniformly random integer of `bytes * 8` bits (an exponent for Diffie–Hellman).
pub(crate) fn random_exponent(bytes: usize) -> Result<BigUint, KeyExchangeError> {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    fill(&mut buf)?;
    // Force the top bit so the exponent really has the advertised size.
    buf[0] |= 0x80;
    Ok(BigUint::from_bytes_be(&buf))
}

/// Overwrite a big integer's limbs with zeros in place (num-bigint has no `Zeroize`). Clearing
/// from the top bit down means every limb is already zero when normalisation drops it.
pub(crate) fn wipe(n: &mut BigUint) {
    for bit in (0..n.bits()).rev() {
        n.set_bit(bit, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_in_place() {
        let mut n = random_exponent(64).unwrap();
        wipe(&mut n);
        assert_eq!(n, BigUint::default());
        let mut one = BigUint::from(1u8);
        wipe(&mut one);
        assert_eq!(one.bits(), 0);
    }
}
