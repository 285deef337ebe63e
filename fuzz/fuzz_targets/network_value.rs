//! The network JSON parsers of `resetnetwork`: the command's value (inline JSON or a string),
//! nova's interface objects, a config drive's `network_data.json`, and the MAC and hostname
//! parsers under them. Any input is a network spec or an error, never a panic.
#![no_main]

use guestd_network_model::config_drive::parse_network_data;
use guestd_network_model::nova::{parse_inline, parse_interface};
use guestd_network_model::{Hostname, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_inline(&Value::String(text.to_string()));
    let _ = Mac::parse(text);
    if let Ok(name) = Hostname::parse(text) {
        // A valid hostname re-parses to itself.
        assert_eq!(Hostname::parse(name.as_str()).ok(), Some(name));
    }
    if let Ok(mac) = Mac::parse(text) {
        assert_eq!(Mac::parse(&mac.to_string()).ok(), Some(mac));
    }
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let _ = parse_inline(&value);
        let _ = parse_interface(&value, "fuzz");
        let _ = parse_network_data(&value);
    }
});
