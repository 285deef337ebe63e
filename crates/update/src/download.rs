//! Fetch the update over HTTP(S) into memory: size limit (announced and actual), overall
//! timeout, progress on stderr (`info: ...` lines the daemon copies into its log), and a clear
//! error when the body stops short.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// How to download.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub max_size: u64,
    pub timeout: Duration,
    /// PEM bundle; when set, HTTPS servers must chain to one of these (and nothing else).
    pub ca_pem: Option<Vec<u8>>,
}

/// A download failure; `Display` is the reply text (the URL without query or credentials).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownloadError {
    #[error("Only http and https URLs are supported for agent updates")]
    Scheme,
    #[error("Invalid CA bundle: {0}")]
    CaBundle(String),
    #[error("Download of {url} failed: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("Download of {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("Update at {url} is too large: {announced} bytes announced, the limit is {limit}")]
    TooLargeAnnounced {
        url: String,
        announced: u64,
        limit: u64,
    },
    #[error("Update at {url} is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("Download of {url} stopped after {got} of {announced} bytes")]
    Truncated {
        url: String,
        got: u64,
        announced: u64,
    },
}

/// `scheme://host/path` of a URL: no credentials, no query (signed URLs carry secrets there).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

pub fn check_scheme(url: &str) -> Result<(), DownloadError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(())
    } else {
        Err(DownloadError::Scheme)
    }
}

/// Download `url` completely, or fail without a partial result.
pub fn fetch(url: &str, opts: &DownloadOptions) -> Result<Vec<u8>, DownloadError> {
    check_scheme(url)?;
    let shown = redact(url);
    let mut builder = ureq::AgentBuilder::new()
        .timeout(opts.timeout)
        .redirects(5)
        .user_agent(concat!("guestd/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &opts.ca_pem {
        builder = builder.tls_config(tls_config(pem)?);
    }
    let agent = builder.build();
    progress(&format!("downloading agent update from {shown}"));
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(status, _) => DownloadError::Status {
            url: shown.clone(),
            status,
        },
        ureq::Error::Transport(t) => DownloadError::Transport {
            url: shown.clone(),
            reason: transport_reason(&t),
        },
    })?;
    let announced: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    if let Some(n) = announced.filter(|&n| n > opts.max_size) {
        return Err(DownloadError::TooLargeAnnounced {
            url: shown,
            announced: n,
            limit: opts.max_size,
        });
    }
    let mut reader = response.into_reader();
    let mut body = Vec::with_capacity(announced.unwrap_or(0) as usize);
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_report = report_step(announced);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let got = body.len() as u64;
                return Err(match announced {
                    Some(announced) => DownloadError::Truncated {
                        url: shown,
                        got,
                        announced,
                    },
                    None => DownloadError::Transport {
                        url: shown,
                        reason: format!("after {got} bytes: {e}"),
                    },
                });
            }
        };
        if (body.len() + n) as u64 > opts.max_size {
            return Err(DownloadError::TooLarge {
                url: shown,
                limit: opts.max_size,
            });
        }
        body.extend_from_slice(&buf[..n]);
        let got = body.len() as u64;
        if got >= next_report {
            match announced {
                Some(total) => progress(&format!(
                    "download {}% ({got} of {total} bytes)",
                    got * 100 / total.max(1)
                )),
                None => progress(&format!("downloading: {got} bytes")),
            }
            next_report = got + report_step(announced);
        }
    }
    let got = body.len() as u64;
    if let Some(announced) = announced.filter(|&a| a != got) {
        return Err(DownloadError::Truncated {
            url: shown,
            got,
            announced,
        });
    }
    progress(&format!("download complete: {got} bytes"));
    Ok(body)
}

/// One progress line for the daemon's log.
fn progress(line: &str) {
    eprintln!("{}{line}", crate::INFO);
}

/// Log progress every 10% (or every 4 MiB when the size is unknown).
fn report_step(announced: Option<u64>) -> u64 {
    announced.map_or(4 << 20, |n| (n / 10).max(1))
}

fn transport_reason(t: &ureq::Transport) -> String {
    // ureq's Display repeats the full URL (query included); keep the kind and the cause.
    let mut reason = t.kind().to_string();
    if let Some(m) = t.message() {
        reason = format!("{reason}: {m}");
    }
    // The cause says why (e.g. rustls' "invalid peer certificate: UnknownIssuer").
    let mut source = std::error::Error::source(t);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    reason
}

/// A rustls client trusting exactly the certificates of `pem`.
fn tls_config(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, DownloadError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| DownloadError::CaBundle(e);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificates in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(
            redact("https://u:p@h.example:8443/a/b.tgz?sig=secret#x"),
            "https://h.example:8443/a/b.tgz"
        );
        assert_eq!(redact("http://h/x"), "http://h/x");
    }

    #[test]
    fn only_http_and_https() {
        check_scheme("HTTPS://h/x").unwrap();
        for bad in ["ftp://h/x", "file:///etc/passwd", "/tmp/x", ""] {
            assert_eq!(check_scheme(bad), Err(DownloadError::Scheme), "{bad}");
        }
    }

    #[test]
    fn bad_ca_bundle_is_reported() {
        assert!(matches!(
            tls_config(b"nothing here"),
            Err(DownloadError::CaBundle(_))
        ));
    }
}
