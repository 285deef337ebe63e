//! Known-answer tests from spec §10.4 (OpenSSL 3.0 produced, independently re-checked) and the
//! old agents' own test vectors, plus the wrong-key property test.

use guestd_crypto::legacy::{self, LegacyDh, LegacyDigest, evp_bytes_to_key};
use guestd_crypto::{PasswordError, decode_base64_lenient};
use num_bigint::BigUint;
use proptest::prelude::*;

fn big(s: &str) -> BigUint {
    BigUint::parse_bytes(s.as_bytes(), 10).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn unhex(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

const PAIR1_SHARED: &str = "76517565852739343837567024351813";

/// (password without nova's "\n", md5 ciphertext, sha256 ciphertext)
const PAIR1_PASSWORDS: [(&str, &str, &str); 5] = [
    (
        "TeStPaSsWoRd",
        "3c0pbh4DtElXNmWV7BmuxQ==",
        "Ai8OaADMLuasA+fq71khFQ==",
    ),
    (
        "pass with newline\n",
        "5jLNH8CuMguCy+opAoCLliYpZPSofG6ECQP3j011JnA=",
        "tZCqdT189T+Bu0fSjq8csbWRhHYn8HHJe9D0jSB0MQc=",
    ),
    (
        "pässwörd-密码-🔑",
        "1Wzmev4JSG/T2roojXpK2Us5xOy0CPwGwu8s7SSnfOg=",
        "HguAmqLQQwLNGOTVabf4emQaVojbv+mm6TCANgydrPg=",
    ),
    (
        "exactly15chars!",
        "kMqYScSpWXMV6sFMy5FbUrmEQCJyWOeL20HCyZzNIzQ=",
        "/v2rn9wcZ3aLSVKVL5W/OLZr+772jxyhB36g6wU9voY=",
    ),
    (
        "A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5A1b2C3d4E5",
        "RIwc1bEpFfzQLyhDXt4Dv3Pn35PY9z0V8lEkr2XnPtYgRE63+QzR7x1f7lJXO72QhT0GxonDjkKljbSr5l0cr9IKCMNXIQVrGrsBq+dz2jCI7dQE2r3cgRGQt5TTTpDBgTV3crmuYDLMqakfJQWNVDXzTbe/uA0Gaoizew+lv4c=",
        "E4RlrtI/urPozdEvH5DjOH138JADJ0G2Nv7Ro/Zbs8223uYiiGh/aDbAplt9MohhamzYlkxnYiknB8flmuprQMwsiRIrlcaxGXV1uHxjVHzEoLyJXfkAOSDcXHBfZ5+hKtWYN2KtcDnNojt/Y7gSHdTIb7JOR4hpaej1E89u4tI=",
    ),
];

#[test]
fn pair1_public_keys_and_shared_secret() {
    let host = LegacyDh::from_private(big("702224704808334819799653"));
    let agent = LegacyDh::from_private(big("185537966031384114087489059399439030138"));
    assert_eq!(host.public_decimal(), "53035888671043549995097077724136");
    assert_eq!(agent.public_decimal(), "23776592077328161242353056213602");
    let host_pub = legacy::parse_public("53035888671043549995097077724136").unwrap();
    let agent_pub = legacy::parse_public(&agent.public_decimal()).unwrap();
    assert_eq!(agent.shared_secret(&host_pub).as_str(), PAIR1_SHARED);
    assert_eq!(host.shared_secret(&agent_pub).as_str(), PAIR1_SHARED);
}

#[test]
fn pair1_key_and_iv_for_both_digests() {
    let md5 = evp_bytes_to_key(LegacyDigest::Md5, PAIR1_SHARED.as_bytes());
    assert_eq!(hex(&md5.key), "A7FDA11B74D58EB450B7BA70FE29121E");
    assert_eq!(hex(&md5.iv), "91A1B7D35EAEBBB846DDD8B88E0C9A4D");
    let sha = evp_bytes_to_key(LegacyDigest::Sha256, PAIR1_SHARED.as_bytes());
    assert_eq!(hex(&sha.key), "9A3D6292E66B64F991F91B5DA6D2000A");
    assert_eq!(hex(&sha.iv), "CA0DC2CC9755E62B746A753FEA1883E3");
}

#[test]
fn pair1_all_passwords_decrypt_under_the_right_digest() {
    for (password, md5_ct, sha_ct) in PAIR1_PASSWORDS {
        for (ct, digest) in [(md5_ct, LegacyDigest::Md5), (sha_ct, LegacyDigest::Sha256)] {
            let raw = decode_base64_lenient(ct).unwrap();
            let (got, used) = legacy::decrypt_password(PAIR1_SHARED, &raw).unwrap();
            assert_eq!(got.expose(), password, "{password:?} under {digest:?}");
            assert_eq!(
                used, digest,
                "{password:?} decrypted under the wrong digest"
            );
        }
    }
}

#[test]
fn pair1_other_digest_gives_the_documented_last_byte_and_is_rejected() {
    // Spec §10.4: last plaintext byte of each ciphertext under the *other* digest's key/IV.
    let expected = [(79, 192), (21, 124), (208, 199), (118, 173), (119, 214)];
    let md5 = evp_bytes_to_key(LegacyDigest::Md5, PAIR1_SHARED.as_bytes());
    let sha = evp_bytes_to_key(LegacyDigest::Sha256, PAIR1_SHARED.as_bytes());
    for ((_, md5_ct, sha_ct), (md5_last, sha_last)) in PAIR1_PASSWORDS.iter().zip(expected) {
        let md5_raw = decode_base64_lenient(md5_ct).unwrap();
        let sha_raw = decode_base64_lenient(sha_ct).unwrap();
        assert_eq!(
            legacy::decrypt_raw(&sha, &md5_raw).unwrap().last(),
            Some(&md5_last)
        );
        assert_eq!(
            legacy::decrypt_raw(&md5, &sha_raw).unwrap().last(),
            Some(&sha_last)
        );
        assert!(legacy::decrypt_with(&sha, &md5_raw).is_none());
        assert!(legacy::decrypt_with(&md5, &sha_raw).is_none());
    }
}

#[test]
fn pair1_encryption_is_byte_identical_to_openssl() {
    for (password, md5_ct, sha_ct) in PAIR1_PASSWORDS {
        assert_eq!(
            legacy::encrypt_password(PAIR1_SHARED, LegacyDigest::Md5, password),
            md5_ct
        );
        assert_eq!(
            legacy::encrypt_password(PAIR1_SHARED, LegacyDigest::Sha256, password),
            sha_ct
        );
    }
}

#[test]
fn keyinit_responses_of_pairs_2_and_3_agent_keys() {
    // Spec §10.4: U1's real code with forced agent keys answered these public keys. Pair 2's
    // agent key is the first 32 hex digits of SHA256("agent-priv-2").
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(b"agent-priv-2");
    let priv2 = BigUint::parse_bytes(&hex(&d).as_bytes()[..32], 16).unwrap();
    assert_eq!(
        LegacyDh::from_private(priv2).public_decimal(),
        "8869093764136086444949946602975"
    );
    let mut long = sha2::Sha512::digest(b"agent-priv-3a").to_vec();
    long.extend(sha2::Sha512::digest(b"agent-priv-3b"));
    let priv3 = BigUint::from_bytes_be(&long[..75]);
    assert_eq!(
        LegacyDh::from_private(priv3).public_decimal(),
        "7283995753316677942410403288084"
    );
}

#[test]
fn d1_compute_shared_key() {
    let agent = LegacyDh::from_private(big(
        "2311212056221575424181384077217018408327386330309836681185200335772446841869122972713534217535689064137278608958579090107008875567526954383165078584702603331246342023613076766721726",
    ));
    let remote = legacy::parse_public("29146890515040234272807524713655").unwrap();
    assert_eq!(
        agent.shared_secret(&remote).as_str(),
        "27234591073885988013566387861589"
    );
}

#[test]
fn d1_aes_key_of_none() {
    let kiv = evp_bytes_to_key(LegacyDigest::Md5, b"None");
    assert_eq!(hex(&kiv.key), "6ADF97F83ACF6453D4A6A4B1070F3754");
    assert_eq!(hex(&kiv.iv), "23640DEC368FBEF3036470FC5465B865");
}

#[test]
fn d1_invalid_password_data() {
    // D1 gives key and IV directly; the value must fail the acceptance rule under them.
    let kiv = legacy::KeyIv {
        key: unhex("f80598bb2027ee4d3c3de28e55f645a1"),
        iv: unhex("3bd1ac527c3ac2dd23741831ad11640b"),
    };
    let raw =
        decode_base64_lenient("6E6haX/YGRSEcR9X9+3nLOgD+ItDTv9/uOHms02Cos0sqI/k1uFIC3V/YNydHJOk")
            .unwrap();
    assert!(legacy::decrypt_with(&kiv, &raw).is_none());
    assert_eq!(
        legacy::decrypt_password("None", &raw).unwrap_err(),
        PasswordError::Invalid
    );
    // "this is a test" in base64: 14 bytes, not a multiple of the block size.
    let raw = decode_base64_lenient("dGhpcyBpcyBhIHRlc3Q=").unwrap();
    assert_eq!(
        legacy::decrypt_password("None", &raw).unwrap_err(),
        PasswordError::Invalid
    );
}

#[test]
fn w1_encryption_spec() {
    let kiv = evp_bytes_to_key(LegacyDigest::Md5, b"secret");
    assert_eq!(hex(&kiv.key), "5EBE2294ECD0E0F08EAB7690D2A6EE69");
    assert_eq!(hex(&kiv.iv), "26AE5CC854E36B6BDFCA366848DEA6BB");
    let kiv = evp_bytes_to_key(LegacyDigest::Sha256, b"secret");
    assert_eq!(hex(&kiv.key), "2BB80D537B1DA3E38BD30361AA855686");
    assert_eq!(hex(&kiv.iv), "BDE0EACD7162FEF6A25FE97BF527A25B");
    let raw = decode_base64_lenient("OTfAog/nwyzIcYOhvCBL0w==").unwrap();
    let (pw, digest) = legacy::decrypt_password("secret", &raw).unwrap();
    assert_eq!((pw.expose(), digest), ("rackspace", LegacyDigest::Md5));
}

#[test]
fn w1_toy_group() {
    // DiffieHellmanSpec: p=23, g=5 (plain modpow, the same arithmetic LegacyDh uses).
    let p = BigUint::from(23u8);
    let g = BigUint::from(5u8);
    let pub6 = g.modpow(&BigUint::from(6u8), &p);
    let pub15 = g.modpow(&BigUint::from(15u8), &p);
    assert_eq!((pub6.clone(), pub15.clone()), (8u8.into(), 19u8.into()));
    assert_eq!(pub6.modpow(&BigUint::from(15u8), &p), BigUint::from(2u8));
    assert_eq!(pub15.modpow(&BigUint::from(6u8), &p), BigUint::from(2u8));
}

#[test]
fn u1_bad_base64() {
    assert_eq!(
        decode_base64_lenient("kjadfkjaf").unwrap_err(),
        PasswordError::Base64
    );
    assert_eq!(
        PasswordError::Base64.to_string(),
        "Couldn't decode base64 data"
    );
    assert_eq!(
        PasswordError::Invalid.to_string(),
        "Invalid password data received"
    );
}

#[test]
fn n1_round_trip_messages() {
    let host = LegacyDh::generate().unwrap();
    let agent = LegacyDh::generate().unwrap();
    let shared = agent.shared_secret(&legacy::parse_public(&host.public_decimal()).unwrap());
    let long = "abcd".repeat(1024);
    for msg in [
        "This is a simple message.",
        "This message has a newline at the end.\n",
        "Message with lotsa newlines.\n\n\n",
        "Message\nwith\ninterior\nnewlines.",
        "\n\nMessage with leading newlines.",
        long.as_str(),
    ] {
        for digest in LegacyDigest::TRY_ORDER {
            let ct = legacy::encrypt_password(&shared, digest, msg);
            assert!(!ct.ends_with('\n'));
            let raw = decode_base64_lenient(&ct).unwrap();
            assert_eq!(
                legacy::decrypt_password(&shared, &raw).unwrap().0.expose(),
                msg
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random ciphertexts (whole blocks) under a key they were not made with are rejected,
    /// never accepted as garbage. Each candidate has to pass a full PKCS#7 check, a trailing
    /// "\n" and UTF-8 under both digests: ~2^-12 per digest, so 2000 cases would all but
    /// certainly catch a rule that only checks the last byte.
    #[test]
    fn random_ciphertexts_under_a_wrong_key_are_rejected(
        blocks in prop::collection::vec(any::<[u8; 16]>(), 1..8),
        secret in "[1-9][0-9]{20,32}",
    ) {
        let ct: Vec<u8> = blocks.concat();
        let result = legacy::decrypt_password(&secret, &ct);
        prop_assert_eq!(result.unwrap_err(), PasswordError::Invalid);
    }

    /// A real password encrypted under one shared secret is rejected under another.
    #[test]
    fn real_ciphertexts_under_another_secret_are_rejected(
        password in "[ -~]{1,40}",
        secret in "[1-9][0-9]{25,32}",
        other in "[1-9][0-9]{25,32}",
        md5 in any::<bool>(),
    ) {
        prop_assume!(secret != other);
        let digest = if md5 { LegacyDigest::Md5 } else { LegacyDigest::Sha256 };
        let ct = decode_base64_lenient(&legacy::encrypt_password(&secret, digest, &password)).unwrap();
        let err = legacy::decrypt_password(&other, &ct).unwrap_err();
        prop_assert_eq!(err.to_string(), "Invalid password data received");
    }
}
