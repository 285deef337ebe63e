//! Property tests of the stream frame decoder: it never panics, the way input is split into
//! reads never changes what comes out, and lines round-trip.

use guestd_core::framing::{Frame, LineDecoder, RESYNC};
use proptest::prelude::*;

/// Feed `input` split at `cuts` (sorted positions) and collect the frames.
fn decode_chunked(max: usize, input: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut decoder = LineDecoder::new(max);
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        decoder.push(&input[start..cut], &mut out);
        start = cut;
    }
    out
}

/// The decoder's contract stated on the whole input at once: a line is what lies between two
/// delimiters (`\n` or `0xFF`); one longer than `max` is reported once as `TooLong` (as soon as
/// it is known to be too long, so also when it is cut off by `0xFF` or the end of input);
/// `0xFF` drops a partial line; blank lines are skipped; a trailing `\r` is removed.
fn model(max: usize, input: &[u8]) -> Vec<Frame> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for &b in input {
        if b == b'\n' || b == RESYNC {
            if current.len() > max {
                out.push(Frame::TooLong);
            } else if b == b'\n' && !current.iter().all(u8::is_ascii_whitespace) {
                let mut line = std::mem::take(&mut current);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                out.push(Frame::Line(line));
            }
            current.clear();
        } else {
            current.push(b);
        }
    }
    if current.len() > max {
        out.push(Frame::TooLong);
    }
    out
}

/// Bytes rich in delimiters, carriage returns and blanks.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            2 => Just(b'\n'),
            1 => Just(RESYNC),
            1 => Just(b'\r'),
            1 => Just(b' '),
            4 => prop::char::range('a', 'z').prop_map(|c| c as u8),
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn matches_the_model_however_the_input_is_split(
        max in 0usize..40,
        input in stream_bytes(),
        mut cuts in prop::collection::vec(0usize..300, 0..12),
    ) {
        cuts.sort_unstable();
        prop_assert_eq!(decode_chunked(max, &input, &cuts), model(max, &input));
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once(max in 1usize..64, input in stream_bytes()) {
        let all = decode_chunked(max, &input, &[]);
        let cuts: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(decode_chunked(max, &input, &cuts), all);
    }

    #[test]
    fn lines_round_trip(
        lines in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no delimiter", |b| *b != b'\n' && *b != RESYNC), 1..80)
                .prop_filter("not blank, no trailing CR", |l| {
                    !l.iter().all(u8::is_ascii_whitespace) && l.last() != Some(&b'\r')
                }),
            0..20,
        ),
        mut cuts in prop::collection::vec(0usize..2000, 0..10),
    ) {
        let mut input = Vec::new();
        for line in &lines {
            input.extend_from_slice(line);
            input.extend_from_slice(if input.len() % 2 == 0 { b"\n" } else { b"\r\n" });
        }
        cuts.sort_unstable();
        let expected: Vec<Frame> = lines.into_iter().map(Frame::Line).collect();
        prop_assert_eq!(decode_chunked(80, &input, &cuts), expected);
    }

    #[test]
    fn reset_forgets_partial_input(max in 1usize..64, junk in stream_bytes(), line in "[a-z]{1,20}") {
        let mut decoder = LineDecoder::new(max.max(20));
        let mut out = Vec::new();
        decoder.push(&junk, &mut out);
        decoder.reset();
        prop_assert!(!decoder.has_partial());
        out.clear();
        decoder.push(format!("{line}\n").as_bytes(), &mut out);
        prop_assert_eq!(out, vec![Frame::Line(line.into_bytes())]);
    }
}
