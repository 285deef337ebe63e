//! guestd-update: the part of `agentupdate` that talks to the network and parses the archive,
//! as a separate small executable installed beside `guestd` and started only for an update. The
//! resident daemon links no HTTP, TLS or archive code, and the download runs with fewer
//! privileges than the daemon: started as root, the helper first becomes `--user` (default
//! `nobody`: no supplementary groups, no capabilities, `no_new_privs` on Linux) and never writes
//! a file. Everything it produces goes to its stdout, and the daemon decides what to do with it:
//!
//! - `guestd-update fetch [--user NAME]`: stdin holds a JSON [`FetchRequest`]; the response body
//!   goes to stdout. The daemon checks the host's checksum itself, so a helper subverted by a
//!   hostile server cannot hand it a binary the host did not vouch for.
//! - `guestd-update unpack --max-unpacked BYTES [--user NAME]`: stdin holds the (checksum-
//!   verified) `.tar.gz`; its regular files go to stdout as an entry stream
//!   ([`archive::write_entries`]).
//! - `guestd-update --version`: `guestd-update <version>`.
//!
//! Progress goes to stderr as `info: ...` lines; a failure ends with one `error: <message>` line
//! (the message the host gets) and exit status 1. Usage errors exit with 2.

pub mod archive;
pub mod download;
pub mod privileges;

use serde::{Deserialize, Serialize};

/// Prefix of a progress line on stderr.
pub const INFO: &str = "info: ";
/// Prefix of the final error line on stderr.
pub const ERROR: &str = "error: ";

/// What `fetch` reads from stdin (JSON), so that the URL, which may carry credentials or a
/// signed query, never appears in an argument list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub url: String,
    /// Largest body accepted, in bytes.
    pub max_size: u64,
    /// Whole-download time limit.
    pub timeout_secs: u64,
    /// PEM CA bundle trusted instead of the built-in roots (the daemon reads the configured
    /// file; the helper may not be able to).
    #[serde(default)]
    pub ca_pem: Option<String>,
}
