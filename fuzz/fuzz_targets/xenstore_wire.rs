//! The XenStore wire decoder: any bytes give messages or a protocol error (never a panic, never
//! an allocation the header's length field asks for beyond the limit); a decoded message
//! encodes back to exactly the bytes it came from.
#![no_main]

use guestd_transport_xenstore::wire::{Message, PAYLOAD_MAX, read_message, split_fields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((message, used))) = Message::parse(rest) {
        assert!(message.payload.len() <= PAYLOAD_MAX);
        assert_eq!(message.encode(), &rest[..used], "re-encoding changed the message");
        let _ = message.fields();
        let _ = message.error_name();
        rest = &rest[used..];
    }
    let mut reader = std::io::Cursor::new(data);
    while let Ok(Ok(Some((_header, payload)))) = read_message(&mut reader) {
        assert!(payload.len() <= PAYLOAD_MAX);
        let _ = split_fields(&payload);
    }
});
