//! The message payload: an ordered list of typed, named fragments.
//!
//! Names follow Gale (`message.body`, `message.sender`, `id.time`, ...; see [`names`]).
//! Names may repeat (several `message.keyword`s). Fragments of a type this version does
//! not know are kept as [`Value::Unknown`] and re-encoded unchanged, so they pass
//! through clients and scripts intact.
//!
//! The payload starts with a kind byte. Kind 0 is a plain fragment list; kinds 1
//! (signed) and 2 (encrypted) are reserved for the security envelopes, and any kind
//! this version cannot open is kept as [`Payload::Sealed`].

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::FrameError;
use crate::limits::{MAX_FRAGMENT_DEPTH, MAX_SHORT_TEXT};
use crate::wire::{check, copy, put_str16, EncodeError, Reader};

/// Gale's fragment names.
pub mod names {
    pub const MESSAGE_BODY: &str = "message.body";
    pub const MESSAGE_SENDER: &str = "message.sender";
    pub const MESSAGE_KEYWORD: &str = "message.keyword";
    pub const MESSAGE_SUBJECT: &str = "message.subject";
    pub const MESSAGE_RECIPIENT: &str = "message.recipient";
    pub const ID_TIME: &str = "id.time";
    pub const ID_CLASS: &str = "id.class";
    pub const NOTICE_PRESENCE: &str = "notice.presence";
    pub const QUESTION_RECEIPT: &str = "question.receipt";
    pub const ANSWER_RECEIPT: &str = "answer.receipt";
    pub const QUESTION_KEY: &str = "question.key";
    pub const ANSWER_KEY: &str = "answer.key";
    pub const ANSWER_KEY_ERROR: &str = "answer.key.error";
    pub const STATUS_IDLE: &str = "status.idle";
    /// Which of a person's gsubs speaks (`laptop`): in presence notices,
    /// receipts and ping answers (docs/protocol.md, "People").
    pub const NOTICE_DEVICE: &str = "notice.device";
    /// In a receipt: the id of the message it answers.
    pub const ANSWER_RECEIPT_ID: &str = "answer.receipt.id";
    /// Marks a message sent by a program, not typed by a person (`away`):
    /// nothing answers it automatically.
    pub const MESSAGE_AUTO: &str = "message.auto";
}

/// Payload kind bytes.
pub mod kind {
    pub const PLAIN: u8 = 0x00;
    pub const SIGNED: u8 = 0x01;
    pub const ENCRYPTED: u8 = 0x02;
}

/// Fragment type bytes.
pub mod ty {
    pub const TEXT: u8 = 0x00;
    pub const DATA: u8 = 0x01;
    pub const TIME: u8 = 0x02;
    pub const NUMBER: u8 = 0x03;
    pub const LIST: u8 = 0x04;
}

/// A point in time: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(_) => Timestamp { secs: 0, nanos: 0 },
        }
    }
}

/// A fragment's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Data(Bytes),
    Time(Timestamp),
    Number(i64),
    List(Fragments),
    /// A type this version does not know, kept byte for byte.
    Unknown {
        ty: u8,
        raw: Bytes,
    },
}

/// One named fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub name: String,
    pub value: Value,
}

/// An ordered list of fragments; names may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragments(pub Vec<Fragment>);

impl Fragments {
    pub fn new() -> Self {
        Fragments(Vec::new())
    }

    pub fn push(&mut self, name: impl Into<String>, value: Value) -> &mut Self {
        self.0.push(Fragment {
            name: name.into(),
            value,
        });
        self
    }

    pub fn push_text(&mut self, name: impl Into<String>, text: impl Into<String>) -> &mut Self {
        self.push(name, Value::Text(text.into()))
    }

    /// The first fragment called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// The first text fragment called `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.iter().find_map(|f| match &f.value {
            Value::Text(t) if f.name == name => Some(t.as_str()),
            _ => None,
        })
    }

    /// Every text fragment called `name`, in order.
    pub fn texts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter_map(move |f| match &f.value {
            Value::Text(t) if f.name == name => Some(t.as_str()),
            _ => None,
        })
    }

    /// The first time fragment called `name`.
    pub fn time(&self, name: &str) -> Option<Timestamp> {
        self.0.iter().find_map(|f| match f.value {
            Value::Time(t) if f.name == name => Some(t),
            _ => None,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Fragment> {
        self.0.iter()
    }

    /// Appends the fragments to `out`, or refuses a name over 1,024 bytes, a
    /// value over 4 GiB or lists nested deeper than 8.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_at(out, 0)
    }

    fn encode_at(&self, out: &mut BytesMut, depth: usize) -> Result<(), EncodeError> {
        check("fragment list nesting", depth, MAX_FRAGMENT_DEPTH)?;
        for f in &self.0 {
            let (t, start) = (value_type(&f.value), out.len());
            out.put_u8(t);
            put_str16(out, &f.name, "fragment name", MAX_SHORT_TEXT)?;
            out.put_u32(0); // patched below
            let body = out.len();
            match &f.value {
                Value::Text(s) => out.put_slice(s.as_bytes()),
                Value::Data(b) => out.put_slice(b),
                Value::Time(ts) => {
                    out.put_i64(ts.secs);
                    out.put_u32(ts.nanos);
                }
                Value::Number(n) => out.put_i64(*n),
                Value::List(l) => l.encode_at(out, depth + 1)?,
                Value::Unknown { raw, .. } => out.put_slice(raw),
            }
            let len = out.len() - body;
            check("fragment value bytes", len, u32::MAX as usize)?;
            let at = start + 1 + 2 + f.name.len();
            out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
        }
        Ok(())
    }

    pub fn decode(buf: &[u8]) -> Result<Fragments, FrameError> {
        decode_list(buf, 0)
    }
}

fn value_type(v: &Value) -> u8 {
    match v {
        Value::Text(_) => ty::TEXT,
        Value::Data(_) => ty::DATA,
        Value::Time(_) => ty::TIME,
        Value::Number(_) => ty::NUMBER,
        Value::List(_) => ty::LIST,
        Value::Unknown { ty, .. } => *ty,
    }
}

fn decode_list(buf: &[u8], depth: usize) -> Result<Fragments, FrameError> {
    if depth > MAX_FRAGMENT_DEPTH {
        return Err(FrameError::Malformed(format!(
            "fragment lists nested deeper than {MAX_FRAGMENT_DEPTH}"
        )));
    }
    let mut r = Reader::new(buf, "fragment");
    let mut out = Vec::new();
    while r.remaining() > 0 {
        let t = r.u8()?;
        let name = r.str16(MAX_SHORT_TEXT)?.to_string();
        let len = r.u32()? as usize;
        let raw = r.take(len)?;
        let bad = |what: &str| FrameError::Malformed(format!("fragment {name:?}: {what}"));
        let value = match t {
            ty::TEXT => Value::Text(
                std::str::from_utf8(raw)
                    .map_err(|_| bad("text is not UTF-8"))?
                    .to_string(),
            ),
            ty::DATA => Value::Data(copy(raw)),
            ty::TIME => {
                if raw.len() != 12 {
                    return Err(bad("a time value is 12 bytes"));
                }
                let secs = i64::from_be_bytes(raw[..8].try_into().expect("8"));
                let nanos = u32::from_be_bytes(raw[8..].try_into().expect("4"));
                if nanos >= 1_000_000_000 {
                    return Err(bad("nanoseconds out of range"));
                }
                Value::Time(Timestamp { secs, nanos })
            }
            ty::NUMBER => {
                let n: [u8; 8] = raw
                    .try_into()
                    .map_err(|_| bad("a number value is 8 bytes"))?;
                Value::Number(i64::from_be_bytes(n))
            }
            ty::LIST => Value::List(decode_list(raw, depth + 1)?),
            other => Value::Unknown {
                ty: other,
                raw: copy(raw),
            },
        };
        out.push(Fragment { name, value });
    }
    Ok(Fragments(out))
}

/// A message payload as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A plain, unsigned fragment list.
    Plain(Fragments),
    /// A signed or encrypted envelope (or a kind this version does not know), kept
    /// whole for a layer that can open it.
    Sealed { kind: u8, raw: Bytes },
}

impl Payload {
    /// The payload's bytes, or why its fragments cannot be encoded.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(128);
        match self {
            Payload::Plain(f) => {
                out.put_u8(kind::PLAIN);
                f.encode(&mut out)?;
            }
            Payload::Sealed { kind, raw } => {
                out.put_u8(*kind);
                out.put_slice(raw);
            }
        }
        Ok(out.freeze())
    }

    pub fn decode(buf: &[u8]) -> Result<Payload, FrameError> {
        let mut r = Reader::new(buf, "payload");
        let k = r.u8()?;
        let rest = r.rest();
        Ok(match k {
            kind::PLAIN => Payload::Plain(Fragments::decode(rest)?),
            k => Payload::Sealed {
                kind: k,
                raw: copy(rest),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_exact() {
        let mut f = Fragments::new();
        f.push_text("message.body", "hi\n");
        f.push("id.time", Value::Time(Timestamp { secs: 1, nanos: 2 }));
        f.push("n", Value::Number(-1));
        let mut inner = Fragments::new();
        inner.push("d", Value::Data(Bytes::from_static(&[0xAB])));
        f.push("l", Value::List(inner));
        let got = Payload::Plain(f.clone()).encode().unwrap();
        let want: Vec<u8> = [
            &[0x00][..], // kind: plain
            &[0x00, 0, 12],
            b"message.body",
            &[0, 0, 0, 3],
            b"hi\n", // text
            &[0x02, 0, 7],
            b"id.time",
            &[0, 0, 0, 12],
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 2], // time
            &[0x03, 0, 1],
            b"n",
            &[0, 0, 0, 8],
            &[0xFF; 8], // number
            &[0x04, 0, 1],
            b"l",
            &[0, 0, 0, 9], // list
            &[0x01, 0, 1],
            b"d",
            &[0, 0, 0, 1],
            &[0xAB], //   data
        ]
        .concat();
        assert_eq!(&got[..], &want[..]);
        assert_eq!(Payload::decode(&want).unwrap(), Payload::Plain(f));
    }

    #[test]
    fn unknown_types_and_kinds_survive() {
        let raw = [0x00, 0x09, 0, 1, b'x', 0, 0, 0, 2, 7, 7];
        let p = Payload::decode(&raw).unwrap();
        let Payload::Plain(f) = &p else { panic!() };
        assert_eq!(
            f.0[0].value,
            Value::Unknown {
                ty: 9,
                raw: Bytes::from_static(&[7, 7])
            }
        );
        assert_eq!(&p.encode().unwrap()[..], &raw[..]);
        let sealed = [0x02, 1, 2, 3];
        assert_eq!(
            &Payload::decode(&sealed).unwrap().encode().unwrap()[..],
            &sealed[..]
        );
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &[0x00, 0x02, 0, 1, b't', 0, 0, 0, 1, 0][..], // short time
            &[0x00, 0x00, 0, 1, b't', 0, 0, 0, 1, 0xFF],  // bad utf-8
            &[0x00, 0x00, 0, 1, b't', 0, 0, 0, 9, 0],     // length past end
            &[],                                          // no kind byte
        ] {
            assert!(Payload::decode(bad).is_err(), "{bad:?}");
        }
    }

    fn arb_fragments() -> impl Strategy<Value = Fragments> {
        let leaf = prop_oneof![
            ".{0,20}".prop_map(Value::Text),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(|v| Value::Data(v.into())),
            (any::<i64>(), 0u32..1_000_000_000)
                .prop_map(|(secs, nanos)| Value::Time(Timestamp { secs, nanos })),
            any::<i64>().prop_map(Value::Number),
            (5u8..=255, prop::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(ty, v)| Value::Unknown { ty, raw: v.into() }),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::vec(("[a-z.]{1,10}", inner), 0..4).prop_map(|v| {
                Value::List(Fragments(
                    v.into_iter()
                        .map(|(name, value)| Fragment { name, value })
                        .collect(),
                ))
            })
        });
        prop::collection::vec(("[a-z.]{1,10}", value), 0..6).prop_map(|v| {
            Fragments(
                v.into_iter()
                    .map(|(name, value)| Fragment { name, value })
                    .collect(),
            )
        })
    }

    proptest! {
        #[test]
        fn round_trip(f in arb_fragments()) {
            let p = Payload::Plain(f);
            prop_assert_eq!(Payload::decode(&p.encode().unwrap()).unwrap(), p);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Payload::decode(&b);
        }
    }
}
