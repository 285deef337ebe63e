//! The qemu-guest-agent (QMP-style) dialect of a stream conversation, so libvirt and OpenStack
//! on KVM can talk to guestd as they talk to qemu-ga.
//!
//! Requests are `{"execute": NAME, "arguments": {...}, "id": ...}` (one per line; framing and
//! `0xFF` resynchronisation are the shared [`LineDecoder`](crate::framing::LineDecoder)'s).
//! Replies are `{"return": VALUE}` or `{"error": {"class": CLASS, "desc": TEXT}}`, with the
//! request's `"id"` echoed after them as qemu-ga does. `guest-sync` (returns its `id` argument)
//! and `guest-sync-delimited` (the same, preceded by `0xFF`) are answered here, like the native
//! `sync`. Every other command goes through the [`Dispatcher`](crate::Dispatcher) under its qga
//! name, so the command policy and timeouts apply unchanged; a handler of a qga command answers
//! with [`code::OK`] and the JSON text of its return value as message.

use serde_json::{Map, Value};

use crate::wire::{Incoming, Reply, Request, RequestError, code, to_ascii_json};

/// Built-in: returns its `id` argument.
pub const SYNC: &str = "guest-sync";
/// Built-in: like [`SYNC`], with `0xFF` before the reply.
pub const SYNC_DELIMITED: &str = "guest-sync-delimited";

/// Commands that send no reply when they succeed (qemu-ga's `success-response: false`).
pub const NO_SUCCESS_RESPONSE: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

/// Per-channel marker set on channels that speak the qga dialect. qga commands refuse to run
/// elsewhere: `guest-set-user-password` takes a plain password, which the native protocol only
/// accepts encrypted (`keyinit`/`password`) because channels like XenStore are not private.
#[derive(Debug, Default, Clone, Copy)]
pub struct QgaChannel(pub bool);

/// Whether `channel` speaks the qga dialect.
pub fn is_qga_channel(channel: &crate::Channel) -> bool {
    channel.with_state::<QgaChannel, _>(|m| m.0)
}

/// One decoded qga request line.
#[derive(Debug)]
pub enum QgaRequest {
    /// `guest-sync` / `guest-sync-delimited` with the value to return.
    Sync {
        id: Option<Value>,
        token: Value,
        delimited: bool,
    },
    /// A command for the dispatcher (`value` is the arguments object, `{}` when absent).
    Command {
        id: Option<Value>,
        name: String,
        arguments: Value,
    },
    /// Unusable input: answered with this error.
    Invalid { id: Option<Value>, desc: String },
}

/// Decode one line the way qemu-ga's QMP dispatcher checks its input.
pub fn parse(line: &[u8]) -> QgaRequest {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(err) => {
            return QgaRequest::Invalid {
                id: None,
                desc: format!("JSON parse error, {err}"),
            };
        }
    };
    let Value::Object(mut object) = value else {
        return invalid(None, "QMP input must be a JSON object");
    };
    let id = object.remove("id");
    if let Some(key) = object
        .keys()
        .find(|k| !matches!(k.as_str(), "execute" | "arguments"))
    {
        return invalid(id, format!("QMP input member '{key}' is unexpected"));
    }
    let name = match object.remove("execute") {
        Some(Value::String(name)) => name,
        Some(_) => return invalid(id, "QMP input member 'execute' must be a string"),
        None => return invalid(id, "QMP input lacks member 'execute'"),
    };
    let arguments = match object.remove("arguments") {
        None => Value::Object(Map::new()),
        Some(args @ Value::Object(_)) => args,
        Some(_) => return invalid(id, "QMP input member 'arguments' must be an object"),
    };
    if name == SYNC || name == SYNC_DELIMITED {
        return match arguments.get("id") {
            Some(token) => QgaRequest::Sync {
                id,
                token: token.clone(),
                delimited: name == SYNC_DELIMITED,
            },
            None => invalid(id, "Parameter 'id' is missing"),
        };
    }
    QgaRequest::Command {
        id,
        name,
        arguments,
    }
}

fn invalid(id: Option<Value>, desc: impl Into<String>) -> QgaRequest {
    QgaRequest::Invalid {
        id,
        desc: desc.into(),
    }
}

/// The dispatcher's view of a command request.
pub fn incoming(id: Option<Value>, name: String, arguments: Value) -> Incoming {
    Incoming {
        id,
        request: Ok::<_, RequestError>(Request {
            name,
            value: arguments,
        }),
    }
}

/// `{"return": VALUE}` (ASCII, as qemu-ga escapes non-ASCII; with `"id"` after it when the request had one), without the newline.
pub fn encode_return(value: &Value, id: Option<&Value>) -> String {
    let mut out = format!("{{\"return\": {}", to_ascii_json(value));
    push_id(&mut out, id);
    out
}

/// `{"error": {"class": CLASS, "desc": DESC}}` (with `"id"`), without the newline.
pub fn encode_error(class: &str, desc: &str, id: Option<&Value>) -> String {
    let error = serde_json::json!({ "class": class, "desc": desc });
    let mut out = format!("{{\"error\": {}", to_ascii_json(&error));
    push_id(&mut out, id);
    out
}

fn push_id(out: &mut String, id: Option<&Value>) {
    if let Some(id) = id {
        out.push_str(&format!(", \"id\": {}", to_ascii_json(id)));
    }
    out.push('}');
}

/// The qga form of a dispatcher reply to command `name`; `None` when qemu-ga sends nothing
/// (a successful command without success response).
pub fn encode_reply(name: &str, reply: &Reply, id: Option<&Value>) -> Option<String> {
    if reply.returncode == code::OK {
        if NO_SUCCESS_RESPONSE.contains(&name) {
            return None;
        }
        // A native handler answering a qga name would send plain text: return it as a string.
        let value = serde_json::from_str(&reply.message)
            .unwrap_or_else(|_| Value::String(reply.message.clone()));
        return Some(encode_return(&value, id));
    }
    let (class, desc) = match reply.returncode.as_str() {
        code::NOT_FOUND => (
            "CommandNotFound",
            format!("The command {name} has not been found"),
        ),
        code::FORBIDDEN => (
            "CommandNotFound",
            format!("The command {name} has been disabled for this instance"),
        ),
        _ => ("GenericError", reply.message.clone()),
    };
    Some(encode_error(class, &desc, id))
}

/// A successful handler reply carrying `value` (what qga handlers return).
pub fn ok(value: &Value) -> Reply {
    Reply::ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_commands_and_sync() {
        match parse(br#"{"execute":"guest-ping","id":5}"#) {
            QgaRequest::Command {
                id,
                name,
                arguments,
            } => {
                assert_eq!(id, Some(json!(5)));
                assert_eq!(name, "guest-ping");
                assert_eq!(arguments, json!({}));
            }
            other => panic!("{other:?}"),
        }
        match parse(br#"{"execute":"guest-sync-delimited","arguments":{"id":7}}"#) {
            QgaRequest::Sync {
                token, delimited, ..
            } => {
                assert_eq!(token, json!(7));
                assert!(delimited);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_what_qemu_ga_rejects() {
        for (line, want) in [
            (&b"[1]"[..], "must be a JSON object"),
            (br#"{"foo":1}"#, "'foo' is unexpected"),
            (br#"{"execute":5}"#, "must be a string"),
            (br#"{"arguments":{}}"#, "lacks member 'execute'"),
            (br#"{"execute":"x","arguments":3}"#, "must be an object"),
            (br#"{"execute":"guest-sync"}"#, "'id' is missing"),
            (b"not json", "JSON parse error"),
        ] {
            match parse(line) {
                QgaRequest::Invalid { desc, .. } => assert!(desc.contains(want), "{desc}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn encodes_like_qemu_ga() {
        assert_eq!(
            encode_return(&json!({}), Some(&json!("a"))),
            r#"{"return": {}, "id": "a"}"#
        );
        let r = encode_reply("nope", &Reply::new(code::NOT_FOUND, "x"), None).unwrap();
        assert_eq!(
            r,
            r#"{"error": {"class":"CommandNotFound","desc":"The command nope has not been found"}}"#
        );
        assert!(encode_reply("guest-shutdown", &Reply::ok("{}"), None).is_none());
        let e = encode_reply("guest-shutdown", &Reply::error("boom"), None).unwrap();
        assert!(e.contains("GenericError") && e.contains("boom"));
    }
}
