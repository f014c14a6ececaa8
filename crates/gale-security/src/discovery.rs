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
//! [`check_answer`] is the pure rule (with the rest of the wire format, in
//! `discovery/wire.rs`); [`Discovery`] runs queries over its own short-lived
//! connection, waits for answers and caches what it learns: keys in the key
//! store's cache, names without a key in its negative cache for [`NEGATIVE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gale_client::{Client, ClientConfig, Event, ServerAddr};
use gale_keys::{Dir, KeyChanged, KeyName, KeyStore, PublicKey, Trust};
use gale_proto::{Message, SubEntry, SubscriptionList, Timestamp};

mod wire;

pub use wire::{
    answer_location, answer_message, asked_for, check_answer, is_akd, query_location,
    query_message, Answer, WILD_SEGMENT,
};

/// How long a name that has no key (a verified "no such key", or no answer at
/// all) is not asked about again. Kept in memory and in the key store
/// ([`KeyStore::missing_keys`]), so that only the first message to a keyless
/// location waits for answers.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// Default wait for answers (gsend and gsub `--key-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most names one discovery asks for, counting the signers of answers it fetches.
const MAX_NAMES: usize = 64;

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
        // Whether the queries went out at all: silence from a server never
        // reached says nothing about a key.
        let mut asked_anyone = false;
        while !done(&out) {
            let ev = match tokio::time::timeout_at(deadline, events.next()).await {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(_) => break,
            };
            let message = match ev {
                // Queries go out once the server listens for their answers.
                Event::Subscribed { .. } => {
                    asked_anyone = true;
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
                                    let _ = client.subscribe(subscriptions(&asked)).await;
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
        if asked_anyone {
            self.note_missing(store, &missing);
        }
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
