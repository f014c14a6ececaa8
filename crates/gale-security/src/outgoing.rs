//! Sending securely: who each location is encrypted to, the rule against mixing
//! public and private locations, and the signed (and maybe sealed) message.
//!
//! Rules (docs/security.md §12.4):
//! - a location whose controlling key has members (or is a person's key) is
//!   *private*: the message is encrypted to every recipient key, with the
//!   signature inside;
//! - a location whose key makes the world a member is *public*; so is a location
//!   with no key at all after discovery (Gale refused to send; we send in clear and
//!   say so), and the reserved `_gale.*` control locations (silently);
//! - a message to private and public locations at once is refused unless the user
//!   asks for it to go in clear to all (`--allow-clear`): original Gale silently
//!   sent such messages in clear.

use gale_keys::{
    seal, sign, EnvelopeError, KeyChanged, KeyName, KeyStore, PublicKey, Recipients, SecretKey,
    Trust, TrustError,
};
use gale_proto::{Fragments, Location, Message, MessageId, Payload, Timestamp};
use thiserror::Error;

use crate::discovery::{Discovery, Outcome};

/// How one location is to be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A reserved `_gale.*` location: in clear, no questions.
    Control,
    /// Its key makes it public.
    Public,
    /// No key found for it: sent in clear, and the user is told.
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
    #[error("cannot work out who {location} is encrypted to")]
    Trust {
        location: Location,
        #[source]
        source: TrustError,
    },
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
    /// Discovery found nothing for this location (sent in clear).
    NoKey(Location),
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
                if *c == Class::NoKey {
                    notices.push(Notice::NoKey(loc.clone()));
                }
            }
            return Ok((result, notices));
        };
        tried.extend(groups.iter().flatten().cloned());
        for (_, outcome) in disc.discover(store, &groups).await {
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
/// (plain if `None`: anonymous), then sealed if the decision says so.
pub fn build(
    to: Vec<Location>,
    fragments: &Fragments,
    signer: Option<&SecretKey>,
    decision: &Decision,
) -> Result<Message, EnvelopeError> {
    let id = MessageId::generate();
    let inner = match signer {
        Some(k) => sign(id, &to, fragments, k)?,
        None => Payload::Plain(fragments.clone()),
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
