//! Wire types of the XenServer/OpenStack agent protocol (spec §3) and their exact encoding.
//!
//! A request is `{"name": <command>, "value": <any JSON>}`; a reply is
//! `{"returncode": "<string>", "message": "<string>"}`. Replies are always a JSON object whose
//! `returncode` is a JSON string, encoded as 7-bit ASCII with `\uXXXX` escapes (spec §2.1, §2.4).

use serde_json::{Map, Value};

/// Return codes of record (spec §3.1). Always strings on the wire.
pub mod code {
    /// Success.
    pub const OK: &str = "0";
    /// Success of `keyinit`.
    pub const KEYINIT_OK: &str = "D0";
    /// Command refused by the configured command policy.
    pub const FORBIDDEN: &str = "403";
    /// Unknown command.
    pub const NOT_FOUND: &str = "404";
    /// Any failure.
    pub const ERROR: &str = "500";
}

/// Messages of record (spec §3, U1's strings). Hosts and operators grep for these.
pub mod msg {
    pub const MALFORMED: &str = "Request is malformed";
    pub const MISSING_NAME: &str = "Request is missing 'name' key";
    pub const INTERNAL: &str = "Internal error with request";
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub name: String,
    pub value: Value,
}

impl Request {
    pub fn new(name: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Encode as the host writes it (`{"name": …, "value": …}`), ASCII-only.
    pub fn encode(&self) -> String {
        let mut obj = Map::new();
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("value".into(), self.value.clone());
        to_ascii_json(&Value::Object(obj))
    }

    /// Encode with an `"id"`, as a stream client sends it.
    pub fn encode_with_id(&self, id: &str) -> String {
        let mut obj = Map::new();
        obj.insert("id".into(), Value::String(id.to_string()));
        obj.insert("name".into(), Value::String(self.name.clone()));
        obj.insert("value".into(), self.value.clone());
        to_ascii_json(&Value::Object(obj))
    }
}

/// A reply. `returncode` is kept as a string so that an integer can never reach the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub returncode: String,
    pub message: String,
}

impl Reply {
    pub fn new(returncode: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            returncode: returncode.into(),
            message: message.into(),
        }
    }

    /// `"0"` with a message.
    pub fn ok(message: impl Into<String>) -> Self {
        Self::new(code::OK, message)
    }

    /// `"500"` with a message.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(code::ERROR, message)
    }

    /// Whether the code is one a host counts as success (`"0"`, `"D0"`).
    pub fn is_success(&self) -> bool {
        self.returncode == code::OK || self.returncode == code::KEYINIT_OK
    }

    /// The reply object as the XenStore transport writes it.
    pub fn encode(&self) -> String {
        self.encode_with_id(None)
    }

    /// The reply object with an optional `"id"`, as the stream transports write it. Keys are in
    /// sorted order (`id`, `message`, `returncode`), which is also the old agents' order.
    pub fn encode_with_id(&self, id: Option<&Value>) -> String {
        let mut out = Vec::with_capacity(48 + self.message.len());
        self.encode_into(id, &mut out);
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// [`Reply::encode_with_id`] appended to `out`, without building a JSON tree: replies are
    /// written on every request.
    pub fn encode_into(&self, id: Option<&Value>, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(b'{');
        if let Some(id) = id {
            out.extend_from_slice(b"\"id\":");
            write_json(out, id);
            out.push(b',');
        }
        out.extend_from_slice(b"\"message\":");
        write_json(out, &self.message);
        out.extend_from_slice(b",\"returncode\":");
        write_json(out, &self.returncode);
        out.push(b'}');
        escape_non_ascii(out, start);
    }

    /// Decode a reply written by an agent. Tolerates an integer returncode (old agents).
    pub fn decode(text: &str) -> Result<(Option<Value>, Reply), String> {
        let value: Value =
            serde_json::from_str(text.trim()).map_err(|e| format!("reply is not JSON: {e}"))?;
        let Value::Object(mut obj) = value else {
            return Err("reply is not a JSON object".into());
        };
        let returncode = match obj.remove("returncode") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("reply has no returncode".into()),
        };
        let message = match obj.remove("message") {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        Ok((
            obj.remove("id"),
            Reply {
                returncode,
                message,
            },
        ))
    }
}

/// Why a request could not be decoded; carries the reply of record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct RequestError(pub Reply);

impl RequestError {
    fn malformed() -> Self {
        Self(Reply::error(msg::MALFORMED))
    }
}

/// A decoded request plus the optional stream `"id"` (string or number, echoed as sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub id: Option<Value>,
    pub request: Result<Request, RequestError>,
}

/// Decode one request. Invalid UTF-8, invalid JSON, a non-object, or a non-string name are
/// `Request is malformed`; a missing name is `Request is missing 'name' key`; a missing value is
/// JSON null.
pub fn parse_request(bytes: &[u8]) -> Incoming {
    let malformed = || Incoming {
        id: None,
        request: Err(RequestError::malformed()),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return malformed();
    };
    let Ok(fields) = serde_json::from_str::<RequestFields>(text.trim()) else {
        return malformed();
    };
    let id = match fields.id {
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
        _ => None,
    };
    let request = match fields.name {
        None => Err(RequestError(Reply::error(msg::MISSING_NAME))),
        Some(Value::String(name)) => Ok(Request {
            name,
            value: fields.value.unwrap_or(Value::Null),
        }),
        Some(_) => Err(RequestError::malformed()),
    };
    Incoming { id, request }
}

/// The members of a request object that matter; any others are skipped without being kept.
/// A repeated member counts once, the last one winning (as in Python's `json`, which the old
/// agents and their hosts use).
#[derive(Default)]
struct RequestFields {
    id: Option<Value>,
    name: Option<Value>,
    value: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for RequestFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, Visitor};

        /// A member name, matched without allocating.
        enum Key {
            Id,
            Name,
            Value,
            Other,
        }

        impl<'de> serde::Deserialize<'de> for Key {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl Visitor<'_> for KeyVisitor {
                    type Value = Key;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a member name")
                    }
                    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                        Ok(match key {
                            "id" => Key::Id,
                            "name" => Key::Name,
                            "value" => Key::Value,
                            _ => Key::Other,
                        })
                    }
                }
                d.deserialize_identifier(KeyVisitor)
            }
        }

        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RequestFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestFields, A::Error> {
                let mut fields = RequestFields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Id => fields.id = Some(map.next_value()?),
                        Key::Name => fields.name = Some(map.next_value()?),
                        Key::Value => fields.value = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(fields)
            }
        }

        d.deserialize_map(ObjectVisitor)
    }
}

/// Serialise JSON with every non-ASCII character escaped as `\uXXXX` (surrogate pairs above the
/// BMP), like Python's `json.dumps(ensure_ascii=True)`.
pub fn to_ascii_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write_json(&mut out, value);
    escape_non_ascii(&mut out, 0);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// Compact JSON of `value` appended to `out`.
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("serialising JSON into memory cannot fail");
}

/// Escape every non-ASCII character of the JSON text in `out[start..]` as `\uXXXX`. Non-ASCII
/// can only occur inside strings (serde_json never escapes it), so this is exact.
fn escape_non_ascii(out: &mut Vec<u8>, start: usize) {
    if out[start..].is_ascii() {
        return;
    }
    let text = String::from_utf8(out.split_off(start)).expect("JSON text is UTF-8");
    out.reserve(text.len() + 16);
    for ch in text.chars() {
        if ch.is_ascii() {
            out.push(ch as u8);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_error_vectors() {
        assert_eq!(
            parse_request(b"abc").request.unwrap_err().0,
            Reply::error(msg::MALFORMED)
        );
        assert_eq!(
            parse_request(br#"{"value": ""}"#).request.unwrap_err().0,
            Reply::error(msg::MISSING_NAME)
        );
        assert_eq!(
            parse_request(b"[1,2]").request.unwrap_err().0.message,
            msg::MALFORMED
        );
        assert_eq!(
            parse_request(br#"{"name": 5}"#)
                .request
                .unwrap_err()
                .0
                .message,
            msg::MALFORMED
        );
        assert_eq!(
            parse_request(b"\xff\xfe{}").request.unwrap_err().0.message,
            msg::MALFORMED
        );
    }

    #[test]
    fn parses_host_vectors() {
        let inc = parse_request(br#"{"name": "version", "value": "agent"}"#);
        assert_eq!(inc.request.unwrap(), Request::new("version", "agent"));
        let inc = parse_request(
            br#"{"name": "file_inject", "value": {"b64_file": "eA==", "b64_path": "L3g="}}"#,
        );
        assert_eq!(inc.request.unwrap().value["b64_path"], "L3g=");
        let inc = parse_request(br#"{"id": 7, "name": "features"}"#);
        assert_eq!(inc.id, Some(json!(7)));
        assert_eq!(inc.request.unwrap().value, Value::Null);
    }

    #[test]
    fn other_members_are_skipped_and_the_last_of_a_repeated_one_wins() {
        let inc = parse_request(
            br#"{"x": {"deep": [1, {"y": null}]}, "name": "a", "\u006eame": "version",
                "id": [1], "id": "z", "value": 1, "value": "agent", "extra": "\u00e9"}"#,
        );
        assert_eq!(inc.id, Some(json!("z")));
        assert_eq!(inc.request.unwrap(), Request::new("version", "agent"));
        // Skipped members are still checked: invalid JSON anywhere is malformed.
        assert_eq!(
            parse_request(br#"{"name": "version", "x": [1,}"#)
                .request
                .unwrap_err()
                .0
                .message,
            msg::MALFORMED
        );
        // A deeply nested member that is skipped is walked without recursion: no crash, and
        // the request stands.
        let deep_skipped = format!(
            "{{\"name\":\"x\",\"y\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            parse_request(deep_skipped.as_bytes()).request.unwrap().name,
            "x"
        );
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let deep = format!(
            "{{\"name\":\"x\",\"value\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(
            parse_request(deep.as_bytes())
                .request
                .unwrap_err()
                .0
                .message,
            msg::MALFORMED
        );
    }

    #[test]
    fn reply_encoding_is_ascii_with_string_code() {
        let r = Reply::ok("pässwörd-密码-🔑\n\"");
        let enc = r.encode();
        assert!(enc.is_ascii());
        assert_eq!(
            enc,
            r#"{"message":"p\u00e4ssw\u00f6rd-\u5bc6\u7801-\ud83d\udd11\n\"","returncode":"0"}"#
        );
        let (_, back) = Reply::decode(&enc).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn reply_with_id_echoes_id() {
        let enc = Reply::new("404", "x").encode_with_id(Some(&json!("a1")));
        assert_eq!(enc, r#"{"id":"a1","message":"x","returncode":"404"}"#);
    }
}
