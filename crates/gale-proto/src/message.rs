//! A message: the small routing header the server reads, and an opaque payload.
//!
//! Body of a PUBLISH, DELIVER or WILL frame:
//!
//! ```text
//! id        16 bytes   unique message id
//! hops      u8         servers crossed so far (0 from a client)
//! flags     u8         reserved, 0
//! count     u8         number of locations, 1..=32
//! location  count × (u16 length, UTF-8 canonical location)
//! payload   the rest   opaque to the server (see fragment.rs)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::FrameError;
use crate::id::MessageId;
use crate::limits::{MAX_HOPS, MAX_LOCATIONS, MAX_LOCATION_LEN};
use crate::location::{check_canonical, Location};
use crate::wire::{check, put_str16, EncodeError, Reader};

/// Offset of the hop count within a message body.
pub const HOPS_OFFSET: usize = 16;

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub hops: u8,
    pub to: Vec<Location>,
    pub payload: Bytes,
}

impl Message {
    pub fn new(to: Vec<Location>, payload: Bytes) -> Message {
        Message {
            id: MessageId::generate(),
            hops: 0,
            to,
            payload,
        }
    }

    pub fn encoded_len(&self) -> usize {
        16 + 3 + self.to.iter().map(|l| 2 + l.as_str().len()).sum::<usize>() + self.payload.len()
    }

    /// Appends the message body to `out`, or refuses a message the protocol does
    /// not allow (no locations or more than 32, more than 16 hops, no payload
    /// kind byte), leaving `out` as it was.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        check("locations in a message", self.to.len(), MAX_LOCATIONS)?;
        check("locations in a message (at least one)", 1, self.to.len())?;
        check("hops", self.hops as usize, MAX_HOPS as usize)?;
        check("payload kind byte (at least one)", 1, self.payload.len())?;
        out.put_slice(&self.id.0);
        out.put_u8(self.hops);
        out.put_u8(0);
        out.put_u8(self.to.len() as u8);
        for l in &self.to {
            put_str16(out, l.as_str(), "location", MAX_LOCATION_LEN)?;
        }
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Decodes a message body held in `body`; the payload shares `body`'s memory.
    pub fn decode(body: &Bytes) -> Result<Message, FrameError> {
        let v = MessageView::parse(body)?;
        let to = v
            .locations()
            .map(|s| Location::from_canonical(s).expect("validated by parse"))
            .collect();
        Ok(Message {
            id: v.id,
            hops: v.hops,
            to,
            payload: body.slice(v.payload_offset..),
        })
    }
}

/// A validated, borrowed view of a message body, for routing without copying.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    pub id: MessageId,
    pub hops: u8,
    pub count: u8,
    locs: &'a [u8],
    pub payload_offset: usize,
}

/// The location list of the last message a reader validated, so that a stream of
/// messages to the same locations (the common case: a publisher sending to one
/// place) checks them once. Validation is a pure function of the bytes, so an
/// identical list needs no second look.
#[derive(Debug, Default, Clone)]
pub struct KnownLocations {
    last: Vec<u8>,
}

impl<'a> MessageView<'a> {
    /// Checks the header: sizes, counts, hop limit, and every location canonical.
    pub fn parse(body: &'a [u8]) -> Result<MessageView<'a>, FrameError> {
        Self::parse_known(body, &mut KnownLocations::default())
    }

    /// As [`parse`](Self::parse), but a location list identical to the last one
    /// `known` saw valid is not checked again.
    pub fn parse_known(
        body: &'a [u8],
        known: &mut KnownLocations,
    ) -> Result<MessageView<'a>, FrameError> {
        let mut r = Reader::new(body, "message header");
        let id = MessageId(r.take(16)?.try_into().expect("16 bytes"));
        let hops = r.u8()?;
        let flags = r.u8()?;
        let count = r.u8()?;
        if flags != 0 {
            return Err(FrameError::Malformed(format!(
                "message flags {flags:#04x} must be 0"
            )));
        }
        if hops > MAX_HOPS {
            return Err(FrameError::Malformed(format!(
                "hop count {hops} exceeds {MAX_HOPS}"
            )));
        }
        if count == 0 || count as usize > MAX_LOCATIONS {
            return Err(FrameError::Malformed(format!(
                "a message names 1 to {MAX_LOCATIONS} locations, not {count}"
            )));
        }
        let start = r.pos();
        // The list's extent first (lengths only), then the check, unless known.
        let mut end = start;
        for _ in 0..count {
            let len = body
                .get(end..end + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize);
            match len {
                Some(n) if n <= MAX_LOCATION_LEN && end + 2 + n <= body.len() => end += 2 + n,
                _ => {
                    end = usize::MAX;
                    break;
                }
            }
        }
        if end == usize::MAX || body[start..end] != known.last[..] {
            for _ in 0..count {
                let s = r.str16(MAX_LOCATION_LEN)?;
                check_canonical(s).map_err(FrameError::BadLocation)?;
            }
            debug_assert_eq!(r.pos(), end);
            known.last.clear();
            known.last.extend_from_slice(&body[start..end]);
        }
        if end == body.len() {
            return Err(FrameError::Malformed(
                "message has no payload kind byte".into(),
            ));
        }
        Ok(MessageView {
            id,
            hops,
            count,
            locs: &body[start..end],
            payload_offset: end,
        })
    }

    /// The message's location list as it appears in the header: each location as a
    /// `str16` (u16 length, then the canonical text).
    pub fn raw_locations(&self) -> &'a [u8] {
        self.locs
    }

    /// The message's locations, as validated canonical strings.
    pub fn locations(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.locs;
        std::iter::from_fn(move || {
            if rest.len() < 2 {
                return None;
            }
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let s = std::str::from_utf8(&rest[2..2 + n]).expect("validated");
            rest = &rest[2 + n..];
            Some(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_exact_and_view() {
        let m = Message {
            id: MessageId([7; 16]),
            hops: 1,
            to: vec![
                Location::parse("a@x.org").unwrap(),
                Location::parse("b.c@x.org").unwrap(),
            ],
            payload: Bytes::from_static(&[0, 9]),
        };
        let mut out = BytesMut::new();
        m.encode(&mut out).unwrap();
        let want: Vec<u8> = [
            &[7u8; 16][..],
            &[1, 0, 2],
            &[0, 7],
            b"a@x.org",
            &[0, 9],
            b"b.c@x.org",
            &[0, 9],
        ]
        .concat();
        assert_eq!(&out[..], &want[..]);
        assert_eq!(m.encoded_len(), want.len());
        let frozen = out.freeze();
        let v = MessageView::parse(&frozen).unwrap();
        assert_eq!(v.locations().collect::<Vec<_>>(), ["a@x.org", "b.c@x.org"]);
        assert_eq!(Message::decode(&frozen).unwrap(), m);
    }

    #[test]
    fn rejects_bad_headers() {
        let base = |count: u8, loc: &[u8], hops: u8| -> Vec<u8> {
            let mut v = vec![0u8; 16];
            v.extend_from_slice(&[hops, 0, count, 0, loc.len() as u8]);
            v.extend_from_slice(loc);
            v.push(0);
            v
        };
        assert!(MessageView::parse(&base(1, b"a@x.org", 0)).is_ok());
        assert!(matches!(
            MessageView::parse(&base(0, b"a@x.org", 0)),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            MessageView::parse(&base(1, b"a@X.org", 0)),
            Err(FrameError::BadLocation(_))
        ));
        assert!(matches!(
            MessageView::parse(&base(1, b"nodomain", 0)),
            Err(FrameError::BadLocation(_))
        ));
        assert!(matches!(
            MessageView::parse(&base(1, b"a@x.org", 200)),
            Err(FrameError::Malformed(_))
        ));
        assert!(MessageView::parse(&base(2, b"a@x.org", 0)).is_err());
        // A known list is not checked again; any other list is.
        let mut known = KnownLocations::default();
        assert!(MessageView::parse_known(&base(1, b"a@x.org", 0), &mut known).is_ok());
        assert!(MessageView::parse_known(&base(1, b"a@x.org", 0), &mut known).is_ok());
        assert!(MessageView::parse_known(&base(1, b"a@X.org", 0), &mut known).is_err());
        assert!(MessageView::parse_known(&base(1, b"a@X.org", 0), &mut known).is_err());
        assert!(MessageView::parse_known(&base(1, b"a@x.org", 0), &mut known).is_ok());
        let mut no_payload = base(1, b"a@x.org", 0);
        no_payload.pop();
        assert!(MessageView::parse(&no_payload).is_err());
    }
}
