//! Test certificates made with the `openssl` CLI (a real peer, as hosts use it): a CA, a server
//! certificate for 127.0.0.1, a client certificate from the CA, and a rogue client certificate
//! (self-signed) that no guest should accept.

use std::path::{Path, PathBuf};

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

#[allow(clippy::disallowed_methods)] // tests drive the openssl CLI directly
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("the openssl CLI is needed for the TLS tests (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_and_csr(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
}

fn sign(dir: &Path, name: &str, ext: &str) {
    let extfile = format!("{name}.ext");
    std::fs::write(dir.join(&extfile), ext).expect("write extfile");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &extfile,
        ],
    );
}

impl TestPki {
    /// Generate everything in `dir`.
    pub fn generate(dir: &Path) -> Self {
        self_signed(
            dir,
            "ca",
            "/CN=guestd test CA",
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        key_and_csr(dir, "server", "guest");
        sign(
            dir,
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        key_and_csr(dir, "client", "host");
        sign(
            dir,
            "client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        // A CA nobody trusts, with the same shape as the real one.
        self_signed(dir, "rogue", "/CN=rogue", &[]);
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
        }
    }
}

/// A self-signed P-256 certificate `STEM.pem` with its key `STEM.key`, valid for two days, with
/// the given `-addext` extensions.
fn self_signed(dir: &Path, stem: &str, subject: &str, extensions: &[&str]) {
    let (key, pem) = (format!("{stem}.key"), format!("{stem}.pem"));
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &pem,
        "-days",
        "2",
        "-subj",
        subject,
    ];
    for ext in extensions {
        args.extend(["-addext", ext]);
    }
    openssl(dir, &args);
}
