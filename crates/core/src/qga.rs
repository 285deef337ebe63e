//! The qemu-guest-agent (QMP-style) dialect of a stream conversation, so libvirt and OpenStack
//! on KVM can talk to guestd as they talk to qemu-ga.
//!
//! Requests are `{"execute": NAME, "arguments": {...}, "id": ...}`, one JSON value each (the
//! framing, `0xFF` resynchronisation and qemu-ga's lexical errors are
//! [`ValueSplitter`](crate::framing::values::ValueSplitter)'s). Replies are `{"return": VALUE}`
//! or `{"error": {"class": CLASS, "desc": TEXT}}`, with the request's `"id"` echoed after them
//! as qemu-ga does. `guest-sync` (returns its `id` argument) and `guest-sync-delimited` (the
//! same, preceded by `0xFF`) are answered by the stream layer at once, like the native `sync`,
//! but are registered commands ([`SyncHandler`]) so that the policy and `guest-info` see them.
//! Every other command goes through the [`Dispatcher`](crate::Dispatcher) under its qga name,
//! so the command policy and timeouts apply unchanged; a handler of a qga command has
//! [`Dialect::Qga`] and answers with [`code::OK`] and the JSON text of its return value as
//! message. [`arguments`] decodes a command's arguments with qemu's error wording.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::dispatch::{Context, Dialect, Handler, HandlerError};
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

/// `guest-sync` and `guest-sync-delimited`: return the `id` argument (an integer, as in
/// qemu-ga). The stream layer answers them without waiting for a command still running on the
/// channel (they exist to resynchronise after a client timed out) and puts `0xFF` before the
/// delimited one's reply; `run` gives the same answer for any other caller.
#[derive(Debug, Clone, Copy)]
pub struct SyncHandler {
    name: &'static str,
}

impl SyncHandler {
    pub const ALL: [SyncHandler; 2] = [
        SyncHandler {
            name: SYNC_DELIMITED,
        },
        SyncHandler { name: SYNC },
    ];
}

impl Handler for SyncHandler {
    fn name(&self) -> &'static str {
        self.name
    }

    fn dialect(&self) -> Dialect {
        Dialect::Qga
    }

    fn may_block(&self) -> bool {
        false
    }

    fn is_query(&self) -> bool {
        true
    }

    fn handle(&self, _ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        sync_return(value).map(|v| ok(&v))
    }
}

/// What `guest-sync` returns for these arguments.
pub fn sync_return(args: &Value) -> Result<Value, HandlerError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SyncArgs {
        id: i64,
    }
    arguments::<SyncArgs>(args).map(|a| Value::from(a.id))
}

/// Whether `name` is answered by the stream layer ([`SyncHandler`]).
pub fn is_sync(name: &str) -> bool {
    name == SYNC || name == SYNC_DELIMITED
}

/// One decoded qga request.
#[derive(Debug)]
pub enum QgaRequest {
    /// A command (`arguments` is the arguments object, `{}` when absent).
    ProcessSpec {
        id: Option<Value>,
        name: String,
        arguments: Value,
    },
    /// Unusable input: answered with this error.
    Invalid { id: Option<Value>, desc: String },
}

/// Decode one JSON value the way qemu-ga's QMP dispatcher checks its input.
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
    QgaRequest::ProcessSpec {
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
        // qapi/qmp-dispatch.c's words with the reason qemu-ga 10 gives for a command its
        // --allow-rpcs/--block-rpcs leave out (7.2 stops after "disabled"; much older QEMUs
        // said "The command ... has been disabled for this instance", as a GenericError).
        code::FORBIDDEN => (
            "CommandNotFound",
            format!("Command {name} has been disabled: the command is not allowed"),
        ),
        _ => ("GenericError", reply.message.clone()),
    };
    Some(encode_error(class, &desc, id))
}

/// A successful handler reply carrying `value` (what qga handlers return).
pub fn ok(value: &Value) -> Reply {
    Reply::ok(value.to_string())
}

/// A command's arguments as `T`, refused with the words of qemu's QAPI input visitor:
/// `Parameter 'bogus' is unexpected` (with `#[serde(deny_unknown_fields)]`), `Parameter 'id' is
/// missing`, `Invalid parameter type for 'keys[1]', expected: string`, `Parameter 'mode' does
/// not accept value 'sideways'`. A null value (a native request without one) counts as no
/// arguments.
pub fn arguments<T: DeserializeOwned>(value: &Value) -> Result<T, HandlerError> {
    let empty = Value::Object(Map::new());
    let value = match value {
        Value::Null => &empty,
        Value::Object(_) => value,
        _ => {
            return Err(HandlerError::BadRequest(
                "QMP input member 'arguments' must be an object".into(),
            ));
        }
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        HandlerError::BadRequest(qapi_wording(&path, &e.into_inner().to_string()))
    })
}

/// qemu's wording of a serde error at `path` (`.` for the arguments object itself).
fn qapi_wording(path: &str, serde: &str) -> String {
    let at = |member: &str| match path {
        "." | "" => member.to_owned(),
        parent => format!("{parent}.{member}"),
    };
    let backticked = |text: &str| text.split('`').nth(1).unwrap_or_default().to_owned();
    if let Some(rest) = serde.strip_prefix("missing field ") {
        return format!("Parameter '{}' is missing", at(&backticked(rest)));
    }
    if let Some(rest) = serde.strip_prefix("unknown field ") {
        // serde_path_to_error's path already ends at the unknown member.
        let name = backticked(rest);
        let full = if path.ends_with(&name) {
            path.to_owned()
        } else {
            at(&name)
        };
        return format!("Parameter '{full}' is unexpected");
    }
    if let Some(rest) = serde.strip_prefix("unknown variant ") {
        return format!(
            "Parameter '{path}' does not accept value '{}'",
            backticked(rest)
        );
    }
    if serde.starts_with("invalid type: ") || serde.starts_with("invalid value: ") {
        let expected = serde.rsplit_once(", expected ").map_or("", |(_, e)| e);
        return format!(
            "Invalid parameter type for '{path}', expected: {}",
            qapi_type(expected)
        );
    }
    format!("Invalid parameter '{path}': {serde}")
}

/// The QAPI name of what serde expected.
fn qapi_type(serde: &str) -> &str {
    let serde = serde.trim_start_matches("a ").trim_start_matches("an ");
    match serde {
        "string" | "borrowed string" | "char" => "string",
        "boolean" => "boolean",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "integer" => "integer",
        "f32" | "f64" | "number" => "number",
        "sequence" | "array" | "tuple" => "array",
        "map" => "object",
        s if s.starts_with("struct ") || s.starts_with("map") => "object",
        s if s.starts_with("tuple") || s.starts_with("sequence") || s.starts_with("array") => {
            "array"
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_commands_and_sync() {
        match parse(br#"{"execute":"guest-ping","id":5}"#) {
            QgaRequest::ProcessSpec {
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
        assert_eq!(sync_return(&json!({"id": -7})).unwrap(), json!(-7));
    }

    #[test]
    fn rejects_what_qemu_ga_rejects() {
        for (line, want) in [
            (&b"[1]"[..], "must be a JSON object"),
            (br#"{"foo":1}"#, "'foo' is unexpected"),
            (br#"{"execute":5}"#, "must be a string"),
            (br#"{"arguments":{}}"#, "lacks member 'execute'"),
            (br#"{"execute":"x","arguments":3}"#, "must be an object"),
            (b"not json", "JSON parse error"),
        ] {
            match parse(line) {
                QgaRequest::Invalid { desc, .. } => assert!(desc.contains(want), "{desc}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The replies of Debian's qemu-ga 7.2 to the same arguments.
    #[test]
    fn argument_errors_are_worded_like_qemu() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Keys {
            username: String,
            keys: Vec<String>,
            reset: Option<bool>,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Nested {
            outer: Inner,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            mode: Mode,
            n: u32,
        }
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Mode {
            Halt,
        }
        let err = |v: Value| match arguments::<Keys>(&v) {
            Err(HandlerError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        for (args, want) in [
            (
                json!({"username": "x", "keys": ["a", 5]}),
                "Invalid parameter type for 'keys[1]', expected: string",
            ),
            (
                json!({"username": "x", "keys": "a"}),
                "Invalid parameter type for 'keys', expected: array",
            ),
            (
                json!({"username": 5, "keys": []}),
                "Invalid parameter type for 'username', expected: string",
            ),
            (
                json!({"username": "x", "keys": [], "reset": "y"}),
                "Invalid parameter type for 'reset', expected: boolean",
            ),
            (json!({"username": "x"}), "Parameter 'keys' is missing"),
            (
                json!({"username": "x", "keys": [], "bogus": 1}),
                "Parameter 'bogus' is unexpected",
            ),
            (json!(null), "Parameter 'username' is missing"),
            (json!([1]), "QMP input member 'arguments' must be an object"),
        ] {
            assert_eq!(err(args.clone()), want, "{args}");
        }
        let sync = |v: Value| match sync_return(&v) {
            Err(HandlerError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            sync(json!({"id": "x"})),
            "Invalid parameter type for 'id', expected: integer"
        );
        assert_eq!(
            sync(json!({"id": 1.5})),
            "Invalid parameter type for 'id', expected: integer"
        );
        assert_eq!(sync(json!({})), "Parameter 'id' is missing");
        let nested = |v: Value| match arguments::<Nested>(&v) {
            Err(HandlerError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            nested(json!({"outer": {"mode": "sideways", "n": 1}})),
            "Parameter 'outer.mode' does not accept value 'sideways'"
        );
        assert_eq!(
            nested(json!({"outer": {"mode": "halt", "n": -1}})),
            "Invalid parameter type for 'outer.n', expected: integer"
        );
        assert_eq!(
            nested(json!({"outer": {"mode": "halt"}})),
            "Parameter 'outer.n' is missing"
        );
        assert_eq!(
            nested(json!({"outer": {"mode": "halt", "n": 1, "x": 2}})),
            "Parameter 'outer.x' is unexpected"
        );
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
        let r = encode_reply("guest-exec", &Reply::new(code::FORBIDDEN, "x"), None).unwrap();
        assert_eq!(
            r,
            r#"{"error": {"class":"CommandNotFound","desc":"Command guest-exec has been disabled: the command is not allowed"}}"#
        );
        assert!(encode_reply("guest-shutdown", &Reply::ok("{}"), None).is_none());
        let e = encode_reply("guest-shutdown", &Reply::error("boom"), None).unwrap();
        assert!(e.contains("GenericError") && e.contains("boom"));
    }
}
