//! Inboxes (protocol version 3): a client opens its durable inbox on the
//! server, proving with a signature over a server challenge that it holds the
//! key the inbox is bound to; the server sends what was stored while the device
//! was away (STORED), then keeps sending new messages the same way, and the
//! client acknowledges what it has shown (INBOX_ACK).
//!
//! The layouts are in `docs/protocol.md` §4.15.

use bytes::BufMut;

use crate::frame::{EncodeError, FrameError};
use crate::limits::{MAX_LOCATION_LEN, MAX_SHORT_TEXT};
use crate::location::Location;
use crate::wire::{check, put_str16, Reader};

/// Length of the server's challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Length of an Ed25519 public key.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest inbox name (an inbox is named like a location: `bob@example.org`).
pub const MAX_INBOX_NAME: usize = MAX_LOCATION_LEN;
/// Longest device name.
pub const MAX_DEVICE_NAME: usize = 64;
/// Most locations one inbox keeps.
pub const MAX_INBOX_LOCATIONS: usize = 64;
/// What the signature of an INBOX_OPEN covers, before the challenge and the body.
pub const SIGNING_CONTEXT: &[u8] = b"gale inbox open v1\0";

/// INBOX_OPEN's flag: fetch what is held, then stop (no live messages).
pub const FLAG_DRAIN: u8 = 1;

/// A client's request to open (or create) its inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxOpen {
    pub flags: u8,
    /// The inbox's name, bound to `key` by the first INBOX_OPEN that names it.
    pub name: String,
    /// This device's name: each device has its own place in the inbox.
    pub device: String,
    /// The owner's Ed25519 public key.
    pub key: [u8; KEY_LEN],
    /// The locations whose messages the inbox keeps (replacing earlier ones);
    /// empty keeps those registered before.
    pub locations: Vec<Location>,
    /// Ed25519 signature by `key` over [`InboxOpen::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl InboxOpen {
    pub fn drain(&self) -> bool {
        self.flags & FLAG_DRAIN != 0
    }

    /// What the signature covers: [`SIGNING_CONTEXT`], the challenge, then the
    /// body up to (not including) the signature.
    pub fn signed_bytes(&self, challenge: &[u8; CHALLENGE_LEN]) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(128);
        v.extend_from_slice(SIGNING_CONTEXT);
        v.extend_from_slice(challenge);
        self.encode_unsigned(&mut v)?;
        Ok(v)
    }

    fn encode_unsigned(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        out.put_u8(self.flags);
        put_str16(out, &self.name, "inbox name", MAX_INBOX_NAME)?;
        put_str16(out, &self.device, "device name", MAX_DEVICE_NAME)?;
        out.put_slice(&self.key);
        check(
            "locations in an INBOX_OPEN",
            self.locations.len(),
            MAX_INBOX_LOCATIONS,
        )?;
        out.put_u8(self.locations.len() as u8);
        for l in &self.locations {
            put_str16(out, l.as_str(), "location", MAX_LOCATION_LEN)?;
        }
        Ok(())
    }

    pub(crate) fn encode(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        self.encode_unsigned(out)?;
        out.put_slice(&self.signature);
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<InboxOpen, FrameError> {
        let flags = r.u8()?;
        if flags & !FLAG_DRAIN != 0 {
            return Err(FrameError::Malformed(format!(
                "INBOX_OPEN flags {flags:#04x}"
            )));
        }
        let name = r.str16(MAX_INBOX_NAME)?.to_string();
        let device = r.str16(MAX_DEVICE_NAME)?.to_string();
        check_name("inbox name", &name)?;
        check_name("device name", &device)?;
        let key = r.take(KEY_LEN)?.try_into().expect("32 bytes");
        let n = r.u8()? as usize;
        if n > MAX_INBOX_LOCATIONS {
            return Err(FrameError::Malformed(format!(
                "INBOX_OPEN names {n} locations; the limit is {MAX_INBOX_LOCATIONS}"
            )));
        }
        let mut locations = Vec::with_capacity(n);
        for _ in 0..n {
            locations.push(Location::from_canonical(r.str16(MAX_LOCATION_LEN)?)?);
        }
        let signature = r.take(SIGNATURE_LEN)?.try_into().expect("64 bytes");
        Ok(InboxOpen {
            flags,
            name,
            device,
            key,
            locations,
            signature,
        })
    }
}

/// Names are printable and non-empty: they appear in logs and status views.
fn check_name(what: &str, s: &str) -> Result<(), FrameError> {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FrameError::Malformed(format!(
            "{what} {s:?} is empty or holds spaces or control characters"
        )));
    }
    Ok(())
}

/// The server's answer to INBOX_OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    /// The inbox exists and is this key's: what it holds follows.
    Opened,
    /// A new inbox, now bound to this key.
    Created,
    /// The inbox is bound to another key: refused.
    WrongKey,
    /// The signature does not verify (or no challenge was asked for): refused.
    BadSignature,
    /// The server keeps no inboxes now (no data directory, a store error):
    /// live messages still flow.
    Unavailable,
    /// Refused for another reason (a limit); the text says which.
    Refused,
}

impl InboxStatus {
    pub fn to_u8(self) -> u8 {
        match self {
            InboxStatus::Opened => 0,
            InboxStatus::Created => 1,
            InboxStatus::WrongKey => 2,
            InboxStatus::BadSignature => 3,
            InboxStatus::Unavailable => 4,
            InboxStatus::Refused => 5,
        }
    }

    pub fn from_u8(b: u8) -> Option<InboxStatus> {
        Some(match b {
            0 => InboxStatus::Opened,
            1 => InboxStatus::Created,
            2 => InboxStatus::WrongKey,
            3 => InboxStatus::BadSignature,
            4 => InboxStatus::Unavailable,
            5 => InboxStatus::Refused,
            _ => return None,
        })
    }

    /// True when the inbox is open.
    pub fn is_open(self) -> bool {
        matches!(self, InboxStatus::Opened | InboxStatus::Created)
    }
}

/// INBOX_STATE: the answer to INBOX_OPEN, before anything stored is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxState {
    pub status: InboxStatus,
    /// Messages held for this device now.
    pub held: u64,
    /// Messages this device lost (inbox limits, age, store errors) since it
    /// last acknowledged: a gap to report.
    pub dropped: u64,
    /// Time (Unix ms) of the oldest message held; 0 when none.
    pub oldest_ms: u64,
    /// Why, for a refusal; a note otherwise (may be empty).
    pub text: String,
}

impl InboxState {
    pub(crate) fn encode(&self, out: &mut impl BufMut) -> Result<(), EncodeError> {
        out.put_u8(self.status.to_u8());
        out.put_u64(self.held);
        out.put_u64(self.dropped);
        out.put_u64(self.oldest_ms);
        put_str16(
            out,
            crate::frame::truncate(&self.text, MAX_SHORT_TEXT),
            "text",
            MAX_SHORT_TEXT,
        )
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<InboxState, FrameError> {
        let s = r.u8()?;
        let status = InboxStatus::from_u8(s)
            .ok_or_else(|| FrameError::Malformed(format!("INBOX_STATE status {s}")))?;
        Ok(InboxState {
            status,
            held: r.u64()?,
            dropped: r.u64()?,
            oldest_ms: r.u64()?,
            text: r.str16(MAX_SHORT_TEXT)?.to_string(),
        })
    }
}

/// INBOX_DONE: everything held when the inbox was opened (and all that came
/// while it was being sent) has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxDone {
    /// STORED frames sent since INBOX_STATE.
    pub replayed: u64,
    /// The last seq sent (0 if none).
    pub last_seq: u64,
    /// True: new messages follow as STORED frames as they arrive. False (a
    /// drain): nothing more is sent, and the inbox keeps what comes next.
    pub live: bool,
}

impl InboxDone {
    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(self.replayed);
        out.put_u64(self.last_seq);
        out.put_u8(u8::from(self.live));
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<InboxDone, FrameError> {
        let replayed = r.u64()?;
        let last_seq = r.u64()?;
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(FrameError::Malformed(format!(
                "INBOX_DONE flags {flags:#04x}"
            )));
        }
        Ok(InboxDone {
            replayed,
            last_seq,
            live: flags & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::frame::Frame;
    use crate::id::MessageId;
    use crate::message::Message;

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn round_trip(f: Frame) -> Vec<u8> {
        let bytes = f.to_bytes();
        let mut buf = BytesMut::from(&bytes[..]);
        let back = Frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(back, f);
        assert!(buf.is_empty());
        bytes.to_vec()
    }

    fn open() -> InboxOpen {
        InboxOpen {
            flags: FLAG_DRAIN,
            name: "bob@x.org".into(),
            device: "laptop".into(),
            key: [0x11; 32],
            locations: vec![Location::parse("bob@x.org").unwrap()],
            signature: [0x22; 64],
        }
    }

    /// The examples of docs/protocol.md §4.15, byte for byte.
    #[test]
    fn the_documented_examples() {
        assert_eq!(hex(&round_trip(Frame::InboxHello)), "00 00 00 01 24");
        let ch = round_trip(Frame::InboxChallenge([0xcc; 32]));
        assert_eq!(hex(&ch[..5]), "00 00 00 21 25");
        let o = round_trip(Frame::InboxOpen(open()));
        assert_eq!(
            hex(&o[..36]),
            "00 00 00 81 26 01 00 09 62 6f 62 40 78 2e 6f 72 67 00 06 6c 61 70 74 6f 70 \
             11 11 11 11 11 11 11 11 11 11 11"
        );
        assert_eq!(
            hex(&o[56..71]),
            "11 01 00 09 62 6f 62 40 78 2e 6f 72 67 22 22"
        );
        assert_eq!(o.len(), 4 + 0x81);
        let st = round_trip(Frame::InboxState(InboxState {
            status: InboxStatus::Opened,
            held: 3,
            dropped: 1,
            oldest_ms: 0x0102,
            text: String::new(),
        }));
        assert_eq!(
            hex(&st),
            "00 00 00 1c 27 00 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 01 00 00 00 00 \
             00 00 01 02 00 00"
        );
        let m = Message {
            id: MessageId([0xaa; 16]),
            hops: 0,
            to: vec![Location::parse("a@x.org").unwrap()],
            payload: bytes::Bytes::from_static(&[0]),
        };
        let stored = round_trip(Frame::Stored { seq: 7, message: m });
        assert_eq!(hex(&stored[..13]), "00 00 00 26 28 00 00 00 00 00 00 00 07");
        let done = round_trip(Frame::InboxDone(InboxDone {
            replayed: 3,
            last_seq: 7,
            live: true,
        }));
        assert_eq!(
            hex(&done),
            "00 00 00 12 29 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 07 01"
        );
        assert_eq!(
            hex(&round_trip(Frame::InboxAck(7))),
            "00 00 00 09 2a 00 00 00 00 00 00 00 07"
        );
        let gap = round_trip(Frame::InboxGap {
            count: 2,
            text: "x".into(),
        });
        assert_eq!(hex(&gap), "00 00 00 0c 2b 00 00 00 00 00 00 00 02 00 01 78");
    }

    #[test]
    fn the_signature_covers_context_challenge_and_every_field() {
        let o = open();
        let signed = o.signed_bytes(&[0xcc; 32]).unwrap();
        assert!(signed.starts_with(SIGNING_CONTEXT));
        assert_eq!(&signed[SIGNING_CONTEXT.len()..][..32], &[0xcc; 32]);
        // The body up to the signature, as on the wire.
        let wire = Frame::InboxOpen(o.clone()).to_bytes();
        assert_eq!(
            &signed[SIGNING_CONTEXT.len() + 32..],
            &wire[5..wire.len() - 64]
        );
        let mut other = o.clone();
        other.device = "desktop".into();
        assert_ne!(other.signed_bytes(&[0xcc; 32]).unwrap(), signed);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = Frame::InboxOpen(open()).to_bytes();
        let decode = |b: &[u8]| Frame::decode(&mut BytesMut::from(b), 1 << 20);
        // Unknown flags.
        let mut bad = good.to_vec();
        bad[5] = 0x03;
        assert!(decode(&bad).is_err());
        // A device name with a space.
        let mut o = open();
        o.device = "my laptop".into();
        assert!(decode(&Frame::InboxOpen(o).to_bytes()).is_err());
        // An empty inbox name.
        let mut o = open();
        o.name = String::new();
        assert!(decode(&Frame::InboxOpen(o).to_bytes()).is_err());
        // Truncated (no signature).
        let mut short = good[..good.len() - 10].to_vec();
        let len = (short.len() - 4) as u32;
        short[..4].copy_from_slice(&len.to_be_bytes());
        assert!(decode(&short).is_err());
        // A status that does not exist.
        let mut st = Frame::InboxState(InboxState {
            status: InboxStatus::Refused,
            held: 0,
            dropped: 0,
            oldest_ms: 0,
            text: String::new(),
        })
        .to_bytes()
        .to_vec();
        st[5] = 9;
        assert!(decode(&st).is_err());
        // Too many locations is refused when encoding.
        let mut o = open();
        o.locations = (0..=MAX_INBOX_LOCATIONS)
            .map(|i| Location::parse(&format!("l{i}@x.org")).unwrap())
            .collect();
        assert!(Frame::InboxOpen(o).try_to_bytes().is_err());
    }
}
