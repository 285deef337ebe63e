//! Bringing XenStore to the desired keys: write only what changed since the last publication,
//! remove what went away, all in one transaction, `data/updated` last.
//!
//! - A full publication (start, reconnect, resume or migration) forgets what was written,
//!   writes everything, and first lists what is under guestd's own subtrees (the vifs'
//!   address lists) and its `data/` keys, so whatever a previous run or another host left
//!   there and is no longer true is removed too.
//! - A conflicting commit (`EAGAIN`) is retried from scratch a few times, as every XenStore
//!   client does; if it keeps conflicting the publication is abandoned and nothing is
//!   recorded, so the next one redoes it.
//! - A key xenstored refuses (`EACCES`: libxl makes `control/` read-only to the guest, and
//!   a toolstack may deny `control/feature-balloon`) is logged once per process, not tried
//!   again until the next full publication, and everything else still goes out. Quota
//!   refusals are logged once per key too.

use std::collections::BTreeSet;
use std::time::Duration;

use guestd_transport_xenstore::{Change, Store, XsError};
use tracing::{debug, info, warn};

use crate::keys::{self, Keys, UPDATED};

/// How often a conflicting transaction is tried again before the publication is abandoned.
const ATTEMPTS: u32 = 8;

/// `data/` keys that belong to the publisher, removed by a full publication when they are no
/// longer known (a domain that went away, memory figures turned off), and the one
/// `control/` key that only guestd writes.
const OWN_KEYS: &[&str] = &[
    "data/os_distro",
    "data/os_name",
    "data/os_majorver",
    "data/os_minorver",
    "data/os_uname",
    "data/host_name",
    "data/host_name_dns",
    "data/domain",
    "data/meminfo_total",
    "data/meminfo_free",
    "control/feature-static-ip-setting",
];

/// Why a publication happens (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Start,
    Reconnected,
    Resumed,
    ClockJump,
    Changed,
}

impl Reason {
    pub fn full(self) -> bool {
        self != Reason::Changed
    }

    fn describe(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Reconnected => "XenStore connection back",
            Reason::Resumed => "resume or migration (domain identity changed)",
            Reason::ClockJump => "the clock jumped",
            Reason::Changed => "change",
        }
    }
}

/// What a publication did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub written: usize,
    pub removed: usize,
    pub refused: usize,
}

/// The publisher's memory of XenStore.
#[derive(Debug, Default)]
pub struct Publisher {
    /// Our keys as XenStore holds them, as far as we know.
    written: Keys,
    /// Keys xenstored refused this guest: skipped until the next full publication.
    refused: BTreeSet<String>,
    /// Keys whose refusal was logged (once per process).
    logged: BTreeSet<String>,
    /// Full publications so far (tests and logs).
    pub full_publications: u64,
}

impl Publisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes from what was written to `desired`, removals of `stale` paths first.
    pub fn plan(&self, desired: &Keys, stale: &[String]) -> Vec<Change> {
        let mut changes: Vec<Change> = Vec::new();
        let mut removals: BTreeSet<String> = stale.iter().cloned().collect();
        for key in self.written.keys() {
            if !desired.contains_key(key) {
                removals.insert(removal_root(key, desired));
            }
        }
        let mut kept: Vec<&String> = Vec::new();
        for path in &removals {
            // Ordered: a parent comes before its children, which it takes with it.
            if !kept.iter().any(|k| under(path, k)) {
                kept.push(path);
            }
        }
        changes.extend(kept.into_iter().map(|p| Change::remove(p.clone())));
        for (key, value) in desired {
            if self.refused.contains(key) || self.written.get(key) == Some(value) {
                continue;
            }
            changes.push(Change::write(key.clone(), value.clone()));
        }
        changes
    }

    /// Publish `desired`. `Ok` with what was done (nothing when nothing changed); `Err` when
    /// the connection is lost or the transaction kept conflicting.
    pub async fn publish<S: Store>(
        &mut self,
        s: &S,
        desired: &Keys,
        reason: Reason,
    ) -> Result<Published, XsError> {
        let stale = if reason.full() {
            self.written.clear();
            self.refused.clear();
            sweep(s, desired).await?
        } else {
            Vec::new()
        };
        let mut changes = self.plan(desired, &stale);
        if changes.is_empty() {
            debug!(reason = reason.describe(), "nothing to publish");
            return Ok(Published::default());
        }
        changes.push(Change::write(UPDATED, unix_time()));
        let outcomes = transact_retrying(s, &changes).await?;
        let mut done = Published::default();
        for (change, outcome) in changes.iter().zip(outcomes) {
            match (change, outcome) {
                (Change::Write { path, value }, Ok(())) => {
                    if path != UPDATED {
                        done.written += 1;
                        let value = String::from_utf8_lossy(value).into_owned();
                        self.written.insert(path.clone(), value);
                    }
                }
                (Change::Remove { path }, Ok(())) => {
                    done.removed += 1;
                    self.written.retain(|k, _| !(k == path || under(k, path)));
                }
                (change, Err(e)) => {
                    done.refused += 1;
                    self.refused(change, &e);
                }
            }
        }
        if reason.full() {
            self.full_publications += 1;
            info!(
                reason = reason.describe(),
                written = done.written,
                removed = done.removed,
                refused = done.refused,
                atomic = S::ATOMIC,
                "published the guest metrics to XenStore (everything)"
            );
        } else {
            debug!(
                written = done.written,
                removed = done.removed,
                refused = done.refused,
                "published the guest metrics that changed"
            );
        }
        Ok(done)
    }

    fn refused(&mut self, change: &Change, e: &XsError) {
        let path = change.path().to_string();
        let denied = e.is("EACCES") || e.is("EPERM") || e.is("EROFS");
        if denied {
            self.refused.insert(path.clone());
        }
        if self.logged.insert(path.clone()) {
            if denied {
                warn!(key = %path, error = %e, "XenStore does not let this guest write this key; carrying on without it (logged once)");
            } else {
                warn!(key = %path, error = %e, "XenStore refused this key (the guest's quota?); carrying on without it (logged once)");
            }
        } else {
            debug!(key = %path, error = %e, "XenStore refused this key again");
        }
    }
}

/// `path` is strictly below `base`.
fn under(path: &str, base: &str) -> bool {
    path.len() > base.len() && path.starts_with(base) && path.as_bytes()[base.len()] == b'/'
}

/// What to remove for a key that went away: inside a vif's address lists, the highest
/// ancestor (up to the vif itself) that no longer holds any desired key, so an interface
/// that vanished leaves no empty directories behind.
fn removal_root(key: &str, desired: &Keys) -> String {
    if !keys::in_owned_subtree(key) {
        return key.to_string();
    }
    let floor = if key.starts_with(keys::SRIOV_ROOT) {
        keys::SRIOV_ROOT.matches('/').count() + 2
    } else {
        keys::VIF_ROOT.matches('/').count() + 2
    };
    let mut root = key;
    while let Some((parent, _)) = root.rsplit_once('/') {
        if parent.matches('/').count() + 1 < floor || desired.keys().any(|k| under(k, parent)) {
            break;
        }
        root = parent;
    }
    root.to_string()
}

/// Paths under guestd's subtrees and own keys that exist and are not desired.
async fn sweep<S: Store>(s: &S, desired: &Keys) -> Result<Vec<String>, XsError> {
    let mut stale = Vec::new();
    for root in [keys::VIF_ROOT, keys::SRIOV_ROOT] {
        for id in list(s, root).await? {
            let base = format!("{root}/{id}");
            if !desired.keys().any(|k| under(k, &base)) {
                stale.push(base);
                continue;
            }
            for family in ["ipv4", "ipv6"] {
                let dir = format!("{base}/{family}");
                for n in list(s, &dir).await? {
                    let key = format!("{dir}/{n}");
                    if !desired.contains_key(&key) {
                        stale.push(key);
                    }
                }
            }
        }
    }
    for key in OWN_KEYS {
        if !desired.contains_key(*key) && exists(s, key).await? {
            stale.push(key.to_string());
        }
    }
    Ok(stale)
}

/// Children of `path`; nothing when it is absent or unreadable.
async fn list<S: Store>(s: &S, path: &str) -> Result<Vec<String>, XsError> {
    match s.directory(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_connection_lost() => Err(e),
        Err(_) => Ok(Vec::new()),
    }
}

async fn exists<S: Store>(s: &S, path: &str) -> Result<bool, XsError> {
    match s.read(path).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_connection_lost() => Err(e),
        Err(_) => Ok(false),
    }
}

/// `transact`, started over when the commit conflicts.
async fn transact_retrying<S: Store>(
    s: &S,
    changes: &[Change],
) -> Result<guestd_transport_xenstore::Outcomes, XsError> {
    let mut attempt = 0;
    loop {
        match s.transact(changes).await {
            Err(e) if e.is("EAGAIN") && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                debug!(attempt, "XenStore transaction conflicted; starting over");
                tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await;
            }
            Err(e) if e.is("EAGAIN") => {
                warn!(
                    attempts = ATTEMPTS,
                    "XenStore transactions kept conflicting; this publication waits for the next change"
                );
                return Err(e);
            }
            other => return other,
        }
    }
}

/// Seconds since the epoch, for `data/updated` (XAPI only checks that it exists).
fn unix_time() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, &str)]) -> Keys {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn paths(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Write { path, value } => {
                    format!("+{path}={}", String::from_utf8_lossy(value))
                }
                Change::Remove { path } => format!("-{path}"),
            })
            .collect()
    }

    #[test]
    fn only_what_changed_and_whole_vifs_that_went_away() {
        let mut p = Publisher::new();
        p.written = keys(&[
            ("data/os_name", "Debian"),
            ("data/meminfo_free", "100"),
            ("attr/vif/0/ipv4/0", "192.0.2.1"),
            ("attr/vif/0/ipv4/1", "192.0.2.2"),
            ("attr/vif/0/ipv6/0", "2001:db8::1"),
            ("attr/vif/1/ipv4/0", "198.51.100.1"),
            ("xenserver/attr/net-sriov-vf/2/ipv4/0", "203.0.113.1"),
        ]);
        let desired = keys(&[
            ("data/os_name", "Debian"),
            ("data/meminfo_free", "90"),
            ("attr/vif/0/ipv4/0", "192.0.2.1"),
        ]);
        assert_eq!(
            paths(&p.plan(&desired, &[])),
            [
                "-attr/vif/0/ipv4/1",
                "-attr/vif/0/ipv6",
                "-attr/vif/1",
                "-xenserver/attr/net-sriov-vf/2",
                "+data/meminfo_free=90",
            ]
        );
        // Stale paths from a sweep, and a parent that takes its children with it.
        let plan = p.plan(&desired, &["attr/vif/7".into(), "attr/vif/7/ipv4/0".into()]);
        assert!(paths(&plan).contains(&"-attr/vif/7".to_string()));
        assert!(!paths(&plan).contains(&"-attr/vif/7/ipv4/0".to_string()));
        // Refused keys are not retried.
        p.refused.insert("data/meminfo_free".into());
        assert!(
            !paths(&p.plan(&desired, &[]))
                .iter()
                .any(|c| c.contains("meminfo"))
        );
    }

    #[test]
    fn removal_roots() {
        let desired = keys(&[("attr/vif/0/ipv4/0", "x")]);
        assert_eq!(
            removal_root("attr/vif/0/ipv4/1", &desired),
            "attr/vif/0/ipv4/1"
        );
        assert_eq!(
            removal_root("attr/vif/0/ipv6/0", &desired),
            "attr/vif/0/ipv6"
        );
        assert_eq!(removal_root("attr/vif/3/ipv6/0", &desired), "attr/vif/3");
        assert_eq!(
            removal_root("xenserver/attr/net-sriov-vf/1/ipv4/0", &desired),
            "xenserver/attr/net-sriov-vf/1"
        );
        assert_eq!(removal_root("data/domain", &desired), "data/domain");
        assert!(under("attr/vif/0/ipv4", "attr/vif/0"));
        assert!(!under("attr/vif/01", "attr/vif/0"));
        assert!(!under("attr/vif/0", "attr/vif/0"));
    }
}
