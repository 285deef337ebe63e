//! The XenStore wire protocol (spec §2.5, Xen `xs_wire.h`): a 16-byte header of four
//! little-endian `u32` (`type, req_id, tx_id, len`) followed by `len` payload bytes.
//!
//! The payload limit ([`PAYLOAD_MAX`]) is checked on the header, before a payload buffer is
//! allocated, and on every message built for sending.

use std::fmt;
use std::io::Read;

/// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Size of the header.
pub const HEADER_LEN: usize = 16;

/// Message types, in `xs_wire.h` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    Restrict = 20,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl MsgType {
    const ALL: [MsgType; 23] = [
        Self::Control,
        Self::Directory,
        Self::Read,
        Self::GetPerms,
        Self::Watch,
        Self::Unwatch,
        Self::TransactionStart,
        Self::TransactionEnd,
        Self::Introduce,
        Self::Release,
        Self::GetDomainPath,
        Self::Write,
        Self::Mkdir,
        Self::Rm,
        Self::SetPerms,
        Self::WatchEvent,
        Self::Error,
        Self::IsDomainIntroduced,
        Self::Resume,
        Self::SetTarget,
        Self::Restrict,
        Self::ResetWatches,
        Self::DirectoryPart,
    ];

    pub fn from_u32(raw: u32) -> Option<Self> {
        Self::ALL.get(raw as usize).copied()
    }
}

/// A malformed message (or one that must not be sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("payload of {0} bytes exceeds the XenStore limit of {PAYLOAD_MAX}")]
    TooLarge(usize),
    #[error("unknown message type {0}")]
    UnknownType(u32),
    #[error("{0}")]
    Malformed(String),
}

/// The decoded header (type still raw, so an unknown type can be answered with EINVAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    /// Decode and check the payload length (never trust `len` for an allocation).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, WireError> {
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let header = Self {
            ty: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        };
        if header.len as usize > PAYLOAD_MAX {
            return Err(WireError::TooLarge(header.len as usize));
        }
        Ok(header)
    }
}

/// One message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub ty: MsgType,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("ty", &self.ty)
            .field("req_id", &self.req_id)
            .field("tx_id", &self.tx_id)
            .field("payload", &String::from_utf8_lossy(&self.payload))
            .finish()
    }
}

impl Message {
    /// A message, refused when the payload is over the limit.
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Result<Self, WireError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(WireError::TooLarge(payload.len()));
        }
        Ok(Self {
            ty,
            req_id,
            tx_id,
            payload,
        })
    }

    /// Header and payload, ready to write in one go.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        for word in [
            self.ty as u32,
            self.req_id,
            self.tx_id,
            self.payload.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decode one message from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// otherwise the message and the number of bytes it used.
    pub fn parse(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::decode(head)?;
        let ty = MsgType::from_u32(header.ty).ok_or(WireError::UnknownType(header.ty))?;
        let end = HEADER_LEN + header.len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        let message = Message {
            ty,
            req_id: header.req_id,
            tx_id: header.tx_id,
            payload: buf[HEADER_LEN..end].to_vec(),
        };
        Ok(Some((message, end)))
    }

    /// The payload split at NULs (a trailing NUL ends the last field, it does not add one).
    pub fn fields(&self) -> Vec<&[u8]> {
        split_fields(&self.payload)
    }

    /// The error name of an `ERROR` reply (`ENOENT`), if this is one.
    pub fn error_name(&self) -> Option<String> {
        (self.ty == MsgType::Error).then(|| {
            let name = self.payload.strip_suffix(b"\0").unwrap_or(&self.payload);
            String::from_utf8_lossy(name).into_owned()
        })
    }
}

/// Read one message from a blocking reader. `Ok(None)` on a clean end of stream before a header.
#[allow(clippy::type_complexity)] // io error outside, protocol error inside
pub fn read_message(reader: &mut impl Read) -> std::io::Result<Result<Option<(Header, Vec<u8>)>, WireError>> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut head[got..])? {
            0 if got == 0 => return Ok(Ok(None)),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let header = match Header::decode(&head) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut payload = vec![0u8; header.len as usize];
    reader.read_exact(&mut payload)?;
    Ok(Ok(Some((header, payload))))
}

/// Split a payload at NULs; a trailing NUL terminates the last field.
pub fn split_fields(payload: &[u8]) -> Vec<&[u8]> {
    if payload.is_empty() {
        return Vec::new();
    }
    let body = payload.strip_suffix(b"\0").unwrap_or(payload);
    body.split(|b| *b == 0).collect()
}

/// `path\0` — the payload of READ, DIRECTORY, RM, MKDIR, GET_PERMS.
pub fn path_payload(path: &str) -> Result<Vec<u8>, WireError> {
    check_text("path", path)?;
    let mut out = Vec::with_capacity(path.len() + 1);
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    Ok(out)
}

/// `path\0value` — the payload of WRITE (no NUL after the value).
pub fn write_payload(path: &str, value: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = path_payload(path)?;
    out.extend_from_slice(value);
    Ok(out)
}

/// `path\0token\0` — the payload of WATCH, UNWATCH and WATCH_EVENT.
pub fn watch_payload(path: &str, token: &str) -> Result<Vec<u8>, WireError> {
    check_text("token", token)?;
    let mut out = path_payload(path)?;
    out.extend_from_slice(token.as_bytes());
    out.push(0);
    Ok(out)
}

fn check_text(what: &str, text: &str) -> Result<(), WireError> {
    if text.contains('\0') {
        return Err(WireError::Malformed(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

/// Errno names of `xs_wire.h`'s `xsd_errors` table, the error payloads xenstored sends.
pub mod errno {
    pub const EINVAL: &str = "EINVAL";
    pub const EACCES: &str = "EACCES";
    pub const EEXIST: &str = "EEXIST";
    pub const EISDIR: &str = "EISDIR";
    pub const ENOENT: &str = "ENOENT";
    pub const ENOMEM: &str = "ENOMEM";
    pub const ENOSPC: &str = "ENOSPC";
    pub const EIO: &str = "EIO";
    pub const ENOTEMPTY: &str = "ENOTEMPTY";
    pub const ENOSYS: &str = "ENOSYS";
    pub const EROFS: &str = "EROFS";
    pub const EBUSY: &str = "EBUSY";
    pub const EAGAIN: &str = "EAGAIN";
    pub const EISCONN: &str = "EISCONN";
    pub const E2BIG: &str = "E2BIG";
    pub const EPERM: &str = "EPERM";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_little_endian() {
        let msg = Message::new(MsgType::Read, 7, 0, path_payload("data/host").unwrap()).unwrap();
        let bytes = msg.encode();
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(&bytes[4..8], &[7, 0, 0, 0]);
        assert_eq!(&bytes[12..16], &[10, 0, 0, 0]);
        assert_eq!(&bytes[16..], b"data/host\0");
        let (back, used) = Message::parse(&bytes).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn parse_needs_whole_message() {
        let bytes = Message::new(MsgType::Write, 1, 0, write_payload("a", b"v").unwrap())
            .unwrap()
            .encode();
        for cut in 0..bytes.len() {
            assert_eq!(Message::parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn payload_limit_both_ways() {
        assert_eq!(
            Message::new(MsgType::Write, 1, 0, vec![b'x'; PAYLOAD_MAX + 1]),
            Err(WireError::TooLarge(PAYLOAD_MAX + 1))
        );
        assert!(Message::new(MsgType::Write, 1, 0, vec![b'x'; PAYLOAD_MAX]).is_ok());
        // A header announcing 4 GiB is refused from the header alone.
        let mut head = [0u8; HEADER_LEN];
        head[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Header::decode(&head),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
        assert_eq!(Message::parse(&head), Err(WireError::TooLarge(u32::MAX as usize)));
    }

    #[test]
    fn unknown_type_is_an_error() {
        let mut bytes = Message::new(MsgType::Read, 1, 0, vec![]).unwrap().encode();
        bytes[0] = 99;
        assert_eq!(Message::parse(&bytes), Err(WireError::UnknownType(99)));
    }

    #[test]
    fn fields_and_errors() {
        let ev = Message::new(MsgType::WatchEvent, 0, 0, watch_payload("data/host/x", "tok").unwrap())
            .unwrap();
        assert_eq!(ev.fields(), vec![&b"data/host/x"[..], &b"tok"[..]]);
        let err = Message::new(MsgType::Error, 3, 0, b"ENOENT\0".to_vec()).unwrap();
        assert_eq!(err.error_name().as_deref(), Some("ENOENT"));
        assert_eq!(split_fields(b"a\0b\0\0"), vec![&b"a"[..], &b"b"[..], &b""[..]]);
        assert!(split_fields(b"").is_empty());
        assert!(path_payload("a\0b").is_err());
    }

    #[test]
    fn blocking_reader_refuses_oversized_header_without_reading_payload() {
        let mut head = Vec::new();
        for w in [2u32, 1, 0, 5000] {
            head.extend_from_slice(&w.to_le_bytes());
        }
        let got = read_message(&mut &head[..]).unwrap();
        assert_eq!(got, Err(WireError::TooLarge(5000)));
        assert_eq!(read_message(&mut &b""[..]).unwrap(), Ok(None));
        assert!(read_message(&mut &head[..7]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Message::parse(&bytes);
            let _ = read_message(&mut &bytes[..]);
        }

        #[test]
        fn parse_never_panics_on_valid_headers(ty in 0u32..30, len in 0u32..5000, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut bytes = Vec::new();
            for w in [ty, 1, 0, len] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.extend_from_slice(&body);
            if let Ok(Some((m, used))) = Message::parse(&bytes) {
                proptest::prop_assert_eq!(used, 16 + m.payload.len());
                proptest::prop_assert_eq!(m.encode(), bytes[..used].to_vec());
            }
        }
    }
}
