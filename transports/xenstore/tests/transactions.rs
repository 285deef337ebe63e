//! `Store::transact` against test-xenstored, once per backend (native, xeniface over its
//! emulated device, libxenstore when the feature is on): every change applied, a refused
//! change reported in its slot without stopping the others, removals of absent nodes fine,
//! and, for the native client's raw transaction calls, a conflicting commit refused with
//! `EAGAIN` and nothing of it applied.
#![cfg(unix)]

use std::path::Path;

use guestd_test_xenstored::{Config, TestXenstored, Toolstack};
use guestd_transport_xenstore::xeniface::emulated::EmulatedDevice;
use guestd_transport_xenstore::{Change, Store, XenifaceStore, XsClient};

const HOME: &str = "/local/domain/5";

fn start(dir: &Path) -> TestXenstored {
    TestXenstored::start(Config {
        dom0: Some(dir.join("dom0.sock")),
        guests: vec![(5, dir.join("guest5.sock"))],
        toolstack: Toolstack::Xapi,
        ..Config::default()
    })
    .expect("test-xenstored starts")
}

async fn check<S: Store>(dir: &Path) {
    let guest = S::connect(&dir.join("guest5.sock")).expect("guest connects");
    let dom0 = XsClient::connect(&dir.join("dom0.sock")).await.unwrap();
    dom0.write(&format!("{HOME}/attr/stale/0"), b"old")
        .await
        .unwrap();
    let changes = [
        Change::write("attr/vif/0/ipv4/0", "10.0.0.2"),
        Change::write("name", "not mine"),
        Change::remove("attr/stale"),
        Change::remove("attr/never/there"),
        Change::write("data/updated", "1"),
    ];
    let outcomes = guest.transact(&changes).await.expect("transaction commits");
    assert_eq!(outcomes.len(), changes.len(), "{}", S::BACKEND);
    assert!(outcomes[0].is_ok(), "{}: {:?}", S::BACKEND, outcomes[0]);
    assert!(
        outcomes[1].as_ref().is_err_and(|e| e.is("EACCES")),
        "{}: a read-only node is refused in its slot: {:?}",
        S::BACKEND,
        outcomes[1]
    );
    assert!(outcomes[2].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
    assert!(outcomes[4].is_ok());
    let read = |p: String| {
        let dom0 = dom0.clone();
        async move { dom0.read_optional(&p).await.unwrap() }
    };
    assert_eq!(
        read(format!("{HOME}/attr/vif/0/ipv4/0")).await.as_deref(),
        Some(&b"10.0.0.2"[..])
    );
    assert_eq!(
        read(format!("{HOME}/data/updated")).await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(read(format!("{HOME}/attr/stale")).await, None);
    assert_eq!(
        read(format!("{HOME}/name")).await.as_deref(),
        Some(&b"guest-5"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_transact() {
    let dir = tempfile::tempdir().unwrap();
    let _xs = start(dir.path());
    check::<XsClient>(dir.path()).await;
    const { assert!(<XsClient as Store>::ATOMIC) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xeniface_transact_applies_in_order_without_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let _xs = start(dir.path());
    check::<XenifaceStore<EmulatedDevice>>(dir.path()).await;
    const { assert!(!<XenifaceStore<EmulatedDevice> as Store>::ATOMIC) };
}

#[cfg(feature = "libxenstore")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libxenstore_transact() {
    let dir = tempfile::tempdir().unwrap();
    let _xs = start(dir.path());
    check::<guestd_transport_xenstore::libxs::LibClient>(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_commit_is_eagain_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let _xs = start(dir.path());
    let guest = XsClient::connect(&dir.path().join("guest5.sock"))
        .await
        .unwrap();
    let dom0 = XsClient::connect(&dir.path().join("dom0.sock"))
        .await
        .unwrap();
    let tx = guest.transaction_start().await.unwrap();
    guest.write_in(tx, "data/os_name", b"mine").await.unwrap();
    assert_eq!(
        guest.read_in(tx, "data/os_name").await.unwrap(),
        b"mine",
        "the transaction sees its own write"
    );
    assert!(
        dom0.read_optional(&format!("{HOME}/data/os_name"))
            .await
            .unwrap()
            .is_none(),
        "nobody else does before the commit"
    );
    // Another writer changes the directory the transaction wrote into.
    dom0.write(&format!("{HOME}/data/other"), b"x")
        .await
        .unwrap();
    let err = guest.transaction_end(tx, true).await.unwrap_err();
    assert!(err.is("EAGAIN"), "{err}");
    assert!(
        dom0.read_optional(&format!("{HOME}/data/os_name"))
            .await
            .unwrap()
            .is_none()
    );
    // Started over, it commits.
    let tx = guest.transaction_start().await.unwrap();
    guest.write_in(tx, "data/os_name", b"mine").await.unwrap();
    assert_eq!(guest.directory_in(tx, "data").await.unwrap().len(), 2);
    guest.rm_in(tx, "data/other").await.unwrap();
    guest.transaction_end(tx, true).await.unwrap();
    assert_eq!(
        dom0.directory(&format!("{HOME}/data")).await.unwrap(),
        ["os_name"]
    );
}
