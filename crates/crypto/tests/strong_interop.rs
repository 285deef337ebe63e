//! The documented strong wire format, checked against independent implementations: Python's
//! integers, `hashlib` and `hmac` play the host (group-14 DH, HKDF-SHA256 per RFC 5869, the
//! MAC), and the `openssl enc -aes-256-cbc` CLI encrypts. If the crate docs and the code ever
//! disagree, this fails.
#![cfg(unix)]
#![allow(clippy::disallowed_methods)] // test-only spawns of the reference tools

use std::io::Write;
use std::process::{Command, Stdio};

use guestd_crypto::strong::{Role, StrongDh};

/// The host side in Python, step by step as the crate docs describe it. Prints
/// `host_public_b64 enc_key_hex mac_key_hex` given the agent's public key.
const HOST: &str = r#"
import base64, hashlib, hmac, os, sys
p = int("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
x = int.from_bytes(os.urandom(64), "big")
host_pub = pow(2, x, p).to_bytes(256, "big")
agent_pub = base64.b64decode(sys.argv[1])
z = pow(int.from_bytes(agent_pub, "big"), x, p).to_bytes(256, "big")
prk = hmac.new(b"\0" * 32, z, hashlib.sha256).digest()
info = b"guestd keyinit2 v1" + host_pub + agent_pub
okm, t = b"", b""
for i in range(1, 3):
    t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
    okm += t
print(base64.b64encode(host_pub).decode(), okm[:32].hex(), okm[32:].hex())
"#;

/// `"$gd2$" || u16be(len(user)) || user || iv || c`, MACed with the key, in Python.
const TAG: &str = r#"
import hashlib, hmac, sys
user = sys.argv[2].encode()
data = b"$gd2$" + len(user).to_bytes(2, "big") + user + bytes.fromhex(sys.argv[3])
print(hmac.new(bytes.fromhex(sys.argv[1]), data, hashlib.sha256).hexdigest())
"#;

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is required for this test (apt-get install python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_host_built_from_the_docs_is_understood() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let agent = StrongDh::generate().unwrap();
    let host = python(HOST, &[&agent.public_base64()]);
    let parts: Vec<&str> = host.split(' ').collect();
    let (host_pub, enc_key, mac_key) = (parts[0], parts[1], parts[2]);
    let keys = agent.agree(Role::Agent, host_pub).unwrap();

    for (user, password) in [("", "docs-built pässword"), ("alice", "x")] {
        let iv = "00112233445566778899aabbccddeeff";
        let mut child = Command::new("openssl")
            .args(["enc", "-aes-256-cbc", "-K", enc_key, "-iv", iv])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the openssl CLI is required (apt-get install openssl)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        let ct = child.wait_with_output().unwrap().stdout;
        let signed = format!("{iv}{}", hex(&ct));
        let tag = python(TAG, &[mac_key, user, &signed]);
        let value = format!("$gd2${}", b64.encode(unhex(&format!("{signed}{tag}"))));
        let user = (!user.is_empty()).then_some(user);
        assert_eq!(
            keys.decrypt_password(user, &value).unwrap().expose(),
            password
        );
    }
}
