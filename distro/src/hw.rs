//! Logical processors and memory blocks brought online or taken offline (`guest-set-vcpus`,
//! `guest-set-memory-blocks`), as plans that `guestd_core::apply` carries out. Linux only: the
//! kernel takes the request in sysfs, `1`/`0` in `/sys/devices/system/cpu/cpuN/online` and
//! `online`/`offline` in `/sys/devices/system/memory/memoryN/state`, written in place
//! ([`FileChange::Kernel`]: a request, not content, so nothing to back up or put back). Under
//! a `--root` sandbox the write lands in the sandbox's file, as every file write does.
//!
//! Which items, whether each needs a change and the per-item replies are the handler's
//! (qemu-ga's rules, the same on every Linux); here is only how one change is made. FreeBSD
//! and Windows have no such interface here (`Unsupported`).

use guestd_core::plan::FileChange;
use guestd_core::{BackendError, Plan};

use crate::OsFamily;

/// Where the kernel lists logical processors (`cpuN/online`).
pub const CPU_DIR: &str = "/sys/devices/system/cpu";
/// Where the kernel lists memory blocks (`memoryN/state`).
pub const MEMORY_DIR: &str = "/sys/devices/system/memory";

fn linux(family: OsFamily, what: &str) -> Result<(), BackendError> {
    match family {
        OsFamily::FreeBsd | OsFamily::Windows => Err(BackendError::Unsupported(what.into())),
        _ => Ok(()),
    }
}

fn kernel_write(path: String, value: &str) -> Plan {
    Plan {
        changes: vec![FileChange::Kernel {
            path,
            value: value.as_bytes().to_vec(),
        }],
        ..Plan::default()
    }
}

/// `1` or `0` to `cpuN/online`. See `Backend::plan_set_vcpu`.
pub fn plan_set_vcpu(family: OsFamily, id: u64, online: bool) -> Result<Plan, BackendError> {
    linux(family, "bringing logical processors online or offline")?;
    let value = if online { "1" } else { "0" };
    Ok(kernel_write(format!("{CPU_DIR}/cpu{id}/online"), value))
}

/// `online` or `offline` to `memoryN/state`. See `Backend::plan_set_memory_block`.
pub fn plan_set_memory_block(
    family: OsFamily,
    index: u64,
    online: bool,
) -> Result<Plan, BackendError> {
    linux(family, "bringing memory blocks online or offline")?;
    let value = if online { "online" } else { "offline" };
    Ok(kernel_write(
        format!("{MEMORY_DIR}/memory{index}/state"),
        value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan's changes as `Debug` shows them; no commands, no rollback, no checks.
    fn kernel_writes(plan: &Plan) -> Vec<String> {
        assert!(plan.commands.is_empty() && plan.rollback_commands.is_empty());
        assert!(plan.native.is_empty() && plan.checks.is_empty());
        plan.changes.iter().map(|c| format!("{c:?}")).collect()
    }

    #[test]
    fn vcpus_are_one_kernel_write_to_their_online_file() {
        for family in [OsFamily::Debian, OsFamily::RedHat, OsFamily::Unknown] {
            assert_eq!(
                kernel_writes(&plan_set_vcpu(family, 3, false).unwrap()),
                ["Kernel(/sys/devices/system/cpu/cpu3/online <- \"0\")"]
            );
            assert_eq!(
                kernel_writes(&plan_set_vcpu(family, 10, true).unwrap()),
                ["Kernel(/sys/devices/system/cpu/cpu10/online <- \"1\")"]
            );
        }
    }

    #[test]
    fn memory_blocks_are_one_kernel_write_to_their_state_file() {
        for family in [OsFamily::Debian, OsFamily::RedHat, OsFamily::Unknown] {
            assert_eq!(
                kernel_writes(&plan_set_memory_block(family, 32, true).unwrap()),
                ["Kernel(/sys/devices/system/memory/memory32/state <- \"online\")"]
            );
            assert_eq!(
                kernel_writes(&plan_set_memory_block(family, 0, false).unwrap()),
                ["Kernel(/sys/devices/system/memory/memory0/state <- \"offline\")"]
            );
        }
    }

    #[test]
    fn freebsd_and_windows_have_neither() {
        for family in [OsFamily::FreeBsd, OsFamily::Windows] {
            assert!(matches!(
                plan_set_vcpu(family, 1, true),
                Err(BackendError::Unsupported(_))
            ));
            assert!(matches!(
                plan_set_memory_block(family, 1, true),
                Err(BackendError::Unsupported(_))
            ));
        }
    }
}
