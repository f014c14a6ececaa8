//! Puffs ↔ our messages (docs/protocol.md §17).
//!
//! **Into our network** a puff becomes a message to the locations of its positive
//! categories ([`crate::category::location`]) whose payload is the kind byte
//! [`KIND_ORIGINAL`] followed by the puff's content **byte for byte**, so that a
//! signature or encryption made by an original client reaches original clients
//! untouched. Its id is [`puff_id`]: a hash of its categories and content, so that
//! copies of one puff that arrive by two paths are one message.
//!
//! **Out to original clients** ([`to_puff`]) such a payload is the content again;
//! a plain or signed message of ours is turned into an unsigned original group
//! (body, sender, time, keywords...): readable there, and shown there as
//! unverified, since the original cannot check an ed25519 signature. Encrypted
//! messages of ours are refused ([`Refusal::Private`]): an original client could
//! not decrypt them.
//!
//! **Read by our clients** ([`describe`]) the original content is decoded into our
//! fragments, with what its security wrapper says: unsigned, signed by an
//! original (RSA) key that our clients cannot verify, or encrypted to original keys.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gale_proto::fragment::{self as ours, kind, Timestamp};
use gale_proto::limits::MAX_LOCATIONS;
use gale_proto::{Fragments, Location, Message, MessageId};
use sha2::{Digest, Sha256};

use crate::category::{self, Category};
use crate::fragment::{self as orig, names, Fragment, Value};
use crate::wire::{text, OrigTime, SIZE_LIMIT};

/// Payload kind of a message whose payload (after this byte) is an original
/// puff's content. Ours: 0 plain, 1 signed, 2 encrypted.
pub const KIND_ORIGINAL: u8 = 0x4f;
/// Domain separation for [`puff_id`].
pub const PUFF_ID_LABEL: &[u8] = b"gale/original-puff-id/v1\0";

/// Why a puff cannot become one of our messages, or a message a puff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no category of {0:?} names a location (only @domain/user/... categories cross)")]
    NoLocation(String),
    #[error("a private (encrypted) message: original clients cannot decrypt it")]
    Private,
    #[error("payload kind {0:#04x} cannot be shown to original clients")]
    Unreadable(u8),
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("a puff of {0} bytes: original peers discard frames above {SIZE_LIMIT}")]
    TooLarge(usize),
    #[error("a fragment of type 5 or more, which aborts original clients")]
    Poison,
}

/// Our name for an original fragment name, and back.
const NAMES: &[(&str, &str)] = &[
    (names::MESSAGE_BODY, ours::names::MESSAGE_BODY),
    (names::MESSAGE_SENDER, ours::names::MESSAGE_SENDER),
    (names::ID_TIME, ours::names::ID_TIME),
    (names::ID_CLASS, ours::names::ID_CLASS),
    (names::NOTICE_PRESENCE, ours::names::NOTICE_PRESENCE),
    ("message/subject", ours::names::MESSAGE_SUBJECT),
    ("message/recipient", ours::names::MESSAGE_RECIPIENT),
    ("question/key", ours::names::QUESTION_KEY),
    ("answer/key", ours::names::ANSWER_KEY),
];

fn our_name(n: &str) -> String {
    NAMES
        .iter()
        .find(|(o, _)| *o == n)
        .map(|(_, u)| u.to_string())
        .unwrap_or_else(|| n.replace('/', "."))
}

fn orig_name(n: &str) -> String {
    NAMES
        .iter()
        .find(|(_, u)| *u == n)
        .map(|(o, _)| o.to_string())
        .unwrap_or_else(|| n.to_string())
}

/// The id a puff gets: the 16-byte id one of ours carried out (`id/gale-message`),
/// else the first 16 bytes of SHA-256 over [`PUFF_ID_LABEL`], its categories
/// without their flags (sorted, each once, `:`-joined), a zero byte, and its content.
pub fn puff_id(cats: &[Category], content: &[u8]) -> MessageId {
    if let Ok(frags) = orig::decode(content) {
        if let Some(id) = orig::find_data(&frags, names::GALE_ID) {
            if let Ok(b) = <[u8; 16]>::try_from(&id[..]) {
                return MessageId(b);
            }
        }
    }
    // Flags are not hashed: galeds rewrite them on the way.
    let mut bases: Vec<&str> = cats.iter().map(|c| c.base.as_str()).collect();
    bases.sort_unstable();
    bases.dedup();
    let mut h = Sha256::new();
    h.update(PUFF_ID_LABEL);
    h.update(bases.join(":").as_bytes());
    h.update([0]);
    h.update(content);
    let d = h.finalize();
    MessageId(d[..16].try_into().expect("16 of 32 bytes"))
}

/// One of our messages for a puff routed `routing` (see the module docs): its
/// locations are those of the positive categories, each once, at most 32.
pub fn from_puff(routing: &str, content: &[u8]) -> Result<Message, Refusal> {
    let cats = category::split(routing);
    let mut to: Vec<Location> = Vec::new();
    for c in cats.iter().filter(|c| c.positive) {
        if let Some(l) = category::location(&c.base) {
            if !to.contains(&l) && to.len() < MAX_LOCATIONS {
                to.push(l);
            }
        }
    }
    if to.is_empty() {
        return Err(Refusal::NoLocation(routing.to_string()));
    }
    let mut payload = BytesMut::with_capacity(1 + content.len());
    payload.put_u8(KIND_ORIGINAL);
    payload.put_slice(content);
    Ok(Message {
        id: puff_id(&cats, content),
        hops: 0,
        to,
        payload: payload.freeze(),
    })
}

/// The categories of a message's locations, as an original client receives them.
pub fn categories(to: &[Location]) -> Vec<Category> {
    to.iter()
        .map(|l| Category {
            positive: true,
            base: category::category(l),
        })
        .collect()
}

/// The puff (routing, content) an original client is sent for one of our
/// messages, or why it is not sent one.
pub fn to_puff(msg: &Message) -> Result<(String, Bytes), Refusal> {
    let routing = category::routing(
        &categories(&msg.to)
            .iter()
            .map(Category::delivered)
            .collect::<Vec<_>>(),
    );
    let Some((&k, rest)) = msg.payload.split_first() else {
        return Err(Refusal::Malformed("empty payload".into()));
    };
    let bad = |e: gale_proto::FrameError| Refusal::Malformed(e.to_string());
    let (inner, signer) = match k {
        KIND_ORIGINAL => {
            let content = msg.payload.slice(1..);
            if poisons(&content, 0) {
                return Err(Refusal::Poison);
            }
            return fits(routing, content);
        }
        kind::PLAIN => (Fragments::decode(rest).map_err(bad)?, None),
        kind::SIGNED => {
            let (signer, inner) = split_signed(rest)?;
            (Fragments::decode(inner).map_err(bad)?, Some(signer))
        }
        kind::ENCRYPTED => return Err(Refusal::Private),
        k => return Err(Refusal::Unreadable(k)),
    };
    let mut frags = vec![Fragment {
        name: names::GALE_ID.into(),
        value: Value::Data(Bytes::copy_from_slice(msg.id.as_bytes())),
    }];
    frags.extend(translate_out(&inner, 0));
    let name = inner.text(ours::names::MESSAGE_SENDER);
    let sender = match (signer, name) {
        (Some(s), Some(n)) => Some(format!("{n} <{s}> (ed25519-signed, not verifiable here)")),
        (Some(s), None) => Some(format!("{s} (ed25519-signed, not verifiable here)")),
        (None, n) => n.map(str::to_string),
    };
    frags.retain(|f| f.name != names::MESSAGE_SENDER);
    if let Some(s) = sender {
        frags.push(Fragment::text(names::MESSAGE_SENDER, &s));
    }
    fits(routing, orig::encode(&frags))
}

/// The puff, if the original will take a frame that large.
fn fits(routing: String, content: Bytes) -> Result<(String, Bytes), Refusal> {
    let len = 4 + crate::wire::text_len(&routing) + 4 + content.len();
    if len > SIZE_LIMIT {
        return Err(Refusal::TooLarge(len));
    }
    Ok((routing, content))
}

/// Whether a group holds, at any depth this reader follows, a fragment of type 5
/// or more: the original's reader aborts on type 5 (wire.md §5), so such a puff
/// from one original client is not passed on to others (the original galed
/// would). What does not parse is left to the receiver, which skips it.
fn poisons(mut b: &[u8], depth: usize) -> bool {
    while b.len() >= 8 && depth <= orig::MAX_DEPTH {
        let t = b.get_u32();
        let len = b.get_u32() as usize;
        if t > orig::ty::GROUP {
            return true;
        }
        if len > b.len() {
            return false;
        }
        let (f, rest) = b.split_at(len);
        b = rest;
        if t == orig::ty::GROUP {
            let mut v = f;
            if v.len() >= 4 {
                let n = (v.get_u32() as usize).saturating_mul(2);
                if n <= v.len() && poisons(&v[n..], depth + 1) {
                    return true;
                }
            }
        }
    }
    false
}

/// Our signed envelope (security.md §5): signer, key id, signature, inner list.
fn split_signed(mut b: &[u8]) -> Result<(String, &[u8]), Refusal> {
    let short = || Refusal::Malformed("signed envelope cut short".into());
    if b.len() < 2 {
        return Err(short());
    }
    let n = b.get_u16() as usize;
    if b.len() < n + 8 + 64 {
        return Err(short());
    }
    let signer = std::str::from_utf8(&b[..n])
        .map_err(|_| Refusal::Malformed("signer is not UTF-8".into()))?
        .to_string();
    Ok((signer, &b[n + 8 + 64..]))
}

fn translate_out(f: &Fragments, depth: usize) -> Vec<Fragment> {
    f.iter()
        .filter(|f| f.name != "signer.key")
        .filter_map(|f| {
            let value = match &f.value {
                ours::Value::Text(s) if f.name == ours::names::MESSAGE_BODY => {
                    Value::Text(s.replace('\n', "\r\n"))
                }
                ours::Value::Text(s) => Value::Text(s.clone()),
                ours::Value::Data(d) => Value::Data(d.clone()),
                ours::Value::Time(t) => Value::Time(OrigTime::from_nanos(t.secs, t.nanos)),
                ours::Value::Number(n) => match i32::try_from(*n) {
                    Ok(n) => Value::Number(n),
                    Err(_) => Value::Text(n.to_string()),
                },
                ours::Value::List(l) if depth < orig::MAX_DEPTH => {
                    Value::Group(translate_out(l, depth + 1))
                }
                // Never a type the original cannot read: type 5 aborts it.
                _ => return None,
            };
            Some(Fragment {
                name: orig_name(&f.name),
                value,
            })
        })
        .collect()
}

fn translate_in(frags: &[Fragment]) -> Fragments {
    let mut out = Fragments::new();
    for f in frags {
        let value = match &f.value {
            Value::Text(s) if f.name == names::MESSAGE_BODY => {
                ours::Value::Text(s.replace("\r\n", "\n"))
            }
            Value::Text(s) => ours::Value::Text(s.clone()),
            Value::Data(d) => ours::Value::Data(d.clone()),
            Value::Time(t) => ours::Value::Time(Timestamp {
                secs: t.secs,
                nanos: t.nanos(),
            }),
            Value::Number(n) => ours::Value::Number(*n as i64),
            Value::Group(g) => ours::Value::List(translate_in(g)),
        };
        out.push(our_name(&f.name), value);
    }
    out
}

/// What an original content holds, as our clients show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// No signature (gsend -a, or a raw client).
    Unsigned,
    /// Signed by the original key named here (RSA/MD5), which our clients cannot
    /// verify: never shown as verified.
    OriginalSignature { key: Option<String> },
    /// Encrypted to these original keys (RSA/3DES): unreadable here.
    OriginalEncryption { recipients: Vec<String> },
}

/// An original content, decoded for our clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub security: Security,
    /// The fragments, with our names (empty when encrypted).
    pub fragments: Fragments,
}

const SIG_MAGIC: [u8; 4] = [0x68, 0x13, 0x01, 0x00];
const STUB_MAGIC: [u8; 4] = [0x68, 0x13, 0x00, 0x02];
const SEAL_MAGIC: [u8; 4] = [0x68, 0x13, 0x02, 0x01];
const KEY_MAGIC: [u8; 6] = *b"GALE\0\x01";

/// Decodes an original content (wire.md §5, §7) for display.
pub fn describe(content: &[u8]) -> Result<Described, Refusal> {
    let bad = |e: crate::WireError| Refusal::Malformed(e.to_string());
    let frags = orig::decode(content).map_err(bad)?;
    if let [f] = &frags[..] {
        if let (names::SIGNATURE, Value::Data(d)) = (f.name.as_str(), &f.value) {
            let (key, signed) = open_signature(d)
                .ok_or_else(|| Refusal::Malformed("security/signature cannot be parsed".into()))?;
            return Ok(Described {
                security: Security::OriginalSignature { key },
                fragments: translate_in(&orig::decode(signed).map_err(bad)?),
            });
        }
        if let (names::ENCRYPTION, Value::Data(d)) = (f.name.as_str(), &f.value) {
            return Ok(Described {
                security: Security::OriginalEncryption {
                    recipients: seal_recipients(d).unwrap_or_default(),
                },
                fragments: Fragments::new(),
            });
        }
    }
    Ok(Described {
        security: Security::Unsigned,
        fragments: translate_in(&frags),
    })
}

fn ltext(b: &mut &[u8]) -> Option<String> {
    if b.len() < 4 {
        return None;
    }
    let n = (b.get_u32() as usize).checked_mul(2)?;
    if n > b.len() {
        return None;
    }
    let s = text(&b[..n]).ok()?;
    b.advance(n);
    Some(s)
}

/// Key names are stored with the local part's components reversed.
fn unswizzle(name: &str) -> String {
    match name.split_once('@') {
        Some((local, dom)) => {
            let mut parts: Vec<&str> = local.split('.').collect();
            parts.reverse();
            format!("{}@{dom}", parts.join("."))
        }
        None => name.to_string(),
    }
}

/// The signer's key name (if it can be read) and the signed group.
fn open_signature(d: &[u8]) -> Option<(Option<String>, &[u8])> {
    let mut b = d;
    if b.len() < 4 {
        return None;
    }
    let l = b.get_u32() as usize;
    if l > b.len() {
        return None;
    }
    let (mut head, signed) = b.split_at(l);
    let mut key = None;
    if head.len() >= 8 && head[..4] == SIG_MAGIC {
        head.advance(4);
        let siglen = head.get_u32() as usize;
        if siglen <= head.len() {
            head.advance(siglen);
            if head.starts_with(&STUB_MAGIC) {
                head.advance(4);
                key = ltext(&mut head).map(|n| unswizzle(&n));
            } else if head.starts_with(&KEY_MAGIC) {
                head.advance(6);
                key = ltext(&mut head).map(|n| unswizzle(&n));
            }
        }
    }
    // The signed bytes: a format word 0, then the group.
    let group = signed.strip_prefix(&[0u8, 0, 0, 0][..])?;
    Some((key, group))
}

fn seal_recipients(d: &[u8]) -> Option<Vec<String>> {
    let mut b = d.strip_prefix(&SEAL_MAGIC[..])?;
    if b.len() < 12 {
        return None;
    }
    b.advance(8);
    let n = b.get_u32();
    let mut out = Vec::new();
    for _ in 0..n.min(1024) {
        out.push(unswizzle(&ltext(&mut b)?));
        if b.len() < 4 {
            return None;
        }
        let len = b.get_u32() as usize;
        if len > b.len() {
            return None;
        }
        b.advance(len);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc(s: &str) -> Location {
        Location::from_canonical(s).unwrap()
    }

    fn anon(body: &str) -> Bytes {
        orig::encode(&[Fragment::text(names::MESSAGE_BODY, body)])
    }

    #[test]
    fn a_puff_crosses_byte_for_byte() {
        let content = anon("hi\r\n");
        let m = from_puff("@example.org/user/pub/hex/", &content).unwrap();
        assert_eq!(m.to, [loc("pub.hex@example.org")]);
        assert_eq!(m.payload[0], KIND_ORIGINAL);
        assert_eq!(&m.payload[1..], &content[..]);
        let (routing, back) = to_puff(&m).unwrap();
        assert_eq!(routing, "@example.org/user/pub/hex/");
        assert_eq!(back, content);
        let d = describe(&back).unwrap();
        assert_eq!(d.security, Security::Unsigned);
        assert_eq!(d.fragments.text("message.body"), Some("hi\n"));
    }

    #[test]
    fn puff_ids_dedupe_copies_and_tell_puffs_apart() {
        let c = anon("x");
        let a = from_puff("@d.org/user/a/:@d.org/user/b/", &c).unwrap().id;
        // Another path: galed rewrote flags and order; still one message.
        assert_eq!(
            a,
            from_puff("@d.org/user/b/:-@d.org/user/a/", &c).unwrap().id
        );
        assert_ne!(a, from_puff("@d.org/user/a/", &c).unwrap().id);
        assert_ne!(
            a,
            from_puff("@d.org/user/a/:@d.org/user/b/", &anon("y"))
                .unwrap()
                .id
        );
    }

    #[test]
    fn puffs_without_locations_are_refused() {
        for r in ["@d.org/auth/key/bob", "plain", "-@d.org/user/a/", ""] {
            assert!(
                matches!(from_puff(r, &anon("x")), Err(Refusal::NoLocation(_))),
                "{r}"
            );
        }
    }

    fn ours_plain() -> Message {
        let mut f = Fragments::new();
        f.push_text("message.body", "hello\nthere\n");
        f.push_text("message.sender", "Alice");
        f.push(
            "id.time",
            ours::Value::Time(Timestamp {
                secs: 1_767_225_600,
                nanos: 0,
            }),
        );
        f.push_text("message.keyword", "kw");
        let mut p = BytesMut::new();
        p.put_u8(kind::PLAIN);
        f.encode(&mut p).unwrap();
        Message::new(vec![loc("pub.test@example.org")], p.freeze())
    }

    #[test]
    fn our_messages_reach_original_clients_readable() {
        let m = ours_plain();
        let (routing, content) = to_puff(&m).unwrap();
        assert_eq!(routing, "@example.org/user/pub/test/");
        let frags = orig::decode(&content).unwrap();
        assert_eq!(
            orig::find_text(&frags, "message/body"),
            Some("hello\r\nthere\r\n")
        );
        assert_eq!(orig::find_text(&frags, "message/sender"), Some("Alice"));
        assert_eq!(orig::find_text(&frags, "message.keyword"), Some("kw"));
        assert!(frags.iter().any(|f| f.name == "id/time"
            && f.value
                == Value::Time(OrigTime {
                    secs: 1_767_225_600,
                    frac: 0
                })));
        // It keeps its id if it comes back from the original network.
        assert_eq!(from_puff(&routing, &content).unwrap().id, m.id);
    }

    #[test]
    fn signed_messages_are_marked_unverifiable_and_private_ones_refused() {
        let plain = ours_plain();
        let mut p = BytesMut::new();
        p.put_u8(kind::SIGNED);
        p.put_u16(20);
        p.put_slice(b"alice@example.org\0\0\0"[..20].as_ref());
        p.put_bytes(9, 8 + 64);
        p.put_slice(&plain.payload[1..]);
        let signed = Message {
            payload: p.freeze(),
            ..plain.clone()
        };
        let (_, content) = to_puff(&signed).unwrap();
        let frags = orig::decode(&content).unwrap();
        let sender = orig::find_text(&frags, "message/sender").unwrap();
        assert!(sender.starts_with("Alice <alice@example.org"), "{sender}");
        assert!(sender.contains("not verifiable here"), "{sender}");
        let private = Message {
            payload: Bytes::from_static(&[kind::ENCRYPTED, 1, 2]),
            ..plain
        };
        assert_eq!(to_puff(&private), Err(Refusal::Private));
    }

    #[test]
    fn original_signatures_and_encryption_are_described() {
        let inner = orig::encode(&[Fragment::text("message/body", "signed\r\n")]);
        let mut head = BytesMut::new();
        head.put_slice(&SIG_MAGIC);
        head.put_u32(3);
        head.put_slice(b"sig");
        head.put_slice(&STUB_MAGIC);
        crate::wire::put_ltext(&mut head, "alice@example.org");
        let mut data = BytesMut::new();
        data.put_u32(head.len() as u32);
        data.put_slice(&head);
        data.put_u32(0);
        data.put_slice(&inner);
        let content = orig::encode(&[Fragment {
            name: names::SIGNATURE.into(),
            value: Value::Data(data.freeze()),
        }]);
        let d = describe(&content).unwrap();
        assert_eq!(
            d.security,
            Security::OriginalSignature {
                key: Some("alice@example.org".into())
            }
        );
        assert_eq!(d.fragments.text("message.body"), Some("signed\n"));

        let mut seal = BytesMut::new();
        seal.put_slice(&SEAL_MAGIC);
        seal.put_bytes(0, 8);
        seal.put_u32(1);
        crate::wire::put_ltext(&mut seal, "test.pub@x.org");
        seal.put_u32(2);
        seal.put_slice(b"kk");
        let content = orig::encode(&[Fragment {
            name: names::ENCRYPTION.into(),
            value: Value::Data(seal.freeze()),
        }]);
        assert_eq!(
            describe(&content).unwrap().security,
            Security::OriginalEncryption {
                recipients: vec!["pub.test@x.org".into()]
            }
        );
    }

    #[test]
    fn puffs_that_would_abort_or_be_discarded_are_not_sent() {
        let mut bad = BytesMut::new();
        bad.put_u32(4); // a group holding a type 5 fragment
        let mut inner = BytesMut::new();
        inner.put_u32(5);
        inner.put_u32(4);
        inner.put_u32(0);
        bad.put_u32((4 + inner.len()) as u32);
        bad.put_u32(0);
        bad.put_slice(&inner);
        let m = from_puff("@d.org/user/a/", &bad).unwrap();
        assert_eq!(to_puff(&m), Err(Refusal::Poison));
        let big = anon(&"x".repeat(SIZE_LIMIT / 2));
        let m = from_puff("@d.org/user/a/", &big).unwrap();
        assert!(matches!(to_puff(&m), Err(Refusal::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn describing_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = describe(&b);
        }

        #[test]
        fn to_puff_never_panics(p in proptest::collection::vec(any::<u8>(), 0..200)) {
            let m = Message::new(vec![loc("a@b.org")], p.into());
            let _ = to_puff(&m);
        }
    }
}
