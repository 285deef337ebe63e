//! Idle checks: an idle guestd's threads do not run at all.

use std::collections::BTreeMap;
use std::time::Duration;

/// Per-thread run counts (`/proc/PID/task/TID/schedstat`, third field): a thread that makes a
/// system call, or wakes for any reason, runs, and its count goes up.
pub fn run_counts(pid: u32) -> BTreeMap<String, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("guestd's task list")
        .filter_map(|e| {
            let tid = e.ok()?.file_name().to_string_lossy().into_owned();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
            Some((tid, stat.split_whitespace().nth(2)?.to_string()))
        })
        .collect()
}

/// Assert that no thread of `pid` runs during a 10 s window. Start-up or an earlier request may
/// leave tokio blocking threads that retire 10 s after their last task; a window in which such
/// a thread only went away (every other count unchanged) is not a wakeup of guestd's own and
/// is measured again (a loaded machine can delay that retirement into the window). Any thread
/// that ran, and any new thread, fails at once.
pub fn assert_idle_for_10s(pid: u32) {
    for _ in 0..5 {
        let before = run_counts(pid);
        std::thread::sleep(Duration::from_secs(10));
        let after = run_counts(pid);
        let ran: Vec<_> = after
            .iter()
            .filter(|(tid, count)| before.get(*tid) != Some(*count))
            .collect();
        assert!(
            ran.is_empty(),
            "guestd threads woke up while idle: {ran:?} (before: {before:?})"
        );
        if before.len() == after.len() {
            return;
        }
        eprintln!("idle check: a retiring blocking thread left during the window; measuring again");
    }
    panic!("guestd kept losing threads over five idle windows");
}
