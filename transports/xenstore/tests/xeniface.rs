//! The xeniface backend below the lifecycle, against test-xenstored: the emulated device
//! answers raw IOCTL buffers as the driver does (size queries, short buffers, error codes,
//! watch events on an event object), and [`XenifaceStore`] turns them back into XenStore
//! results. (`tests/lifecycle.rs` runs the whole request lifecycle over it.)
#![cfg(unix)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guestd_test_xenstored::{Config, Quota, TestXenstored};
use guestd_transport_xenstore::xeniface::codec::{self, IoctlError, PTR, win32};
use guestd_transport_xenstore::xeniface::emulated::EmulatedDevice;
use guestd_transport_xenstore::xeniface::{IoctlDevice, Signal};
use guestd_transport_xenstore::{Store, XenifaceStore, XsClient};

const HOME: &str = "/local/domain/5";

struct Setup {
    _xs: TestXenstored,
    _dir: tempfile::TempDir,
    dom0: XsClient,
    guest: std::path::PathBuf,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let dom0_path = dir.path().join("dom0.sock");
    let guest = dir.path().join("guest5.sock");
    let xs = TestXenstored::start(Config {
        dom0: Some(dom0_path.clone()),
        guests: vec![(5, guest.clone())],
        quota: Quota::default(),
        trace: false,
        ..Config::default()
    })
    .unwrap();
    let dom0 = XsClient::connect(&dom0_path).await.unwrap();
    dom0.write(&format!("{HOME}/vm-data/hostname"), b"web-1")
        .await
        .unwrap();
    dom0.write("/local/domain/0/secret", b"s").await.unwrap();
    Setup {
        _xs: xs,
        _dir: dir,
        dom0,
        guest,
    }
}

/// One raw IOCTL on a blocking thread, as the store makes them.
async fn ioctl(
    device: &Arc<EmulatedDevice>,
    code: u32,
    input: &[u8],
    out_len: usize,
) -> Result<Vec<u8>, IoctlError> {
    let (device, input) = (Arc::clone(device), input.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut out = vec![0u8; out_len];
        #[allow(unsafe_code)]
        // SAFETY: no IOCTL here carries an address.
        let n = unsafe { device.ioctl(code, &input, &mut out) }?;
        out.truncate(n);
        Ok(out)
    })
    .await
    .unwrap()
}

fn open(path: &Path) -> Arc<EmulatedDevice> {
    Arc::new(EmulatedDevice::open(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_answers_with_the_drivers_size_rule() {
    let s = setup().await;
    let dev = open(&s.guest);
    // Relative to the guest's home, and absolute.
    for path in ["vm-data/hostname\0", "/local/domain/5/vm-data/hostname\0"] {
        assert_eq!(
            ioctl(&dev, codec::IOCTL_STORE_READ, path.as_bytes(), 64).await,
            Ok(b"web-1\0".to_vec())
        );
    }
    // A zero-length buffer asks for the size; a short one is an invalid parameter.
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_READ, b"vm-data/hostname\0", 0).await,
        Err(IoctlError {
            code: win32::ERROR_MORE_DATA,
            returned: 6
        })
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_READ, b"vm-data/hostname\0", 5).await,
        Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER))
    );
    // What the driver refuses before asking xenstored.
    for bad in [&b"no-nul"[..], b"tab\there\0"] {
        assert_eq!(
            ioctl(&dev, codec::IOCTL_STORE_READ, bad, 64).await,
            Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER))
        );
    }
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_READ, b"", 64).await,
        Err(IoctlError::new(win32::ERROR_INVALID_USER_BUFFER))
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_WRITE, b"a\0b\0\0", 4).await,
        Err(IoctlError::new(win32::ERROR_INVALID_USER_BUFFER)),
        "WRITE takes no output buffer"
    );
    // xenstored's errors arrive as Win32 errors.
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_READ, b"vm-data/none\0", 64).await,
        Err(IoctlError::new(win32::ERROR_FILE_NOT_FOUND))
    );
    assert_eq!(
        ioctl(
            &dev,
            codec::IOCTL_STORE_READ,
            b"/local/domain/0/secret\0",
            64
        )
        .await,
        Err(IoctlError::new(win32::ERROR_ACCESS_DENIED))
    );
    assert_eq!(
        ioctl(&dev, 0x0022_2010, b"x\0", 0).await,
        Err(IoctlError::new(win32::ERROR_INVALID_FUNCTION)),
        "SET_PERMISSIONS is not emulated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_write_and_remove_buffers() {
    let s = setup().await;
    let dev = open(&s.guest);
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_WRITE, b"data/a/x\0one\0\0", 0).await,
        Ok(vec![])
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_WRITE, b"data/a/y\0\0\0", 0).await,
        Ok(vec![])
    );
    assert_eq!(
        s.dom0.read(&format!("{HOME}/data/a/x")).await.unwrap(),
        b"one"
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_DIRECTORY, b"data/a\0", 64).await,
        Ok(b"x\0y\0\0".to_vec())
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_DIRECTORY, b"data/a/x\0", 64).await,
        Ok(b"\0\0".to_vec()),
        "an empty list is two NULs"
    );
    assert_eq!(
        ioctl(
            &dev,
            codec::IOCTL_STORE_WRITE,
            b"data/a/z\0new\nline\0\0",
            0
        )
        .await,
        Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER)),
        "values must be printable"
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_REMOVE, b"data/a\0", 0).await,
        Ok(vec![])
    );
    assert!(
        s.dom0
            .read_optional(&format!("{HOME}/data/a"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_signal_their_event_until_removed() {
    let s = setup().await;
    let dev = open(&s.guest);
    let signals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&signals);
    let event = dev
        .create_event(Box::new(move |signal| seen.lock().unwrap().push(signal)))
        .unwrap();
    let path = b"data/host\0".to_vec();
    let input = codec::add_watch_input(
        path.as_ptr() as usize,
        path.len() as u32,
        event.handle(),
        PTR,
    );
    let context = {
        let dev = Arc::clone(&dev);
        tokio::task::spawn_blocking(move || {
            let mut out = [0u8; PTR];
            #[allow(unsafe_code)]
            // SAFETY: `path` outlives the call.
            let n = unsafe { dev.ioctl(codec::IOCTL_STORE_ADD_WATCH, &input, &mut out) }.unwrap();
            drop(path);
            codec::parse_context(&out[..n], PTR).unwrap()
        })
        .await
        .unwrap()
    };
    let count = |n: usize| {
        let signals = Arc::clone(&signals);
        async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while signals.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{n} signals"));
        }
    };
    count(1).await; // xenstored fires a new watch once
    s.dom0
        .write(&format!("{HOME}/data/host/r1"), b"{}")
        .await
        .unwrap();
    count(2).await;
    assert!(
        signals
            .lock()
            .unwrap()
            .iter()
            .all(|s| *s == Signal::Changed)
    );
    // A wrong-sized input is refused; the real one removes the watch.
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_REMOVE_WATCH, &[0; 3], 0).await,
        Err(IoctlError::new(win32::ERROR_INVALID_USER_BUFFER))
    );
    let remove = codec::context_bytes(context, PTR);
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_REMOVE_WATCH, &remove, 0).await,
        Ok(vec![])
    );
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_REMOVE_WATCH, &remove, 0).await,
        Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER)),
        "a context is removed once"
    );
    let before = signals.lock().unwrap().len();
    s.dom0
        .write(&format!("{HOME}/data/host/r2"), b"{}")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        signals.lock().unwrap().len(),
        before,
        "no signal after removal"
    );
    // ADD_WATCH checks its struct and the event handle as the driver does.
    let bad_size = ioctl(&dev, codec::IOCTL_STORE_ADD_WATCH, &[0; 5], PTR).await;
    assert_eq!(
        bad_size,
        Err(IoctlError::new(win32::ERROR_INVALID_USER_BUFFER))
    );
    let no_path = codec::add_watch_input(0, 0, event.handle(), PTR);
    assert_eq!(
        ioctl(&dev, codec::IOCTL_STORE_ADD_WATCH, &no_path, PTR).await,
        Err(IoctlError::new(win32::ERROR_INVALID_PARAMETER))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_maps_everything_back() {
    let s = setup().await;
    let store = XenifaceStore::<EmulatedDevice>::connect(&s.guest).unwrap();
    assert_eq!(store.read("vm-data/hostname").await.unwrap(), b"web-1");
    assert!(store.read("vm-data/none").await.unwrap_err().is_enoent());
    assert!(
        store
            .read("/local/domain/0/secret")
            .await
            .unwrap_err()
            .is("EACCES")
    );
    // Values near the payload limit fit the first buffer (bigger ones: codec unit tests).
    let big = "v".repeat(4000);
    s.dom0
        .write(&format!("{HOME}/data/big"), big.as_bytes())
        .await
        .unwrap();
    assert_eq!(store.read("data/big").await.unwrap(), big.as_bytes());
    // MKDIR is emulated: a new node is empty, an existing one keeps its value and children.
    store.mkdir("data/host").await.unwrap();
    assert_eq!(store.read("data/host").await.unwrap(), b"");
    store.write("data/host/1", b"{\"a\": 1}").await.unwrap();
    store.mkdir("data/host").await.unwrap();
    assert_eq!(store.directory("data/host").await.unwrap(), ["1"]);
    assert_eq!(
        store.directory("data/host/1").await.unwrap(),
        Vec::<String>::new()
    );
    let err = store.write("data/x", b"two\nlines").await.unwrap_err();
    assert!(err.to_string().contains("printable ASCII"), "{err}");
    store.rm("data/host").await.unwrap();
    assert!(store.directory("data/host").await.unwrap_err().is_enoent());
    // Watch streams: the first event at once, one per change, none after the stream goes.
    let mut watch = store.watch("data", "tok").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.path.as_str(), first.token.as_str()), ("data", "tok"));
    s.dom0.write(&format!("{HOME}/data/c"), b"1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap();
    drop(watch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_ends_watches_and_fails_calls() {
    let s = setup().await;
    let store = XenifaceStore::<EmulatedDevice>::connect(&s.guest).unwrap();
    let mut watch = store.watch("data", "tok").await.unwrap();
    watch.next().await.unwrap();
    s._xs.disconnect_all();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while watch.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ends");
    let err = store.read("vm-data/hostname").await.unwrap_err();
    assert!(err.is_connection_lost(), "{err}");
}
