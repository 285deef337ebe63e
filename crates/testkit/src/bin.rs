//! Locate the workspace's binaries (`guestd`, `guestctl`, …) for end-to-end tests.

use std::path::PathBuf;

/// The path of a workspace binary in the same target directory as the running test, built with
/// `cargo build --bin NAME` first if it is not there yet.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let candidate = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !candidate.exists() {
        build(name);
    }
    assert!(candidate.exists(), "{} was not built", candidate.display());
    candidate
}

#[allow(clippy::disallowed_methods)] // tests build the binaries they drive
fn build(name: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--bin", name])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --bin {name} failed");
}
