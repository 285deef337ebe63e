//! Property tests of request parsing and reply encoding: any bytes give a request or one of
//! the spec's errors (never a panic), and what a host or guestd encodes decodes to itself.

use guestd_core::wire::{Reply, Request, msg, parse_request, to_ascii_json};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any JSON value without floats (float text round trips are serde_json's business, not ours).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn is_spec_error(reply: &Reply) -> bool {
    reply.returncode == "500"
        && (reply.message == msg::MALFORMED || reply.message == msg::MISSING_NAME)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_bytes_parse_or_fail_with_a_spec_error(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let incoming = parse_request(&bytes);
        if let Err(e) = &incoming.request {
            prop_assert!(is_spec_error(&e.0), "{:?}", e);
        }
    }

    #[test]
    fn any_json_parses_or_fails_with_a_spec_error(value in json_value()) {
        let text = value.to_string();
        let incoming = parse_request(text.as_bytes());
        match (&value, &incoming.request) {
            (Value::Object(obj), Ok(req)) => {
                prop_assert_eq!(obj.get("name"), Some(&Value::String(req.name.clone())));
                prop_assert_eq!(obj.get("value").unwrap_or(&Value::Null), &req.value);
            }
            (Value::Object(obj), Err(e)) => {
                let expected = if obj.contains_key("name") { msg::MALFORMED } else { msg::MISSING_NAME };
                prop_assert_eq!(e.0.message.as_str(), expected);
            }
            (_, Err(e)) => prop_assert_eq!(e.0.message.as_str(), msg::MALFORMED),
            (_, Ok(_)) => prop_assert!(false, "a non-object parsed as a request: {}", text),
        }
    }

    #[test]
    fn requests_round_trip_through_ascii_encoding(
        name in any::<String>(),
        value in json_value(),
        id in prop::option::of("[ -~]{0,12}"),
    ) {
        let request = Request { name: name.clone(), value: value.clone() };
        let encoded = match &id {
            Some(id) => request.encode_with_id(id),
            None => request.encode(),
        };
        prop_assert!(encoded.is_ascii());
        let incoming = parse_request(encoded.as_bytes());
        prop_assert_eq!(incoming.request.unwrap(), request);
        prop_assert_eq!(incoming.id, id.map(Value::String));
    }

    #[test]
    fn replies_round_trip_and_stay_ascii(
        code in prop_oneof![Just("0".to_string()), Just("D0".to_string()), "[0-9A-Z]{1,4}"],
        message in any::<String>(),
        id in prop::option::of(prop_oneof![any::<i64>().prop_map(Value::from), "[ -~]{0,12}".prop_map(Value::String)]),
    ) {
        let reply = Reply::new(code, message);
        let encoded = reply.encode_with_id(id.as_ref());
        prop_assert!(encoded.is_ascii());
        prop_assert!(!encoded.contains('\n'), "one reply is one line");
        let (back_id, back) = Reply::decode(&encoded).unwrap();
        prop_assert_eq!(back, reply);
        prop_assert_eq!(back_id, id);
    }

    #[test]
    fn ascii_json_is_the_same_value(value in json_value()) {
        let text = to_ascii_json(&value);
        prop_assert!(text.is_ascii());
        prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn reply_decode_never_panics(text in any::<String>()) {
        let _ = Reply::decode(&text);
    }
}
