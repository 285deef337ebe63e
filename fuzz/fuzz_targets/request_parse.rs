//! Request parsing: any bytes give a request or one of the spec's error replies; a parsed
//! request re-encodes (ASCII) to something that parses to the same request.
#![no_main]

use guestd_core::wire::{msg, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let incoming = parse_request(data);
    match incoming.request {
        Err(e) => {
            assert_eq!(e.0.returncode, "500");
            assert!(e.0.message == msg::MALFORMED || e.0.message == msg::MISSING_NAME);
        }
        Ok(request) => {
            let encoded = match &incoming.id {
                Some(serde_json::Value::String(id)) => request.encode_with_id(id),
                _ => request.encode(),
            };
            assert!(encoded.is_ascii());
            let again = parse_request(encoded.as_bytes());
            assert_eq!(again.request.expect("re-encoded request parses"), request);
        }
    }
});
