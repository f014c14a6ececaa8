//! Typed frames and their byte-exact encoding.
//!
//! Every frame is `length: u32 | type: u8 | body`, big-endian, where `length` counts
//! the type byte and the body (so it is at least 1) and may not exceed the maximum
//! frame size agreed in the handshake. Types 0x80 and above are optional: a receiver
//! that does not know one skips it. An unknown type below 0x80 is a protocol error.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::inbox::{self, InboxDone, InboxOpen, InboxState};
use crate::limits::{
    FRAME_HEADER_LEN, MAGIC, MAX_LOCATIONS, MAX_LOCATION_LEN, MAX_LOSS_ENTRIES, MAX_SHORT_TEXT,
    MAX_SUB_ENTRIES,
};
use crate::location::{Location, LocationError};
use crate::message::Message;
use crate::resume::{Resume, Resumed};
use crate::subscription::SubEntry;
pub use crate::wire::EncodeError;
use crate::wire::{check, put_str16, Reader};

/// Frame type bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    Hello = 0x01,
    Welcome = 0x02,
    Publish = 0x10,
    Deliver = 0x11,
    Will = 0x12,
    Subscribe = 0x20,
    Unsubscribe = 0x21,
    /// Version 2.
    Resume = 0x22,
    /// Version 2.
    Resumed = 0x23,
    /// Version 3: inboxes (docs/protocol.md §4.15).
    InboxHello = 0x24,
    InboxChallenge = 0x25,
    InboxOpen = 0x26,
    InboxState = 0x27,
    Stored = 0x28,
    InboxDone = 0x29,
    InboxAck = 0x2A,
    InboxGap = 0x2B,
    Ping = 0x30,
    Pong = 0x31,
    Lossage = 0x40,
    Interest = 0x50,
    LinkLossage = 0x51,
    StatusRequest = 0x60,
    Status = 0x61,
    Error = 0x7F,
    /// Optional (an older peer skips it): the limits a server keeps on a link.
    LinkLimits = 0x80,
}

impl FrameType {
    pub fn from_u8(b: u8) -> Option<FrameType> {
        use FrameType::*;
        Some(match b {
            0x01 => Hello,
            0x02 => Welcome,
            0x10 => Publish,
            0x11 => Deliver,
            0x12 => Will,
            0x20 => Subscribe,
            0x21 => Unsubscribe,
            0x22 => Resume,
            0x23 => Resumed,
            0x24 => InboxHello,
            0x25 => InboxChallenge,
            0x26 => InboxOpen,
            0x27 => InboxState,
            0x28 => Stored,
            0x29 => InboxDone,
            0x2A => InboxAck,
            0x2B => InboxGap,
            0x30 => Ping,
            0x31 => Pong,
            0x40 => Lossage,
            0x50 => Interest,
            0x51 => LinkLossage,
            0x60 => StatusRequest,
            0x61 => Status,
            0x7F => Error,
            0x80 => LinkLimits,
            _ => return None,
        })
    }

    /// Types from 0x80 up may be skipped by a receiver that does not know them.
    pub fn is_optional(b: u8) -> bool {
        b >= 0x80
    }
}

/// Error codes carried by ERROR frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnsupportedVersion,
    Malformed,
    TooLarge,
    BadLocation,
    UnexpectedFrame,
    LimitExceeded,
    Timeout,
    ShuttingDown,
    /// The server cannot take this now (its connection limit, its memory
    /// budget, its descriptors): try again later, or another server.
    Busy,
    Other(u16),
}

impl ErrorCode {
    /// Whether the refusal may go away by itself, so that a client should
    /// reconnect (with back-off, trying other servers) rather than stop: a server
    /// shutting down or busy, or a frame (or HELLO) that did not arrive within the
    /// server's deadline, which a slow network explains. Every other code,
    /// unknown ones included, says the request itself cannot be served (a
    /// version, a malformed or oversized frame, too many subscriptions), and
    /// asking again would be refused again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::ShuttingDown | ErrorCode::Busy | ErrorCode::Timeout
        )
    }

    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::UnsupportedVersion => 1,
            ErrorCode::Malformed => 2,
            ErrorCode::TooLarge => 3,
            ErrorCode::BadLocation => 4,
            ErrorCode::UnexpectedFrame => 5,
            ErrorCode::LimitExceeded => 6,
            ErrorCode::Timeout => 7,
            ErrorCode::ShuttingDown => 8,
            ErrorCode::Busy => 9,
            ErrorCode::Other(n) => n,
        }
    }

    pub fn from_u16(n: u16) -> ErrorCode {
        match n {
            1 => ErrorCode::UnsupportedVersion,
            2 => ErrorCode::Malformed,
            3 => ErrorCode::TooLarge,
            4 => ErrorCode::BadLocation,
            5 => ErrorCode::UnexpectedFrame,
            6 => ErrorCode::LimitExceeded,
            7 => ErrorCode::Timeout,
            8 => ErrorCode::ShuttingDown,
            9 => ErrorCode::Busy,
            n => ErrorCode::Other(n),
        }
    }
}

/// Why bytes could not be decoded as a frame. "Need more bytes" is not an error: the
/// decoders return `Ok(None)` for it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("bad location in frame: {0}")]
    BadLocation(#[from] LocationError),
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
}

impl FrameError {
    /// The error code to report to the peer for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::Malformed(_) | FrameError::UnknownType(_) => ErrorCode::Malformed,
            FrameError::BadLocation(_) => ErrorCode::BadLocation,
        }
    }
}

/// First frame from the connecting side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    pub max_frame: u32,
    /// 0 for a client; 1 is reserved for server-to-server links.
    pub role: u8,
    pub agent: String,
}

/// The server's answer to HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub max_frame: u32,
    /// The server closes a connection silent for twice this long; clients ping
    /// when idle for this long.
    pub keepalive_ms: u32,
    pub server: String,
}

/// One entry of a LINK_LOSSAGE frame: `count` messages addressed to `locations`
/// were dropped on a link. No locations means "addressed to locations unknown".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossEntry {
    pub count: u64,
    pub locations: Vec<Location>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    Publish(Message),
    Deliver(Message),
    /// Sets (Some) or clears (None) this connection's will.
    Will(Option<Message>),
    Subscribe {
        replace: bool,
        entries: Vec<SubEntry>,
    },
    Unsubscribe {
        entries: Vec<SubEntry>,
    },
    /// Version 2, client: where it stopped on its previous connection; the
    /// next SUBSCRIBE replays what it missed.
    Resume(Resume),
    /// Version 2, server: the answer to RESUME, after the replayed messages.
    Resumed(Resumed),
    /// Version 3, client: asks for a challenge to sign (INBOX_CHALLENGE).
    InboxHello,
    /// Version 3, server: random bytes the next INBOX_OPEN must sign.
    InboxChallenge([u8; inbox::CHALLENGE_LEN]),
    /// Version 3, client: opens (or creates) its inbox, signed.
    InboxOpen(InboxOpen),
    /// Version 3, server: the answer to INBOX_OPEN.
    InboxState(InboxState),
    /// Version 3, server: a message from the inbox, with its place in it.
    Stored {
        seq: u64,
        message: Message,
    },
    /// Version 3, server: what was held has been sent.
    InboxDone(InboxDone),
    /// Version 3, client: everything up to `seq` has been shown.
    InboxAck(u64),
    /// Version 3, server: the inbox lost messages for this device while open.
    InboxGap {
        count: u64,
        text: String,
    },
    Ping(u64),
    Pong(u64),
    /// Messages the server dropped for this connection since the last LOSSAGE.
    Lossage(u64),
    /// Server link only: changes to the locations the sender wants (`+` adds, `-`
    /// withdraws); with `reset`, the entries replace everything sent before. With
    /// `all` (only with `reset` and no entries) the sender wants every message;
    /// it is sent only to a peer that announced LINK_LIMITS.
    Interest {
        reset: bool,
        all: bool,
        entries: Vec<SubEntry>,
    },
    /// Server link only: messages the sender dropped on this link (its queue to the
    /// receiver was full), by the locations they were addressed to, so the receiver
    /// can report the loss to every client that would have received them.
    LinkLossage(Vec<LossEntry>),
    /// Asks the server for its status report.
    StatusRequest,
    /// The server's status report, as JSON text.
    Status(String),
    /// Server link only, optional: the most INTEREST entries the sender holds for
    /// this link. A peer that announces it also understands INTEREST's `all`.
    LinkLimits {
        max_interest: u32,
    },
    Error {
        code: ErrorCode,
        text: String,
    },
}

/// Reads the header at the front of `buf`. Returns `Ok(None)` until the whole frame
/// has arrived, then `(type, total length including the 4-byte length field)`.
/// A length over `max_frame` is refused as soon as the length field is read.
pub fn peek(buf: &[u8], max_frame: u32) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
    if len == 0 {
        return Err(FrameError::Malformed(
            "frame length 0 (no type byte)".into(),
        ));
    }
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len: len as usize,
            max: max_frame as usize,
        });
    }
    let total = 4 + len as usize;
    if buf.len() < FRAME_HEADER_LEN || buf.len() < total {
        return Ok(None);
    }
    Ok(Some((buf[4], total)))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_entries(out: &mut BytesMut, entries: &[SubEntry]) -> Result<(), EncodeError> {
    check("entries in one frame", entries.len(), MAX_SUB_ENTRIES)?;
    out.put_u16(entries.len() as u16);
    for e in entries {
        out.put_u8(if e.positive { b'+' } else { b'-' });
        put_str16(out, e.location.as_str(), "location", MAX_LOCATION_LEN)?;
    }
    Ok(())
}

fn get_entries(r: &mut Reader<'_>) -> Result<Vec<SubEntry>, FrameError> {
    let n = r.u16()? as usize;
    if n > MAX_SUB_ENTRIES {
        return Err(FrameError::Malformed(format!(
            "{n} subscription entries in one frame; the limit is {MAX_SUB_ENTRIES}"
        )));
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let positive = match r.u8()? {
            b'+' => true,
            b'-' => false,
            s => return Err(FrameError::Malformed(format!("subscription sign {s:#04x}"))),
        };
        let location = Location::from_canonical(r.str16(MAX_LOCATION_LEN)?)?;
        v.push(SubEntry { positive, location });
    }
    Ok(v)
}

impl Frame {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Welcome(_) => FrameType::Welcome,
            Frame::Publish(_) => FrameType::Publish,
            Frame::Deliver(_) => FrameType::Deliver,
            Frame::Will(_) => FrameType::Will,
            Frame::Subscribe { .. } => FrameType::Subscribe,
            Frame::Unsubscribe { .. } => FrameType::Unsubscribe,
            Frame::Resume(_) => FrameType::Resume,
            Frame::Resumed(_) => FrameType::Resumed,
            Frame::InboxHello => FrameType::InboxHello,
            Frame::InboxChallenge(_) => FrameType::InboxChallenge,
            Frame::InboxOpen(_) => FrameType::InboxOpen,
            Frame::InboxState(_) => FrameType::InboxState,
            Frame::Stored { .. } => FrameType::Stored,
            Frame::InboxDone(_) => FrameType::InboxDone,
            Frame::InboxAck(_) => FrameType::InboxAck,
            Frame::InboxGap { .. } => FrameType::InboxGap,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
            Frame::Lossage(_) => FrameType::Lossage,
            Frame::Interest { .. } => FrameType::Interest,
            Frame::LinkLossage(_) => FrameType::LinkLossage,
            Frame::StatusRequest => FrameType::StatusRequest,
            Frame::Status(_) => FrameType::Status,
            Frame::Error { .. } => FrameType::Error,
            Frame::LinkLimits { .. } => FrameType::LinkLimits,
        }
    }

    /// Appends the whole frame, header included, to `out`, or refuses a frame
    /// with a count or a length over the protocol's limits (leaving `out` as it
    /// was): more than 4,096 subscription, interest or loss entries, a text over
    /// its limit, a message the protocol does not allow. An ERROR's text is cut
    /// to its limit instead.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let r = self.encode_body(out, start);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn encode_body(&self, out: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
        out.put_u32(0); // length, patched below
        out.put_u8(self.frame_type() as u8);
        match self {
            Frame::Hello(h) => {
                out.put_slice(&MAGIC);
                out.put_u16(h.min_version);
                out.put_u16(h.max_version);
                out.put_u32(h.max_frame);
                out.put_u8(h.role);
                put_str16(out, &h.agent, "agent", MAX_SHORT_TEXT)?;
            }
            Frame::Welcome(w) => {
                out.put_u16(w.version);
                out.put_u32(w.max_frame);
                out.put_u32(w.keepalive_ms);
                put_str16(out, &w.server, "server name", MAX_SHORT_TEXT)?;
            }
            Frame::Publish(m) | Frame::Deliver(m) | Frame::Will(Some(m)) => m.encode(out)?,
            Frame::Will(None) => {}
            Frame::Subscribe { replace, entries } => {
                out.put_u8(u8::from(*replace));
                put_entries(out, entries)?;
            }
            Frame::Unsubscribe { entries } => put_entries(out, entries)?,
            Frame::Resume(r) => r.encode(out),
            Frame::Resumed(r) => r.encode(out),
            Frame::InboxHello => {}
            Frame::InboxChallenge(c) => out.put_slice(c),
            Frame::InboxOpen(o) => o.encode(out)?,
            Frame::InboxState(st) => st.encode(out)?,
            Frame::Stored { seq, message } => {
                out.put_u64(*seq);
                message.encode(out)?;
            }
            Frame::InboxDone(d) => d.encode(out),
            Frame::InboxAck(seq) => out.put_u64(*seq),
            Frame::InboxGap { count, text } => {
                out.put_u64(*count);
                put_str16(out, truncate(text, MAX_SHORT_TEXT), "text", MAX_SHORT_TEXT)?;
            }
            Frame::Interest {
                reset,
                all,
                entries,
            } => {
                // `all` replaces everything (so implies `reset`) and lists nothing.
                if *all {
                    check("entries in an INTEREST with `all`", entries.len(), 0)?;
                }
                out.put_u8(u8::from(*reset || *all) | (u8::from(*all) << 1));
                put_entries(out, entries)?;
            }
            Frame::LinkLimits { max_interest } => out.put_u32(*max_interest),
            Frame::LinkLossage(entries) => {
                check(
                    "entries in one LINK_LOSSAGE",
                    entries.len(),
                    MAX_LOSS_ENTRIES,
                )?;
                out.put_u16(entries.len() as u16);
                for e in entries {
                    check(
                        "locations in a LINK_LOSSAGE entry",
                        e.locations.len(),
                        MAX_LOCATIONS,
                    )?;
                    out.put_u64(e.count);
                    out.put_u8(e.locations.len() as u8);
                    for l in &e.locations {
                        put_str16(out, l.as_str(), "location", MAX_LOCATION_LEN)?;
                    }
                }
            }
            Frame::StatusRequest => {}
            Frame::Status(text) => out.put_slice(text.as_bytes()),
            Frame::Ping(t) | Frame::Pong(t) | Frame::Lossage(t) => out.put_u64(*t),
            Frame::Error { code, text } => {
                out.put_u16(code.to_u16());
                put_str16(
                    out,
                    truncate(text, MAX_SHORT_TEXT),
                    "error text",
                    MAX_SHORT_TEXT,
                )?;
            }
        }
        let len = out.len() - start - 4;
        check("frame length", len, u32::MAX as usize)?;
        out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// The whole frame as bytes, or why it cannot be encoded ([`Frame::encode`]).
    pub fn try_to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// The whole frame as bytes, for frames the caller built within the limits
    /// (control frames, messages it checked).
    ///
    /// # Panics
    /// If a count or a length is over a protocol limit: a bug in the caller.
    /// Frames built from outside data go through [`Frame::try_to_bytes`].
    pub fn to_bytes(&self) -> Bytes {
        self.try_to_bytes()
            .unwrap_or_else(|e| panic!("{e} (use Frame::try_to_bytes for such frames)"))
    }

    /// Decodes the body of a frame of type `ty`. `Ok(None)` means an optional frame
    /// type this version does not know, which the caller should skip.
    pub fn decode_body(ty: u8, body: Bytes) -> Result<Option<Frame>, FrameError> {
        let Some(t) = FrameType::from_u8(ty) else {
            return if FrameType::is_optional(ty) {
                Ok(None)
            } else {
                Err(FrameError::UnknownType(ty))
            };
        };
        let mut r = Reader::new(&body, "frame");
        let frame = match t {
            FrameType::Hello => {
                if r.take(4)? != MAGIC {
                    return Err(FrameError::Malformed(
                        "HELLO does not start with \"GALE\"".into(),
                    ));
                }
                Frame::Hello(Hello {
                    min_version: r.u16()?,
                    max_version: r.u16()?,
                    max_frame: r.u32()?,
                    role: r.u8()?,
                    agent: r.str16(MAX_SHORT_TEXT)?.to_string(),
                })
            }
            FrameType::Welcome => Frame::Welcome(Welcome {
                version: r.u16()?,
                max_frame: r.u32()?,
                keepalive_ms: r.u32()?,
                server: r.str16(MAX_SHORT_TEXT)?.to_string(),
            }),
            FrameType::Publish => return Ok(Some(Frame::Publish(Message::decode(&body)?))),
            FrameType::Deliver => return Ok(Some(Frame::Deliver(Message::decode(&body)?))),
            FrameType::Will if body.is_empty() => Frame::Will(None),
            FrameType::Will => return Ok(Some(Frame::Will(Some(Message::decode(&body)?)))),
            FrameType::Subscribe => {
                let flags = r.u8()?;
                if flags & !1 != 0 {
                    return Err(FrameError::Malformed(format!(
                        "SUBSCRIBE flags {flags:#04x}"
                    )));
                }
                Frame::Subscribe {
                    replace: flags & 1 == 1,
                    entries: get_entries(&mut r)?,
                }
            }
            FrameType::Unsubscribe => Frame::Unsubscribe {
                entries: get_entries(&mut r)?,
            },
            FrameType::Resume => Frame::Resume(Resume::decode(&mut r)?),
            FrameType::Resumed => Frame::Resumed(Resumed::decode(&mut r)?),
            FrameType::InboxHello => Frame::InboxHello,
            FrameType::InboxChallenge => {
                Frame::InboxChallenge(r.take(inbox::CHALLENGE_LEN)?.try_into().expect("32 bytes"))
            }
            FrameType::InboxOpen => Frame::InboxOpen(InboxOpen::decode(&mut r)?),
            FrameType::InboxState => Frame::InboxState(InboxState::decode(&mut r)?),
            FrameType::Stored => {
                let seq = r.u64()?;
                let message = Message::decode(&body.slice(8..))?;
                return Ok(Some(Frame::Stored { seq, message }));
            }
            FrameType::InboxDone => Frame::InboxDone(InboxDone::decode(&mut r)?),
            FrameType::InboxAck => Frame::InboxAck(r.u64()?),
            FrameType::InboxGap => Frame::InboxGap {
                count: r.u64()?,
                text: r.str16(MAX_SHORT_TEXT)?.to_string(),
            },
            FrameType::Interest => {
                let flags = r.u8()?;
                // Bit 1 (`all`) only with bit 0 (`reset`).
                if flags & !3 != 0 || flags == 2 {
                    return Err(FrameError::Malformed(format!(
                        "INTEREST flags {flags:#04x}"
                    )));
                }
                let entries = get_entries(&mut r)?;
                let all = flags & 2 == 2;
                if all && !entries.is_empty() {
                    return Err(FrameError::Malformed("INTEREST `all` with entries".into()));
                }
                Frame::Interest {
                    reset: flags & 1 == 1,
                    all,
                    entries,
                }
            }
            FrameType::LinkLossage => {
                let n = r.u16()? as usize;
                if n == 0 || n > MAX_LOSS_ENTRIES {
                    return Err(FrameError::Malformed(format!(
                        "LINK_LOSSAGE with {n} entries; 1 to {MAX_LOSS_ENTRIES} are allowed"
                    )));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let count = r.u64()?;
                    let k = r.u8()? as usize;
                    if k > MAX_LOCATIONS {
                        return Err(FrameError::Malformed(format!(
                            "a LINK_LOSSAGE entry names {k} locations; the limit is {MAX_LOCATIONS}"
                        )));
                    }
                    let mut locations = Vec::with_capacity(k);
                    for _ in 0..k {
                        locations.push(Location::from_canonical(r.str16(MAX_LOCATION_LEN)?)?);
                    }
                    entries.push(LossEntry { count, locations });
                }
                Frame::LinkLossage(entries)
            }
            FrameType::LinkLimits => Frame::LinkLimits {
                max_interest: r.u32()?,
            },
            FrameType::StatusRequest => Frame::StatusRequest,
            FrameType::Status => {
                let text = std::str::from_utf8(r.rest())
                    .map_err(|e| FrameError::Malformed(format!("STATUS is not UTF-8: {e}")))?;
                Frame::Status(text.to_string())
            }
            FrameType::Ping => Frame::Ping(r.u64()?),
            FrameType::Pong => Frame::Pong(r.u64()?),
            FrameType::Lossage => Frame::Lossage(r.u64()?),
            FrameType::Error => Frame::Error {
                code: ErrorCode::from_u16(r.u16()?),
                text: r.str16(MAX_SHORT_TEXT)?.to_string(),
            },
        };
        r.finish()?;
        Ok(Some(frame))
    }

    /// Takes one whole frame off the front of `buf`. `Ok(None)` means more bytes are
    /// needed. Optional frames of unknown type are consumed and skipped.
    pub fn decode(buf: &mut BytesMut, max_frame: u32) -> Result<Option<Frame>, FrameError> {
        loop {
            let Some((ty, total)) = peek(buf, max_frame)? else {
                return Ok(None);
            };
            let mut frame = buf.split_to(total).freeze();
            frame.advance(FRAME_HEADER_LEN);
            if let Some(f) = Frame::decode_body(ty, frame)? {
                return Ok(Some(f));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_may_pass_are_transient() {
        for n in 0..=12u16 {
            let code = ErrorCode::from_u16(n);
            assert_eq!(code.is_transient(), matches!(n, 7..=9), "code {n}");
        }
    }
    use crate::id::MessageId;
    use proptest::prelude::*;

    fn enc(f: &Frame) -> Vec<u8> {
        f.to_bytes().to_vec()
    }

    fn round_trip(f: Frame) {
        let mut b = BytesMut::from(&enc(&f)[..]);
        assert_eq!(Frame::decode(&mut b, 1 << 20).unwrap(), Some(f));
        assert!(b.is_empty());
    }

    #[test]
    fn byte_exact_control_frames() {
        let hello = Frame::Hello(Hello {
            min_version: 1,
            max_version: 1,
            max_frame: 0x0010_0000,
            role: 0,
            agent: "gsub".into(),
        });
        assert_eq!(
            enc(&hello),
            [
                &[0, 0, 0, 20, 0x01][..],
                b"GALE",
                &[0, 1, 0, 1, 0, 0x10, 0, 0, 0, 0, 4],
                b"gsub"
            ]
            .concat()
        );
        let welcome = Frame::Welcome(Welcome {
            version: 1,
            max_frame: 4096,
            keepalive_ms: 30_000,
            server: "h".into(),
        });
        assert_eq!(
            enc(&welcome),
            [0, 0, 0, 14, 0x02, 0, 1, 0, 0, 0x10, 0, 0, 0, 0x75, 0x30, 0, 1, b'h']
        );
        assert_eq!(
            enc(&Frame::Ping(5)),
            [0, 0, 0, 9, 0x30, 0, 0, 0, 0, 0, 0, 0, 5]
        );
        assert_eq!(enc(&Frame::Pong(5))[4], 0x31);
        assert_eq!(
            enc(&Frame::Lossage(258)),
            [0, 0, 0, 9, 0x40, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(
            enc(&Frame::Error {
                code: ErrorCode::TooLarge,
                text: "big".into()
            }),
            [0, 0, 0, 8, 0x7F, 0, 3, 0, 3, b'b', b'i', b'g']
        );
        assert_eq!(enc(&Frame::Will(None)), [0, 0, 0, 1, 0x12]);
        let sub = Frame::Subscribe {
            replace: true,
            entries: vec![
                SubEntry::include(Location::parse("a@x.org").unwrap()),
                SubEntry::exclude(Location::parse("a.b@x.org").unwrap()),
            ],
        };
        assert_eq!(
            enc(&sub),
            [
                &[0, 0, 0, 26, 0x20, 1, 0, 2, b'+', 0, 7][..],
                b"a@x.org",
                &[b'-', 0, 9],
                b"a.b@x.org"
            ]
            .concat()
        );
        let loss = Frame::LinkLossage(vec![
            LossEntry {
                count: 3,
                locations: vec![Location::parse("a@x.org").unwrap()],
            },
            LossEntry {
                count: 1,
                locations: vec![],
            },
        ]);
        assert_eq!(
            enc(&loss),
            [
                &[0, 0, 0, 30, 0x51, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 7][..],
                b"a@x.org",
                &[0, 0, 0, 0, 0, 0, 0, 1, 0],
            ]
            .concat()
        );
        round_trip(loss);
        let empty = [0u8, 0, 0, 3, 0x51, 0, 0];
        assert!(Frame::decode(&mut BytesMut::from(&empty[..]), 1 << 20).is_err());
        let many_locs = [&[0u8, 0, 0, 12, 0x51, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 33][..]].concat();
        assert!(Frame::decode(&mut BytesMut::from(&many_locs[..]), 1 << 20).is_err());
        let interest = Frame::Interest {
            reset: false,
            all: false,
            entries: vec![SubEntry::exclude(Location::parse("a@x.org").unwrap())],
        };
        assert_eq!(
            enc(&interest),
            [&[0, 0, 0, 14, 0x50, 0, 0, 1, b'-', 0, 7][..], b"a@x.org"].concat()
        );
        let all = Frame::Interest {
            reset: true,
            all: true,
            entries: vec![],
        };
        assert_eq!(enc(&all), [0, 0, 0, 4, 0x50, 3, 0, 0]);
        round_trip(all);
        // `all` without `reset`, or with entries: malformed.
        for bad in [
            &[0u8, 0, 0, 4, 0x50, 2, 0, 0][..],
            &[&[0u8, 0, 0, 14, 0x50, 3, 0, 1, b'+', 0, 7][..], b"a@x.org"].concat(),
        ] {
            assert!(Frame::decode(&mut BytesMut::from(bad), 1 << 20).is_err());
        }
        let limits = Frame::LinkLimits { max_interest: 100 };
        assert_eq!(enc(&limits), [0, 0, 0, 5, 0x80, 0, 0, 0, 100]);
        round_trip(limits);
        assert!(FrameType::is_optional(FrameType::LinkLimits as u8));
        assert_eq!(enc(&Frame::StatusRequest), [0, 0, 0, 1, 0x60]);
        assert_eq!(
            enc(&Frame::Status("{}".into())),
            [0, 0, 0, 3, 0x61, b'{', b'}']
        );
        for f in [
            hello,
            welcome,
            sub,
            interest,
            Frame::StatusRequest,
            Frame::Status("{}".into()),
            Frame::Ping(1),
            Frame::Will(None),
        ] {
            round_trip(f);
        }
    }

    #[test]
    fn byte_exact_publish() {
        let m = Message {
            id: MessageId([0xAA; 16]),
            hops: 0,
            to: vec![Location::parse("a@x.org").unwrap()],
            payload: Bytes::from_static(&[0]),
        };
        let want = [
            &[0, 0, 0, 30, 0x10][..],
            &[0xAA; 16],
            &[0, 0, 1, 0, 7],
            b"a@x.org",
            &[0],
        ]
        .concat();
        assert_eq!(enc(&Frame::Publish(m.clone())), want);
        round_trip(Frame::Publish(m.clone()));
        round_trip(Frame::Deliver(m.clone()));
        round_trip(Frame::Will(Some(m)));
    }

    #[test]
    fn byte_exact_resume_and_resumed() {
        use crate::resume::{Outcome, RESUMED_LEN, RESUME_LEN};
        let resume = Frame::Resume(Resume {
            epoch: 0x0102_0304_0506_0708,
            position: 9,
            last_id: Some(MessageId([0xAA; 16])),
        });
        let want = [
            &[
                0, 0, 0, 34, 0x22, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9, 1,
            ][..],
            &[0xAA; 16],
        ]
        .concat();
        assert_eq!(enc(&resume), want);
        assert_eq!(want.len(), 5 + RESUME_LEN);
        round_trip(resume);
        let first = Frame::Resume(Resume::default());
        assert_eq!(enc(&first), [&[0, 0, 0, 34, 0x22][..], &[0; 33]].concat());
        round_trip(first);
        let resumed = Frame::Resumed(Resumed {
            epoch: 7,
            position: 0x100,
            outcome: Outcome::WindowPassed,
            replayed: 2,
            lost: Some(3),
            from_ms: 1_767_225_600_000,
            to_ms: 1_767_225_601_000,
        });
        let want = [
            &[0, 0, 0, 51, 0x23][..],
            &[0, 0, 0, 0, 0, 0, 0, 7],
            &[0, 0, 0, 0, 0, 0, 1, 0],
            &[3],
            &[0, 0, 0, 0, 0, 0, 0, 2],
            &[1],
            &[0, 0, 0, 0, 0, 0, 0, 3],
            &[0, 0, 0x01, 0x9b, 0x76, 0xda, 0xa8, 0x00],
            &[0, 0, 0x01, 0x9b, 0x76, 0xda, 0xab, 0xe8],
        ]
        .concat();
        assert_eq!(enc(&resumed), want);
        assert_eq!(want.len(), 5 + RESUMED_LEN);
        round_trip(resumed.clone());
        round_trip(Frame::Resumed(Resumed {
            epoch: 7,
            position: 0,
            outcome: Outcome::Fresh,
            replayed: 0,
            lost: None,
            from_ms: 0,
            to_ms: 0,
        }));
        // Unknown flags or outcome, truncated or trailing bytes: malformed.
        let mut bad = enc(&Frame::Resume(Resume::default()));
        bad[21] = 2;
        assert!(Frame::decode(&mut BytesMut::from(&bad[..]), 1 << 20).is_err());
        let mut bad = enc(&resumed);
        bad[21] = 4;
        assert!(Frame::decode(&mut BytesMut::from(&bad[..]), 1 << 20).is_err());
        // Without its flag, an id or a count must be zero: one encoding per value.
        let mut bad = enc(&Frame::Resume(Resume::default()));
        bad[30] = 1;
        assert!(Frame::decode(&mut BytesMut::from(&bad[..]), 1 << 20).is_err());
        let mut bad = enc(&resumed);
        bad[30] = 0;
        assert!(Frame::decode(&mut BytesMut::from(&bad[..]), 1 << 20).is_err());
        let short = [0u8, 0, 0, 9, 0x22, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Frame::decode(&mut BytesMut::from(&short[..]), 1 << 20).is_err());
        let mut long = enc(&Frame::Resume(Resume::default()));
        long[3] += 1;
        long.push(0);
        assert!(Frame::decode(&mut BytesMut::from(&long[..]), 1 << 20).is_err());
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let full = enc(&Frame::Ping(9));
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert_eq!(Frame::decode(&mut b, 1 << 20), Ok(None), "cut at {cut}");
            assert_eq!(b.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn limits_and_garbage() {
        let mut big = BytesMut::from(&[0x00, 0x20, 0x00, 0x01][..]);
        assert_eq!(
            Frame::decode(&mut big, 1 << 20),
            Err(FrameError::TooLarge {
                len: 0x20_0001,
                max: 1 << 20
            })
        );
        let mut zero = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(
            Frame::decode(&mut zero, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        let mut unknown = BytesMut::from(&[0, 0, 0, 1, 0x55][..]);
        assert_eq!(
            Frame::decode(&mut unknown, 1 << 20),
            Err(FrameError::UnknownType(0x55))
        );
        let mut trailing = BytesMut::from(&[0, 0, 0, 10, 0x30, 0, 0, 0, 0, 0, 0, 0, 5, 9][..]);
        assert!(matches!(
            Frame::decode(&mut trailing, 1 << 20),
            Err(FrameError::Malformed(_))
        ));
        let mut badmagic = BytesMut::from(&[0, 0, 0, 5, 0x01, b'N', b'O', b'P', b'E'][..]);
        assert!(Frame::decode(&mut badmagic, 1 << 20).is_err());
    }

    #[test]
    fn long_error_text_is_cut_on_a_character_boundary() {
        let text = format!("a{}", "é".repeat(600)); // byte 1024 is inside an 'é'
        let mut b = BytesMut::from(
            &enc(&Frame::Error {
                code: ErrorCode::Malformed,
                text,
            })[..],
        );
        match Frame::decode(&mut b, 1 << 20).unwrap() {
            Some(Frame::Error { text, .. }) => assert_eq!(text.len(), 1023),
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn optional_unknown_frames_are_skipped() {
        let mut b = BytesMut::from(&[0, 0, 0, 3, 0x99, 1, 2][..]);
        b.extend_from_slice(&enc(&Frame::Ping(1)));
        assert_eq!(Frame::decode(&mut b, 1 << 20), Ok(Some(Frame::Ping(1))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut b = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = Frame::decode(&mut b, 4096) {}
        }

        #[test]
        fn arbitrary_bodies_never_panic(ty in any::<u8>(), data in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = Frame::decode_body(ty, Bytes::from(data));
        }

        #[test]
        fn resume_round_trips(epoch in any::<u64>(), position in any::<u64>(),
                              id in proptest::option::of(any::<[u8; 16]>()),
                              lost in proptest::option::of(any::<u64>()), o in 0u8..4) {
            round_trip(Frame::Resume(Resume { epoch, position, last_id: id.map(MessageId) }));
            round_trip(Frame::Resumed(Resumed {
                epoch, position, outcome: crate::resume::Outcome::from_u8(o).unwrap(),
                replayed: position ^ epoch, lost, from_ms: epoch, to_ms: position,
            }));
        }

        #[test]
        fn ping_and_lossage_round_trip(t in any::<u64>()) {
            round_trip(Frame::Ping(t));
            round_trip(Frame::Lossage(t));
        }
    }
}
