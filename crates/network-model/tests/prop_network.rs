//! Property tests of the network parsers `resetnetwork` feeds with host data: they never panic
//! on any input, and what they accept prints back to something they parse to the same value.

use guestd_network_model::config_drive::parse_network_data;
use guestd_network_model::nova::{parse_inline, parse_interface};
use guestd_network_model::{Hostname, Mac};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON, with extra weight on the keys and shapes nova uses.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("mac".to_string()),
        Just("label".to_string()),
        Just("ips".to_string()),
        Just("ip6s".to_string()),
        Just("ip".to_string()),
        Just("netmask".to_string()),
        Just("gateway".to_string()),
        Just("dns".to_string()),
        Just("routes".to_string()),
        Just("hostname".to_string()),
        Just("links".to_string()),
        Just("networks".to_string()),
        Just("services".to_string()),
        Just("type".to_string()),
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[0-9a-fA-F:]{0,20}".prop_map(Value::String),
        "[0-9.]{0,18}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn network_values_never_panic(value in json_value()) {
        let _ = parse_inline(&value);
        let _ = parse_inline(&Value::String(value.to_string()));
        let _ = parse_interface(&value, "prop");
        let _ = parse_network_data(&value);
    }

    #[test]
    fn any_text_value_never_panics(text in any::<String>()) {
        let _ = parse_inline(&Value::String(text.clone()));
        let _ = Mac::parse(&text);
        let _ = Hostname::parse(&text);
    }

    #[test]
    fn macs_round_trip_in_every_spelling(bytes in any::<[u8; 6]>()) {
        let mac = Mac(bytes);
        let text = mac.to_string();
        prop_assert_eq!(Mac::parse(&text).unwrap(), mac);
        prop_assert_eq!(Mac::parse(&mac.upper()).unwrap(), mac);
        prop_assert_eq!(Mac::parse(&text.replace(':', "-")).unwrap(), mac);
        prop_assert_eq!(Mac::parse(&text.replace(':', "")).unwrap(), mac);
    }

    #[test]
    fn accepted_macs_and_hostnames_reparse_to_themselves(text in "[ -~]{0,40}") {
        if let Ok(mac) = Mac::parse(&text) {
            prop_assert_eq!(Mac::parse(&mac.to_string()).unwrap(), mac);
        }
        if let Ok(name) = Hostname::parse(&text) {
            prop_assert_eq!(Hostname::parse(name.as_str()).unwrap(), name);
        }
    }

    #[test]
    fn valid_hostnames_are_accepted(labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..5)) {
        let name = labels.join(".");
        prop_assert_eq!(Hostname::parse(&name).unwrap().to_string(), name.clone());
        prop_assert_eq!(Hostname::parse(&format!("{name}.")).unwrap().to_string(), name);
    }
}
