//! The original's encoding primitives and link-layer frames (wire.md §2–3).
//!
//! Each side first sends a `u32` version word (1), then frames: `u32 opcode, u32
//! length, payload`. Text is UTF-16BE with no terminator. Only three opcodes are
//! used: 0 `puff`, 1 `will`, 2 `gimme`. Opcodes 3–11 (a resource cache designed
//! but never built) and anything unknown are skipped by length, as are frames above
//! [`SIZE_LIMIT`]; [`Decoder`] skips them without buffering their payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version word both sides send first.
pub const VERSION: u32 = 1;
/// The four bytes of [`VERSION`] as sent.
pub const VERSION_WORD: [u8; 4] = VERSION.to_be_bytes();
/// The original's default port.
pub const DEFAULT_PORT: u16 = 11512;
/// Frames with a longer payload are read and discarded (`SIZE_LIMIT` in galed).
pub const SIZE_LIMIT: usize = 262_144;
/// Opcode and length.
pub const HEADER_LEN: usize = 8;

/// Opcodes.
pub mod op {
    pub const PUFF: u32 = 0;
    pub const WILL: u32 = 1;
    pub const GIMME: u32 = 2;
}

/// Whether the first four bytes of a connection are the original's version word
/// (exactly 1, the only version there is) rather than our first frame's length.
/// Ours begins with a HELLO, at least 16 bytes long; a frame of ours whose length
/// is 1 is a lone type byte, which is never a HELLO, so it was refused anyway.
/// Other short lengths (a PING before HELLO, 9) stay ours, and are refused as such.
pub fn is_version_word(first: [u8; 4]) -> bool {
    u32::from_be_bytes(first) == VERSION
}

/// A frame that could not be decoded. The frame has been consumed; the
/// connection can go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("text of {0} bytes is not whole 16-bit units")]
    OddText(usize),
    #[error("text is not valid UTF-16 (a lone surrogate)")]
    BadText,
    #[error("puff routing length {rlen} overruns its frame of {len} bytes")]
    RoutingOverrun { rlen: usize, len: usize },
    #[error("puff of unknown message format {0}")]
    Format(u32),
    #[error("fragment {0}")]
    Fragment(&'static str),
    #[error("time of {0} bytes (must be 16)")]
    TimeLength(usize),
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrigFrame {
    /// A message: its routing (`:`-separated categories) and content (a fragment
    /// group, [`crate::fragment`]).
    Puff { routing: String, content: Bytes },
    /// The will to publish when the connection ends; the same layout as a puff.
    Will { routing: String, content: Bytes },
    /// Replaces the connection's subscription expression.
    Gimme(String),
    /// A frame skipped by length: an unused or unknown opcode, or one above
    /// [`SIZE_LIMIT`] (`oversize`).
    Skipped {
        opcode: u32,
        len: usize,
        oversize: bool,
    },
}

/// Reads frames from a byte stream. It tells "need more bytes" (`Ok(None)`) from
/// a bad frame (`Err`, the frame consumed); it never panics on any input.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Payload bytes of a skipped frame still to drop.
    discard: usize,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// The next frame in `buf`, consuming it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<OrigFrame>, WireError> {
        if self.discard > 0 {
            let n = self.discard.min(buf.len());
            buf.advance(n);
            self.discard -= n;
            if self.discard > 0 {
                return Ok(None);
            }
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let opcode = u32::from_be_bytes(buf[0..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
        let oversize = len > SIZE_LIMIT;
        if oversize || opcode > op::GIMME {
            buf.advance(HEADER_LEN);
            self.discard = len;
            // Drop what is here now, then report it.
            let n = self.discard.min(buf.len());
            buf.advance(n);
            self.discard -= n;
            return Ok(Some(OrigFrame::Skipped {
                opcode,
                len,
                oversize,
            }));
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(len).freeze();
        decode_body(opcode, body).map(Some)
    }
}

fn decode_body(opcode: u32, mut body: Bytes) -> Result<OrigFrame, WireError> {
    if opcode == op::GIMME {
        return Ok(OrigFrame::Gimme(text(&body)?));
    }
    let len = body.len();
    if len < 4 {
        return Err(WireError::RoutingOverrun { rlen: 0, len });
    }
    let rlen = body.get_u32() as usize;
    if rlen > body.len() || body.len() - rlen < 4 {
        return Err(WireError::RoutingOverrun { rlen, len });
    }
    let routing = text(&body.split_to(rlen))?;
    let format = body.get_u32();
    if format != 0 {
        return Err(WireError::Format(format));
    }
    Ok(match opcode {
        op::PUFF => OrigFrame::Puff {
            routing,
            content: body,
        },
        _ => OrigFrame::Will {
            routing,
            content: body,
        },
    })
}

impl OrigFrame {
    /// The frame's bytes (header included).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            OrigFrame::Puff { routing, content } => put_puff(&mut out, op::PUFF, routing, content),
            OrigFrame::Will { routing, content } => put_puff(&mut out, op::WILL, routing, content),
            OrigFrame::Gimme(sub) => {
                out.put_u32(op::GIMME);
                out.put_u32(text_len(sub) as u32);
                put_text(&mut out, sub);
            }
            OrigFrame::Skipped { opcode, len, .. } => {
                out.put_u32(*opcode);
                out.put_u32(*len as u32);
                out.put_bytes(0, *len);
            }
        }
        out.freeze()
    }
}

fn put_puff(out: &mut BytesMut, opcode: u32, routing: &str, content: &[u8]) {
    let rlen = text_len(routing);
    out.put_u32(opcode);
    out.put_u32((4 + rlen + 4 + content.len()) as u32);
    out.put_u32(rlen as u32);
    put_text(out, routing);
    out.put_u32(0);
    out.put_slice(content);
}

/// Bytes `s` takes as UTF-16.
pub fn text_len(s: &str) -> usize {
    2 * s.encode_utf16().count()
}

/// Writes `s` as UTF-16BE, no length, no terminator.
pub fn put_text(out: &mut BytesMut, s: &str) {
    for u in s.encode_utf16() {
        out.put_u16(u);
    }
}

/// Writes `s` as an `ltext`: a count of 16-bit units, then the units.
pub fn put_ltext(out: &mut BytesMut, s: &str) {
    out.put_u32(s.encode_utf16().count() as u32);
    put_text(out, s);
}

/// UTF-16BE bytes as a string.
pub fn text(b: &[u8]) -> Result<String, WireError> {
    if !b.len().is_multiple_of(2) {
        return Err(WireError::OddText(b.len()));
    }
    let units = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| WireError::BadText)
}

/// The original's time: Unix seconds and a 64-bit binary fraction of a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrigTime {
    pub secs: i64,
    pub frac: u64,
}

impl OrigTime {
    pub const LEN: usize = 16;

    pub fn decode(b: &[u8]) -> Result<OrigTime, WireError> {
        let b: [u8; 16] = b.try_into().map_err(|_| WireError::TimeLength(b.len()))?;
        Ok(OrigTime {
            secs: i64::from_be_bytes(b[0..8].try_into().expect("8")),
            frac: u64::from_be_bytes(b[8..16].try_into().expect("8")),
        })
    }

    pub fn put(&self, out: &mut BytesMut) {
        out.put_i64(self.secs);
        out.put_u64(self.frac);
    }

    /// Nanoseconds (rounded down) in the fraction.
    pub fn nanos(&self) -> u32 {
        ((self.frac as u128 * 1_000_000_000) >> 64) as u32
    }

    /// The time of `secs` and `nanos` (< 10⁹); [`nanos`](Self::nanos) gives them back.
    pub fn from_nanos(secs: i64, nanos: u32) -> OrigTime {
        let frac = ((nanos.min(999_999_999) as u128) << 64).div_ceil(1_000_000_000);
        OrigTime {
            secs,
            frac: frac as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn utf16(s: &str) -> String {
        s.encode_utf16().map(|u| format!("{u:04x}")).collect()
    }

    /// wire.md §3: the subscribe frame for `@example.org/user/pub/hex/`.
    #[test]
    fn gimme_matches_wire_md() {
        let cat = "@example.org/user/pub/hex/";
        let want = hex(&format!("00000002 00000034 {}", utf16(cat)));
        assert_eq!(&OrigFrame::Gimme(cat.into()).to_bytes()[..], &want[..]);
        let mut buf = BytesMut::from(&want[..]);
        assert_eq!(
            Decoder::new().decode(&mut buf).unwrap(),
            Some(OrigFrame::Gimme(cat.into()))
        );
        assert!(buf.is_empty());
    }

    /// wire.md §3: `gsend -a pub.hex` with body "hi", 112 bytes.
    #[test]
    fn anonymous_puff_matches_wire_md() {
        let cat = "@example.org/user/pub/hex/";
        let want = hex(&format!(
            "00000000 00000068 00000034 {} 00000000 00000000 00000024 0000000c {} {}",
            utf16(cat),
            utf16("message/body"),
            utf16("hi\r\n")
        ));
        assert_eq!(want.len(), 112);
        let mut buf = BytesMut::from(&want[..]);
        let f = Decoder::new().decode(&mut buf).unwrap().unwrap();
        let OrigFrame::Puff { routing, content } = &f else {
            panic!("{f:?}")
        };
        assert_eq!(routing, cat);
        assert_eq!(&content[..], &want[68..]);
        assert_eq!(&f.to_bytes()[..], &want[..]);
    }

    #[test]
    fn need_more_bytes_is_not_an_error() {
        let f = OrigFrame::Gimme("@x/".into()).to_bytes();
        let mut d = Decoder::new();
        for cut in 0..f.len() {
            let mut buf = BytesMut::from(&f[..cut]);
            assert_eq!(d.decode(&mut buf).unwrap(), None, "at {cut}");
        }
    }

    #[test]
    fn unused_unknown_and_oversize_frames_are_skipped_without_buffering() {
        let mut wire = BytesMut::new();
        for opcode in [4u32, 7, 11, 12, 0xdead] {
            wire.put_u32(opcode);
            wire.put_u32(3);
            wire.put_slice(b"abc");
        }
        wire.put_u32(op::PUFF);
        wire.put_u32((SIZE_LIMIT + 1) as u32);
        let mut d = Decoder::new();
        let mut skipped = vec![];
        while let Some(f) = d.decode(&mut wire).unwrap() {
            skipped.push(f);
        }
        assert_eq!(skipped.len(), 6);
        assert!(matches!(
            skipped[5],
            OrigFrame::Skipped {
                opcode: 0,
                oversize: true,
                ..
            }
        ));
        // The oversize payload is dropped as it arrives; the next frame is read.
        let mut more = BytesMut::new();
        more.put_bytes(7, SIZE_LIMIT + 1);
        more.extend_from_slice(&OrigFrame::Gimme("-".into()).to_bytes());
        assert_eq!(
            d.decode(&mut more).unwrap(),
            Some(OrigFrame::Gimme("-".into()))
        );
    }

    #[test]
    fn bad_puffs_are_errors_and_consumed() {
        let mut wire = BytesMut::new();
        wire.put_u32(op::PUFF);
        wire.put_u32(8);
        wire.put_u32(100); // rlen past the end
        wire.put_u32(0);
        wire.extend_from_slice(&OrigFrame::Gimme("-".into()).to_bytes());
        let mut d = Decoder::new();
        assert!(matches!(
            d.decode(&mut wire),
            Err(WireError::RoutingOverrun { .. })
        ));
        assert_eq!(
            d.decode(&mut wire).unwrap(),
            Some(OrigFrame::Gimme("-".into()))
        );
    }

    #[test]
    fn version_words_are_told_from_our_hello() {
        assert!(is_version_word(VERSION_WORD));
        // Our PING before HELLO: refused as ours, not taken for the original.
        assert!(!is_version_word([0, 0, 0, 9]));
        // Our HELLO example: length 20.
        assert!(!is_version_word([0, 0, 0, 0x14]));
        assert!(!is_version_word([0, 0, 0, 0]));
    }

    #[test]
    fn time_fractions() {
        let t = OrigTime::from_nanos(5, 500_000_000);
        assert_eq!(t.frac, 1 << 63);
        assert_eq!(t.nanos(), 500_000_000);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = Decoder::new();
            let mut buf = BytesMut::new();
            for c in chunks {
                buf.extend_from_slice(&c);
                while let Ok(Some(_)) | Err(_) = d.decode(&mut buf) {
                    if buf.is_empty() { break; }
                }
            }
        }

        #[test]
        fn nanos_round_trip(secs in any::<i64>(), nanos in 0u32..1_000_000_000) {
            prop_assert_eq!(OrigTime::from_nanos(secs, nanos).nanos(), nanos);
        }

        #[test]
        fn puffs_round_trip(routing in "[a-z@/:.-]{0,40}", content in proptest::collection::vec(any::<u8>(), 0..100)) {
            let f = OrigFrame::Puff { routing, content: content.into() };
            let mut buf = BytesMut::from(&f.to_bytes()[..]);
            prop_assert_eq!(Decoder::new().decode(&mut buf).unwrap(), Some(f));
        }
    }
}
