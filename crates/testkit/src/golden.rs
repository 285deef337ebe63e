//! Golden-tree tests for backends.
//!
//! A case is a directory holding:
//! - `before/`: the guest's files before (copied into a fresh sandbox root; may be absent),
//! - `input`: what the test feeds the code under test (its format is the test's business),
//! - `after/`: every file the sandbox must hold afterwards (byte-exact; symlinks by target),
//! - `commands`: the commands the fake runner must have recorded, one per line (absent = none),
//! - `result` (optional): the text the test's closure returned (e.g. a reply or an error).
//!
//! `UPDATE_GOLDEN=1 cargo test …` rewrites `after/`, `commands` and `result` from what the code
//! did; review the diff before committing it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use guestd_core::Root;

use crate::FakeRunner;

/// The sandbox a case runs in.
#[derive(Debug)]
pub struct GoldenRun {
    pub root: Root,
    pub runner: Arc<FakeRunner>,
    pub input: String,
    _dir: tempfile::TempDir,
}

/// Every case directory (one holding an `input` file) directly below `dir`, sorted.
pub fn cases(dir: impl AsRef<Path>) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir.as_ref())
        .unwrap_or_else(|e| panic!("golden dir {}: {e}", dir.as_ref().display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("input").is_file())
        .collect();
    found.sort();
    found
}

/// Prepare a case: copy `before/` into a fresh sandbox and read `input`.
pub fn prepare(case: &Path) -> GoldenRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = case.join("before");
    if before.is_dir() {
        copy_tree(&before, dir.path());
    }
    let input = fs::read_to_string(case.join("input"))
        .unwrap_or_else(|e| panic!("{}: input: {e}", case.display()));
    GoldenRun {
        root: Root::sandbox(dir.path()).expect("sandbox"),
        runner: Arc::new(FakeRunner::new()),
        input,
        _dir: dir,
    }
}

/// Compare (or, with `UPDATE_GOLDEN=1`, rewrite) the expectations of `case` after a run that
/// returned `result`. Panics with a readable diff summary on mismatch.
pub fn check(case: &Path, run: &GoldenRun, result: &str) {
    let base = run
        .root
        .base()
        .expect("golden runs use a sandbox")
        .to_path_buf();
    let actual = snapshot(&base);
    let commands = run
        .runner
        .lines()
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let after = case.join("after");
        let _ = fs::remove_dir_all(&after);
        fs::create_dir_all(&after).unwrap();
        copy_tree(&base, &after);
        write_or_remove(&case.join("commands"), &commands);
        if case.join("result").exists() || !result.is_empty() {
            write_or_remove(&case.join("result"), &format!("{result}\n"));
        }
        return;
    }
    let expected = if case.join("after").is_dir() {
        snapshot(&case.join("after"))
    } else {
        BTreeMap::new()
    };
    let mut problems = Vec::new();
    for (path, want) in &expected {
        match actual.get(path) {
            None => problems.push(format!("missing: {path}")),
            Some(got) if got != want => problems.push(format!(
                "differs: {path}\n--- expected\n{}\n--- actual\n{}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(got)
            )),
            _ => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!("unexpected file: {path}"));
    }
    let want_commands = fs::read_to_string(case.join("commands")).unwrap_or_default();
    if want_commands != commands {
        problems.push(format!(
            "commands differ\n--- expected\n{want_commands}--- actual\n{commands}"
        ));
    }
    if let Ok(want) = fs::read_to_string(case.join("result")) {
        if want.trim_end() != result.trim_end() {
            problems.push(format!(
                "result differs\n--- expected\n{want}\n--- actual\n{result}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "golden case {} failed (UPDATE_GOLDEN=1 rewrites it):\n{}",
        case.display(),
        problems.join("\n")
    );
}

/// Relative path -> contents (symlinks as `-> target`).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let ft = entry.file_type().unwrap();
        if ft.is_symlink() {
            let target = fs::read_link(&path).unwrap();
            out.insert(rel, format!("-> {}", target.display()).into_bytes());
        } else if ft.is_dir() {
            walk(base, &path, out);
        } else {
            out.insert(rel, fs::read(&path).unwrap());
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap().flatten() {
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            fs::create_dir_all(&dst).unwrap();
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

fn write_or_remove(path: &Path, text: &str) {
    if text.is_empty() {
        let _ = fs::remove_file(path);
    } else {
        fs::write(path, text).unwrap();
    }
}
