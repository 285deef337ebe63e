//! `guestctl configure FILE|-`: send a `configure` document and print the whole result.
//!
//! A document that fits one request goes inline. One that does not (XenStore carries at most
//! 4096 bytes per request, and guestctl keeps well under it) is written to the guest first
//! with `file_inject`, in parts under guestd's inbox, and `configure` then names the parts
//! (`{"document_path": [...]}`); guestd reads them (root's files only), removes them and runs
//! the document. When the reply is a shortened summary (`"complete": false`), the whole result
//! is fetched page by page with `{"result": ID, "from": N}`.

use base64::Engine;
use guestd_core::{Reply, Request};
use serde_json::{Value, json};

use crate::ClientError;

/// Where document parts go on the guest (guestd removes them once read).
pub const INBOX: &str = "/var/lib/guestd/configure/inbox";

/// The longest request guestctl sends over XenStore (the protocol's limit is 4096 bytes for
/// the path and the value together).
pub const XENSTORE_REQUEST_LIMIT: usize = 3000;

/// How to send the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigureOptions {
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// The longest request the channel takes (`None`: no limit worth caring about).
    pub max_request: Option<usize>,
    /// Put the document on the guest with `file_inject` even when it fits one request.
    pub via_inbox: bool,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigureOutcome {
    /// `"0"` when every resource is unchanged or changed.
    pub returncode: String,
    /// The whole result (every resource, with changes, notes and script output), or the
    /// agent's message when it refused the document.
    pub result: Value,
}

impl ConfigureOutcome {
    pub fn ok(&self) -> bool {
        self.returncode == "0"
    }
}

/// Why `configure` got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("{0}")]
    Document(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the agent answered {returncode}: {message}")]
    Agent { returncode: String, message: String },
}

/// Check a document's text: a JSON object with a `resources` list.
pub fn parse_document(text: &str) -> Result<Value, ConfigureError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ConfigureError::Document(format!("the document is not JSON: {e}")))?;
    if !value.get("resources").is_some_and(Value::is_array) {
        return Err(ConfigureError::Document(
            "the document must be a JSON object with a \"resources\" list".into(),
        ));
    }
    Ok(value)
}

/// Send `document` through `call` (one request in, its reply out) and return the whole result.
pub fn configure(
    call: &mut dyn FnMut(&Request) -> Result<Reply, ClientError>,
    document: &Value,
    options: ConfigureOptions,
) -> Result<ConfigureOutcome, ConfigureError> {
    let mut document = document.clone();
    if options.dry_run {
        document["dry_run"] = Value::Bool(true);
    }
    let inline = Request::new("configure", document.clone());
    let too_big = options
        .max_request
        .is_some_and(|max| inline.encode().len() > max);
    let max = options.max_request.unwrap_or(XENSTORE_REQUEST_LIMIT);
    let request = if options.via_inbox || too_big {
        let parts = inject_parts(call, &document.to_string(), max)?;
        Request::new("configure", json!({ "document_path": parts }))
    } else {
        inline
    };
    let reply = call(&request)?;
    finish(call, reply)
}

/// The whole stored result `id`, page by page.
pub fn fetch_result(
    call: &mut dyn FnMut(&Request) -> Result<Reply, ClientError>,
    id: &str,
) -> Result<Value, ConfigureError> {
    let mut from = 0u64;
    let mut whole: Option<Value> = None;
    loop {
        let reply = call(&Request::new(
            "configure",
            json!({"result": id, "from": from}),
        ))?;
        if !reply.is_success() {
            return Err(ConfigureError::Agent {
                returncode: reply.returncode,
                message: reply.message,
            });
        }
        let mut page: Value = serde_json::from_str(&reply.message).map_err(|e| {
            ConfigureError::Document(format!("the agent's result page is not JSON: {e}"))
        })?;
        let next = page["next"].as_u64();
        let entries = page["resources"].as_array().cloned().unwrap_or_default();
        match &mut whole {
            None => {
                if let Some(o) = page.as_object_mut() {
                    o.remove("from");
                    o.remove("next");
                }
                whole = Some(page);
            }
            Some(w) => {
                if let Some(list) = w["resources"].as_array_mut() {
                    list.extend(entries);
                }
            }
        }
        match next {
            Some(n) if n > from => from = n,
            _ => break,
        }
    }
    Ok(whole.unwrap_or(Value::Null))
}

fn finish(
    call: &mut dyn FnMut(&Request) -> Result<Reply, ClientError>,
    reply: Reply,
) -> Result<ConfigureOutcome, ConfigureError> {
    let Ok(summary) = serde_json::from_str::<Value>(&reply.message) else {
        // A refusal (or an agent without configure) answers in words.
        return Err(ConfigureError::Agent {
            returncode: reply.returncode,
            message: reply.message,
        });
    };
    let result = match (summary["complete"].as_bool(), summary["id"].as_str()) {
        (Some(false), Some(id)) => fetch_result(call, id)?,
        _ => {
            let mut s = summary;
            if let Some(o) = s.as_object_mut() {
                o.remove("complete");
            }
            s
        }
    };
    Ok(ConfigureOutcome {
        returncode: reply.returncode,
        result,
    })
}

/// Write `text` to the guest's inbox in parts small enough for `max`-byte requests; return
/// their paths in order.
fn inject_parts(
    call: &mut dyn FnMut(&Request) -> Result<Reply, ClientError>,
    text: &str,
    max: usize,
) -> Result<Vec<String>, ConfigureError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let token = crate::new_id();
    // The request around a part: {"name":"file_inject","value":{"b64_path":..,"b64_file":..}}
    // with the path in base64 too; what is left holds the part's base64 (4 bytes per 3).
    let overhead = 120 + (INBOX.len() + 48) * 4 / 3;
    let chunk = (max.saturating_sub(overhead) / 4 * 3).max(256);
    let bytes = text.as_bytes();
    let mut paths = Vec::new();
    for (n, part) in bytes.chunks(chunk).enumerate() {
        let path = format!("{INBOX}/{token}.{n:04}");
        let request = Request::new(
            "file_inject",
            json!({"b64_path": b64.encode(&path), "b64_file": b64.encode(part)}),
        );
        let reply = call(&request)?;
        if !reply.is_success() {
            return Err(ConfigureError::Agent {
                returncode: reply.returncode,
                message: format!(
                    "putting the document on the guest failed: {}",
                    reply.message
                ),
            });
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent stand-in: keeps injected parts, answers configure with a summary that says
    /// what it got.
    #[test]
    fn large_documents_go_in_parts_and_short_summaries_are_completed() {
        let resources: Vec<Value> = (0..100)
            .map(|i| json!({"name": format!("r{i}"), "kind": "file", "path": format!("/etc/f{i}"), "content": "x".repeat(50)}))
            .collect();
        let doc = json!({"resources": resources});
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut sizes = Vec::new();
        let mut call = |req: &Request| -> Result<Reply, ClientError> {
            sizes.push(req.encode().len());
            let b64 = base64::engine::general_purpose::STANDARD;
            match req.name.as_str() {
                "file_inject" => {
                    let path = b64.decode(req.value["b64_path"].as_str().unwrap()).unwrap();
                    let body = b64.decode(req.value["b64_file"].as_str().unwrap()).unwrap();
                    files.push((String::from_utf8(path).unwrap(), body));
                    Ok(Reply::ok(""))
                }
                "configure" if req.value.get("document_path").is_some() => {
                    let paths = req.value["document_path"].as_array().unwrap();
                    let mut text = Vec::new();
                    for p in paths {
                        let (_, body) = files
                            .iter()
                            .find(|(f, _)| f == p.as_str().unwrap())
                            .unwrap();
                        text.extend_from_slice(body);
                    }
                    let got: Value = serde_json::from_slice(&text).unwrap();
                    assert_eq!(got["dry_run"], true);
                    assert_eq!(got["resources"].as_array().unwrap().len(), 100);
                    Ok(Reply::ok(
                        json!({"id": "1-ab", "counts": {"changed": 100}, "resources": [], "complete": false})
                            .to_string(),
                    ))
                }
                "configure" => {
                    let from = req.value["from"].as_u64().unwrap();
                    let next = if from < 90 {
                        json!(from + 10)
                    } else {
                        Value::Null
                    };
                    let entries: Vec<Value> = (from..from + 10)
                        .map(|i| json!({"name": format!("r{i}")}))
                        .collect();
                    Ok(Reply::ok(
                        json!({"id": "1-ab", "counts": {"changed": 100}, "from": from, "next": next, "resources": entries})
                            .to_string(),
                    ))
                }
                other => panic!("unexpected {other}"),
            }
        };
        let out = configure(
            &mut call,
            &doc,
            ConfigureOptions {
                dry_run: true,
                max_request: Some(XENSTORE_REQUEST_LIMIT),
                via_inbox: false,
            },
        )
        .unwrap();
        assert!(out.ok());
        assert_eq!(out.result["resources"].as_array().unwrap().len(), 100);
        assert!(out.result.get("next").is_none());
        assert!(
            sizes.iter().all(|s| *s <= XENSTORE_REQUEST_LIMIT),
            "{sizes:?}"
        );
        assert!(files.len() > 3);
        assert!(files.iter().all(|(p, _)| p.starts_with(INBOX)));
    }

    #[test]
    fn documents_are_checked_before_sending() {
        assert!(parse_document("{\"resources\": []}").is_ok());
        assert!(parse_document("[1]").is_err());
        assert!(parse_document("{").is_err());
    }
}
