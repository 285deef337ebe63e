//! The qemu-guest-agent framing: a stream of JSON values, as qemu-ga's `json-streamer` reads
//! it. A request ends where its JSON value ends: objects may follow each other directly, or with
//! whitespace or newlines between them; no newline is needed after the last one (QEMU's own
//! `qemu.qmp` client sends none).
//!
//! [`ValueSplitter`] finds those ends without building a tree: it tracks whether it is inside a
//! string (and after a backslash) and how deep the open braces and brackets are, and copies the
//! value's bytes until the value is complete. The complete bytes are handed on as
//! [`Frame::Line`] to be parsed once. Like qemu-ga:
//!
//! - a byte that cannot start or continue a JSON token (`@`, a control character in a string,
//!   an upper-case letter outside one) is a lexical error answered with `JSON parse error, stray
//!   '<token>'`; the splitter then skips to the next structural character or line end (qemu's
//!   lexer recovery), and the rest of the value is skipped until its braces balance (qemu's
//!   streamer recovery), so one bad request costs one error;
//! - a keyword other than `true`, `false`, `null` is `JSON parse error, invalid keyword '<w>'`;
//! - a value longer than the limit is `JSON token size limit exceeded` (reported once; the rest
//!   of the value is skipped, never buffered), nesting deeper than 1024 is `JSON nesting depth
//!   limit exceeded`;
//! - single-quoted strings (a QEMU extension: `{'execute':'guest-ping'}`, common in examples)
//!   are accepted and rewritten as double-quoted ones;
//! - a `0xFF` byte discards any partial input. qemu-ga also answers it with a `stray` error;
//!   guestd does not, as the host ignores everything up to its `guest-sync` reply anyway and an
//!   extra reply could only be mistaken for the answer to its next request.
//!
//! Everything else (a missing colon, a bad number) is found by the JSON parser on the complete
//! value.

use super::{Frame, RESYNC};

/// Deepest nesting of objects and arrays (qemu's `MAX_NESTING`).
pub const MAX_NESTING: u32 = 1024;

/// qemu-ga's description of an oversized value.
pub const TOO_LARGE: &str = "JSON token size limit exceeded";

/// Longest token text quoted back in a `stray` error.
const MAX_QUOTED: usize = 32;

/// Where the lexer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between tokens.
    Between,
    /// Inside a string delimited by `quote`; `escaped` right after a backslash.
    Str { quote: u8, escaped: bool },
    /// Inside a number or keyword.
    Scalar,
    /// After a lexical error: skipping to a structural character or a line end.
    Recovery,
}

/// Incremental splitter of a byte stream into top-level JSON values, bounded by `max` bytes per
/// value.
#[derive(Debug)]
pub struct ValueSplitter {
    /// The value read so far (not used while skipping).
    buf: Vec<u8>,
    max: usize,
    lex: Lex,
    /// Open braces and brackets.
    depth: u32,
    /// A value has started (its first token was seen).
    in_value: bool,
    /// The value is too long or broken: follow it to its end without keeping it.
    skipping: bool,
    /// Where the current token starts in `buf` (for `stray` and keyword errors).
    token_start: usize,
}

impl ValueSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max: max.max(1),
            lex: Lex::Between,
            depth: 0,
            in_value: false,
            skipping: false,
            token_start: 0,
        }
    }

    /// Drop any partial input (a `0xFF`, or the peer went away).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(4096);
        self.lex = Lex::Between;
        self.depth = 0;
        self.in_value = false;
        self.skipping = false;
        self.token_start = 0;
    }

    /// Whether a partial value is pending.
    pub fn has_partial(&self) -> bool {
        self.in_value || self.lex != Lex::Between
    }

    /// Bytes held for the value being read (never more than the limit).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed bytes; complete values, errors and oversized values are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        for &b in data {
            if b == RESYNC {
                self.reset();
                continue;
            }
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Frame>) {
        // A byte that ends a token is looked at again between tokens (qemu's lookahead).
        loop {
            match self.lex {
                Lex::Recovery => {
                    if is_structural(b) || (b < 0x20 && b != b'\t') || b == 0xFE {
                        self.lex = Lex::Between;
                        continue;
                    }
                    return;
                }
                Lex::Str { quote, escaped } => return self.in_string(b, quote, escaped, out),
                Lex::Scalar => {
                    if is_scalar(b) {
                        return self.keep(&[b], out);
                    }
                    self.lex = Lex::Between;
                    self.end_scalar(out);
                    continue;
                }
                Lex::Between => return self.between(b, out),
            }
        }
    }

    fn between(&mut self, b: u8, out: &mut Vec<Frame>) {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if self.in_value {
                    self.keep(&[b], out);
                }
            }
            b'{' | b'[' => {
                self.start_token();
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return self.error("JSON nesting depth limit exceeded".into(), out);
                }
                self.keep(&[b], out);
            }
            b'}' | b']' => {
                if self.depth == 0 {
                    // Nothing is open: qemu's parser sees a closer where a value should be.
                    return self.error("JSON parse error, expecting value".into(), out);
                }
                self.depth -= 1;
                self.keep(&[b], out);
                self.end_token_at_top(out);
            }
            b',' | b':' => {
                if self.depth == 0 {
                    return self.error("JSON parse error, expecting value".into(), out);
                }
                self.keep(&[b], out);
            }
            b'"' | b'\'' => {
                self.start_token();
                self.lex = Lex::Str {
                    quote: b,
                    escaped: false,
                };
                self.keep(b"\"", out);
            }
            b'a'..=b'z' | b'0'..=b'9' | b'-' => {
                self.start_token();
                self.lex = Lex::Scalar;
                self.keep(&[b], out);
            }
            _ => {
                self.start_token();
                self.stray(&[b], out);
            }
        }
    }

    fn in_string(&mut self, b: u8, quote: u8, escaped: bool, out: &mut Vec<Frame>) {
        // qemu's lexer takes 0x20..=0xFD in strings and leaves UTF-8 checks to the parser.
        if b < 0x20 || b == 0xFE {
            return self.stray(&[b], out);
        }
        if escaped {
            self.lex = Lex::Str {
                quote,
                escaped: false,
            };
            // In a single-quoted string `\'` is an apostrophe; everything else stays escaped.
            return match (quote, b) {
                (b'\'', b'\'') => self.keep(b"'", out),
                _ => self.keep(&[b'\\', b], out),
            };
        }
        match b {
            b'\\' => {
                self.lex = Lex::Str {
                    quote,
                    escaped: true,
                }
            }
            _ if b == quote => {
                self.lex = Lex::Between;
                self.keep(b"\"", out);
                self.end_token_at_top(out);
            }
            // A double quote inside a single-quoted string.
            b'"' => self.keep(b"\\\"", out),
            _ => self.keep(&[b], out),
        }
    }

    /// A number or keyword ended (an unknown keyword is a syntax error, not a lexical one: the
    /// byte after it is read as usual).
    fn end_scalar(&mut self, out: &mut Vec<Frame>) {
        if !self.skipping {
            let token = &self.buf[self.token_start.min(self.buf.len())..];
            if token.first().is_some_and(u8::is_ascii_lowercase)
                && !matches!(token, b"true" | b"false" | b"null")
            {
                let word = quoted(token);
                return self.error(format!("JSON parse error, invalid keyword '{word}'"), out);
            }
        }
        self.end_token_at_top(out);
    }

    fn start_token(&mut self) {
        self.in_value = true;
        self.token_start = self.buf.len();
    }

    /// A token ended; at depth 0 that completes the value.
    fn end_token_at_top(&mut self, out: &mut Vec<Frame>) {
        if self.depth > 0 {
            return;
        }
        if !self.skipping {
            out.push(Frame::Line(std::mem::take(&mut self.buf)));
        }
        self.finish_value();
    }

    fn finish_value(&mut self) {
        self.buf.clear();
        self.in_value = false;
        self.skipping = false;
        self.token_start = 0;
    }

    /// Append to the value, or switch to skipping it once it would exceed the limit.
    fn keep(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        if self.skipping {
            return;
        }
        if self.buf.len() + bytes.len() > self.max {
            out.push(Frame::TooLong);
            self.skipping = true;
            self.buf.clear();
            self.buf.shrink_to(4096);
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// A lexical error at `bytes` (after the current token's start).
    fn stray(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        if !self.skipping {
            let mut token = self.buf[self.token_start.min(self.buf.len())..].to_vec();
            token.extend_from_slice(bytes);
            self.error(format!("JSON parse error, stray '{}'", quoted(&token)), out);
        }
        self.lex = Lex::Recovery;
        if self.depth == 0 {
            self.finish_value();
        }
    }

    /// Report `desc` (unless already skipping) and skip the rest of this value.
    fn error(&mut self, desc: String, out: &mut Vec<Frame>) {
        if !self.skipping {
            out.push(Frame::Malformed(desc));
        }
        if self.lex != Lex::Recovery {
            self.lex = Lex::Between;
        }
        if self.depth == 0 {
            self.finish_value();
        } else {
            self.skipping = true;
            self.buf.clear();
        }
    }
}

fn is_structural(b: u8) -> bool {
    matches!(b, b'{' | b'}' | b'[' | b']' | b',' | b':')
}

/// Bytes that continue a number or keyword.
fn is_scalar(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'+' | b'.' | b'E')
}

/// Token text for an error message: lossy UTF-8, clipped.
fn quoted(token: &[u8]) -> String {
    let clipped = &token[..token.len().min(MAX_QUOTED)];
    let mut text = String::from_utf8_lossy(clipped).into_owned();
    if token.len() > MAX_QUOTED {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, input: &[u8]) -> Vec<Frame> {
        let mut s = ValueSplitter::new(max);
        let mut out = Vec::new();
        s.push(input, &mut out);
        out
    }

    fn value(s: &str) -> Frame {
        Frame::Line(s.as_bytes().to_vec())
    }

    fn malformed(s: &str) -> Frame {
        Frame::Malformed(s.into())
    }

    #[test]
    fn values_back_to_back_with_or_without_whitespace() {
        assert_eq!(
            split(100, b"{\"a\":1}{\"b\":[2]}\n\r\n {\"c\":\"}\"}"),
            vec![
                value("{\"a\":1}"),
                value("{\"b\":[2]}"),
                value("{\"c\":\"}\"}")
            ]
        );
        // The last one needs no newline; a top-level scalar ends at the next delimiter.
        assert_eq!(
            split(100, b"[1] 5 \"x\" "),
            vec![value("[1]"), value("5"), value("\"x\"")]
        );
        assert_eq!(split(100, b"12"), vec![]);
    }

    #[test]
    fn strings_hide_braces_and_escaped_quotes() {
        assert_eq!(
            split(100, br#"{"a":"{[\"\\"}"#),
            vec![value(r#"{"a":"{[\"\\"}"#)]
        );
    }

    #[test]
    fn single_quoted_strings_become_double_quoted() {
        assert_eq!(
            split(100, br#"{'execute':'guest-ping','x':'say "hi" \'ok\' \n'}"#),
            vec![value(
                r#"{"execute":"guest-ping","x":"say \"hi\" 'ok' \n"}"#
            )]
        );
    }

    #[test]
    fn lexical_errors_are_qemu_s_and_cost_one_reply() {
        assert_eq!(
            split(100, b"@\n{\"a\":1}"),
            vec![malformed("JSON parse error, stray '@'"), value("{\"a\":1}")]
        );
        // Inside a value: one error, the rest of the value skipped until its braces balance.
        assert_eq!(
            split(100, b"{\"x\": @@ [1, {}]}{\"a\":1}"),
            vec![malformed("JSON parse error, stray '@'"), value("{\"a\":1}")]
        );
        assert_eq!(
            split(100, b"{\"a\":\"b\x01\"}{\"a\":1}"),
            vec![
                malformed("JSON parse error, stray '\"b\u{1}'"),
                value("{\"a\":1}")
            ]
        );
        // As qemu-ga: the keyword ends at the upper-case letter, which is stray.
        assert_eq!(
            split(100, b"tRue {}"),
            vec![
                malformed("JSON parse error, invalid keyword 't'"),
                malformed("JSON parse error, stray 'R'"),
                value("{}")
            ]
        );
        assert_eq!(
            split(100, b"nul {}"),
            vec![
                malformed("JSON parse error, invalid keyword 'nul'"),
                value("{}")
            ]
        );
        assert_eq!(
            split(100, b"} {}"),
            vec![malformed("JSON parse error, expecting value"), value("{}")]
        );
    }

    #[test]
    fn resync_byte_drops_partial_input_silently() {
        assert_eq!(
            split(100, b"{\"execute\":\"gu\xff{\"a\":1}"),
            vec![value("{\"a\":1}")]
        );
        assert_eq!(split(100, b"\xff"), vec![]);
        assert_eq!(
            split(100, b"{\"a\":\"x\xff}{}"),
            vec![malformed("JSON parse error, expecting value"), value("{}")]
        );
    }

    #[test]
    fn oversized_values_are_reported_once_and_skipped() {
        let mut big = b"{\"a\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'}', 500));
        big.extend_from_slice(b"\", \"b\": [[[]]]}{\"ok\":1}");
        assert_eq!(split(64, &big), vec![Frame::TooLong, value("{\"ok\":1}")]);
        assert_eq!(split(3, b"{}  {\"a\"}"), vec![value("{}"), Frame::TooLong]);
        assert_eq!(split(7, b"{\"a\":1}"), vec![value("{\"a\":1}")]);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = vec![b'['; MAX_NESTING as usize + 1];
        deep.extend(vec![b']'; MAX_NESTING as usize + 1]);
        deep.extend_from_slice(b"{}");
        assert_eq!(
            split(1 << 20, &deep),
            vec![malformed("JSON nesting depth limit exceeded"), value("{}")]
        );
    }
}
