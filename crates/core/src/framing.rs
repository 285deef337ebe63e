//! Stream framing shared by every stream transport (unix, TCP, vsock, virtio-serial, pipe).
//!
//! The native dialect is newline-delimited JSON ([`LineDecoder`]); the qemu-guest-agent dialect
//! is a stream of JSON values, newline or not ([`values::ValueSplitter`]). The native dialect
//! stays line-based on purpose: a line is the unit a host can lose, so a broken request (an
//! unbalanced brace, a truncated write from a host that crashed) costs that line only, where a
//! value splitter would swallow every later request until the braces happened to balance.
//!
//! One native request per line. A `0xFF` byte from the host discards any partial input: a host that
//! reconnects sends it first so that bytes left over from a previous client cannot corrupt its
//! first request. A line longer than the limit is reported once and skipped up to its newline,
//! never buffered whole, so memory stays bounded whatever a peer sends.

pub mod values;

/// The resynchronisation byte (never valid inside UTF-8 JSON).
pub const RESYNC: u8 = 0xFF;

/// What a decoder found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete request: a line without its `\n` (and without a trailing `\r`), or one
    /// complete JSON value.
    Line(Vec<u8>),
    /// A request exceeded the limit; the rest of it is discarded, never buffered.
    TooLong,
    /// Input that is not JSON at the lexical level, with the error to answer (qga only).
    Malformed(String),
}

/// Incremental line decoder with a size limit and `0xFF` resynchronisation.
#[derive(Debug)]
pub struct LineDecoder {
    buf: Vec<u8>,
    max_line: usize,
    /// Inside an oversized line: drop bytes until the next newline.
    skipping: bool,
}

impl LineDecoder {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line: max_line.max(1),
            skipping: false,
        }
    }

    /// Drop any partial input (the peer went away; see the virtio-serial notes).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(4096);
        self.skipping = false;
    }

    /// Whether a partial line is buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Feed bytes; complete frames are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        while !data.is_empty() {
            let stop = data.iter().position(|&b| b == b'\n' || b == RESYNC);
            let (chunk, delim) = match stop {
                Some(i) => (&data[..i], Some(data[i])),
                None => (data, None),
            };
            if !self.skipping {
                if self.buf.len() + chunk.len() > self.max_line {
                    self.skipping = true;
                    self.buf.clear();
                    out.push(Frame::TooLong);
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            match delim {
                Some(b'\n') => {
                    if !self.skipping {
                        let mut line = std::mem::take(&mut self.buf);
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        if !line.iter().all(u8::is_ascii_whitespace) {
                            out.push(Frame::Line(line));
                        }
                    }
                    self.skipping = false;
                }
                Some(_) => self.reset(),
                None => {}
            }
            data = &data[chunk.len() + usize::from(delim.is_some())..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(max: usize, parts: &[&[u8]]) -> Vec<Frame> {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for p in parts {
            d.push(p, &mut out);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_lines_across_chunks() {
        assert_eq!(
            decode(100, &[b"ab", b"c\nde", b"f\r\n\n  \n"]),
            vec![line("abc"), line("def")]
        );
    }

    #[test]
    fn resync_drops_partial_input() {
        assert_eq!(
            decode(100, &[b"{\"name\":\"ver", b"\xff{\"a\":1}\n"]),
            vec![line("{\"a\":1}")]
        );
    }

    #[test]
    fn oversized_line_reported_once_and_skipped() {
        let big = vec![b'x'; 50];
        let got = decode(10, &[&big, &big, b"tail\nok\n"]);
        assert_eq!(got, vec![Frame::TooLong, line("ok")]);
    }

    #[test]
    fn exactly_at_limit_is_fine() {
        assert_eq!(
            decode(3, &[b"abc\nabcd\n"]),
            vec![line("abc"), Frame::TooLong]
        );
    }

    #[test]
    fn resync_inside_oversized_line_ends_skipping() {
        let got = decode(4, &[b"xxxxxxxx\xffok\n"]);
        assert_eq!(got, vec![Frame::TooLong, line("ok")]);
    }
}
