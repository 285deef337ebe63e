//! Safe retries: replies remembered by request id.
//!
//! A host that loses a reply (the virtio-serial host reconnected, a TCP connection broke) sends
//! the same request with the same `"id"` again. The [`ReplyCache`] of the transport answers it
//! with the reply it already produced, without running the command a second time. A retry that
//! arrives while the first attempt still runs waits for that attempt's reply.
//!
//! An entry matches only if the id *and* the request bytes are the same, so a host that reuses
//! an id for a different request (or two hosts that count ids from 1) gets that request run.
//! Memory is bounded by [`ReplyCacheConfig::max_replies`] entries and [`ReplyCacheConfig::keep_secs`].

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::wire::Reply;

/// How many replies a transport remembers, and for how long (`[retry]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplyCacheConfig {
    /// Replies remembered per transport; 0 turns safe retries off.
    pub max_replies: usize,
    /// Seconds a reply is remembered.
    pub keep_secs: u64,
}

impl Default for ReplyCacheConfig {
    fn default() -> Self {
        Self {
            max_replies: 256,
            keep_secs: 600,
        }
    }
}

/// Replies of one transport, by request id.
pub struct ReplyCache {
    max: usize,
    keep: Duration,
    inner: Mutex<Inner>,
}

impl fmt::Debug for ReplyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyCache")
            .field("max", &self.max)
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Insertion order for eviction: (sequence number, key). Stale pairs are skipped.
    order: VecDeque<(u64, String)>,
    next_seq: u64,
}

struct Entry {
    seq: u64,
    fingerprint: u64,
    created: Instant,
    state: State,
}

enum State {
    /// The first attempt runs; retries wait for its reply.
    Running(watch::Receiver<Option<Reply>>),
    Done(Reply),
}

/// What a lookup decided.
enum Plan {
    Replay(Reply),
    Wait(watch::Receiver<Option<Reply>>),
    Run(watch::Sender<Option<Reply>>, u64),
}

impl ReplyCache {
    pub fn new(config: &ReplyCacheConfig) -> Self {
        Self {
            max: config.max_replies,
            keep: Duration::from_secs(config.keep_secs),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether replies are remembered at all.
    pub fn is_enabled(&self) -> bool {
        self.max > 0 && !self.keep.is_zero()
    }

    /// Number of remembered (or running) requests.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reply to request `line` with `id`: the remembered one if this is a retry, otherwise
    /// the result of `run` (which is then remembered).
    pub async fn answer<F, Fut>(&self, id: &Value, line: &[u8], run: F) -> Reply
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Reply>,
    {
        if !self.is_enabled() {
            return run().await;
        }
        let key = id_key(id);
        let fingerprint = fingerprint(line);
        loop {
            match self.plan(&key, fingerprint) {
                Plan::Replay(reply) => {
                    info!(id = %key, "retried request: sending the remembered reply");
                    return reply;
                }
                Plan::Wait(mut rx) => {
                    info!(id = %key, "retried request: waiting for the first attempt's reply");
                    if let Ok(reply) = rx.wait_for(Option::is_some).await {
                        return reply.clone().expect("waited for Some");
                    }
                    // The first attempt was cancelled before it replied: try again.
                }
                Plan::Run(tx, seq) => {
                    let mut guard = RunGuard {
                        cache: self,
                        key: &key,
                        seq,
                        done: false,
                    };
                    let reply = run().await;
                    guard.finish(&reply);
                    let _ = tx.send(Some(reply.clone()));
                    return reply;
                }
            }
        }
    }

    fn plan(&self, key: &str, fingerprint: u64) -> Plan {
        let now = Instant::now();
        let mut inner = self.lock();
        self.evict(&mut inner, now);
        if let Some(entry) = inner.entries.get(key)
            && entry.fingerprint == fingerprint
        {
            match &entry.state {
                State::Done(reply) => return Plan::Replay(reply.clone()),
                State::Running(rx) => return Plan::Wait(rx.clone()),
            }
        } else if inner.entries.contains_key(key) {
            debug!(id = %key, "request id reused for a different request; running it");
        }
        let (tx, rx) = watch::channel(None);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert(
            key.to_owned(),
            Entry {
                seq,
                fingerprint,
                created: now,
                state: State::Running(rx),
            },
        );
        inner.order.push_back((seq, key.to_owned()));
        self.evict(&mut inner, now);
        Plan::Run(tx, seq)
    }

    /// Drop expired entries and the oldest ones beyond the limit.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some((seq, key)) = inner.order.front() {
            let live = inner.entries.get(key).filter(|e| e.seq == *seq);
            let drop = match live {
                None => true,
                Some(e) => {
                    inner.entries.len() > self.max || now.duration_since(e.created) >= self.keep
                }
            };
            if !drop {
                break;
            }
            let (seq, key) = inner.order.pop_front().expect("front exists");
            if inner.entries.get(&key).is_some_and(|e| e.seq == seq) {
                inner.entries.remove(&key);
            }
        }
    }
}

/// Marks the entry done, or removes it if the attempt was cancelled (so a retry runs it).
struct RunGuard<'a> {
    cache: &'a ReplyCache,
    key: &'a str,
    seq: u64,
    done: bool,
}

impl RunGuard<'_> {
    fn finish(&mut self, reply: &Reply) {
        let mut inner = self.cache.lock();
        if let Some(entry) = inner.entries.get_mut(self.key)
            && entry.seq == self.seq
        {
            entry.state = State::Done(reply.clone());
        }
        self.done = true;
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut inner = self.cache.lock();
            if inner
                .entries
                .get(self.key)
                .is_some_and(|e| e.seq == self.seq)
            {
                inner.entries.remove(self.key);
            }
        }
    }
}

/// Ids are strings or numbers; `"7"` and `7` are different ids.
fn id_key(id: &Value) -> String {
    id.to_string()
}

fn fingerprint(line: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    line.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cache(max: usize, keep: u64) -> ReplyCache {
        ReplyCache::new(&ReplyCacheConfig {
            max_replies: max,
            keep_secs: keep,
        })
    }

    async fn ask(c: &ReplyCache, id: Value, line: &str, runs: &AtomicUsize) -> Reply {
        c.answer(&id, line.as_bytes(), || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::ok(format!("run {n}"))
        })
        .await
    }

    #[tokio::test]
    async fn same_id_and_request_replays_without_running() {
        let c = cache(8, 60);
        let runs = AtomicUsize::new(0);
        let a = ask(&c, json!("a"), "req", &runs).await;
        let b = ask(&c, json!("a"), "req", &runs).await;
        assert_eq!(a, b);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn different_request_or_id_runs_again() {
        let c = cache(8, 60);
        let runs = AtomicUsize::new(0);
        ask(&c, json!(1), "req", &runs).await;
        assert_eq!(ask(&c, json!(1), "other", &runs).await.message, "run 2");
        assert_eq!(ask(&c, json!("1"), "other", &runs).await.message, "run 3");
        assert_eq!(ask(&c, json!(2), "req", &runs).await.message, "run 4");
    }

    #[tokio::test]
    async fn bounded_by_count() {
        let c = cache(3, 60);
        let runs = AtomicUsize::new(0);
        for i in 0..10 {
            ask(&c, json!(i), "req", &runs).await;
        }
        assert_eq!(c.len(), 3);
        // The oldest were forgotten, the newest are remembered.
        assert_eq!(ask(&c, json!(9), "req", &runs).await.message, "run 10");
        assert_eq!(ask(&c, json!(0), "req", &runs).await.message, "run 11");
    }

    #[tokio::test]
    async fn zero_disables() {
        let c = cache(0, 60);
        let runs = AtomicUsize::new(0);
        ask(&c, json!(1), "req", &runs).await;
        ask(&c, json!(1), "req", &runs).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn expires_after_keep() {
        // keep_secs has whole seconds; a short keep keeps the test fast.
        let c = ReplyCache {
            max: 8,
            keep: Duration::from_millis(20),
            inner: Mutex::new(Inner::default()),
        };
        let runs = AtomicUsize::new(0);
        ask(&c, json!(1), "req", &runs).await;
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ask(&c, json!(1), "req", &runs).await.message, "run 2");
    }

    #[tokio::test]
    async fn retry_during_first_attempt_waits_for_it() {
        let c = Arc::new(cache(8, 60));
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (c, runs) = (c.clone(), runs.clone());
            tokio::spawn(async move {
                c.answer(&json!("x"), b"req", || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    released.await.unwrap();
                    Reply::ok("first")
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let (c, runs) = (c.clone(), runs.clone());
            tokio::spawn(async move { ask(&c, json!("x"), "req", &runs).await })
        };
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().message, "first");
        assert_eq!(second.await.unwrap().message, "first");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cancelled_attempt_is_forgotten() {
        let c = cache(8, 60);
        let runs = AtomicUsize::new(0);
        let id = json!(5);
        let pending = c.answer(&id, b"req", std::future::pending::<Reply>);
        // Poll once, then drop: the entry must not stay "running" forever.
        let _ = tokio::time::timeout(Duration::from_millis(5), pending).await;
        assert_eq!(ask(&c, json!(5), "req", &runs).await.message, "run 1");
    }
}
