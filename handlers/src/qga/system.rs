//! `guest-ping`, `guest-info`, `guest-get-osinfo`, `guest-get-host-name`, `guest-get-time`.

use std::time::{SystemTime, UNIX_EPOCH};

use guestd_core::{Context, HandlerError, Root};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{QgaCommand, args};
use crate::AGENT_VERSION;

/// No arguments at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

pub const PING: QgaCommand = QgaCommand {
    name: "guest-ping",
    blocking: false,
    query: true,
    run: |_, value| {
        args::<NoArgs>(value)?;
        Ok(json!({}))
    },
};

/// The version and every registered command with whether it is enabled: the same enabled set
/// as the native `features`.
pub const INFO: QgaCommand = QgaCommand {
    name: "guest-info",
    blocking: false,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        let enabled = ctx.enabled_commands();
        let commands: Vec<Value> = ctx
            .registered_commands()
            .iter()
            .map(|name| {
                json!({
                    "name": name,
                    "enabled": enabled.contains(name),
                    "success-response": !guestd_core::qga::NO_SUCCESS_RESPONSE.contains(name),
                })
            })
            .collect();
        Ok(json!({ "version": AGENT_VERSION, "supported_commands": commands }))
    },
};

pub const OSINFO: QgaCommand = QgaCommand {
    name: "guest-get-osinfo",
    blocking: true,
    query: true,
    run: |ctx, value| {
        args::<NoArgs>(value)?;
        osinfo(&ctx.env.root)
    },
};

pub const HOST_NAME: QgaCommand = QgaCommand {
    name: "guest-get-host-name",
    blocking: false,
    query: true,
    run: |_, value| {
        args::<NoArgs>(value)?;
        Ok(json!({ "host-name": uname().nodename }))
    },
};

/// Nanoseconds since the epoch, as qemu-ga.
pub const TIME: QgaCommand = QgaCommand {
    name: "guest-get-time",
    blocking: false,
    query: true,
    run: |_: &Context<'_>, value| {
        args::<NoArgs>(value)?;
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| HandlerError::failed("the guest clock is before 1970"))?;
        Ok(json!(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)))
    },
};

/// os-release fields (as qemu-ga names them) and the running kernel.
fn osinfo(root: &Root) -> Result<Value, HandlerError> {
    let text = match root.read_optional("/etc/os-release")? {
        Some(t) => t,
        None => root
            .read_optional("/usr/lib/os-release")?
            .unwrap_or_default(),
    };
    let release = parse_os_release(&String::from_utf8_lossy(&text));
    let mut out = Map::new();
    let uname = uname();
    out.insert("kernel-release".into(), json!(uname.release));
    out.insert("kernel-version".into(), json!(uname.version));
    out.insert("machine".into(), json!(uname.machine));
    for (key, field) in [
        ("ID", "id"),
        ("NAME", "name"),
        ("PRETTY_NAME", "pretty-name"),
        ("VERSION", "version"),
        ("VERSION_ID", "version-id"),
        ("VARIANT", "variant"),
        ("VARIANT_ID", "variant-id"),
    ] {
        if let Some(v) = release.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            out.insert(field.into(), json!(v));
        }
    }
    Ok(Value::Object(out))
}

/// `KEY=value` lines of os-release(5), quotes and backslash escapes removed.
fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, raw) = line.split_once('=')?;
            let raw = raw.trim();
            let unquoted = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
                .unwrap_or(raw);
            let mut value = String::new();
            let mut chars = unquoted.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
            Some((key.trim().to_string(), value))
        })
        .collect()
}

/// What `uname(2)` says about the running system.
struct Uname {
    nodename: String,
    release: String,
    version: String,
    machine: String,
}

#[cfg(unix)]
fn uname() -> Uname {
    let u = rustix::system::uname();
    Uname {
        nodename: u.nodename().to_string_lossy().into_owned(),
        release: u.release().to_string_lossy().into_owned(),
        version: u.version().to_string_lossy().into_owned(),
        machine: u.machine().to_string_lossy().into_owned(),
    }
}

/// Windows has no uname: the computer name and the architecture; the kernel fields stay empty.
#[cfg(not(unix))]
fn uname() -> Uname {
    Uname {
        nodename: std::env::var("COMPUTERNAME").unwrap_or_default(),
        release: String::new(),
        version: String::new(),
        machine: std::env::consts::ARCH.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quotes() {
        let got = parse_os_release("# c\nNAME=\"Debian GNU/Linux\"\nID=debian\nX='a \\\"b'\n");
        assert_eq!(got[0], ("NAME".into(), "Debian GNU/Linux".into()));
        assert_eq!(got[1], ("ID".into(), "debian".into()));
        assert_eq!(got[2], ("X".into(), "a \"b".into()));
    }
}
