//! guestctl's retry: a reply lost with the connection is asked for again on a new connection,
//! with the same request id (so guestd can answer from its remembered replies).
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use guestctl::{ConnectOptions, call_with_retry};
use guestd_core::Request;
use serde_json::Value;

/// A fake agent: answers the resync, reads one request, and drops the first `drop_first`
/// connections without replying. Returns the request ids it saw.
fn fake_agent(listener: UnixListener, drop_first: usize) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut ids = Vec::new();
        for n in 0..=drop_first {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                let v: Value = serde_json::from_str(text.trim_start_matches('\u{fffd}').trim())
                    .expect("request JSON");
                let id = v["id"].as_str().unwrap().to_string();
                if v["name"] == "sync" {
                    let reply =
                        format!("{{\"id\":\"{id}\",\"message\":\"{id}\",\"returncode\":\"0\"}}\n");
                    writer.write_all(&[0xFF]).unwrap(); // the resync marker before the sync reply
                    writer.write_all(reply.as_bytes()).unwrap();
                    continue;
                }
                ids.push(id.clone());
                if n < drop_first {
                    break; // the reply is "lost": drop the connection
                }
                writer
                    .write_all(
                        format!(
                            "{{\"id\":\"{id}\",\"message\":\"answered\",\"returncode\":\"0\"}}\n"
                        )
                        .as_bytes(),
                    )
                    .unwrap();
                break;
            }
        }
        ids
    })
}

#[test]
fn lost_reply_is_retried_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let agent = fake_agent(UnixListener::bind(&path).unwrap(), 2);
    let mut retries = 0;
    let reply = call_with_retry(
        &format!("serial:{}", path.display()),
        &ConnectOptions::default(),
        &Request::new("version", "agent"),
        Duration::from_secs(10),
        3,
        |_, _| retries += 1,
    )
    .expect("answered on the third attempt");
    assert_eq!(reply.message, "answered");
    assert_eq!(retries, 2);
    let ids = agent.join().unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id == &ids[0]), "ids differ: {ids:?}");
}

#[test]
fn gives_up_after_the_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let agent = fake_agent(UnixListener::bind(&path).unwrap(), 5);
    let err = call_with_retry(
        &format!("unix:{}", path.display()),
        &ConnectOptions::default(),
        &Request::new("version", "agent"),
        Duration::from_secs(10),
        2,
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.is_transient(), "{err}");
    drop(agent); // still waiting for more connections; the test process ends it
}
