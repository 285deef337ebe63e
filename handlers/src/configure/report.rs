//! What a `configure` run did: the whole result, kept root-only under [`RESULT_DIR`], and the
//! summary that fits the channel's reply limit (XenStore's 2048 bytes: counts and the resources
//! that did not succeed; the whole result is fetched with `{"result": "<id>"}`, page by page).

use guestd_core::{Reply, Root, RootError, WriteOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where results are kept (`<id>.json`, mode 0600, in a 0700 directory).
#[cfg(not(windows))]
pub const RESULT_DIR: &str = "/var/lib/guestd/configure";
#[cfg(windows)]
pub const RESULT_DIR: &str = r"C:\ProgramData\guestd\configure";

/// Largest stored result read back.
const MAX_RESULT_BYTES: u64 = 16 * 1024 * 1024;

/// Longest reason kept in a summary entry.
const SUMMARY_REASON: usize = 200;

/// How a resource came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The guest already was as asked.
    Unchanged,
    /// It was changed (in a dry run: it would be).
    Changed,
    Failed,
    /// Not tried (a dependency failed, or an atomic document stopped), or not done (the
    /// `--root` sandbox kept its command off the machine).
    Skipped,
}

/// What a script printed (bounded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptOutput {
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond the kept length was dropped (the tail is kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl ScriptOutput {
    pub fn new(exit_code: Option<i32>, stdout: &[u8], stderr: &[u8], max: usize) -> Self {
        let (stdout, t1) = tail(stdout, max);
        let (stderr, t2) = tail(stderr, max);
        Self {
            exit_code,
            stdout,
            stderr,
            truncated: t1 || t2,
        }
    }
}

/// The last `max` bytes of `bytes` as text (on a character boundary).
fn tail(bytes: &[u8], max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max {
        return (text.into_owned(), false);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (text[start..].to_string(), true)
}

/// One resource's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceResult {
    pub name: String,
    pub kind: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ScriptOutput>,
}

impl ResourceResult {
    pub fn new(name: &str, kind: &str, status: Status) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            status,
            reason: None,
            changes: Vec::new(),
            notes: Vec::new(),
            output: None,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// The entry as the summary shows it at `detail` (0: all of it, as stored; 1: no changes,
    /// notes or output; 2: a short reason only).
    fn summary(&self, detail: u8) -> Value {
        if detail == 0 {
            return serde_json::to_value(self).unwrap_or(Value::Null);
        }
        let mut entry = json!({"name": self.name, "kind": self.kind, "status": self.status});
        let limit = if detail >= 2 { 60 } else { SUMMARY_REASON };
        if let Some(reason) = &self.reason {
            entry["reason"] = json!(shorten(reason, limit));
        }
        entry
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Resources per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub changed: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// The whole result of one run, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub id: String,
    /// Unix seconds.
    pub started: u64,
    pub finished: u64,
    pub dry_run: bool,
    pub atomic: bool,
    /// An atomic run failed: whether every file change was put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<bool>,
    pub counts: Counts,
    /// In document order.
    pub resources: Vec<ResourceResult>,
}

impl RunResult {
    pub fn count(&mut self) {
        let mut c = Counts::default();
        for r in &self.resources {
            match r.status {
                Status::Changed => c.changed += 1,
                Status::Unchanged => c.unchanged += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
        self.counts = c;
    }

    pub fn ok(&self) -> bool {
        self.counts.failed == 0 && self.counts.skipped == 0
    }

    fn head(&self) -> Value {
        let mut head = json!({
            "id": self.id,
            "dry_run": self.dry_run,
            "atomic": self.atomic,
            "counts": self.counts,
        });
        if let Some(r) = self.rolled_back {
            head["rolled_back"] = json!(r);
        }
        head
    }

    /// The reply: `"0"` when every resource is unchanged or changed, `"500"` otherwise; the
    /// message the whole result when it fits `limit` encoded bytes (`complete: true`), else a
    /// summary that does (`complete: false`: the stored result has the rest).
    pub fn reply(&self, limit: usize) -> Reply {
        let code = if self.ok() { "0" } else { "500" };
        let not_ok: Vec<&ResourceResult> = self
            .resources
            .iter()
            .filter(|r| matches!(r.status, Status::Failed | Status::Skipped))
            .collect();
        let all: Vec<&ResourceResult> = self.resources.iter().collect();
        let candidates: [(&[&ResourceResult], u8, bool); 5] = [
            (&all, 0, true),
            (&all, 1, false),
            (&not_ok, 1, not_ok.len() == all.len()),
            (&not_ok, 2, not_ok.len() == all.len()),
            (&[], 2, all.is_empty()),
        ];
        for (entries, detail, complete) in candidates {
            let mut message = self.head();
            message["resources"] =
                Value::Array(entries.iter().map(|r| r.summary(detail)).collect());
            message["complete"] = json!(complete);
            let reply = Reply::new(code, message.to_string());
            if reply.encode().len() <= limit {
                return reply;
            }
        }
        // Not even the counts fit (a very small limit): the id alone.
        Reply::new(code, json!({"id": self.id, "complete": false}).to_string())
    }

    /// A page of the stored result for `{"result": id, "from": n}`: as many whole entries from
    /// `from` on as fit `limit` (at least one, shortened if it must be), and where the next
    /// page starts.
    pub fn page(&self, from: usize, limit: usize) -> Reply {
        let mut taken: Vec<Value> = Vec::new();
        let build = |taken: &[Value], next: Option<usize>| {
            let mut message = self.head();
            message["from"] = json!(from);
            message["next"] = json!(next);
            message["resources"] = Value::Array(taken.to_vec());
            Reply::ok(message.to_string())
        };
        let mut at = from;
        while at < self.resources.len() {
            let r = &self.resources[at];
            let mut fitted = None;
            for shape in 0..4u8 {
                let entry = match shape {
                    0 => serde_json::to_value(r).unwrap_or(Value::Null),
                    1 => {
                        let mut e = r.clone();
                        e.output = None;
                        serde_json::to_value(e).unwrap_or(Value::Null)
                    }
                    2 => r.summary(1),
                    _ => r.summary(2),
                };
                let mut trial = taken.clone();
                trial.push(entry);
                let next = (at + 1 < self.resources.len()).then_some(at + 1);
                if build(&trial, next).encode().len() <= limit {
                    fitted = Some(trial);
                    break;
                }
                if !taken.is_empty() {
                    break; // the page is full; this entry starts the next one
                }
            }
            match fitted {
                Some(t) => {
                    taken = t;
                    at += 1;
                }
                None => break,
            }
        }
        let next = (at < self.resources.len()).then_some(at);
        build(&taken, next)
    }
}

/// A new run id: Unix seconds and 8 random hex digits (sortable by time).
pub fn new_id(now: u64) -> String {
    let mut bytes = [0u8; 4];
    if guestd_crypto::random::fill(&mut bytes).is_err() {
        // Uniqueness, not secrecy, is what matters here.
        bytes = (std::process::id() ^ now as u32).to_be_bytes();
    }
    format!(
        "{now:010}-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Whether `id` looks like one [`new_id`] made (so it can name a file).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

fn result_path(id: &str) -> String {
    let sep = if cfg!(windows) { '\\' } else { '/' };
    format!("{RESULT_DIR}{sep}{id}.json")
}

/// Keep `result` under [`RESULT_DIR`] (root-only) and remove all but the newest `keep`.
pub fn store(root: &Root, result: &RunResult, keep: usize) -> Result<(), RootError> {
    let own = root.without_write_policy();
    if !own.is_dir(RESULT_DIR) {
        own.create_dir_all(RESULT_DIR, 0o700)?;
    }
    let bytes = serde_json::to_vec_pretty(result).unwrap_or_default();
    own.write_atomic(
        result_path(&result.id),
        &bytes,
        WriteOptions::mode(0o600).exact(),
    )?;
    let mut stored: Vec<String> = own
        .read_dir(RESULT_DIR)?
        .into_iter()
        .filter(|n| n.strip_suffix(".json").is_some_and(valid_id))
        .collect();
    stored.sort();
    let excess = stored.len().saturating_sub(keep.max(1));
    for old in &stored[..excess] {
        let sep = if cfg!(windows) { '\\' } else { '/' };
        own.remove_file(format!("{RESULT_DIR}{sep}{old}"))?;
    }
    Ok(())
}

/// A stored result (only one guestd wrote: root's, in a place no one else can change).
pub fn load(root: &Root, id: &str) -> Result<RunResult, String> {
    if !valid_id(id) {
        return Err(format!(
            "'{}' is not a configure result id",
            id.escape_default()
        ));
    }
    let bytes = root
        .read_private(result_path(id), MAX_RESULT_BYTES)
        .map_err(|e| {
            if e.is_not_found() {
                format!("no configure result '{id}' (only the newest are kept)")
            } else {
                format!("configure result '{id}': {e}")
            }
        })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("configure result '{id}' is damaged: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n: usize) -> RunResult {
        let mut r = RunResult {
            id: "1700000000-0a0b0c0d".into(),
            started: 1,
            finished: 2,
            dry_run: false,
            atomic: false,
            rolled_back: None,
            counts: Counts::default(),
            resources: (0..n)
                .map(|i| {
                    let status = if i == 3 {
                        Status::Failed
                    } else {
                        Status::Changed
                    };
                    let mut e = ResourceResult::new(&format!("resource-{i}"), "file", status);
                    e.changes = vec![format!("content ({i} -> {} bytes)", i + 1)];
                    if i == 3 {
                        e.reason = Some("x".repeat(500));
                    }
                    e
                })
                .collect(),
        };
        r.count();
        r
    }

    #[test]
    fn the_summary_fits_xenstore_and_keeps_what_failed() {
        let r = result(60);
        let full = r.reply(1 << 20);
        assert_eq!(full.returncode, "500");
        let v: Value = serde_json::from_str(&full.message).unwrap();
        assert_eq!(v["resources"].as_array().unwrap().len(), 60);
        assert_eq!(v["complete"], true);
        let small = r.reply(2048);
        assert!(small.encode().len() <= 2048);
        let v: Value = serde_json::from_str(&small.message).unwrap();
        assert_eq!(v["complete"], false);
        assert_eq!(v["counts"]["failed"], 1);
        assert_eq!(v["resources"][0]["name"], "resource-3");
        assert!(
            v["resources"][0]["reason"]
                .as_str()
                .unwrap()
                .ends_with("...")
        );
        let tiny = r.reply(200);
        assert!(tiny.encode().len() <= 200, "{}", tiny.encode());
    }

    #[test]
    fn pages_cover_every_resource_once() {
        let mut r = result(40);
        r.resources[5].output = Some(ScriptOutput::new(Some(0), &[b'x'; 5000], b"", 16 * 1024));
        let mut from = 0;
        let mut seen = Vec::new();
        loop {
            let page = r.page(from, 2048);
            assert!(page.encode().len() <= 2048, "{}", page.encode().len());
            let v: Value = serde_json::from_str(&page.message).unwrap();
            for e in v["resources"].as_array().unwrap() {
                seen.push(e["name"].as_str().unwrap().to_string());
            }
            match v["next"].as_u64() {
                Some(n) => from = n as usize,
                None => break,
            }
        }
        let want: Vec<String> = (0..40).map(|i| format!("resource-{i}")).collect();
        assert_eq!(seen, want);
        let v: Value = serde_json::from_str(&r.page(0, 1 << 20).message).unwrap();
        assert_eq!(
            v["resources"][5]["output"]["stdout"]
                .as_str()
                .unwrap()
                .len(),
            5000
        );
    }

    #[test]
    fn output_keeps_the_tail() {
        let out = ScriptOutput::new(Some(1), b"0123456789", b"", 4);
        assert_eq!(out.stdout, "6789");
        assert!(out.truncated);
    }

    #[test]
    fn ids() {
        let id = new_id(1_700_000_000);
        assert!(valid_id(&id), "{id}");
        assert!(id.starts_with("1700000000-"));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("A"));
    }
}
