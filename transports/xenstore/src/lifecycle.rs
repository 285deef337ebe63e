//! The guest side of the request lifecycle (spec §2, §5, §12), watch-driven:
//!
//! 1. make sure `data/host` exists and watch it (never poll);
//! 2. at start-up, on every event and after every reconnect, list `data/host`;
//! 3. for each id not handled yet — in arrival order (watch event order, then listing order) —
//!    read the request (skip it if it vanished), dispatch it, write the whole reply to
//!    `data/guest/<id>` in one write, then remove `data/host/<id>`;
//! 4. remove our own replies once they are older than the configured age (and, when the node
//!    quota refuses a reply, those older than 5 s right away, then retry the write).
//!
//! An id is executed at most once per process: it stays in `handled` until it is gone from
//! `data/host`, and a reply that could not be delivered (connection lost) is kept and delivered
//! after the reconnect instead of running the command again.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use guestd_core::wire::{Reply, parse_request};
use guestd_core::{Channel, Dispatcher, Shutdown};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::client::{WatchStream, XsError};
use crate::store::Store;
use crate::wire::errno;

pub(crate) const REQUEST_DIR: &str = "data/host";
pub(crate) const REPLY_DIR: &str = "data/guest";
const WATCH_TOKEN: &str = "guestd-requests";

/// Tunables of the lifecycle (from [`crate::XenstoreConfig`]).
#[derive(Debug, Clone)]
pub(crate) struct Tunables {
    pub reply_max_age: Duration,
    pub max_reply_bytes: usize,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

/// The connection currently in use, shared with the `vm-data/` reader.
pub(crate) type Current<S> = Arc<RwLock<Option<S>>>;

pub(crate) struct Lifecycle<S: Store> {
    pub path: PathBuf,
    pub session: Option<S>,
    pub current: Current<S>,
    pub channel: Arc<Channel>,
    pub tunables: Tunables,
    /// Ids executed whose request node still existed at the last listing.
    handled: HashSet<String>,
    /// Ids in the order their watch events arrived, not yet handled.
    arrivals: Vec<String>,
    /// Replies computed but not yet written (or whose request is not yet removed).
    undelivered: VecDeque<(String, Vec<u8>)>,
    /// Our replies in `data/guest`, oldest first, for pruning.
    written: VecDeque<(Instant, String)>,
    /// Nothing is known yet about what a previous guestd left behind.
    fresh_start: bool,
}

/// Why a session ended.
enum Ended {
    Shutdown,
    Lost(XsError),
}

impl From<XsError> for Ended {
    fn from(e: XsError) -> Self {
        Ended::Lost(e)
    }
}

impl<S: Store> Lifecycle<S> {
    pub fn new(
        path: PathBuf,
        session: S,
        channel: Arc<Channel>,
        current: Current<S>,
        tunables: Tunables,
    ) -> Self {
        Self {
            path,
            session: Some(session),
            current,
            channel,
            tunables,
            handled: HashSet::new(),
            arrivals: Vec::new(),
            undelivered: VecDeque::new(),
            written: VecDeque::new(),
            fresh_start: true,
        }
    }

    fn set_current(&self, session: Option<S>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = session;
    }

    pub async fn serve(mut self, dispatcher: Arc<Dispatcher>, mut shutdown: Shutdown) {
        info!(path = %self.path.display(), backend = S::BACKEND, "serving XenStore requests");
        loop {
            let session = match self.session.take() {
                Some(s) => s,
                None => match self.reconnect(&mut shutdown).await {
                    Some(s) => s,
                    None => return,
                },
            };
            self.set_current(Some(session.clone()));
            let ended = self.run_session(&session, &dispatcher, &mut shutdown).await;
            self.set_current(None);
            match ended {
                Ended::Shutdown => {
                    info!("XenStore transport stopped");
                    return;
                }
                Ended::Lost(e) => {
                    warn!(path = %self.path.display(), error = %e, "XenStore connection lost; reconnecting");
                }
            }
        }
    }

    /// Connect again with exponential backoff; `None` on shutdown.
    async fn reconnect(&self, shutdown: &mut Shutdown) -> Option<S> {
        let mut delay = self.tunables.reconnect_initial;
        let mut attempts = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            attempts += 1;
            match S::connect(&self.path) {
                Ok(s) => {
                    info!(path = %self.path.display(), attempts, "reconnected to XenStore");
                    return Some(s);
                }
                Err(e) => {
                    // First failure at warn, the rest at debug: a long outage must not flood.
                    if attempts == 1 {
                        warn!(error = %e, "XenStore is not reachable yet; retrying with backoff");
                    } else {
                        debug!(error = %e, attempts, "XenStore still not reachable");
                    }
                    delay = (delay * 2).min(self.tunables.reconnect_max);
                }
            }
        }
    }

    async fn run_session(
        &mut self,
        s: &S,
        dispatcher: &Arc<Dispatcher>,
        shutdown: &mut Shutdown,
    ) -> Ended {
        match self.start_session(s, dispatcher, shutdown).await {
            Ok(watch) => self.event_loop(s, watch, dispatcher, shutdown).await,
            Err(e) => e,
        }
    }

    async fn start_session(
        &mut self,
        s: &S,
        dispatcher: &Arc<Dispatcher>,
        shutdown: &mut Shutdown,
    ) -> Result<WatchStream, Ended> {
        ensure_request_dir(s).await?;
        let watch = s.watch(REQUEST_DIR, WATCH_TOKEN).await?;
        if self.fresh_start {
            self.adopt_old_replies(s).await?;
        }
        self.deliver(s).await?;
        self.scan(s, dispatcher, shutdown).await?;
        self.fresh_start = false;
        Ok(watch)
    }

    async fn event_loop(
        &mut self,
        s: &S,
        mut watch: WatchStream,
        dispatcher: &Arc<Dispatcher>,
        shutdown: &mut Shutdown,
    ) -> Ended {
        loop {
            // The only timer: the next reply due for pruning (none when there is none).
            let prune_at = self
                .written
                .front()
                .map(|(at, _)| *at + self.tunables.reply_max_age);
            let step: Result<(), Ended> = tokio::select! {
                _ = shutdown.wait() => Err(Ended::Shutdown),
                event = watch.next() => match event {
                    None => Err(Ended::Lost(XsError::Disconnected)),
                    Some(first) => {
                        self.note_arrival(&first.path);
                        // Coalesce a burst of events into one listing.
                        while let Some(more) = watch.try_next() {
                            self.note_arrival(&more.path);
                        }
                        self.scan(s, dispatcher, shutdown).await
                    }
                },
                _ = sleep_until_opt(prune_at) => self.prune(s).await.map_err(Ended::from),
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    /// Remember which request an event is about (`data/host/<id>`), in arrival order.
    fn note_arrival(&mut self, event_path: &str) {
        let Some(rest) = event_path.split_once(REQUEST_DIR).map(|(_, r)| r) else {
            return;
        };
        let Some(id) = rest.strip_prefix('/').and_then(|r| r.split('/').next()) else {
            return;
        };
        if !id.is_empty() && !self.handled.contains(id) && !self.arrivals.iter().any(|a| a == id) {
            self.arrivals.push(id.to_string());
        }
    }

    /// List `data/host` and handle every new request.
    async fn scan(
        &mut self,
        s: &S,
        dispatcher: &Arc<Dispatcher>,
        shutdown: &Shutdown,
    ) -> Result<(), Ended> {
        let listed = match s.directory(REQUEST_DIR).await {
            Ok(ids) => ids,
            Err(e) if e.is_enoent() => {
                // Someone removed data/host: recreate it so the host can keep writing.
                ensure_request_dir(s).await?;
                Vec::new()
            }
            Err(e) if e.is_connection_lost() => return Err(e.into()),
            Err(e) => {
                // xenstored refused the listing: xeniface has no DIRECTORY_PART, so a
                // data/host over one message (~110 pending uuids) cannot be listed. Reconnecting
                // would not help; the next change (the host taking requests back) retries.
                error!(error = %e, "cannot list {REQUEST_DIR}; waiting for the next change");
                return Ok(());
            }
        };
        let present: HashSet<&str> = listed.iter().map(String::as_str).collect();
        self.handled.retain(|id| present.contains(id.as_str()));
        self.arrivals.retain(|id| present.contains(id.as_str()));
        // Arrival order first (watch events), then whatever the listing adds.
        let mut order: Vec<String> = std::mem::take(&mut self.arrivals);
        for id in &listed {
            if !order.contains(id) {
                order.push(id.clone());
            }
        }
        for (i, id) in order.iter().enumerate() {
            if self.handled.contains(id) {
                continue;
            }
            if shutdown.is_triggered() {
                // Leave the rest for the next guestd; keep their order.
                self.arrivals = order[i..].to_vec();
                return Err(Ended::Shutdown);
            }
            self.handle(s, id, dispatcher).await?;
        }
        Ok(())
    }

    async fn handle(&mut self, s: &S, id: &str, dispatcher: &Arc<Dispatcher>) -> Result<(), Ended> {
        let request_path = format!("{REQUEST_DIR}/{id}");
        let value = match s.read(&request_path).await {
            Ok(v) => v,
            Err(e) if e.is_enoent() => {
                debug!(%id, "request vanished before it was read; skipped");
                return Ok(());
            }
            Err(e) if e.is_connection_lost() => return Err(e.into()),
            Err(e) => {
                // EACCES and friends: not ours to answer; never retry it.
                warn!(%id, error = %e, "cannot read request; skipped");
                self.handled.insert(id.to_string());
                return Ok(());
            }
        };
        if self.fresh_start && self.already_answered(s, id).await? {
            return Ok(());
        }
        self.handled.insert(id.to_string());
        let mut incoming = parse_request(&value);
        incoming.id = Some(Value::String(id.to_string()));
        let reply = dispatcher.dispatch(&self.channel, incoming).await;
        let bytes = fit_reply(&reply, self.tunables.max_reply_bytes);
        self.undelivered.push_back((id.to_string(), bytes));
        self.deliver(s).await.map_err(Ended::from)
    }

    /// After a restart of guestd: a request whose reply already exists was answered by the
    /// previous process, which died before removing it. Remove it instead of running it again.
    async fn already_answered(&mut self, s: &S, id: &str) -> Result<bool, XsError> {
        match s.read(&format!("{REPLY_DIR}/{id}")).await {
            Ok(_) => {
                info!(%id, "request was answered before guestd restarted; removing it");
                self.handled.insert(id.to_string());
                remove_request(s, id).await?;
                Ok(true)
            }
            Err(e) if e.is_enoent() => Ok(false),
            Err(e) if e.is_connection_lost() => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Write pending replies and remove their requests. Replies stay queued while the
    /// connection is down.
    async fn deliver(&mut self, s: &S) -> Result<(), XsError> {
        while let Some((id, bytes)) = self.undelivered.front().cloned() {
            let path = format!("{REPLY_DIR}/{id}");
            let mut written = s.write(&path, &bytes).await;
            if written.as_ref().is_err_and(is_quota_error) {
                // The guest's node quota is full: make room with our own replies the host
                // has had ample time to read, then try once more.
                let freed = self.prune_older_than(s, QUOTA_PRUNE_AGE).await?;
                warn!(%id, freed, "node quota reached; removed older replies early");
                written = s.write(&path, &bytes).await;
            }
            match written {
                Ok(()) => self.written.push_back((Instant::now(), id.clone())),
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) => {
                    error!(%id, error = %e, "xenstored refused the reply; the host will time out");
                }
            }
            remove_request(s, &id).await?;
            self.undelivered.pop_front();
        }
        Ok(())
    }

    /// Replies left by an earlier guestd are ours too: prune them one full age from now.
    async fn adopt_old_replies(&mut self, s: &S) -> Result<(), XsError> {
        let old = match s.directory(REPLY_DIR).await {
            Ok(ids) => ids,
            Err(e) if e.is_connection_lost() => return Err(e),
            Err(_) => return Ok(()),
        };
        if !old.is_empty() {
            debug!(
                count = old.len(),
                "replies from an earlier run will be pruned later"
            );
        }
        let now = Instant::now();
        self.written.extend(old.into_iter().map(|id| (now, id)));
        Ok(())
    }

    /// Remove our replies older than the configured age (the host reads within seconds).
    async fn prune(&mut self, s: &S) -> Result<(), XsError> {
        let pruned = self
            .prune_older_than(s, self.tunables.reply_max_age)
            .await?;
        if pruned > 0 {
            debug!(pruned, "old replies removed");
        }
        Ok(())
    }

    /// Remove our replies written more than `age` ago; returns how many went.
    async fn prune_older_than(&mut self, s: &S, age: Duration) -> Result<usize, XsError> {
        let now = Instant::now();
        let mut pruned = 0usize;
        while let Some((at, id)) = self.written.front() {
            if now.duration_since(*at) < age {
                break;
            }
            match s.rm(&format!("{REPLY_DIR}/{id}")).await {
                Ok(()) => {}
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) if e.is_enoent() => {}
                Err(e) => warn!(%id, error = %e, "cannot remove an old reply"),
            }
            self.written.pop_front();
            pruned += 1;
        }
        Ok(pruned)
    }
}

/// Replies at least this old may go early when the node quota is full (the host reads a
/// reply within its 0.5 s poll, or never).
const QUOTA_PRUNE_AGE: Duration = Duration::from_secs(5);

/// oxenstored says `EQUOTA`, C xenstored `ENOSPC`; libxenstore turns unknown names into
/// `EINVAL`, which a reply write (valid path, value within the limit) cannot otherwise cause;
/// the Windows drivers turn them into `STATUS_UNSUCCESSFUL` ([`xeniface::codec::UNNAMED`]).
///
/// [`xeniface::codec::UNNAMED`]: crate::xeniface::codec::UNNAMED
fn is_quota_error(e: &XsError) -> bool {
    e.is("EQUOTA")
        || e.is(errno::ENOSPC)
        || e.is(errno::EINVAL)
        || e.is(crate::xeniface::codec::UNNAMED)
}

async fn ensure_request_dir<S: Store>(s: &S) -> Result<(), XsError> {
    match s.mkdir(REQUEST_DIR).await {
        Err(e) if e.is(errno::EEXIST) => Ok(()),
        other => other,
    }
}

async fn remove_request<S: Store>(s: &S, id: &str) -> Result<(), XsError> {
    match s.rm(&format!("{REQUEST_DIR}/{id}")).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_connection_lost() => Err(e),
        Err(e) if e.is_enoent() => Ok(()),
        Err(e) => {
            warn!(%id, error = %e, "cannot remove the request node");
            Ok(())
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

const TRUNCATED: &str = " [truncated]";

/// The reply as written: the JSON object, at most `max` bytes. A longer reply keeps its code
/// and JSON shape; only the message is shortened (and marked).
pub fn fit_reply(reply: &Reply, max: usize) -> Vec<u8> {
    let full = reply.encode();
    if full.len() <= max {
        return full.into_bytes();
    }
    let chars: Vec<char> = reply.message.chars().collect();
    let encode = |keep: usize| {
        let message: String = chars[..keep].iter().collect::<String>() + TRUNCATED;
        Reply::new(reply.returncode.clone(), message).encode()
    };
    // Largest prefix that fits (escapes make the encoded size non-linear; it is monotonic).
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if encode(mid).len() <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let shortened = encode(lo);
    warn!(
        original = full.len(),
        written = shortened.len(),
        "reply longer than the guest's value quota; message shortened"
    );
    if shortened.len() <= max {
        shortened.into_bytes()
    } else {
        Reply::error("reply too large").encode().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_replies_are_untouched() {
        let r = Reply::ok("1.0");
        assert_eq!(fit_reply(&r, 2048), r.encode().into_bytes());
    }

    #[test]
    fn long_replies_shorten_the_message_only() {
        for message in ["x".repeat(5000), "\u{e9}".repeat(3000), "\"\n".repeat(3000)] {
            let bytes = fit_reply(&Reply::new("500", message.clone()), 2048);
            assert!(bytes.len() <= 2048, "{}", bytes.len());
            assert!(bytes.len() > 2000, "uses the room it has: {}", bytes.len());
            let (_, back) = Reply::decode(std::str::from_utf8(&bytes).unwrap()).unwrap();
            assert_eq!(back.returncode, "500");
            assert!(back.message.ends_with(TRUNCATED));
            let kept = back.message.strip_suffix(TRUNCATED).unwrap();
            assert!(message.starts_with(kept));
        }
    }

    #[test]
    fn absurd_return_code_still_gives_an_object() {
        let bytes = fit_reply(&Reply::new("9".repeat(3000), "m"), 2048);
        let (_, back) = Reply::decode(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(back, Reply::error("reply too large"));
    }
}
