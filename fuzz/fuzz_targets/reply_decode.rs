//! Reply decoding (guestctl reading an agent): any text decodes or fails cleanly; a decoded
//! reply re-encodes to ASCII and decodes to itself.
#![no_main]

use guestd_core::wire::Reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((id, reply)) = Reply::decode(text) {
        let encoded = reply.encode_with_id(id.as_ref());
        assert!(encoded.is_ascii());
        let (id2, reply2) = Reply::decode(&encoded).expect("re-encoded reply decodes");
        assert_eq!(reply2, reply);
        assert_eq!(id2, id);
    }
});
