//! Issue 8: the hostile corpus (`tests/hostile/`) replayed over every stream transport. Each
//! request gets one well-formed, bounded reply, the conversation stays in step, the daemon
//! stays up, and nothing is written outside the sandbox root.
#![cfg(unix)]

use guestd_tests::hostile::{self, TcpLine, files_below, free_tcp_port};
use guestd_tests::{Guestd, LineClient};

/// Files whose name says a hostile request put them there.
fn escaped_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("guestd-hostile"))
        .collect()
}

#[test]
fn hostile_corpus_over_unix() {
    let cases = hostile::load();
    let mut g = Guestd::start(&[]);
    let outside = g.dir.path().to_path_buf();
    let mut conn = LineClient::connect(&g.sock);
    let failures = hostile::replay(&mut conn, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(g.alive(), "guestd died:\n{}", g.log());

    // Path tricks aim above the root: at the test directory, its parent and /tmp.
    let root = g.root();
    let parent = outside.parent().unwrap();
    let shallow = [parent, std::path::Path::new("/tmp")]
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("guestd-hostile"));
    let escaped: Vec<_> = escaped_files(&outside)
        .into_iter()
        .chain(shallow)
        .filter(|p| !p.starts_with(&root))
        .collect();
    assert!(escaped.is_empty(), "written outside the root: {escaped:?}");
}

#[test]
fn hostile_corpus_over_loopback_tcp() {
    let cases = hostile::load();
    let port = free_tcp_port();
    let listen = format!("tcp:127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let config = guestd_tests::plain_loopback_tcp_config(dir.path());
    let config = config.to_str().unwrap().to_owned();
    let mut g = Guestd::start_in(dir, &["--config", &config, "--listen", &listen]);
    let mut conn = TcpLine::connect(([127, 0, 0, 1], port).into());
    let failures = hostile::replay(&mut conn, &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(g.alive(), "guestd died:\n{}", g.log());
}
