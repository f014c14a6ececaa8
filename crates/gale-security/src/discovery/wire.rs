//! The wire format of key discovery, and whether to believe an answer: pure
//! functions, tested without a network (the module rules are in
//! [`super`]'s documentation and docs/security.md §12).

use std::cell::RefCell;

use bytes::Bytes;
use gale_keys::{open, KeyName, KeyStore, PublicKey, SecretKey, SigState, Trust};
use gale_proto::fragment::names;
use gale_proto::{Fragments, Location, LocationError, Message, Payload, Timestamp, Value};

/// A `*` segment of a wildcard key name is written like this in a location.
pub const WILD_SEGMENT: &str = "_wild";

fn mapped(prefix: &str, name: &KeyName) -> Result<Location, LocationError> {
    match name.local() {
        None => Location::parse(&format!("{prefix}@{}", name.domain())),
        Some(local) => {
            let segs: Vec<&str> = local
                .split('.')
                .map(|s| if s == "*" { WILD_SEGMENT } else { s })
                .collect();
            Location::parse(&format!("{prefix}.{}@{}", segs.join("."), name.domain()))
        }
    }
}

/// Where queries for key `name` go: `_gale.query.egnor@ofb.net` for
/// `egnor@ofb.net`, `_gale.query@ofb.net` for the domain key `ofb.net`,
/// `_gale.query.pub._wild@ofb.net` for `pub.*@ofb.net`.
pub fn query_location(name: &KeyName) -> Result<Location, LocationError> {
    mapped("_gale.query", name)
}

/// Where answers about key `name` go: `_gale.key.<same mapping>`.
pub fn answer_location(name: &KeyName) -> Result<Location, LocationError> {
    mapped("_gale.key", name)
}

/// True for locations that carry key queries or answers (never shown as messages).
pub fn is_akd(loc: &Location) -> bool {
    use gale_proto::location::Reserved;
    matches!(loc.reserved(), Some(Reserved::Query | Reserved::Key))
}

fn now_fragment(f: &mut Fragments) {
    f.push(names::ID_TIME, Value::Time(Timestamp::now()));
}

/// The (unsigned) query for key `name`.
pub fn query_message(name: &KeyName) -> Result<Message, LocationError> {
    let mut f = Fragments::new();
    f.push_text(names::QUESTION_KEY, name.as_str());
    now_fragment(&mut f);
    let payload = Payload::Plain(f)
        .encode()
        .expect("a query has fixed fragment names");
    Ok(Message::new(vec![query_location(name)?], payload))
}

/// An answer giving `key`, signed by `signer` (the key itself or an ancestor).
pub fn answer_message(key: &PublicKey, signer: &SecretKey) -> Result<Message, LocationError> {
    let to = vec![answer_location(&key.name)?];
    let mut f = Fragments::new();
    f.push(names::ANSWER_KEY, Value::Data(Bytes::from(key.encode())));
    f.push_text(names::QUESTION_KEY, key.name.as_str());
    now_fragment(&mut f);
    Ok(crate::outgoing::signed(to, &f, signer))
}

/// If `m` is a query for one of `ours` (to its query location), that key's name.
pub fn asked_for<'a>(m: &Message, f: &Fragments, ours: &'a [KeyName]) -> Option<&'a KeyName> {
    let asked = KeyName::parse(f.text(names::QUESTION_KEY)?).ok()?;
    let name = ours.iter().find(|n| **n == asked)?;
    let loc = query_location(name).ok()?;
    m.to.contains(&loc).then_some(name)
}

/// What an answer message says about the key asked for.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A key with the name asked, in a validly signed answer; `trust` is its own
    /// chain (never `BadSignature` or `Expired`: those are rejected).
    Key { key: Box<PublicKey>, trust: Trust },
    /// A verified "no such key" from an ancestor of the name (the domain).
    NotFound(String),
    /// Signed by `0`, an ancestor of the name whose key is not known here: fetch
    /// that key, then check the answer again.
    SignerUnknown(KeyName),
    /// Not acceptable, and why (for debugging: a bad answer is simply ignored).
    Rejected(String),
}

fn is_ancestor(a: &KeyName, of: &KeyName) -> bool {
    let mut cur = of.parent();
    while let Some(p) = cur {
        if &p == a {
            return true;
        }
        cur = p.parent();
    }
    false
}

/// Checks an answer about `asked` (see the module rules); `None` if `m` is not an
/// answer about `asked` at all.
pub fn check_answer(
    m: &Message,
    asked: &KeyName,
    store: &KeyStore,
    now: Timestamp,
) -> Option<Answer> {
    let loc = answer_location(asked).ok()?;
    if !m.to.contains(&loc) {
        return None;
    }
    // A signer's key file that cannot be used rejects the answer, with the reason.
    let unusable = RefCell::new(None);
    let lookup = |n: &KeyName, id| {
        store.lookup(n, id).unwrap_or_else(|e| {
            unusable.replace(Some(e.to_string()));
            None
        })
    };
    let first = match open(m, &[], &lookup) {
        Ok(o) => o,
        Err(e) => return Some(Answer::Rejected(format!("unreadable answer: {e}"))),
    };
    if let Some(e) = unusable.take() {
        return Some(Answer::Rejected(format!("cannot check the answer: {e}")));
    }
    if first.fragments.text(names::QUESTION_KEY) != Some(asked.as_str()) {
        return None;
    }
    let Some((signer, signer_id)) = first.signer.clone() else {
        return Some(Answer::Rejected("the answer is not signed".into()));
    };
    let own = signer == *asked;
    if !own && !is_ancestor(&signer, asked) {
        return Some(Answer::Rejected(format!(
            "signed by {signer}, which is neither {asked} nor above it"
        )));
    }
    if !own && first.signature == SigState::UnknownKey {
        return Some(Answer::SignerUnknown(signer));
    }
    let Some(Value::Data(raw)) = first.fragments.get(names::ANSWER_KEY) else {
        if let Some(err) = first.fragments.text(names::ANSWER_KEY_ERROR) {
            let trusted = !own
                && first.signature == SigState::Valid
                && first
                    .signer_key
                    .as_ref()
                    .is_some_and(|k| store.verify(k, now).is_verified());
            return Some(if trusted {
                Answer::NotFound(err.to_string())
            } else {
                Answer::Rejected(format!(
                    "negative answer from {signer} is not signed by a verified key above {asked}"
                ))
            });
        }
        return Some(Answer::Rejected("no answer.key in the answer".into()));
    };
    let key = match PublicKey::decode(raw) {
        Ok(k) => k,
        Err(e) => return Some(Answer::Rejected(format!("the key does not decode: {e}"))),
    };
    if key.name != *asked {
        return Some(Answer::Rejected(format!(
            "asked for {asked}, the answer holds {}",
            key.name
        )));
    }
    // An owner answers with the key it signs with: check against that key.
    let state = if first.signature == SigState::UnknownKey && own && key.id() == signer_id {
        let with = |n: &KeyName, id| {
            (n == &key.name && id == key.id())
                .then(|| key.clone())
                .or_else(|| lookup(n, id))
        };
        match open(m, &[], &with) {
            Ok(_) if unusable.borrow().is_some() => {
                let e = unusable.take().unwrap_or_default();
                return Some(Answer::Rejected(format!("cannot check the answer: {e}")));
            }
            Ok(o) => o.signature,
            Err(e) => return Some(Answer::Rejected(format!("unreadable answer: {e}"))),
        }
    } else {
        first.signature
    };
    if state != SigState::Valid {
        return Some(Answer::Rejected(format!(
            "the answer's signature by {signer} does not check out ({state:?})"
        )));
    }
    let trust = store.verify(&key, now);
    match trust {
        Trust::BadSignature { .. } | Trust::Expired { .. } => Some(Answer::Rejected(format!(
            "the key offered for {asked} is {trust}"
        ))),
        _ => Some(Answer::Key {
            key: Box::new(key),
            trust,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_keys::Dir;

    fn name(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    fn key(n: &str) -> SecretKey {
        crate::test_key(n)
    }

    #[test]
    fn locations() {
        let q = |s: &str| query_location(&name(s)).unwrap().to_string();
        assert_eq!(q("egnor@ofb.net"), "_gale.query.egnor@ofb.net");
        assert_eq!(q("ofb.net"), "_gale.query@ofb.net");
        assert_eq!(q("pub.*@ofb.net"), "_gale.query.pub._wild@ofb.net");
        assert_eq!(q("*@ofb.net"), "_gale.query._wild@ofb.net");
        assert_eq!(
            answer_location(&name("a.b@x.org")).unwrap().to_string(),
            "_gale.key.a.b@x.org"
        );
        assert!(is_akd(&query_location(&name("x.org")).unwrap()));
        assert!(!is_akd(&Location::parse("_gale.notice.a@x.org").unwrap()));
    }

    #[test]
    fn owner_answers_are_accepted_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let now = Timestamp::now();
        let bob = key("bob@x.org");
        let asked = name("bob@x.org");
        let m = answer_message(bob.public(), &bob).unwrap();
        match check_answer(&m, &asked, &store, now) {
            Some(Answer::Key { key, trust }) => {
                assert_eq!(key.id(), bob.id());
                assert!(!trust.is_verified());
            }
            other => panic!("{other:?}"),
        }
        // Not about this name.
        assert!(check_answer(&m, &name("carol@x.org"), &store, now).is_none());
        // A key for another name, signed by that other key.
        let mallory = key("mallory@x.org");
        let mut wrong = answer_message(mallory.public(), &mallory).unwrap();
        wrong.to = vec![answer_location(&asked).unwrap()];
        assert!(!matches!(
            check_answer(&wrong, &asked, &store, now),
            Some(Answer::Key { .. })
        ));
        // A flipped byte breaks the answer's signature.
        let mut bad = m.clone();
        let mut p = bad.payload.to_vec();
        let last = p.len() - 1;
        p[last] ^= 1;
        bad.payload = p.into();
        assert!(matches!(
            check_answer(&bad, &asked, &store, now),
            Some(Answer::Rejected(_))
        ));
    }

    #[test]
    fn negative_answers_need_a_verified_domain() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let now = Timestamp::now();
        let dom = key("x.org");
        let asked = name("nobody@x.org");
        let mut f = Fragments::new();
        f.push_text(names::ANSWER_KEY_ERROR, "no key for nobody@x.org");
        f.push_text(names::QUESTION_KEY, asked.as_str());
        let to = vec![answer_location(&asked).unwrap()];
        let m = crate::outgoing::signed(to, &f, &dom);
        // The domain's key is unknown: fetch it first.
        assert!(matches!(
            check_answer(&m, &asked, &store, now),
            Some(Answer::SignerUnknown(s)) if s.as_str() == "x.org"
        ));
        // Known but not trusted: not believed.
        store.write_public(Dir::Cache, dom.public(), false).unwrap();
        assert!(matches!(
            check_answer(&m, &asked, &store, now),
            Some(Answer::Rejected(_))
        ));
        store
            .write_public(Dir::Trusted, dom.public(), false)
            .unwrap();
        assert!(matches!(
            check_answer(&m, &asked, &store, now),
            Some(Answer::NotFound(_))
        ));
    }
}
