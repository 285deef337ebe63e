//! The publisher's life on one XenStore connection after another: what wakes it, and what it
//! does then. Nothing here polls: it waits for the platform's events (addresses, host name,
//! clock jumps), XenStore watches (the domain's identity, static IP requests), the memory
//! timer when there is one, and the results of static IP requests being applied.
//!
//! Everything is published once at start, after the connection comes back (xenstored
//! restarted), after a resume or migration (the domain's `domid` or `unique-domain-id`
//! changed; both watches fire again when the kernel re-registers them after a resume), and
//! after the clock jumped (a `TFD_TIMER_CANCEL_ON_SET` timer on Linux); in between only what
//! changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use guestd_core::{Env, Shutdown};
use guestd_transport_xenstore::{Change, Store, WatchEvent, WatchStream, XsError};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::facts::{Event, Memory, Nic, OsFacts, Platform, parse_mac};
use crate::keys::{self, DeviceMacs, Inputs};
use crate::publisher::{Publisher, Reason};
use crate::static_ip::{self, Answer, RawRequest};

/// How the agent runs (from `[xen_metrics]`, `[xenstore]` and `[network]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Period of the memory figures; `None`: only with full publications.
    pub memory_interval: Option<Duration>,
    /// Offer and apply XenCenter's static IP setting.
    pub static_ip: bool,
    /// resetnetwork's network manager instead of the detected one.
    pub network_manager: Option<String>,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            memory_interval: Some(Duration::from_secs(60)),
            static_ip: true,
            network_manager: None,
            reconnect_max: Duration::from_secs(5),
        }
    }
}

/// A clock jump this soon after a full publication (a resume usually brings both) does not
/// bring another one.
const FULL_AGAIN_AFTER: Duration = Duration::from_secs(5);

const IDENTITY_PATHS: [&str; 2] = ["domid", "unique-domain-id"];

/// The domain's identity: it changes when the domain is resumed or migrated.
type Identity = [Option<Vec<u8>>; 2];

/// A static IP request carried out on a blocking thread.
struct Applied {
    request: RawRequest,
    answer: Answer,
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

/// Everything the agent remembers across connections.
struct Agent<P: Platform> {
    path: PathBuf,
    settings: Settings,
    env: Env,
    platform: P,
    publisher: Publisher,
    os: OsFacts,
    memory: Option<Memory>,
    nics: Vec<Nic>,
    devices: DeviceMacs,
    /// MACs of interfaces no vif or VF matched, already looked up.
    unmatched: BTreeSet<[u8; 6]>,
    identity: Option<Identity>,
    last_full: Option<Instant>,
    /// The static IP request being applied.
    applying: Option<RawRequest>,
    /// Answered requests whose trigger could not be removed: not applied again.
    answered: BTreeMap<String, RawRequest>,
    rescan: bool,
    applied_tx: mpsc::UnboundedSender<Applied>,
}

/// Publish the guest metrics over XenStore backend `S` at `path` until `shutdown`.
pub async fn publish<S: Store, P: Platform>(
    path: PathBuf,
    settings: Settings,
    platform: P,
    env: Env,
    mut shutdown: Shutdown,
) {
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel();
    info!(
        path = %path.display(),
        backend = S::BACKEND,
        platform = P::NAME,
        memory_interval_secs = settings.memory_interval.map_or(0, |d| d.as_secs()),
        static_ip = settings.static_ip,
        "publishing the Xen guest metrics"
    );
    let mut agent = Agent {
        path,
        settings,
        env,
        platform,
        publisher: Publisher::new(),
        os: OsFacts::default(),
        memory: None,
        nics: Vec::new(),
        devices: DeviceMacs::default(),
        unmatched: BTreeSet::new(),
        identity: None,
        last_full: None,
        applying: None,
        answered: BTreeMap::new(),
        rescan: false,
        applied_tx,
    };
    let mut reason = Reason::Start;
    let mut session = S::connect(&agent.path);
    loop {
        let s = match session {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "XenStore is not reachable for the guest metrics; retrying with backoff");
                match reconnect::<S>(&agent.path, agent.settings.reconnect_max, &mut shutdown).await
                {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        match agent
            .session(&s, reason, &mut shutdown, &mut applied_rx)
            .await
        {
            Ended::Shutdown => {
                info!("Xen guest metrics stopped");
                return;
            }
            Ended::Lost(e) => {
                warn!(error = %e, "XenStore connection of the guest metrics lost; reconnecting")
            }
        }
        drop(s);
        reason = Reason::Reconnected;
        session =
            match reconnect::<S>(&agent.path, agent.settings.reconnect_max, &mut shutdown).await {
                Some(s) => Ok(s),
                None => return,
            };
    }
}

/// Connect again with exponential backoff; `None` on shutdown.
async fn reconnect<S: Store>(
    path: &std::path::Path,
    max: Duration,
    shutdown: &mut Shutdown,
) -> Option<S> {
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        attempts += 1;
        match S::connect(path) {
            Ok(s) => return Some(s),
            Err(e) => {
                debug!(error = %e, attempts, "XenStore still not reachable");
                delay = (delay * 2).min(max.max(Duration::from_millis(100)));
            }
        }
    }
}

impl<P: Platform> Agent<P> {
    async fn session<S: Store>(
        &mut self,
        s: &S,
        reason: Reason,
        shutdown: &mut Shutdown,
        applied: &mut mpsc::UnboundedReceiver<Applied>,
    ) -> Ended {
        let mut domid = match s.watch(IDENTITY_PATHS[0], "guestd-metrics-domid").await {
            Ok(w) => w,
            Err(e) => return Ended::Lost(e),
        };
        let mut unique = match s.watch(IDENTITY_PATHS[1], "guestd-metrics-uuid").await {
            Ok(w) => w,
            Err(e) => return Ended::Lost(e),
        };
        let mut requests = if self.settings.static_ip {
            match s
                .watch(static_ip::REQUESTS, "guestd-metrics-static-ip")
                .await
            {
                Ok(w) => Some(w),
                Err(e) if e.is_connection_lost() => return Ended::Lost(e),
                Err(e) => {
                    warn!(error = %e, "cannot watch {} for static IP requests", static_ip::REQUESTS);
                    None
                }
            }
        } else {
            None
        };
        let mut memory_timer = self.settings.memory_interval.map(|every| {
            let mut t = tokio::time::interval_at(Instant::now() + every, every);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        match read_identity(s).await {
            Ok(id) => self.identity = Some(id),
            Err(e) => return Ended::Lost(e),
        }
        if let Err(e) = self.publish(s, reason).await {
            return Ended::Lost(e);
        }
        if let Err(e) = self.scan_requests(s).await {
            return Ended::Lost(e);
        }
        loop {
            let step: Result<(), XsError> = tokio::select! {
                _ = shutdown.wait() => return Ended::Shutdown,
                event = identity_changed(&mut domid, &mut unique) => match event {
                    None => Err(XsError::Disconnected),
                    Some(()) => self.check_identity(s).await,
                },
                event = self.platform.next_event() => self.on_event(s, event).await,
                () = tick(&mut memory_timer) => {
                    self.memory = self.platform.memory(&self.env.root);
                    self.os = self.platform.os(&self.env.root);
                    self.publish(s, Reason::Changed).await
                }
                event = next_request(&mut requests) => match event {
                    None => Err(XsError::Disconnected),
                    Some(()) => self.scan_requests(s).await,
                },
                Some(done) = applied.recv() => self.answer(s, done).await,
            };
            if let Err(e) = step {
                return Ended::Lost(e);
            }
        }
    }

    async fn on_event<S: Store>(&mut self, s: &S, event: Event) -> Result<(), XsError> {
        match event {
            Event::Network => {
                self.nics = self.platform.nics(&self.env.root);
                self.refresh_devices_for_new_macs(s).await?;
                self.publish(s, Reason::Changed).await
            }
            Event::Hostname => {
                self.os = self.platform.os(&self.env.root);
                self.publish(s, Reason::Changed).await
            }
            Event::ClockJump => {
                if self
                    .last_full
                    .is_some_and(|at| at.elapsed() < FULL_AGAIN_AFTER)
                {
                    debug!("the clock jumped right after a full publication; nothing more to do");
                    return Ok(());
                }
                info!("the clock jumped (resume, migration or clock set): republishing everything");
                self.publish(s, Reason::ClockJump).await
            }
        }
    }

    async fn check_identity<S: Store>(&mut self, s: &S) -> Result<(), XsError> {
        let now = read_identity(s).await?;
        let before = self.identity.replace(now.clone());
        if before.is_some_and(|b| b != now) {
            let show = |v: &Option<Vec<u8>>| {
                v.as_deref()
                    .map_or("-".into(), |b| String::from_utf8_lossy(b).into_owned())
            };
            info!(
                domid = %show(&now[0]),
                unique_domain_id = %show(&now[1]),
                "the domain was resumed or migrated: republishing everything"
            );
            self.publish(s, Reason::Resumed).await?;
        }
        Ok(())
    }

    /// Interfaces the OS does not tie to a vif are matched by MAC against the toolstack's
    /// lists: read them again when such an interface shows a MAC not seen before.
    async fn refresh_devices_for_new_macs<S: Store>(&mut self, s: &S) -> Result<(), XsError> {
        let known = |mac: &[u8; 6]| {
            self.devices.vifs.iter().any(|(_, m)| m == mac)
                || self.devices.sriov.iter().any(|(_, m)| m == mac)
        };
        let new: Vec<[u8; 6]> = self
            .nics
            .iter()
            .filter(|n| n.vif.is_none())
            .filter_map(|n| n.mac)
            .filter(|m| !known(m) && !self.unmatched.contains(m))
            .collect();
        if !new.is_empty() {
            self.unmatched.extend(new);
            self.devices = read_devices(s).await?;
        }
        Ok(())
    }

    async fn publish<S: Store>(&mut self, s: &S, reason: Reason) -> Result<(), XsError> {
        if reason.full() {
            self.os = self.platform.os(&self.env.root);
            self.memory = self.platform.memory(&self.env.root);
            self.nics = self.platform.nics(&self.env.root);
            self.devices = read_devices(s).await?;
            self.unmatched.clear();
        }
        let mut features: Vec<&str> = self.platform.control_features().to_vec();
        if self.settings.static_ip {
            features.push(static_ip::FEATURE);
        }
        let desired = keys::desired(&Inputs {
            os: &self.os,
            memory: self.memory,
            nics: &self.nics,
            devices: &self.devices,
            features: &features,
        });
        match self.publisher.publish(s, &desired, reason).await {
            Ok(_) => {
                if reason.full() {
                    self.last_full = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) if e.is_connection_lost() => Err(e),
            Err(e) => {
                warn!(error = %e, "publishing the guest metrics failed; the next change tries again");
                Ok(())
            }
        }
    }

    /// Look for static IP requests; start the first one not yet answered.
    async fn scan_requests<S: Store>(&mut self, s: &S) -> Result<(), XsError> {
        if !self.settings.static_ip {
            return Ok(());
        }
        if self.applying.is_some() {
            self.rescan = true;
            return Ok(());
        }
        self.rescan = false;
        let mut vifs = match s.directory(static_ip::REQUESTS).await {
            Ok(v) => v,
            Err(e) if e.is_connection_lost() => return Err(e),
            Err(_) => Vec::new(),
        };
        vifs.sort_by_key(|v| (v.parse::<u64>().unwrap_or(u64::MAX), v.clone()));
        self.answered.retain(|vif, _| vifs.contains(vif));
        for vif in vifs {
            let request = read_request(s, &vif).await?;
            if !request.pending() {
                self.answered.remove(&vif);
                continue;
            }
            if self.answered.get(&vif) == Some(&request) {
                continue;
            }
            info!(vif = %vif, "static IP setting requested");
            self.applying = Some(request.clone());
            let env = self.env.clone();
            let manager = self.settings.network_manager.clone();
            let tx = self.applied_tx.clone();
            tokio::task::spawn_blocking(move || {
                let answer = static_ip::apply(&env, manager.as_deref(), &request);
                let _ = tx.send(Applied { request, answer });
            });
            return Ok(());
        }
        Ok(())
    }

    /// Write a request's result beside it and remove its trigger, as the Windows PV tools do.
    async fn answer<S: Store>(&mut self, s: &S, done: Applied) -> Result<(), XsError> {
        self.applying = None;
        let Applied { request, answer } = done;
        let dir = RawRequest::dir(&request.vif);
        if answer.code == 0 {
            info!(vif = %request.vif, "static IP setting applied");
        } else {
            warn!(vif = %request.vif, code = answer.code, message = %answer.message, "static IP setting not applied");
        }
        let mut changes = vec![
            Change::write(format!("{dir}/error-code"), answer.code.to_string()),
            Change::write(format!("{dir}/error-msg"), answer.message.clone()),
        ];
        if request.enabled.is_some() {
            changes.push(Change::remove(format!("{dir}/enabled")));
        }
        if request.enabled6.is_some() {
            changes.push(Change::remove(format!("{dir}/enabled6")));
        }
        match s.transact(&changes).await {
            Ok(outcomes) => {
                for (c, o) in changes.iter().zip(outcomes) {
                    if let Err(e) = o {
                        warn!(key = %c.path(), error = %e, "cannot write the static IP result");
                    }
                }
            }
            Err(e) if e.is_connection_lost() => return Err(e),
            Err(e) => warn!(error = %e, "cannot write the static IP result"),
        }
        self.answered.insert(request.vif.clone(), request);
        self.scan_requests(s).await
    }
}

async fn read_identity<S: Store>(s: &S) -> Result<Identity, XsError> {
    Ok([
        read_optional(s, IDENTITY_PATHS[0]).await?,
        read_optional(s, IDENTITY_PATHS[1]).await?,
    ])
}

/// A value, or `None` when it is absent or unreadable; only a lost connection is an error.
async fn read_optional<S: Store>(s: &S, path: &str) -> Result<Option<Vec<u8>>, XsError> {
    match s.read(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_connection_lost() => Err(e),
        Err(_) => Ok(None),
    }
}

async fn read_text<S: Store>(s: &S, path: &str) -> Result<Option<String>, XsError> {
    Ok(read_optional(s, path)
        .await?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

async fn read_request<S: Store>(s: &S, vif: &str) -> Result<RawRequest, XsError> {
    let dir = RawRequest::dir(vif);
    let mut r = RawRequest {
        vif: vif.to_string(),
        enabled: read_text(s, &format!("{dir}/enabled")).await?,
        enabled6: read_text(s, &format!("{dir}/enabled6")).await?,
        ..Default::default()
    };
    if r.pending() {
        r.mac = read_text(s, &format!("{dir}/mac")).await?;
        r.address = read_text(s, &format!("{dir}/address")).await?;
        r.gateway = read_text(s, &format!("{dir}/gateway")).await?;
        r.address6 = read_text(s, &format!("{dir}/address6")).await?;
        r.gateway6 = read_text(s, &format!("{dir}/gateway6")).await?;
    }
    Ok(r)
}

/// The toolstack's vifs and SR-IOV VFs with their MACs.
async fn read_devices<S: Store>(s: &S) -> Result<DeviceMacs, XsError> {
    let mut devices = DeviceMacs::default();
    for id in list(s, keys::VIF_DEVICES).await? {
        let (Ok(n), Some(mac)) = (
            id.parse::<u32>(),
            read_text(s, &format!("{}/{id}/mac", keys::VIF_DEVICES))
                .await?
                .as_deref()
                .and_then(parse_mac),
        ) else {
            continue;
        };
        devices.vifs.push((n, mac));
    }
    for id in list(s, keys::SRIOV_DEVICES).await? {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        if let Some(mac) = read_text(s, &format!("{}/{id}/mac", keys::SRIOV_DEVICES))
            .await?
            .as_deref()
            .and_then(parse_mac)
        {
            devices.sriov.push((id, mac));
        }
    }
    Ok(devices)
}

async fn list<S: Store>(s: &S, path: &str) -> Result<Vec<String>, XsError> {
    match s.directory(path).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_connection_lost() => Err(e),
        Err(_) => Ok(Vec::new()),
    }
}

/// Either identity watch fired (events already queued are taken along); `None` when the
/// connection is gone.
async fn identity_changed(a: &mut WatchStream, b: &mut WatchStream) -> Option<()> {
    let first: Option<WatchEvent> = tokio::select! {
        e = a.next() => e,
        e = b.next() => e,
    };
    first?;
    while a.try_next().is_some() || b.try_next().is_some() {}
    Some(())
}

async fn next_request(watch: &mut Option<WatchStream>) -> Option<()> {
    match watch {
        Some(w) => {
            w.next().await?;
            while w.try_next().is_some() {}
            Some(())
        }
        None => std::future::pending().await,
    }
}

async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
