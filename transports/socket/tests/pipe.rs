//! The named-pipe listener (Windows; run under Wine here): the transport conformance suite over
//! real pipe connections, a second owner of the name refused, and the pipe's security
//! descriptor as Windows reports it.
#![cfg(windows)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use guestd_core::stream::StreamOptions;
use guestd_transport_conformance::{Conn, Connector, Kit, conformance_suite};
use guestd_transport_socket::PipeTransport;
use tokio::net::windows::named_pipe::{ClientOptions, NamedPipeClient};

/// A pipe name of its own for every test (they run in parallel in one process).
fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        r"\\.\pipe\guestd-socket-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Open `name`, waiting while every instance is busy (ERROR_PIPE_BUSY).
async fn open(name: &str) -> std::io::Result<NamedPipeClient> {
    const ERROR_PIPE_BUSY: i32 = 231;
    for _ in 0..200 {
        match ClientOptions::new().open(name) {
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
    ClientOptions::new().open(name)
}

fn pipe_listener(kit: &mut Kit) -> Connector {
    let name = unique_name();
    let t = PipeTransport::bind(&name, kit.options()).expect("bind");
    kit.spawn(Box::new(t));
    Box::new(move || {
        let name = name.clone();
        Box::pin(async move { Ok(Box::new(open(&name).await?) as Conn) })
    })
}

mod pipe {
    use super::*;
    conformance_suite!(pipe_listener);
}

#[tokio::test]
async fn a_second_owner_of_the_name_is_refused() {
    let name = unique_name();
    let first = PipeTransport::bind(&name, StreamOptions::default()).unwrap();
    let err = PipeTransport::bind(&name, StreamOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("the name is already in use"), "{err}");
    drop(first);
    // Free again once the owner is gone.
    PipeTransport::bind(&name, StreamOptions::default()).unwrap();
}

/// The DACL of the pipe as a client sees it, in SDDL.
#[allow(unsafe_code)]
fn dacl_of(pipe: &NamedPipeClient) -> String {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{ERROR_SUCCESS, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1,
        SE_KERNEL_OBJECT,
    };
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR};

    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a valid handle; the out-pointers we do not want are null, which the API allows;
    // `sd` is LocalFree'd below.
    let rc = unsafe {
        GetSecurityInfo(
            pipe.as_raw_handle(),
            SE_KERNEL_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    assert_eq!(rc, ERROR_SUCCESS, "GetSecurityInfo");
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sd` is the descriptor just read; `text` receives a LocalAlloc'ed string.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            std::ptr::null_mut(),
        )
    };
    assert_ne!(ok, 0, "{}", std::io::Error::last_os_error());
    let mut len = 0;
    // SAFETY: `text` is NUL-terminated; both buffers are freed once.
    unsafe {
        while *text.add(len) != 0 {
            len += 1;
        }
        let sddl = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        LocalFree(sd);
        sddl
    }
}

/// Only SYSTEM and the Administrators group are in the DACL, and nothing is inherited.
#[tokio::test]
async fn only_system_and_administrators_may_connect() {
    let name = unique_name();
    let t = PipeTransport::bind(&name, StreamOptions::default()).unwrap();
    let client = open(&name).await.unwrap();
    let sddl = dacl_of(&client);
    assert!(sddl.starts_with("D:P"), "{sddl}");
    let aces: Vec<&str> = sddl["D:P".len()..]
        .split_terminator(')')
        .map(|a| a.trim_start_matches('('))
        .collect();
    assert_eq!(aces.len(), 2, "{sddl}");
    assert!(
        aces.iter()
            .any(|a| a.starts_with("A;;") && a.ends_with(";;;SY")),
        "{sddl}"
    );
    assert!(
        aces.iter()
            .any(|a| a.starts_with("A;;") && a.ends_with(";;;BA")),
        "{sddl}"
    );
    drop(t);
}
