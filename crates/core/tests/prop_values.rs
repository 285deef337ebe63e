//! Property tests of the qga value splitter: it never panics and never holds more than its
//! limit, the way input is split into reads never changes what comes out, JSON values written
//! back to back (with or without whitespace) come out one by one, and `0xFF` or a line end after
//! garbage always gets the next request through.

use guestd_core::framing::values::ValueSplitter;
use guestd_core::framing::{Frame, RESYNC};
use proptest::prelude::*;
use serde_json::Value;

/// Feed `input` split at `cuts` (sorted positions); the frames, and the most bytes held.
fn split_chunked(max: usize, input: &[u8], cuts: &[usize]) -> (Vec<Frame>, usize) {
    let mut splitter = ValueSplitter::new(max);
    let mut out = Vec::new();
    let mut held = 0;
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(start, input.len());
        splitter.push(&input[start..cut], &mut out);
        held = held.max(splitter.buffered());
        start = cut;
    }
    (out, held)
}

/// Bytes rich in what the splitter cares about.
fn json_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            2 => prop::sample::select(b"{}[]\":,'\\".to_vec()),
            1 => Just(RESYNC),
            1 => prop::sample::select(b" \n\r\t".to_vec()),
            3 => prop::sample::select(b"truefalsn0123456789-.eE@".to_vec()),
        ],
        0..400,
    )
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"{}\\\\ ]{0,6}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request-shaped object.
fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn values_of(frames: &[Frame]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Line(bytes) => serde_json::from_slice(bytes).expect("a complete JSON value"),
            other => panic!("unexpected frame {other:?}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_split_of_the_input_into_reads_does_not_matter(
        max in 1usize..64,
        input in json_ish_bytes(),
        mut cuts in prop::collection::vec(0usize..400, 0..16),
    ) {
        cuts.sort_unstable();
        let (all_at_once, _) = split_chunked(max, &input, &[]);
        let (chunked, _) = split_chunked(max, &input, &cuts);
        prop_assert_eq!(&chunked, &all_at_once);
        let every_byte: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(split_chunked(max, &input, &every_byte).0, all_at_once);
    }

    #[test]
    fn memory_and_values_stay_within_the_limit(max in 1usize..64, input in json_ish_bytes()) {
        let every_byte: Vec<usize> = (0..input.len()).collect();
        let (frames, held) = split_chunked(max, &input, &every_byte);
        prop_assert!(held <= max, "held {held} > {max}");
        for frame in frames {
            if let Frame::Line(bytes) = frame {
                prop_assert!(bytes.len() <= max);
            }
        }
    }

    #[test]
    fn values_round_trip_with_any_separator(
        values in prop::collection::vec(json_object(), 0..8),
        separators in prop::collection::vec(prop::sample::select(vec!["", " ", "\n", "\r\n", "\t \n\n"]), 8),
        pretty in any::<bool>(),
        mut cuts in prop::collection::vec(0usize..4000, 0..10),
    ) {
        let mut input = Vec::new();
        for (value, sep) in values.iter().zip(separators.iter().cycle()) {
            let text = if pretty {
                serde_json::to_string_pretty(value).unwrap()
            } else {
                value.to_string()
            };
            input.extend_from_slice(text.as_bytes());
            input.extend_from_slice(sep.as_bytes());
        }
        cuts.sort_unstable();
        let (frames, _) = split_chunked(1 << 20, &input, &cuts);
        prop_assert_eq!(values_of(&frames), values);
    }

    #[test]
    fn resync_byte_always_gets_the_next_request_through(
        junk in json_ish_bytes(),
        request in json_object(),
    ) {
        let mut input = junk;
        input.push(RESYNC);
        input.extend_from_slice(request.to_string().as_bytes());
        let (frames, _) = split_chunked(1 << 20, &input, &[]);
        let after = frames.iter().rposition(|f| matches!(f, Frame::Line(_)));
        prop_assert_eq!(values_of(&frames[after.unwrap()..]), vec![request]);
    }

    #[test]
    fn a_line_end_after_garbage_without_openers_gets_the_next_request_through(
        junk in prop::collection::vec(any::<u8>().prop_filter("no opener", |b| !b"{[\xff".contains(b)), 0..200),
        request in json_object(),
    ) {
        let mut input = junk;
        input.push(b'\n');
        input.extend_from_slice(request.to_string().as_bytes());
        let (frames, _) = split_chunked(1 << 20, &input, &[]);
        let last = frames.last().cloned();
        prop_assert_eq!(last, Some(Frame::Line(request.to_string().into_bytes())));
    }
}
