//! The original fragment group (wire.md §5): fragments back to back, each `u32
//! type, u32 len`, then `len` bytes of `ltext name` and the value.
//!
//! | type | value |
//! |---|---|
//! | 0 text | UTF-16 units to the end of the fragment |
//! | 1 data | bytes |
//! | 2 time | 16 bytes ([`OrigTime`]) |
//! | 3 number | `s32` |
//! | 4 group | nested fragments |
//!
//! Type 5 and above are refused here: the original's own reader aborts on type 5
//! (`assert(0)`), so nothing of ours ever sends one to an original client.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::wire::{put_ltext, put_text, text, text_len, OrigTime, WireError};

/// Fragment type words.
pub mod ty {
    pub const TEXT: u32 = 0;
    pub const DATA: u32 = 1;
    pub const TIME: u32 = 2;
    pub const NUMBER: u32 = 3;
    pub const GROUP: u32 = 4;
}

/// Fragment names the original uses (it mixes `/` and `.`).
pub mod names {
    pub const MESSAGE_BODY: &str = "message/body";
    pub const MESSAGE_SENDER: &str = "message/sender";
    pub const MESSAGE_KEYWORD: &str = "message.keyword";
    pub const ID_CLASS: &str = "id/class";
    pub const ID_INSTANCE: &str = "id/instance";
    pub const ID_TIME: &str = "id/time";
    pub const NOTICE_PRESENCE: &str = "notice/presence";
    pub const QUESTION_RECEIPT: &str = "question.receipt";
    pub const SIGNATURE: &str = "security/signature";
    pub const ENCRYPTION: &str = "security/encryption";
    /// Ours: the id of one of our messages sent to the original network, so that
    /// it keeps its id when it comes back (a data fragment of 16 bytes).
    pub const GALE_ID: &str = "id/gale-message";
}

/// Groups nest at most this deep here (the original has no limit; ours is 8).
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Data(Bytes),
    Time(OrigTime),
    Number(i32),
    Group(Vec<Fragment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    pub name: String,
    pub value: Value,
}

impl Fragment {
    pub fn text(name: &str, v: &str) -> Fragment {
        Fragment {
            name: name.into(),
            value: Value::Text(v.into()),
        }
    }
}

/// Decodes a whole group.
pub fn decode(b: &[u8]) -> Result<Vec<Fragment>, WireError> {
    decode_at(b, 0)
}

fn decode_at(mut b: &[u8], depth: usize) -> Result<Vec<Fragment>, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Fragment("groups nested too deep"));
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 8 {
            return Err(WireError::Fragment("header cut short"));
        }
        let t = b.get_u32();
        let len = b.get_u32() as usize;
        if len > b.len() {
            return Err(WireError::Fragment("length overruns the group"));
        }
        let (mut f, rest) = b.split_at(len);
        b = rest;
        if f.len() < 4 {
            return Err(WireError::Fragment("name cut short"));
        }
        let units = f.get_u32() as usize;
        let nbytes = units
            .checked_mul(2)
            .filter(|n| *n <= f.len())
            .ok_or(WireError::Fragment("name overruns the fragment"))?;
        let name = text(&f[..nbytes])?;
        let v = &f[nbytes..];
        let value = match t {
            ty::TEXT => Value::Text(text(v)?),
            ty::DATA => Value::Data(Bytes::copy_from_slice(v)),
            ty::TIME => Value::Time(OrigTime::decode(v)?),
            ty::NUMBER => Value::Number(i32::from_be_bytes(
                v.try_into()
                    .map_err(|_| WireError::Fragment("number is not 4 bytes"))?,
            )),
            ty::GROUP => Value::Group(decode_at(v, depth + 1)?),
            _ => return Err(WireError::Fragment("unknown type")),
        };
        out.push(Fragment { name, value });
    }
    Ok(out)
}

/// Encodes a group, fragments in the order given.
pub fn encode(frags: &[Fragment]) -> Bytes {
    let mut out = BytesMut::new();
    put(&mut out, frags);
    out.freeze()
}

fn put(out: &mut BytesMut, frags: &[Fragment]) {
    for f in frags {
        let (t, len) = match &f.value {
            Value::Text(s) => (ty::TEXT, text_len(s)),
            Value::Data(d) => (ty::DATA, d.len()),
            Value::Time(_) => (ty::TIME, OrigTime::LEN),
            Value::Number(_) => (ty::NUMBER, 4),
            Value::Group(g) => (ty::GROUP, encode(g).len()),
        };
        out.put_u32(t);
        out.put_u32((4 + text_len(&f.name) + len) as u32);
        put_ltext(out, &f.name);
        match &f.value {
            Value::Text(s) => put_text(out, s),
            Value::Data(d) => out.put_slice(d),
            Value::Time(t) => t.put(out),
            Value::Number(n) => out.put_i32(*n),
            Value::Group(g) => put(out, g),
        }
    }
}

/// The first fragment named `name` holding text.
pub fn find_text<'a>(frags: &'a [Fragment], name: &str) -> Option<&'a str> {
    frags.iter().find_map(|f| match &f.value {
        Value::Text(s) if f.name == name => Some(s.as_str()),
        _ => None,
    })
}

/// The first fragment named `name` holding data.
pub fn find_data<'a>(frags: &'a [Fragment], name: &str) -> Option<&'a Bytes> {
    frags.iter().find_map(|f| match &f.value {
        Value::Data(d) if f.name == name => Some(d),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// wire.md §3's example content: one text fragment `message/body` = "hi\r\n".
    #[test]
    fn body_fragment_matches_wire_md() {
        let want: Vec<u8> = [
            &[0, 0, 0, 0, 0, 0, 0, 0x24, 0, 0, 0, 0x0c][..],
            &"message/body"
                .encode_utf16()
                .flat_map(|u| u.to_be_bytes())
                .collect::<Vec<_>>(),
            &[0, b'h', 0, b'i', 0, 0x0d, 0, 0x0a],
        ]
        .concat();
        let frags = vec![Fragment::text(names::MESSAGE_BODY, "hi\r\n")];
        assert_eq!(&encode(&frags)[..], &want[..]);
        assert_eq!(decode(&want).unwrap(), frags);
    }

    #[test]
    fn every_type_round_trips() {
        let frags = vec![
            Fragment::text("t", "é€😀"),
            Fragment {
                name: "d".into(),
                value: Value::Data(Bytes::from_static(b"\0\xff")),
            },
            Fragment {
                name: "id/time".into(),
                value: Value::Time(OrigTime { secs: -1, frac: 7 }),
            },
            Fragment {
                name: "n".into(),
                value: Value::Number(-5),
            },
            Fragment {
                name: "g".into(),
                value: Value::Group(vec![Fragment::text("x", "")]),
            },
        ];
        assert_eq!(decode(&encode(&frags)).unwrap(), frags);
    }

    #[test]
    fn type_five_and_overruns_are_refused() {
        let mut b = BytesMut::new();
        b.put_u32(5);
        b.put_u32(4);
        b.put_u32(0);
        assert!(decode(&b).is_err());
        let mut b = BytesMut::new();
        b.put_u32(0);
        b.put_u32(400);
        assert!(decode(&b).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&b);
        }

        #[test]
        fn text_round_trips(name in "\\PC{0,12}", v in "\\PC{0,40}") {
            let f = vec![Fragment::text(&name, &v)];
            prop_assert_eq!(decode(&encode(&f)).unwrap(), f);
        }
    }
}
