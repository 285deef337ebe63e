//! The publisher against test-xenstored: one transaction per publication, conflicts retried,
//! only changes written afterwards, a full publication sweeping what an earlier run left.
#![cfg(unix)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use guestd_test_xenstored::{Config, TestXenstored, Toolstack};
use guestd_transport_xenstore::xeniface::emulated::EmulatedDevice;
use guestd_transport_xenstore::{
    Change, Outcomes, Store, WatchStream, XenifaceStore, XsClient, XsError,
};
use guestd_xen_metrics::keys::Keys;
use guestd_xen_metrics::publisher::{Publisher, Reason};

const HOME: &str = "/local/domain/5";

/// The real client, whose first `conflicts` transactions fail as a conflicting commit does;
/// it counts the transactions.
#[derive(Clone)]
struct Conflicting {
    inner: XsClient,
    conflicts: Arc<AtomicU32>,
    transactions: Arc<AtomicU32>,
}

impl Store for Conflicting {
    const BACKEND: &'static str = "conflicting";
    fn connect(path: &Path) -> Result<Self, XsError> {
        Ok(Self {
            inner: XsClient::open(path)?,
            conflicts: Arc::default(),
            transactions: Arc::default(),
        })
    }
    async fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.inner.read(path).await
    }
    async fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.inner.write(path, value).await
    }
    async fn mkdir(&self, path: &str) -> Result<(), XsError> {
        self.inner.mkdir(path).await
    }
    async fn rm(&self, path: &str) -> Result<(), XsError> {
        self.inner.rm(path).await
    }
    async fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        self.inner.directory(path).await
    }
    async fn watch(&self, path: &str, token: &str) -> Result<WatchStream, XsError> {
        self.inner.watch(path, token).await
    }
    async fn transact(&self, changes: &[Change]) -> Result<Outcomes, XsError> {
        self.transactions.fetch_add(1, Ordering::SeqCst);
        let left = self.conflicts.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts.store(left - 1, Ordering::SeqCst);
            return Err(XsError::Errno("EAGAIN".into()));
        }
        <XsClient as Store>::transact(&self.inner, changes).await
    }
}

fn keys(pairs: &[(&str, &str)]) -> Keys {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_retried_and_only_changes_follow() {
    let dir = tempfile::tempdir().unwrap();
    let _xs = TestXenstored::start(Config {
        dom0: Some(dir.path().join("dom0.sock")),
        guests: vec![(5, dir.path().join("guest5.sock"))],
        toolstack: Toolstack::Xapi,
        ..Config::default()
    })
    .unwrap();
    let dom0 = XsClient::connect(&dir.path().join("dom0.sock"))
        .await
        .unwrap();
    // What an earlier guestd left: a vif that is gone, an address that is gone, an old name.
    for (k, v) in [
        ("attr/vif/9/ipv4/0", "10.9.9.9"),
        ("attr/vif/0/ipv4/3", "192.0.2.99"),
        ("data/domain", "old.example"),
    ] {
        dom0.write(&format!("{HOME}/{k}"), v.as_bytes())
            .await
            .unwrap();
    }
    let s = Conflicting::connect(&dir.path().join("guest5.sock")).unwrap();
    s.conflicts.store(3, Ordering::SeqCst);
    let mut p = Publisher::new();
    let desired = keys(&[
        ("attr/vif/0/ipv4/0", "192.0.2.1"),
        ("data/os_name", "Debian"),
        ("data/meminfo_free", "100"),
    ]);
    let done = p.publish(&s, &desired, Reason::Start).await.unwrap();
    assert_eq!(
        s.transactions.load(Ordering::SeqCst),
        4,
        "3 conflicts, then the commit"
    );
    assert_eq!(done.written, 3);
    assert_eq!(done.removed, 3, "{done:?}");
    let read = |k: &str| {
        let dom0 = dom0.clone();
        let k = format!("{HOME}/{k}");
        async move {
            dom0.read_optional(&k)
                .await
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap())
        }
    };
    assert_eq!(
        read("attr/vif/0/ipv4/0").await.as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(read("attr/vif/0/ipv4/3").await, None);
    assert_eq!(read("attr/vif/9").await, None);
    assert_eq!(read("data/domain").await, None);
    assert!(read("data/updated").await.is_some());

    // Only the change goes out next time, in one more transaction.
    let mut next = desired.clone();
    next.insert("data/meminfo_free".into(), "90".into());
    let done = p.publish(&s, &next, Reason::Changed).await.unwrap();
    assert_eq!((done.written, done.removed), (1, 0));
    assert_eq!(s.transactions.load(Ordering::SeqCst), 5);
    // Nothing changed: no transaction at all.
    let done = p.publish(&s, &next, Reason::Changed).await.unwrap();
    assert_eq!(done, Default::default());
    assert_eq!(s.transactions.load(Ordering::SeqCst), 5);

    // Conflicts that do not stop: the publication is abandoned, nothing recorded, and the next
    // one writes it.
    s.conflicts.store(100, Ordering::SeqCst);
    let mut later = next.clone();
    later.insert("data/meminfo_free".into(), "80".into());
    let err = p.publish(&s, &later, Reason::Changed).await.unwrap_err();
    assert!(err.is("EAGAIN"));
    s.conflicts.store(0, Ordering::SeqCst);
    let done = p.publish(&s, &later, Reason::Changed).await.unwrap();
    assert_eq!(done.written, 1);
    assert_eq!(read("data/meminfo_free").await.as_deref(), Some("80"));
}

/// The Windows backend (xeniface, here over its emulated device): no transactions, the keys
/// one after the other, the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xeniface_publishes_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let _xs = TestXenstored::start(Config {
        dom0: Some(dir.path().join("dom0.sock")),
        guests: vec![(5, dir.path().join("guest5.sock"))],
        toolstack: Toolstack::Xapi,
        ..Config::default()
    })
    .unwrap();
    let dom0 = XsClient::connect(&dir.path().join("dom0.sock"))
        .await
        .unwrap();
    dom0.write(&format!("{HOME}/attr/vif/3/ipv4/0"), b"10.3.3.3")
        .await
        .unwrap();
    let s = XenifaceStore::<EmulatedDevice>::connect(&dir.path().join("guest5.sock")).unwrap();
    let mut p = Publisher::new();
    let desired = keys(&[
        ("attr/vif/0/ipv4/0", "192.0.2.1"),
        ("data/os_name", "Windows"),
    ]);
    let done = p.publish(&s, &desired, Reason::Start).await.unwrap();
    assert_eq!((done.written, done.removed, done.refused), (2, 1, 0));
    let listing = dom0.directory(&format!("{HOME}/attr/vif")).await.unwrap();
    assert_eq!(listing, ["0"]);
    assert!(
        dom0.read_optional(&format!("{HOME}/data/updated"))
            .await
            .unwrap()
            .is_some()
    );
}
