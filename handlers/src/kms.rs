//! `kmsactivate` (spec §4.8): RHN registration on RHEL (value `{"activation_key", "profile",
//! "domains"}`), KMS activation on Windows (value `"host:port"`). The backend plans it; this
//! handler parses the value, applies the plan and words the errors as the old agent did.
//! Elsewhere: `500` `KMS not supported on this OS`.

use guestd_core::plan::{ApplyOptions, apply};
use guestd_core::{ApplyError, BackendError, Context, Handler, HandlerError, KmsRequest, Reply};
use serde_json::Value;
use tracing::info;
use zeroize::Zeroizing;

pub mod msg {
    pub const UNSUPPORTED: &str = "KMS not supported on this OS";
    pub const INVALID: &str = "Invalid arguments";
}

/// `kmsactivate`.
#[derive(Debug, Clone, Default)]
pub struct KmsActivateHandler;

impl Handler for KmsActivateHandler {
    fn name(&self) -> &'static str {
        "kmsactivate"
    }

    fn default_timeout(&self) -> Option<std::time::Duration> {
        // rhnreg_ks talks to a remote server; slmgr /ato can be slow too.
        Some(std::time::Duration::from_secs(330))
    }

    fn handle(&self, ctx: &Context<'_>, value: &Value) -> Result<Reply, HandlerError> {
        let request = parse(value)?;
        let plan = match ctx.env.backend.kms_activate(&ctx.env.root, &request) {
            Ok(plan) => plan,
            Err(BackendError::Unsupported(_)) => {
                return Err(HandlerError::failed(msg::UNSUPPORTED));
            }
            Err(BackendError::Invalid(m)) => return Err(HandlerError::failed(m)),
            Err(other) => return Err(other.into()),
        };
        let what = match &request {
            KmsRequest::Rhn { .. } => "Couldn't activate with RHN",
            KmsRequest::Kms { .. } => "Couldn't activate with KMS",
        };
        let applied = apply(
            &plan,
            &ctx.env.root,
            ctx.env.runner.as_ref(),
            ApplyOptions::default(),
        )
        .map_err(|e| {
            let status = match &e {
                ApplyError::ProcessSpec {
                    source: guestd_core::ProcessError::Failed { code, .. },
                    ..
                } => code.map_or_else(|| "killed by a signal".into(), |c| c.to_string()),
                other => other.to_string(),
            };
            HandlerError::failed(format!("{what}: {status}"))
        })?;
        // Under a --root sandbox the activation itself may not have run: say so.
        if let Some(not_run) = applied.not_run_message() {
            return Ok(Reply::ok(not_run));
        }
        info!(request = ?request, "activation done");
        Ok(Reply::ok(""))
    }
}

/// Object → RHN, string → KMS server.
fn parse(value: &Value) -> Result<KmsRequest, HandlerError> {
    match value {
        Value::String(server) => Ok(KmsRequest::Kms {
            server: server.trim().to_string(),
        }),
        Value::Object(obj) => {
            let text = |key: &str| match obj.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(HandlerError::failed(format!(
                    "{}: missing '{key}'",
                    msg::INVALID
                ))),
            };
            let domains = match obj.get("domains") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|d| match d {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(HandlerError::failed(format!(
                            "{}: 'domains' must be a list of host names",
                            msg::INVALID
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(HandlerError::failed(format!(
                        "{}: 'domains' must be a list of host names",
                        msg::INVALID
                    )));
                }
            };
            Ok(KmsRequest::Rhn {
                activation_key: Zeroizing::new(text("activation_key")?),
                profile: text("profile")?,
                domains,
            })
        }
        _ => Err(HandlerError::failed(msg::INVALID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_both_forms() {
        let rhn = parse(&json!({"activation_key": "k", "profile": "p", "domains": ["a"]})).unwrap();
        assert!(
            matches!(rhn, KmsRequest::Rhn { ref profile, ref domains, .. }
            if profile == "p" && domains == &["a".to_string()])
        );
        assert!(!format!("{rhn:?}").contains("\"k\""));
        assert_eq!(
            parse(&json!("kms:1688")).unwrap(),
            KmsRequest::Kms {
                server: "kms:1688".into()
            }
        );
        for bad in [
            json!(5),
            json!({"profile": "p"}),
            json!({"activation_key": "k", "profile": "p", "domains": "x"}),
        ] {
            assert!(
                parse(&bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("Invalid arguments")
            );
        }
    }
}
