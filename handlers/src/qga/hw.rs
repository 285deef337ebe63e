//! Logical CPUs and memory blocks through sysfs, with qemu-ga's rules:
//! `guest-get-vcpus`/`guest-set-vcpus` (`/sys/devices/system/cpu/cpuN/online`; a CPU without
//! that file, usually cpu0, is online and cannot be offlined) and
//! `guest-get-memory-blocks`/`guest-set-memory-blocks`/`guest-get-memory-block-info`
//! (`/sys/devices/system/memory/memoryN/state`, per-block results with qemu-ga's response
//! codes and errno). This module reads the state and decides, per item, whether it needs a
//! change and what the reply says (qemu-ga's rules); the backend plans each change
//! (`Backend::plan_set_vcpu`/`plan_set_memory_block`: a `FileChange::Kernel` write) and
//! `guestd_core::apply` carries it out, one plan per item so that each has its own result. The
//! write goes through `Root`, so under a sandbox root it reaches the sandbox's files, never the
//! real /sys. `guest-get-devices` is Windows-only in qemu-ga and not available here.

use guestd_core::{ApplyError, ApplyOptions, BackendError, Env, HandlerError, Plan, Root};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::platform::{linux_only, not_on_this_os};
use super::sysfs::{errno, is_not_found};
use super::{QgaCommand, args};

const CPU_DIR: &str = "/sys/devices/system/cpu";
const MEMORY_DIR: &str = "/sys/devices/system/memory";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const GET_VCPUS: QgaCommand = QgaCommand {
    name: "guest-get-vcpus",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-vcpus")?;
        get_vcpus(&ctx.env.root)
    },
};

/// One `GuestLogicalProcessor` of the input (`can-offline` is ignored on input).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vcpu {
    #[serde(rename = "logical-id")]
    logical_id: i64,
    online: bool,
    #[serde(rename = "can-offline")]
    #[allow(dead_code)] // accepted and ignored, as the schema says
    can_offline: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetVcpus {
    vcpus: Vec<Vcpu>,
}

pub const SET_VCPUS: QgaCommand = QgaCommand {
    name: "guest-set-vcpus",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: SetVcpus = args(value)?;
        linux_only("guest-set-vcpus")?;
        set_vcpus(ctx.env, &a.vcpus).map(|n| json!(n))
    },
};

pub const GET_MEMORY_BLOCKS: QgaCommand = QgaCommand {
    name: "guest-get-memory-blocks",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-memory-blocks")?;
        get_memory_blocks(&ctx.env.root)
    },
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryBlock {
    #[serde(rename = "phys-index")]
    phys_index: u64,
    online: bool,
    #[serde(rename = "can-offline")]
    #[allow(dead_code)] // accepted and ignored, as the schema says
    can_offline: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMemoryBlocks {
    #[serde(rename = "mem-blks")]
    mem_blks: Vec<MemoryBlock>,
}

pub const SET_MEMORY_BLOCKS: QgaCommand = QgaCommand {
    name: "guest-set-memory-blocks",
    blocking: true,
    query: false,
    run: |ctx, value| {
        let a: SetMemoryBlocks = args(value)?;
        linux_only("guest-set-memory-blocks")?;
        Ok(Value::Array(
            a.mem_blks
                .iter()
                .map(|b| set_memory_block(ctx.env, b))
                .collect(),
        ))
    },
};

pub const MEMORY_BLOCK_INFO: QgaCommand = QgaCommand {
    name: "guest-get-memory-block-info",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        linux_only("guest-get-memory-block-info")?;
        memory_block_info(&ctx.env.root)
    },
};

pub const DEVICES: QgaCommand = QgaCommand {
    name: "guest-get-devices",
    blocking: false,
    query: true,
    run: |_, value| {
        args::<NoArgs>(value)?;
        Err(not_on_this_os("guest-get-devices"))
    },
};

/// The first byte of a sysfs file (`online`, `removable`); `Ok(None)` when it does not exist.
fn first_byte(root: &Root, path: &str) -> Result<Option<u8>, HandlerError> {
    match root.read(path) {
        Ok(bytes) => match bytes.first() {
            Some(b) => Ok(Some(*b)),
            None => Err(HandlerError::failed(format!(
                "pread(\"{path}\"): unexpected EOF"
            ))),
        },
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(HandlerError::failed(format!("pread(\"{path}\"): {e}"))),
    }
}

/// Numbers of the entries `<prefix>N` of `dir`, sorted.
fn numbered_entries(root: &Root, dir: &str, prefix: &str) -> Result<Vec<u64>, HandlerError> {
    let names = root
        .read_dir(dir)
        .map_err(|e| HandlerError::failed(format!("failed to list entries: {dir}: {e}")))?;
    let mut ids: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.parse().ok())
        .filter(|id| root.is_dir(format!("{dir}/{prefix}{id}")))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn get_vcpus(root: &Root) -> Result<Value, HandlerError> {
    let mut out = Vec::new();
    for id in numbered_entries(root, CPU_DIR, "cpu")? {
        let (online, can_offline) = match first_byte(root, &format!("{CPU_DIR}/cpu{id}/online"))? {
            Some(b) => (b != b'0', true),
            None => (true, false),
        };
        out.push(json!({"logical-id": id, "online": online, "can-offline": can_offline}));
    }
    if out.is_empty() {
        return Err(HandlerError::failed(format!(
            "no logical processors in {CPU_DIR}"
        )));
    }
    Ok(Value::Array(out))
}

/// Apply the requests in order; the count of the initial run that succeeded. An error only
/// when the very first one fails (nothing changed then), as the schema specifies.
fn set_vcpus(env: &Env, vcpus: &[Vcpu]) -> Result<u64, HandlerError> {
    let mut processed = 0;
    for vcpu in vcpus {
        if let Err(err) = set_vcpu(env, vcpu) {
            if processed == 0 {
                return Err(err);
            }
            info!(processed, error = %err, "guest-set-vcpus stopped early");
            break;
        }
        processed += 1;
    }
    Ok(processed)
}

fn set_vcpu(env: &Env, vcpu: &Vcpu) -> Result<(), HandlerError> {
    let root = &env.root;
    let dir = format!("{CPU_DIR}/cpu{}", vcpu.logical_id);
    let id = match u64::try_from(vcpu.logical_id) {
        Ok(id) if root.is_dir(&dir) => id,
        _ => {
            return Err(HandlerError::failed(format!(
                "open(\"{dir}/\"): No such file or directory"
            )));
        }
    };
    let path = format!("{dir}/online");
    match first_byte(root, &path)? {
        None if vcpu.online => Ok(()),
        None => Err(HandlerError::failed(format!(
            "logical processor #{} can't be offlined",
            vcpu.logical_id
        ))),
        Some(b) if (b != b'0') == vcpu.online => Ok(()),
        Some(_) => {
            let plan = env
                .backend
                .plan_set_vcpu(env, id, vcpu.online)
                .map_err(|e| unplanned("guest-set-vcpus", e))?;
            apply(env, &plan)
                .map_err(|e| HandlerError::failed(format!("pwrite(\"{path}\"): {e}")))?;
            info!(
                cpu = vcpu.logical_id,
                online = vcpu.online,
                "logical processor changed"
            );
            Ok(())
        }
    }
}

fn get_memory_blocks(root: &Root) -> Result<Value, HandlerError> {
    if !root.exists(MEMORY_DIR) {
        // A guest that does not expose memory blocks: nothing to report, as qemu-ga.
        return Ok(json!([]));
    }
    let mut out = Vec::new();
    for index in numbered_entries(root, MEMORY_DIR, "memory")? {
        let dir = format!("{MEMORY_DIR}/memory{index}");
        let (online, can_offline) = match root.read(format!("{dir}/state")) {
            Ok(state) => {
                let removable = first_byte(root, &format!("{dir}/removable"))?;
                (
                    state.starts_with(b"online"),
                    removable.is_some_and(|b| b != b'0'),
                )
            }
            // Old kernels have no state file: always online.
            Err(e) if is_not_found(&e) => (true, false),
            Err(e) => {
                return Err(HandlerError::failed(format!(
                    "open sysfs file \"{dir}/state\": {e}"
                )));
            }
        };
        out.push(json!({"phys-index": index, "online": online, "can-offline": can_offline}));
    }
    if out.is_empty() {
        return Err(HandlerError::failed("guest reported zero memory blocks!"));
    }
    Ok(Value::Array(out))
}

/// One `GuestMemoryBlockResponse`: `success`, `not-found`, `operation-not-supported` or
/// `operation-failed`, with the errno as `error-code` when it failed.
fn set_memory_block(env: &Env, block: &MemoryBlock) -> Value {
    let root = &env.root;
    let response = |response: &str, code: Option<i32>| {
        let mut v = json!({"phys-index": block.phys_index, "response": response});
        if let Some(code) = code {
            v["error-code"] = json!(code);
        }
        v
    };
    const ENOENT: i32 = 2;
    if !root.exists(MEMORY_DIR) {
        return response("operation-not-supported", Some(ENOENT));
    }
    let dir = format!("{MEMORY_DIR}/memory{}", block.phys_index);
    if !root.is_dir(&dir) {
        return response("not-found", Some(ENOENT));
    }
    let path = format!("{dir}/state");
    let state = match root.read(&path) {
        Ok(state) => state,
        Err(e) if is_not_found(&e) => {
            return if block.online {
                response("success", None)
            } else {
                response("operation-not-supported", Some(ENOENT))
            };
        }
        Err(e) => return response("operation-failed", errno(&e)),
    };
    if state.starts_with(b"online") == block.online {
        return response("success", None);
    }
    let plan = match env
        .backend
        .plan_set_memory_block(env, block.phys_index, block.online)
    {
        Ok(plan) => plan,
        Err(e) => {
            warn!(block = block.phys_index, error = %e, "memory block not changed");
            return response("operation-not-supported", None);
        }
    };
    match apply(env, &plan) {
        Ok(()) => {
            info!(
                block = block.phys_index,
                online = block.online,
                "memory block changed"
            );
            response("success", None)
        }
        Err(e) => response(
            "operation-failed",
            match &e {
                ApplyError::File { source, .. } => errno(source),
                _ => None,
            },
        ),
    }
}

/// Carry out the plan of one item's change (a kernel write: nothing backed up).
fn apply(env: &Env, plan: &Plan) -> Result<(), ApplyError> {
    guestd_core::apply(
        plan,
        &env.root,
        env.runner.as_ref(),
        ApplyOptions::default(),
    )
    .map(drop)
}

/// A change the backend cannot plan: not on this OS, or its reason.
fn unplanned(name: &str, err: BackendError) -> HandlerError {
    match err {
        BackendError::Unsupported(_) => not_on_this_os(name),
        other => other.into(),
    }
}

fn memory_block_info(root: &Root) -> Result<Value, HandlerError> {
    let path = format!("{MEMORY_DIR}/block_size_bytes");
    let text = root
        .read(&path)
        .map_err(|e| HandlerError::failed(format!("open sysfs file \"{path}\": {e}")))?;
    let text = String::from_utf8_lossy(&text);
    let size = u64::from_str_radix(text.trim(), 16)
        .map_err(|_| HandlerError::failed(format!("unreadable {path}")))?;
    Ok(json!({ "size": size }))
}

#[cfg(all(test, unix))]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use std::sync::Arc;

    use guestd_testkit::{FakeRunner, test_env};

    use super::*;

    /// A Debian guest over `root`: its backend plans the sysfs writes, nothing may be run.
    fn env_of(root: &Root) -> Env {
        let backend = guestd_distro::OsBackend::new(guestd_distro::OsFamily::Debian);
        test_env(
            root.clone(),
            Arc::new(FakeRunner::new()),
            Some(Arc::new(backend)),
        )
    }

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let d = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = d.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = Root::sandbox(d.path()).unwrap();
        (d, root)
    }

    fn vcpu(id: i64, online: bool) -> Vcpu {
        Vcpu {
            logical_id: id,
            online,
            can_offline: None,
        }
    }

    #[test]
    fn vcpus_read_and_set_with_qemu_ga_rules() {
        let (d, root) = tree(&[
            ("/sys/devices/system/cpu/cpu0/topology/core_id", "0\n"),
            ("/sys/devices/system/cpu/cpu1/online", "1\n"),
            ("/sys/devices/system/cpu/cpu10/online", "0\n"),
            ("/sys/devices/system/cpu/cpufreq/x", ""),
            ("/sys/devices/system/cpu/online", "0-1\n"),
        ]);
        assert_eq!(
            get_vcpus(&root).unwrap(),
            json!([
                {"logical-id": 0, "online": true, "can-offline": false},
                {"logical-id": 1, "online": true, "can-offline": true},
                {"logical-id": 10, "online": false, "can-offline": true},
            ])
        );
        let env = env_of(&root);
        // cpu0 cannot be offlined: the first request fails, so an error and nothing changed.
        let err = set_vcpus(&env, &[vcpu(0, false), vcpu(1, false)]).unwrap_err();
        assert!(err.to_string().contains("#0 can't be offlined"), "{err}");
        let online = |n: u32| {
            std::fs::read_to_string(
                d.path()
                    .join(format!("sys/devices/system/cpu/cpu{n}/online")),
            )
            .unwrap()
        };
        assert_eq!(online(1), "1\n");
        // A later failure stops there and reports how many were done.
        assert_eq!(
            set_vcpus(
                &env,
                &[vcpu(1, false), vcpu(0, true), vcpu(7, true), vcpu(10, true)]
            )
            .unwrap(),
            2
        );
        assert!(online(1).starts_with('0'));
        assert!(online(10).starts_with('0'));
        assert_eq!(
            set_vcpus(&env, &[vcpu(10, true), vcpu(10, true)]).unwrap(),
            2
        );
        assert!(online(10).starts_with('1'));
        assert_eq!(set_vcpus(&env, &[]).unwrap(), 0);
        assert!(set_vcpus(&env, &[vcpu(-1, true)]).is_err());
    }

    #[test]
    fn memory_blocks_read_set_and_size() {
        let (d, root) = tree(&[
            ("/sys/devices/system/memory/block_size_bytes", "8000000\n"),
            ("/sys/devices/system/memory/memory0/state", "online\n"),
            ("/sys/devices/system/memory/memory0/removable", "0\n"),
            ("/sys/devices/system/memory/memory32/state", "offline\n"),
            ("/sys/devices/system/memory/memory32/removable", "1\n"),
            ("/sys/devices/system/memory/memory33/phys_index", "21\n"),
            ("/sys/devices/system/memory/auto_online_blocks", "offline\n"),
        ]);
        assert_eq!(
            get_memory_blocks(&root).unwrap(),
            json!([
                {"phys-index": 0, "online": true, "can-offline": false},
                {"phys-index": 32, "online": false, "can-offline": true},
                {"phys-index": 33, "online": true, "can-offline": false},
            ])
        );
        assert_eq!(
            memory_block_info(&root).unwrap(),
            json!({"size": 134217728})
        );
        let block = |i, online| MemoryBlock {
            phys_index: i,
            online,
            can_offline: None,
        };
        let env = env_of(&root);
        let results: Vec<Value> = [
            block(32, true),
            block(0, true),
            block(99, true),
            block(33, false),
            block(33, true),
        ]
        .iter()
        .map(|b| set_memory_block(&env, b))
        .collect();
        assert_eq!(
            results,
            [
                json!({"phys-index": 32, "response": "success"}),
                json!({"phys-index": 0, "response": "success"}),
                json!({"phys-index": 99, "response": "not-found", "error-code": 2}),
                json!({"phys-index": 33, "response": "operation-not-supported", "error-code": 2}),
                json!({"phys-index": 33, "response": "success"}),
            ]
        );
        let state =
            std::fs::read_to_string(d.path().join("sys/devices/system/memory/memory32/state"));
        assert!(state.unwrap().starts_with("online"));
        // No memory directory at all: an empty list, and every request is unsupported.
        let (_e, bare) = tree(&[("/sys/devices/system/cpu/cpu0/online", "1")]);
        assert_eq!(get_memory_blocks(&bare).unwrap(), json!([]));
        assert_eq!(
            set_memory_block(&env_of(&bare), &block(1, true)),
            json!({"phys-index": 1, "response": "operation-not-supported", "error-code": 2})
        );
        assert!(memory_block_info(&bare).is_err());
    }

    #[test]
    fn changes_are_the_backends_to_plan() {
        let (d, root) = tree(&[
            ("/sys/devices/system/cpu/cpu1/online", "1\n"),
            ("/sys/devices/system/memory/memory0/state", "online\n"),
        ]);
        // A backend that cannot plan them: nothing is written, and the reply says why.
        let none = test_env(root.clone(), Arc::new(FakeRunner::new()), None);
        let err = set_vcpus(&none, &[vcpu(1, false)]).unwrap_err();
        assert!(err.to_string().contains("not available"), "{err}");
        let block = MemoryBlock {
            phys_index: 0,
            online: false,
            can_offline: None,
        };
        assert_eq!(
            set_memory_block(&none, &block),
            json!({"phys-index": 0, "response": "operation-not-supported"})
        );
        // Items that need no change are not planned at all.
        assert_eq!(set_vcpus(&none, &[vcpu(1, true)]).unwrap(), 1);
        let read = |p: &str| std::fs::read_to_string(d.path().join(p)).unwrap();
        assert_eq!(read("sys/devices/system/cpu/cpu1/online"), "1\n");
        assert_eq!(read("sys/devices/system/memory/memory0/state"), "online\n");
        // The Debian backend's plan, applied: the kernel files take the request.
        assert_eq!(
            set_memory_block(&env_of(&root), &block)["response"],
            "success"
        );
        assert_eq!(read("sys/devices/system/memory/memory0/state"), "offline");
    }
}
