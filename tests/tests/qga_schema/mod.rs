//! The reply types of qemu-ga's commands, written the way `qga/qapi-schema.json` (QEMU 10)
//! writes them, and a checker. Each command's `returns` is a type expression:
//!
//! - `"str"`, `"int"`, `"uint64"`, `"number"`, `"bool"`; `"any"` for members not checked here;
//! - `"enum:a|b|c"`;
//! - `["T"]`, a list of T;
//! - `{"member": T, "*optional": T}`, a struct (no other members allowed);
//! - `"@Name"`, a named struct below.
//!
//! Unions are written flattened, as they appear on the wire (`GuestCpuStats`).

use serde_json::{Value, json};

const BUS_TYPES: &str = "enum:ide|fdc|scsi|virtio|xen|usb|uml|sata|sd|unknown|ieee1394|ssa|fibre|raid|iscsi|sas|mmc|virtual|file-backed-virtual|nvme";

fn named(name: &str) -> Value {
    match name {
        "GuestPCIAddress" => {
            json!({"domain": "int", "bus": "int", "slot": "int", "function": "int"})
        }
        "GuestCCWAddress" => {
            json!({"cssid": "int", "ssid": "int", "subchno": "int", "devno": "int"})
        }
        "GuestDiskAddress" => json!({
            "pci-controller": "@GuestPCIAddress", "bus-type": BUS_TYPES,
            "bus": "int", "target": "int", "unit": "int",
            "*serial": "str", "*dev": "str", "*ccw-address": "@GuestCCWAddress"
        }),
        "GuestFilesystemInfo" => json!({
            "name": "str", "mountpoint": "str", "type": "str",
            "*used-bytes": "uint64", "*total-bytes": "uint64",
            "*total-bytes-privileged": "uint64", "disk": ["@GuestDiskAddress"]
        }),
        "GuestDiskInfo" => json!({
            "name": "str", "partition": "bool", "*dependencies": ["str"],
            "*address": "@GuestDiskAddress", "*alias": "str", "*smart": "any"
        }),
        "GuestDiskStats" => {
            let mut m = serde_json::Map::new();
            for k in [
                "read-sectors",
                "read-ios",
                "read-merges",
                "write-sectors",
                "write-ios",
                "write-merges",
                "discard-sectors",
                "discard-ios",
                "discard-merges",
                "flush-ios",
                "read-ticks",
                "write-ticks",
                "discard-ticks",
                "flush-ticks",
                "ios-pgr",
                "total-ticks",
                "weight-ticks",
            ] {
                m.insert(format!("*{k}"), json!("uint64"));
            }
            Value::Object(m)
        }
        "GuestDiskStatsInfo" => json!({
            "name": "str", "major": "uint64", "minor": "uint64", "stats": "@GuestDiskStats"
        }),
        "GuestCpuStats" => json!({
            "type": "enum:linux", "cpu": "int", "user": "uint64", "nice": "uint64",
            "system": "uint64", "idle": "uint64", "*iowait": "uint64", "*irq": "uint64",
            "*softirq": "uint64", "*steal": "uint64", "*guest": "uint64", "*guestnice": "uint64"
        }),
        "GuestLoadAverage" => json!({"load1m": "number", "load5m": "number", "load15m": "number"}),
        "GuestUser" => json!({"user": "str", "login-time": "number", "*domain": "str"}),
        "GuestTimezone" => json!({"*zone": "str", "offset": "int"}),
        "GuestLogicalProcessor" => {
            json!({"logical-id": "int", "online": "bool", "*can-offline": "bool"})
        }
        "GuestMemoryBlock" => {
            json!({"phys-index": "uint64", "online": "bool", "*can-offline": "bool"})
        }
        "GuestMemoryBlockResponse" => json!({
            "phys-index": "uint64",
            "response": "enum:success|not-found|operation-not-supported|operation-failed",
            "*error-code": "int"
        }),
        "GuestMemoryBlockInfo" => json!({"size": "uint64"}),
        "GuestNetworkRoute" => json!({
            "iface": "str", "destination": "str", "metric": "int", "*gateway": "str",
            "*mask": "str", "*irtt": "int", "*flags": "uint64", "*refcnt": "int", "*use": "int",
            "*window": "int", "*mtu": "int", "*desprefixlen": "str", "*source": "str",
            "*srcprefixlen": "str", "*nexthop": "str", "version": "int"
        }),
        "GuestFilesystemTrimResponse" => json!({
            "paths": [{"path": "str", "*trimmed": "int", "*minimum": "int", "*error": "str"}]
        }),
        "GuestAgentInfo" => json!({
            "version": "str",
            "supported_commands": [{"name": "str", "enabled": "bool", "success-response": "bool"}]
        }),
        "GuestOSInfo" => {
            let mut m = serde_json::Map::new();
            for k in [
                "kernel-release",
                "kernel-version",
                "machine",
                "id",
                "name",
                "pretty-name",
                "version",
                "version-id",
                "variant",
                "variant-id",
            ] {
                m.insert(format!("*{k}"), json!("str"));
            }
            Value::Object(m)
        }
        other => panic!("no schema for {other}"),
    }
}

/// What `command` returns (`None`: a command this file does not describe).
pub fn returns(command: &str) -> Option<Value> {
    Some(match command {
        "guest-ping" | "guest-set-time" | "guest-set-user-password" => json!({}),
        "guest-info" => json!("@GuestAgentInfo"),
        "guest-get-time"
        | "guest-set-vcpus"
        | "guest-fsfreeze-freeze"
        | "guest-fsfreeze-freeze-list"
        | "guest-fsfreeze-thaw" => json!("int"),
        "guest-fsfreeze-status" => json!("enum:thawed|frozen"),
        "guest-get-osinfo" => json!("@GuestOSInfo"),
        "guest-get-host-name" => json!({"host-name": "str"}),
        "guest-get-fsinfo" => json!(["@GuestFilesystemInfo"]),
        "guest-get-disks" => json!(["@GuestDiskInfo"]),
        "guest-get-diskstats" => json!(["@GuestDiskStatsInfo"]),
        "guest-get-cpustats" => json!(["@GuestCpuStats"]),
        "guest-get-load" => json!("@GuestLoadAverage"),
        "guest-get-users" => json!(["@GuestUser"]),
        "guest-get-timezone" => json!("@GuestTimezone"),
        "guest-get-vcpus" => json!(["@GuestLogicalProcessor"]),
        "guest-get-memory-blocks" => json!(["@GuestMemoryBlock"]),
        "guest-set-memory-blocks" => json!(["@GuestMemoryBlockResponse"]),
        "guest-get-memory-block-info" => json!("@GuestMemoryBlockInfo"),
        "guest-network-get-route" => json!(["@GuestNetworkRoute"]),
        "guest-fstrim" => json!("@GuestFilesystemTrimResponse"),
        "guest-exec" => json!({"pid": "int"}),
        "guest-exec-status" => json!({
            "exited": "bool", "*exitcode": "int", "*signal": "int",
            "*out-data": "str", "*err-data": "str",
            "*out-truncated": "bool", "*err-truncated": "bool"
        }),
        "guest-file-open" => json!("int"),
        "guest-file-close" | "guest-file-flush" => json!({}),
        "guest-file-read" => json!({"count": "int", "buf-b64": "str", "eof": "bool"}),
        "guest-file-write" => json!({"count": "int", "eof": "bool"}),
        "guest-file-seek" => json!({"position": "int", "eof": "bool"}),
        _ => return None,
    })
}

/// Check `value` against the type expression `ty`; the error names the path.
pub fn check(ty: &Value, value: &Value, path: &str) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{path}: expected {what}, got {value}"));
    match ty {
        Value::String(t) if t.starts_with('@') => check(&named(&t[1..]), value, path),
        Value::String(t) if t.starts_with("enum:") => match value.as_str() {
            Some(v) if t[5..].split('|').any(|e| e == v) => Ok(()),
            _ => fail(t),
        },
        Value::String(t) => {
            let ok = match t.as_str() {
                "str" => value.is_string(),
                "int" => {
                    value.is_i64() || value.is_u64() && value.as_u64() <= Some(i64::MAX as u64)
                }
                "uint64" => value.is_u64(),
                "number" => value.is_number(),
                "bool" => value.is_boolean(),
                "any" => true,
                other => panic!("unknown type {other}"),
            };
            if ok { Ok(()) } else { fail(t) }
        }
        Value::Array(item) => {
            let Some(items) = value.as_array() else {
                return fail("a list");
            };
            items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| check(&item[0], v, &format!("{path}[{i}]")))
        }
        Value::Object(members) => {
            let Some(object) = value.as_object() else {
                return fail("an object");
            };
            for (key, t) in members {
                let (name, optional) = match key.strip_prefix('*') {
                    Some(n) => (n, true),
                    None => (key.as_str(), false),
                };
                match object.get(name) {
                    Some(v) => check(t, v, &format!("{path}.{name}"))?,
                    None if optional => {}
                    None => return Err(format!("{path}: member '{name}' is missing in {value}")),
                }
            }
            for key in object.keys() {
                if !members.contains_key(key) && !members.contains_key(&format!("*{key}")) {
                    return Err(format!("{path}: member '{key}' is not in the schema"));
                }
            }
            Ok(())
        }
        other => panic!("bad type expression {other}"),
    }
}

/// Check a command's reply (`{"return": …}`) against its schema.
pub fn check_reply(command: &str, reply: &Value) -> Result<(), String> {
    let ty = returns(command).unwrap_or_else(|| panic!("no schema for {command}"));
    let value = reply
        .get("return")
        .ok_or_else(|| format!("{command}: not a success: {reply}"))?;
    check(&ty, value, command)
}
