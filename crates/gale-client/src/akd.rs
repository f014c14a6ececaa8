//! Key discovery over Gale itself (AKD, "automatic key distribution").
//!
//! Wire format (docs/security.md §12):
//! - a **query** for key `K` is an unsigned message to [`query_location`]`(K)`
//!   (`_gale.query.egnor@ofb.net`) with `question.key` = `K` and `id.time`;
//! - an **answer** is a message to [`answer_location`]`(K)`
//!   (`_gale.key.egnor@ofb.net`), signed by `K` itself or by one of its ancestors
//!   (the domain key), with `answer.key` = the encoded public key, `question.key` =
//!   `K` and `id.time`; a negative answer has `answer.key.error` instead of
//!   `answer.key`, and is believed only if its signer is an ancestor of `K` whose
//!   key verifies.
//!
//! [`check_answer`] is the pure rule; [`Discovery`] runs queries over its own
//! short-lived connection, waits for answers and caches what it learns.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gale_keys::{open, Dir, KeyChanged, KeyName, KeyStore, PublicKey, SecretKey, SigState, Trust};
use gale_proto::fragment::names;
use gale_proto::{
    Fragments, Location, LocationError, Message, Payload, SubEntry, SubscriptionList, Timestamp,
    Value,
};

use crate::{Client, ClientConfig, Event, ServerAddr};

/// How long a name that has no key (a verified "no such key", or no answer at
/// all) is not asked about again. Kept in memory and in the key store
/// ([`KeyStore::missing_keys`]), so that only the first message to a keyless
/// location waits for answers.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// Default wait for answers (gsend and gsub `--key-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most names one discovery asks for, counting the signers of answers it fetches.
const MAX_NAMES: usize = 64;
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
    Ok(Message::new(
        vec![query_location(name)?],
        Payload::Plain(f).encode(),
    ))
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
    let lookup = |n: &KeyName, id| store.lookup(n, id);
    let first = match open(m, &[], &lookup) {
        Ok(o) => o,
        Err(e) => return Some(Answer::Rejected(format!("unreadable answer: {e}"))),
    };
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
                .or_else(|| store.lookup(n, id))
        };
        match open(m, &[], &with) {
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

/// What discovery found for one name.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A key, stored in `auth/cache` (unless a verified copy was already known);
    /// `changed` is set if it replaces a key seen before: warn loudly.
    Found {
        key: Box<PublicKey>,
        trust: Trust,
        changed: Option<KeyChanged>,
    },
    /// The domain says there is no such key (verified).
    NotFound(String),
    /// Nobody answered in time.
    NoAnswer,
}

impl Outcome {
    fn found(&self) -> bool {
        matches!(self, Outcome::Found { .. })
    }
}

/// Key discovery: connection details, the wait, and the negative answers
/// believed so far (in memory, for [`NEGATIVE_TTL`]).
#[derive(Debug)]
pub struct Discovery {
    pub servers: Vec<ServerAddr>,
    pub agent: String,
    pub timeout: Duration,
    negative: Mutex<HashMap<KeyName, Instant>>,
}

impl Discovery {
    pub fn new(servers: Vec<ServerAddr>, agent: impl Into<String>, timeout: Duration) -> Self {
        Discovery {
            servers,
            agent: agent.into(),
            timeout,
            negative: Mutex::new(HashMap::new()),
        }
    }

    fn known_missing(&self, store: &KeyStore, name: &KeyName) -> bool {
        let mut neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        neg.retain(|_, at| at.elapsed() < NEGATIVE_TTL);
        neg.contains_key(name) || read_missing(store).iter().any(|(n, _)| n == name)
    }

    fn note_missing(&self, store: &KeyStore, names: &[KeyName]) {
        if names.is_empty() {
            return;
        }
        let mut neg = self.negative.lock().unwrap_or_else(|p| p.into_inner());
        for n in names {
            neg.insert(n.clone(), Instant::now());
        }
        let now = unix_now();
        let mut all = read_missing(store);
        all.retain(|(n, _)| !names.contains(n));
        all.extend(names.iter().map(|n| (n.clone(), now)));
        if let Err(e) = store.write_missing_keys(&all) {
            let why = std::error::Error::source(&e).map(|s| s.to_string());
            tracing::debug!("{e}: {}", why.unwrap_or_default());
        }
    }

    /// Asks for every name in `groups` at once, over one connection, and waits
    /// until each group has a key found for one of its names or an outcome for all
    /// of them, or until the timeout. A group is the candidates for one location
    /// (`*@dom`, `a.*@dom`, `a.b@dom`). Keys found are stored in `auth/cache`.
    pub async fn discover(
        &self,
        store: &KeyStore,
        groups: &[Vec<KeyName>],
    ) -> HashMap<KeyName, Outcome> {
        let mut out: HashMap<KeyName, Outcome> = HashMap::new();
        let mut asked: Vec<KeyName> = Vec::new();
        for n in groups.iter().flatten() {
            if self.known_missing(store, n) {
                out.insert(n.clone(), Outcome::NotFound("no such key (cached)".into()));
            } else if !asked.contains(n) {
                asked.push(n.clone());
            }
        }
        let done = |out: &HashMap<KeyName, Outcome>| {
            groups.iter().all(|g| {
                g.iter().any(|n| out.get(n).is_some_and(Outcome::found))
                    || g.iter().all(|n| out.contains_key(n))
            })
        };
        if asked.is_empty() || done(&out) {
            return out;
        }
        let mut queries: Vec<Message> =
            asked.iter().filter_map(|n| query_message(n).ok()).collect();
        let subscriptions = |asked: &[KeyName]| {
            SubscriptionList::new(
                asked
                    .iter()
                    .filter_map(|n| answer_location(n).ok())
                    .map(SubEntry::include)
                    .collect(),
            )
        };
        let mut config = ClientConfig::new(self.servers.clone(), self.agent.clone());
        config.subscriptions = subscriptions(&asked);
        let (client, mut events) = Client::start(config);
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Answers signed by an ancestor whose key is being fetched.
        let mut held: Vec<Message> = Vec::new();
        while !done(&out) {
            let ev = match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            let message = match ev {
                // Queries go out once the server listens for their answers.
                Event::Subscribed { .. } => {
                    for q in queries.drain(..) {
                        let _ = client.publish(q);
                    }
                    continue;
                }
                Event::Message(d) => d.message,
                _ => continue,
            };
            let mut todo = vec![message];
            while let Some(m) = todo.pop() {
                let now = Timestamp::now();
                for n in asked.clone() {
                    if out.contains_key(&n) {
                        continue;
                    }
                    match check_answer(&m, &n, store, now) {
                        Some(Answer::Key { key, trust }) => {
                            let changed = self.keep(store, &key, &trust, now);
                            out.insert(
                                n.clone(),
                                Outcome::Found {
                                    key,
                                    trust,
                                    changed,
                                },
                            );
                            // Answers that waited for this key can be checked now.
                            todo.append(&mut held);
                        }
                        Some(Answer::NotFound(why)) => {
                            out.insert(n.clone(), Outcome::NotFound(why));
                        }
                        Some(Answer::SignerUnknown(signer)) => {
                            held.push(m.clone());
                            if !asked.contains(&signer) && asked.len() < MAX_NAMES {
                                if let Ok(q) = query_message(&signer) {
                                    asked.push(signer);
                                    queries.push(q);
                                    let _ = client.subscribe(subscriptions(&asked));
                                }
                            }
                        }
                        Some(Answer::Rejected(why)) => {
                            tracing::debug!("ignored an answer about {n}: {why}");
                        }
                        None => {}
                    }
                }
            }
        }
        let mut missing = Vec::new();
        for n in asked {
            let o = out.entry(n.clone()).or_insert(Outcome::NoAnswer);
            if !o.found() {
                missing.push(n);
            }
        }
        self.note_missing(store, &missing);
        let _ = tokio::time::timeout(Duration::from_millis(300), client.close(false)).await;
        out
    }

    /// Stores a key learned from the network in `auth/cache`, unless that would
    /// replace a verified key of the same name with one that is not.
    fn keep(
        &self,
        store: &KeyStore,
        key: &PublicKey,
        trust: &Trust,
        now: Timestamp,
    ) -> Option<KeyChanged> {
        let better_known = !trust.is_verified()
            && store
                .find(&key.name)
                .iter()
                .any(|(_, k)| k.id() != key.id() && store.verify(k, now).is_verified());
        if better_known {
            return None;
        }
        match store.import(key, Dir::Cache) {
            Ok(done) => done.changed,
            Err(e) => {
                tracing::warn!("cannot cache the key of {}: {e}", key.name);
                None
            }
        }
    }
}

fn unix_now() -> i64 {
    Timestamp::now().secs
}

/// Unexpired entries of the store's negative cache.
fn read_missing(store: &KeyStore) -> Vec<(KeyName, i64)> {
    let now = unix_now();
    let fresh = |t: i64| now.saturating_sub(t) < NEGATIVE_TTL.as_secs() as i64 && t <= now + 60;
    store
        .missing_keys()
        .into_iter()
        .filter(|&(_, t)| fresh(t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_keys::KeyTemplate;

    fn name(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    fn key(n: &str) -> SecretKey {
        SecretKey::generate(
            KeyTemplate::new(name(n), Timestamp { secs: 1, nanos: 0 }),
            &mut rand_core::OsRng,
        )
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
