//! Locate the workspace's binaries (`guestd`, `guestctl`, …) for end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The path of a workspace binary in the same target directory as the running test, built with
/// `cargo build --bin NAME` first if it is missing or older than the workspace's sources (a
/// stale binary would test old code: an end-to-end test once ran a guestd without a fix it
/// checked, and that guestd acted on the machine).
pub fn path(name: &str) -> PathBuf {
    static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let candidate = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if !checked.iter().any(|n| n == name) {
        let stale = |n: &&str| {
            let p = profile_dir.join(format!("{n}{}", std::env::consts::EXE_SUFFIX));
            !p.exists() || is_stale(&p)
        };
        if group(name).iter().any(stale) {
            build(name);
        }
        checked.push(name.to_string());
    }
    assert!(candidate.exists(), "{} was not built", candidate.display());
    candidate
}

/// Whether `binary` is older than any Rust source or manifest of the workspace.
fn is_stale(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let workspace = workspace();
    [
        "crates",
        "handlers",
        "distro",
        "transports",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .iter()
    .any(|part| newest(&workspace.join(part)).is_some_and(|t| t > built))
}

/// The newest modification time of the `.rs`/`.toml`/`.lock` files under `path`.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = path.symlink_metadata().ok()?;
    if meta.is_file() {
        let relevant = path
            .extension()
            .is_some_and(|e| e == "rs" || e == "toml" || e == "lock");
        return relevant.then(|| meta.modified().ok()).flatten();
    }
    if !meta.is_dir() || path.file_name().is_some_and(|n| n == "target") {
        return None;
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| newest(&e.ok()?.path()))
        .max()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binaries built (and checked for staleness) together with `name`: guestd is installed
/// with the ones it runs beside it (guestd-tls for TLS listeners, guestd-update for
/// agentupdate), so none of them may be older than the others.
fn group(name: &str) -> Vec<&str> {
    match name {
        "guestd" | "guestd-tls" | "guestd-update" => vec!["guestd", "guestd-tls", "guestd-update"],
        other => vec![other],
    }
}

#[allow(clippy::disallowed_methods)] // tests build the binaries they drive
fn build(name: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let names = group(name);
    // From the workspace root, so that `--bin` finds the binary in whichever member has it.
    let status = std::process::Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--quiet"])
        .args(names.iter().flat_map(|n| ["--bin", n]))
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --bin {} failed",
        names.join(" --bin ")
    );
}
