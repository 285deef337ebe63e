//! The stream frame decoder: any bytes, split into reads anywhere, give the same frames as one
//! read, and no frame breaks the decoder's promises (no delimiter inside, never over the limit).
#![no_main]

use guestd_core::framing::{Frame, LineDecoder, RESYNC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&head, input)) = data.split_first() else {
        return;
    };
    let max = usize::from(head % 64) + 1;

    let mut whole = Vec::new();
    LineDecoder::new(max).push(input, &mut whole);

    // Split at pseudo-random points taken from the input itself.
    let mut chunked = Vec::new();
    let mut decoder = LineDecoder::new(max);
    let mut rest = input;
    let mut step = usize::from(head).max(1);
    while !rest.is_empty() {
        let n = (step % 17 + 1).min(rest.len());
        decoder.push(&rest[..n], &mut chunked);
        step = step.wrapping_mul(31).wrapping_add(usize::from(rest[0]));
        rest = &rest[n..];
    }
    assert_eq!(whole, chunked, "splitting the input changed the frames");

    for frame in &whole {
        if let Frame::Line(line) = frame {
            assert!(line.len() <= max, "line over the limit");
            assert!(!line.contains(&b'\n') && !line.contains(&RESYNC));
            assert!(
                !line.iter().all(u8::is_ascii_whitespace),
                "blank line emitted"
            );
        }
    }
    decoder.reset();
    assert!(!decoder.has_partial());
});
