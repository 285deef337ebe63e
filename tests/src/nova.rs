//! nova's host side of `keyinit`/`password`, done the way nova does it: Python big integers for
//! the Diffie-Hellman (nova's `SimpleDH`) and the real `openssl` CLI for the encryption.

use std::io::Write;
use std::process::{Command, Stdio};

/// Evaluate a Python expression (big-integer arithmetic) and return what it prints.
pub fn python(expr: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", &format!("print({expr})")])
        .output()
        .expect("python3 is required for this test; scripts/test-all installs it");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// nova's host side of keyinit: an 80-bit private key (`os.urandom(10)`).
#[derive(Debug)]
pub struct NovaDh {
    private: String,
}

impl NovaDh {
    pub fn new() -> Self {
        Self {
            private: python("int.from_bytes(__import__('os').urandom(10), 'big')"),
        }
    }

    /// The `keyinit` value.
    pub fn public(&self) -> String {
        python(&format!("pow(5, {}, 2**107 - 1)", self.private))
    }

    /// The shared secret from the agent's `keyinit` reply.
    pub fn shared(&self, agent_public: &str) -> String {
        let agent = agent_public.trim();
        assert!(agent.bytes().all(|b| b.is_ascii_digit()), "{agent}");
        python(&format!("pow({agent}, {}, 2**107 - 1)", self.private))
    }
}

impl Default for NovaDh {
    fn default() -> Self {
        Self::new()
    }
}

/// `openssl aes-128-cbc -A -a -pass pass:<shared> -nosalt -md <md>` over `password + "\n"`.
pub fn nova_encrypt(shared: &str, md: &str, password: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["aes-128-cbc", "-A", "-a", "-pass"])
        .arg(format!("pass:{shared}"))
        .args(["-nosalt", "-md", md])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl CLI is required for this test; scripts/test-all installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
}
