//! `guest-get-users`: the users with a login session, from the binary records of glibc's utmp
//! file (`/var/run/utmp`), read through `Root` and parsed here with a bound on the records.
//! As in qemu-ga, each user appears once, with the earliest login time of their sessions.
//!
//! glibc's `struct utmp` is 384 bytes on every Linux architecture (64-bit ones keep 32-bit
//! times for compatibility with 32-bit programs), in the machine's byte order:
//! `ut_type` i16 at 0, `ut_user` [32] at 44, `ut_tv` {i32 sec, i32 usec} at 340.

use serde::Deserialize;
use serde_json::{Value, json};

use super::platform::linux_only;
use super::{QgaCommand, args};

pub(crate) const UTMP: &str = "/var/run/utmp";
pub(crate) const RECORD_SIZE: usize = 384;
/// Records looked at, at most (a utmp file holds one per terminal; 4096 is generous).
pub(crate) const MAX_RECORDS: usize = 4096;
const USER_PROCESS: i16 = 7;
const TYPE_AT: usize = 0;
const USER_AT: usize = 44;
const USER_LEN: usize = 32;
const TV_AT: usize = 340;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const USERS: QgaCommand = QgaCommand {
    name: "guest-get-users",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-users")?;
        // No utmp (a minimal or systemd-only guest): nobody is logged in, as qemu-ga says.
        let bytes = ctx.env.root.read_optional(UTMP)?.unwrap_or_default();
        Ok(users(&bytes))
    },
};

/// One login session of a utmp file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Session {
    pub user: String,
    /// Seconds since the epoch, with the microseconds as the fraction.
    pub login_time: f64,
}

/// The `USER_PROCESS` records of a utmp file, at most [`MAX_RECORDS`]; a trailing partial
/// record is ignored.
pub(crate) fn sessions(bytes: &[u8]) -> Vec<Session> {
    bytes
        .chunks_exact(RECORD_SIZE)
        .take(MAX_RECORDS)
        .filter_map(|r| {
            let kind = i16::from_ne_bytes([r[TYPE_AT], r[TYPE_AT + 1]]);
            if kind != USER_PROCESS {
                return None;
            }
            let name = &r[USER_AT..USER_AT + USER_LEN];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(USER_LEN)];
            if name.is_empty() {
                return None;
            }
            let int = |at: usize| i32::from_ne_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
            Some(Session {
                user: String::from_utf8_lossy(name).into_owned(),
                login_time: f64::from(int(TV_AT)) + f64::from(int(TV_AT + 4)) / 1e6,
            })
        })
        .collect()
}

/// qemu-ga's answer: each user once, in order of first appearance, with the earliest login.
pub(crate) fn users(bytes: &[u8]) -> Value {
    let mut out: Vec<Session> = Vec::new();
    for s in sessions(bytes) {
        match out.iter_mut().find(|u| u.user == s.user) {
            Some(u) => u.login_time = u.login_time.min(s.login_time),
            None => out.push(s),
        }
    }
    Value::Array(
        out.into_iter()
            .map(|u| json!({"user": u.user, "login-time": u.login_time}))
            .collect(),
    )
}

/// For tests: one utmp record.
#[cfg(test)]
pub(crate) fn record(kind: i16, user: &str, line: &str, sec: i32, usec: i32) -> Vec<u8> {
    let mut r = vec![0u8; RECORD_SIZE];
    r[TYPE_AT..TYPE_AT + 2].copy_from_slice(&kind.to_ne_bytes());
    r[8..8 + line.len()].copy_from_slice(line.as_bytes());
    r[USER_AT..USER_AT + user.len()].copy_from_slice(user.as_bytes());
    r[TV_AT..TV_AT + 4].copy_from_slice(&sec.to_ne_bytes());
    r[TV_AT + 4..TV_AT + 8].copy_from_slice(&usec.to_ne_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sessions_once_each_with_the_earliest_login() {
        let mut file = Vec::new();
        file.extend(record(2, "reboot", "~", 1_700_000_000, 0)); // BOOT_TIME
        file.extend(record(6, "LOGIN", "tty1", 1_700_000_001, 0)); // LOGIN_PROCESS
        file.extend(record(7, "alice", "pts/0", 1_700_000_500, 250_000));
        file.extend(record(7, "bob", "pts/1", 1_700_000_600, 0));
        file.extend(record(7, "alice", "pts/2", 1_700_000_100, 500_000));
        file.extend(record(8, "carol", "pts/3", 1_700_000_700, 0)); // DEAD_PROCESS
        file.extend(record(7, "", "pts/4", 1_700_000_800, 0));
        // A 32-character name fills the field with no terminating NUL.
        let long = "u".repeat(32);
        file.extend(record(7, &long, "pts/5", 1_700_000_900, 0));
        file.extend(&[7, 0, 0]); // a torn last record
        assert_eq!(
            users(&file),
            json!([
                {"user": "alice", "login-time": 1_700_000_100.5},
                {"user": "bob", "login-time": 1_700_000_600.0},
                {"user": long, "login-time": 1_700_000_900.0},
            ])
        );
        assert_eq!(users(&[]), json!([]));
    }

    #[test]
    fn a_huge_file_is_read_only_up_to_the_bound() {
        let one = record(7, "x", "pts/0", 1, 0);
        let file: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(RECORD_SIZE * (MAX_RECORDS + 10))
            .collect();
        assert_eq!(sessions(&file).len(), MAX_RECORDS);
    }
}
