//! The qga value splitter: any bytes, split into reads anywhere, give the same frames as one
//! read; it never holds or emits more than its limit; every value it emits that parses is one
//! JSON value; `0xFF` then a request always gets the request through.
#![no_main]

use guestd_core::framing::values::ValueSplitter;
use guestd_core::framing::{Frame, RESYNC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, input)) = data.split_first() else {
        return;
    };
    let max = usize::from(head % 64) + 1;

    let mut whole = Vec::new();
    let mut splitter = ValueSplitter::new(max);
    splitter.push(input, &mut whole);

    // Split at pseudo-random points taken from the input itself.
    let mut chunked = Vec::new();
    let mut splitter = ValueSplitter::new(max);
    let mut rest = input;
    let mut step = usize::from(head).max(1);
    while !rest.is_empty() {
        let n = (step % 17 + 1).min(rest.len());
        splitter.push(&rest[..n], &mut chunked);
        assert!(splitter.buffered() <= max, "held more than the limit");
        step = step.wrapping_mul(31).wrapping_add(usize::from(rest[0]));
        rest = &rest[n..];
    }
    assert_eq!(whole, chunked, "splitting the input changed the frames");
    for frame in &whole {
        if let Frame::Line(value) = frame {
            assert!(value.len() <= max, "value over the limit");
            assert!(!value.contains(&RESYNC));
        }
    }

    // Whatever came before, 0xFF and a request get the request through.
    let mut out = Vec::new();
    splitter.push(b"\xff{\"execute\":\"guest-ping\"}", &mut out);
    if max >= 24 {
        assert_eq!(
            out.last(),
            Some(&Frame::Line(b"{\"execute\":\"guest-ping\"}".to_vec()))
        );
    }
});
