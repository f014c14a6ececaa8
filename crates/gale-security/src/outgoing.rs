//! Sending securely: who each location is encrypted to, the rule against mixing
//! public and private locations, and the signed (and maybe sealed) message.
//!
//! Rules (docs/security.md §12.4):
//! - a location whose controlling key has members (or is a person's key) is
//!   *private*: the message is encrypted to every recipient key, with the
//!   signature, and the signer's public key, inside;
//! - a location whose key makes the world a member is *public* (a domain declares
//!   a public area that way, e.g. `gkey gen 'news.*@example.org' --public`); so
//!   are the reserved `_gale.*` control locations, and, when no key is found for
//!   them, locations under `pub` ([`public_by_rule`]);
//! - any other location with no key found after discovery is refused, never sent
//!   in clear by accident: a message to a person whose key nobody answered for
//!   would otherwise go out readable by all. `--allow-clear` sends it in clear;
//! - a message to private and public locations at once is refused unless the user
//!   asks for it to go in clear to all (`--allow-clear`): original Gale silently
//!   sent such messages in clear.

use bytes::Bytes;
use gale_keys::envelope::SIGNER_KEY;
use gale_keys::{
    seal, sign, EnvelopeError, KeyChanged, KeyName, KeyStore, PublicKey, Recipients, SecretKey,
    Trust, TrustError,
};
use gale_proto::{Fragments, Location, Message, MessageId, Payload, Timestamp, Value};
use thiserror::Error;

use crate::discovery::{Discovery, Outcome};

/// How one location is to be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A reserved `_gale.*` location: in clear, no questions.
    Control,
    /// Its key makes it public.
    Public,
    /// No key found for it: public if it is under `pub` ([`public_by_rule`]),
    /// otherwise refused unless the user allows sending in clear.
    NoKey,
    /// Encrypted to these keys.
    Private(Vec<PublicKey>),
}

impl Class {
    pub fn is_private(&self) -> bool {
        matches!(self, Class::Private(_))
    }
}

/// What to do with the whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Clear,
    /// Encrypt to these keys (deduplicated over all locations).
    Encrypt(Vec<PublicKey>),
}

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("refusing to send: {private} is private (encrypted to its members) but {public} is public, so the message would be readable by anyone; send separate messages, or add --allow-clear to send it to all of them in clear")]
    Mixed { private: String, public: String },
    #[error(
        "refusing to send: {0} is not private (no key encrypts it) and --require-private was given"
    )]
    NotPrivate(String),
    #[error("refusing to send in clear to {0}: no key was found for it, so the message cannot be encrypted, and it is not public (only pub.* locations and areas their domain declares public go in clear). To send privately, make the key findable: start gdomain for the domain, ask its owner to run gsub (which answers for their key), or get the key and run `gkey import FILE`; to send in clear anyway, add --allow-clear")]
    NoKey(String),
    #[error("cannot work out who {location} is encrypted to")]
    Trust {
        location: Location,
        #[source]
        source: TrustError,
    },
}

/// True for locations that are public when no key says otherwise: `pub` and
/// everything below it, in any domain (Gale's convention for public topics).
pub fn public_by_rule(loc: &Location) -> bool {
    let local = loc.local();
    local == "pub" || local.starts_with("pub.")
}

/// True for a location with no key that is not public by rule: sending to it
/// in clear needs the user's say-so.
fn keyless_private(loc: &Location, class: &Class) -> bool {
    *class == Class::NoKey && !public_by_rule(loc)
}

/// The class of one location, from the keys in `store`.
pub fn classify(store: &KeyStore, loc: &Location, now: Timestamp) -> Result<Class, TrustError> {
    if loc.reserved().is_some() {
        return Ok(Class::Control);
    }
    Ok(match store.recipients(loc, now)? {
        Recipients::Public => Class::Public,
        Recipients::NoKey => Class::NoKey,
        Recipients::Private(keys) => Class::Private(keys),
    })
}

fn names(locs: &[&Location]) -> String {
    locs.iter()
        .map(|l| l.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies the mixing rule to a classified message.
pub fn decide(
    plan: &[(Location, Class)],
    allow_clear: bool,
    require_private: bool,
) -> Result<Decision, PlanError> {
    let private: Vec<&Location> = plan
        .iter()
        .filter(|(_, c)| c.is_private())
        .map(|(l, _)| l)
        .collect();
    let public: Vec<&Location> = plan
        .iter()
        .filter(|(_, c)| !c.is_private())
        .map(|(l, _)| l)
        .collect();
    if require_private && !public.is_empty() {
        return Err(PlanError::NotPrivate(names(&public)));
    }
    let keyless: Vec<&Location> = plan
        .iter()
        .filter(|(l, c)| keyless_private(l, c))
        .map(|(l, _)| l)
        .collect();
    if !keyless.is_empty() && !allow_clear {
        return Err(PlanError::NoKey(names(&keyless)));
    }
    if private.is_empty() {
        return Ok(Decision::Clear);
    }
    if !public.is_empty() {
        if allow_clear {
            return Ok(Decision::Clear);
        }
        return Err(PlanError::Mixed {
            private: names(&private),
            public: names(&public),
        });
    }
    let mut keys: Vec<PublicKey> = Vec::new();
    for (_, c) in plan {
        if let Class::Private(ks) = c {
            for k in ks {
                if !keys.iter().any(|o| o.id() == k.id()) {
                    keys.push(k.clone());
                }
            }
        }
    }
    Ok(Decision::Encrypt(keys))
}

/// Something gsend should tell the user about the recipients.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A recipient key is not verified; the message is still encrypted to it.
    Unverified { key: KeyName, why: String },
    /// A recipient key changed: warn loudly.
    Changed(KeyChanged),
    /// Discovery found nothing for this location, which is not public by rule
    /// (sent in clear only with `--allow-clear`).
    NoKey(Location),
    /// Discovery was offered a key it did not use (see
    /// [`crate::discovery::Outcome::warning`]): warn loudly.
    OtherKey(String),
}

/// Classifies every location, discovering missing keys (and missing group
/// members) over Gale first, within the discovery's timeout.
pub async fn plan(
    store: &KeyStore,
    to: &[Location],
    discovery: Option<&Discovery>,
) -> Result<(Vec<(Location, Class)>, Vec<Notice>), PlanError> {
    let mut notices = Vec::new();
    let mut tried: Vec<KeyName> = Vec::new();
    // Round 1 finds the locations' keys, round 2 the members of groups found.
    for round in 0..3 {
        let now = Timestamp::now();
        let mut groups: Vec<Vec<KeyName>> = Vec::new();
        let mut result = Vec::new();
        let mut failed = None;
        for loc in to {
            match classify(store, loc, now) {
                Ok(Class::NoKey) => {
                    groups.push(KeyName::candidates(loc));
                    result.push((loc.clone(), Class::NoKey));
                }
                Ok(c) => result.push((loc.clone(), c)),
                Err(TrustError::MissingMember { group, member }) => {
                    match Location::parse(&member) {
                        Ok(m) => groups.push(KeyName::candidates(&m)),
                        Err(_) => groups.push(Vec::new()),
                    }
                    failed
                        .get_or_insert((loc.clone(), TrustError::MissingMember { group, member }));
                }
                Err(source) => {
                    return Err(PlanError::Trust {
                        location: loc.clone(),
                        source,
                    })
                }
            }
        }
        groups.retain(|g| g.iter().any(|n| !tried.contains(n)));
        let Some(disc) = discovery.filter(|_| !groups.is_empty() && round < 2) else {
            if let Some((location, source)) = failed {
                return Err(PlanError::Trust { location, source });
            }
            for (loc, c) in &result {
                if keyless_private(loc, c) {
                    notices.push(Notice::NoKey(loc.clone()));
                }
            }
            return Ok((result, notices));
        };
        tried.extend(groups.iter().flatten().cloned());
        for (name, outcome) in disc.discover(store, &groups).await {
            if let Some(w) = outcome.warning(&name) {
                notices.push(Notice::OtherKey(w));
            }
            if let Outcome::Found {
                changed: Some(c), ..
            } = outcome
            {
                notices.push(Notice::Changed(c));
            }
        }
    }
    unreachable!("the loop returns by its third round")
}

/// Notices about the keys a message will be encrypted to: unverified ones, and
/// changed ones (checked against the record of keys seen).
pub fn key_notices(store: &KeyStore, keys: &[PublicKey], now: Timestamp) -> Vec<Notice> {
    let mut out = Vec::new();
    for k in keys {
        if let Ok(Some(c)) = store.note_seen(&k.name, k.id()) {
            out.push(Notice::Changed(c));
        }
        match store.verify(k, now) {
            Trust::Verified { .. } => {}
            t => out.push(Notice::Unverified {
                key: k.name.clone(),
                why: t.to_string(),
            }),
        }
    }
    out
}

/// The message: `fragments` (with `id.time` already in them) signed by `signer`
/// (plain if `None`: anonymous), then sealed if the decision says so. A sealed,
/// signed message carries the signer's public key inside ([`SIGNER_KEY`]), so a
/// recipient who does not know it need not ask for it in clear: that query would
/// tell the server (and anyone listening) who wrote to whom.
pub fn build(
    to: Vec<Location>,
    fragments: &Fragments,
    signer: Option<&SecretKey>,
    decision: &Decision,
) -> Result<Message, EnvelopeError> {
    let id = MessageId::generate();
    let inner = match (signer, decision) {
        (Some(k), Decision::Encrypt(_)) => {
            let mut with_key = fragments.clone();
            with_key.push(SIGNER_KEY, Value::Data(Bytes::from(k.public().encode())));
            sign(id, &to, &with_key, k)?
        }
        (Some(k), Decision::Clear) => sign(id, &to, fragments, k)?,
        (None, _) => Payload::Plain(fragments.clone()),
    };
    let payload = match decision {
        Decision::Clear => inner,
        Decision::Encrypt(keys) => {
            let refs: Vec<&PublicKey> = keys.iter().collect();
            seal(id, &to, &inner, &refs)?
        }
    };
    Ok(Message {
        id,
        hops: 0,
        to,
        payload: payload.encode()?,
    })
}

/// Adds `signer`'s public key ([`SIGNER_KEY`]) to fragments to be signed in
/// clear, so that a recipient who does not know the key can still check the
/// signature, verify it through the key's own signatures, and encrypt an
/// answer to it (pings, receipt requests and their answers), without asking
/// for it over Gale first.
pub fn carry_key(fragments: &mut Fragments, signer: &SecretKey) {
    fragments.push(
        SIGNER_KEY,
        Value::Data(Bytes::from(signer.public().encode())),
    );
}

/// A message to `to`, signed by `signer`, sent in clear: key answers and other
/// control messages whose locations are public by nature.
pub fn signed(to: Vec<Location>, fragments: &Fragments, signer: &SecretKey) -> Message {
    build(to, fragments, Some(signer), &Decision::Clear).expect("signing in clear cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    fn person(n: &str) -> PublicKey {
        crate::test_key(n).public().clone()
    }

    #[test]
    fn mixing_is_refused_unless_allowed() {
        let a = person("a@x.org");
        let plan = vec![
            (loc("a@x.org"), Class::Private(vec![a.clone()])),
            (loc("pub.tv@x.org"), Class::NoKey),
        ];
        let e = decide(&plan, false, false).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("a@x.org is private"), "{text}");
        assert!(text.contains("--allow-clear"), "{text}");
        assert_eq!(decide(&plan, true, false).unwrap(), Decision::Clear);
        assert!(matches!(
            decide(&plan, true, true),
            Err(PlanError::NotPrivate(_))
        ));
        let only = vec![
            (loc("a@x.org"), Class::Private(vec![a.clone()])),
            (loc("b@x.org"), Class::Private(vec![a.clone()])),
        ];
        assert_eq!(
            decide(&only, false, true).unwrap(),
            Decision::Encrypt(vec![a])
        );
        let public = vec![
            (loc("p@x.org"), Class::Public),
            (loc("_gale.notice.a@x.org"), Class::Control),
        ];
        assert_eq!(decide(&public, false, false).unwrap(), Decision::Clear);
    }

    #[test]
    fn no_key_is_refused_unless_public_by_rule_or_allowed() {
        let keyless = vec![(loc("dave@x.org"), Class::NoKey)];
        let e = decide(&keyless, false, false).unwrap_err();
        assert!(matches!(e, PlanError::NoKey(_)), "{e:?}");
        let text = e.to_string();
        for what in [
            "dave@x.org",
            "gdomain",
            "gsub",
            "gkey import",
            "--allow-clear",
        ] {
            assert!(text.contains(what), "{what}: {text}");
        }
        assert_eq!(decide(&keyless, true, false).unwrap(), Decision::Clear);
        for public in ["pub@x.org", "pub.tv.buffy@x.org"] {
            let p = vec![(loc(public), Class::NoKey)];
            assert_eq!(
                decide(&p, false, false).unwrap(),
                Decision::Clear,
                "{public}"
            );
        }
        // Not under pub by whole segments.
        assert!(decide(&[(loc("pubs@x.org"), Class::NoKey)], false, false).is_err());
        // With a key that makes it public, any location is public.
        assert_eq!(
            decide(&[(loc("news.tv@x.org"), Class::Public)], false, false).unwrap(),
            Decision::Clear
        );
    }

    #[test]
    fn a_domain_declares_a_public_area_with_a_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let mut t = gale_keys::KeyTemplate::new(
            KeyName::parse("news.*@x.org").unwrap(),
            Timestamp { secs: 1, nanos: 0 },
        );
        t.members = vec![String::new()];
        t.encryption = false;
        let k = SecretKey::generate(t, &mut rand_core::OsRng);
        store
            .write_public(gale_keys::Dir::Local, k.public(), false)
            .unwrap();
        let c = classify(&store, &loc("news.tv@x.org"), Timestamp::now()).unwrap();
        assert_eq!(c, Class::Public);
    }

    #[test]
    fn a_sealed_message_carries_its_signers_key_inside() {
        let alice = crate::test_key("alice@x.org");
        let bob = crate::test_key("bob@x.org");
        let mut f = Fragments::new();
        f.push_text("message.body", "hi");
        let to = vec![loc("bob@x.org")];
        let enc = Decision::Encrypt(vec![bob.public().clone()]);
        let m = build(to.clone(), &f, Some(&alice), &enc).unwrap();
        let o = gale_keys::open(&m, &[&bob], &|_, _| None).unwrap();
        assert_eq!(o.signature, gale_keys::SigState::Valid);
        assert!(o.key_from_message);
        // In clear the key is not added: the signer's name is visible anyway.
        let m = build(to, &f, Some(&alice), &Decision::Clear).unwrap();
        let o = gale_keys::open(&m, &[], &|_, _| None).unwrap();
        assert_eq!(o.signature, gale_keys::SigState::UnknownKey);
    }

    #[test]
    fn control_locations_are_not_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let now = Timestamp::now();
        assert_eq!(
            classify(&store, &loc("_gale.query.a@x.org"), now).unwrap(),
            Class::Control
        );
        assert_eq!(
            classify(&store, &loc("a@x.org"), now).unwrap(),
            Class::NoKey
        );
    }
}
