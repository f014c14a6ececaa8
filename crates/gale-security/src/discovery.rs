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
//!
//! Several answers may come for one name (its owner's gsub, the domain's gdomain,
//! a second machine of the owner with a key of its own, or an impostor). A key
//! whose chain verifies beats one that does not, and the key a message was signed
//! with beats another; an answer that does not verify is kept waiting up to
//! [`VERIFIED_GRACE`] for a better one (`discovery/offers.rs`). A key that does not
//! verify never displaces a verified one in the store ([`KeyStore::learn`]); both
//! cases are reported ([`Outcome::warning`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gale_client::{Client, ClientConfig, Event, ServerAddr};
use gale_keys::{KeyChanged, KeyId, KeyName, KeyStore, Learned, PublicKey, Trust};
use gale_proto::{Message, SubEntry, SubscriptionList, Timestamp};

mod offers;
mod wire;

use crate::responder::ANSWER_INTERVAL;

use offers::Offers;
pub use offers::VERIFIED_GRACE;
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
/// When the names still unanswered are asked once more, after the first queries:
/// a gsub answers for a key at most once per [`ANSWER_INTERVAL`], so a query that
/// came just after someone else's is not answered the first time.
pub const ASK_AGAIN_AFTER: Duration =
    Duration::from_millis(ANSWER_INTERVAL.as_millis() as u64 + 100);

/// What discovery found for one name.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A key, stored in `auth/cache`; `changed` is set if it replaces a key seen
    /// before (warn loudly); `others` are the ids of other keys also offered for
    /// the name and not used.
    Found {
        key: Box<PublicKey>,
        trust: Trust,
        changed: Option<KeyChanged>,
        others: Vec<KeyId>,
    },
    /// A key that does not verify was offered, and not stored: the name has a
    /// verified key, `kept`.
    Refused {
        offered: Box<PublicKey>,
        kept: KeyId,
    },
    /// A key was found but could not be stored (a key file of the name cannot be
    /// used); `why` names the file and the problem. The key is held in memory
    /// ([`KeyStore::remember`]) and used for this program's life.
    Unstorable { key: Box<PublicKey>, why: String },
    /// The domain says there is no such key (verified).
    NotFound(String),
    /// Nobody answered in time.
    NoAnswer,
}

impl Outcome {
    fn found(&self) -> bool {
        matches!(
            self,
            Outcome::Found { .. } | Outcome::Refused { .. } | Outcome::Unstorable { .. }
        )
    }

    /// What the user must be told about this outcome for `name`, besides a key
    /// change (see [`Outcome::Found`]), or `None`.
    pub fn warning(&self, name: &KeyName) -> Option<String> {
        match self {
            Outcome::Found { key, others, .. } if !others.is_empty() => {
                let ids: Vec<String> = others.iter().map(|i| i.to_string()).collect();
                Some(format!(
                    "warning: {} different key(s) also answered for {name} ({}) and were not used; \
                     using {} (the one that verifies, or the one the message was signed with). \
                     Someone may be answering for {name}, or its owner runs Gale on another machine \
                     with a key of its own: one person should copy one key to all machines",
                    others.len(),
                    ids.join(", "),
                    key.id()
                ))
            }
            Outcome::Refused { offered, kept } => Some(format!(
                "WARNING: a key for {name} that is not verified (id {}) was offered, but {name}'s \
                 verified key is {kept}; it was not used. Someone may be impersonating {name}, or \
                 its owner made a new key that is not signed yet (check with them: gkey show {name})",
                offered.id()
            )),
            Outcome::Unstorable { key, why } => Some(format!(
                "warning: cannot cache the key of {name} (id {}), using it without: {why}",
                key.id()
            )),
            _ => None,
        }
    }
}

/// Whether a discovery stores what it learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keys into the store, names without a key into the negative cache.
    Learn,
    /// Only find out whether a name answers: nothing is stored or remembered.
    Probe,
}

/// Key discovery: connection details, the wait, and the negative answers
/// believed so far (in memory, for [`NEGATIVE_TTL`]).
#[derive(Debug)]
pub struct Discovery {
    pub servers: Vec<ServerAddr>,
    pub agent: String,
    pub timeout: Duration,
    negative: Mutex<HashMap<KeyName, Instant>>,
    /// Set once a lookup's queries reached a server.
    reached: std::sync::atomic::AtomicBool,
}

impl Discovery {
    /// Whether any lookup so far reached a server (its queries went out). When
    /// none did, a key not found says nothing about whether the key exists.
    pub fn reached_any(&self) -> bool {
        self.reached.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn new(servers: Vec<ServerAddr>, agent: impl Into<String>, timeout: Duration) -> Self {
        Discovery {
            servers,
            agent: agent.into(),
            timeout,
            negative: Mutex::new(HashMap::new()),
            reached: std::sync::atomic::AtomicBool::new(false),
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
        self.run(store, groups, HashMap::new(), Mode::Learn).await
    }

    /// Looks up the key `id` of `name`, with which a message was signed (gsub):
    /// among answers that verify equally, that key is preferred. A name recently
    /// found to have no key is asked again: its owner just sent a message.
    pub async fn discover_key(
        &self,
        store: &KeyStore,
        name: &KeyName,
        id: KeyId,
    ) -> HashMap<KeyName, Outcome> {
        let want = HashMap::from([(name.clone(), id)]);
        self.run(store, &[vec![name.clone()]], want, Mode::Learn)
            .await
    }

    /// The key `name` answers with over Gale, if any, without storing or
    /// remembering anything: for a program about to make a key for `name`.
    pub async fn probe(&self, store: &KeyStore, name: &KeyName) -> Option<(PublicKey, Trust)> {
        let mut out = self
            .run(store, &[vec![name.clone()]], HashMap::new(), Mode::Probe)
            .await;
        match out.remove(name)? {
            Outcome::Found { key, trust, .. } => Some((*key, trust)),
            _ => None,
        }
    }

    async fn run(
        &self,
        store: &KeyStore,
        groups: &[Vec<KeyName>],
        want: HashMap<KeyName, KeyId>,
        mode: Mode,
    ) -> HashMap<KeyName, Outcome> {
        let mut lookup = Lookup {
            store,
            mode,
            want,
            asked: Vec::new(),
            out: HashMap::new(),
            offers: HashMap::new(),
            held: Vec::new(),
            queries: Vec::new(),
        };
        for n in groups.iter().flatten() {
            let skip =
                mode == Mode::Learn && !lookup.want.contains_key(n) && self.known_missing(store, n);
            if skip {
                lookup
                    .out
                    .insert(n.clone(), Outcome::NotFound("no such key (cached)".into()));
            } else if !lookup.asked.contains(n) {
                lookup.asked.push(n.clone());
            }
        }
        if lookup.asked.is_empty() || lookup.done(groups) {
            return lookup.out;
        }
        lookup.queries = lookup
            .asked
            .iter()
            .filter_map(|n| query_message(n).ok())
            .collect();
        let mut config = ClientConfig::new(self.servers.clone(), self.agent.clone());
        config.subscriptions = lookup.subscriptions();
        let (client, mut events) = Client::start(config);
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Whether the queries went out at all: silence from a server never
        // reached says nothing about a key.
        let mut asked_anyone = false;
        // Set once the first queries are out.
        let mut ask_again: Option<tokio::time::Instant> = None;
        loop {
            let settled = lookup.settle_ready(tokio::time::Instant::now());
            if settled.more_names {
                let _ = client.subscribe(lookup.subscriptions()).await;
            }
            if settled.any {
                continue;
            }
            if lookup.done(groups) {
                break;
            }
            let wake = [lookup.next_settle(), ask_again]
                .into_iter()
                .flatten()
                .fold(deadline, |a, b| a.min(b));
            let ev = match tokio::time::timeout_at(wake, events.next()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(_) if wake >= deadline => break,
                Err(_) => {
                    if ask_again.is_some_and(|t| t <= wake) {
                        ask_again = None;
                        for q in lookup.unanswered_queries() {
                            let _ = client.publish(q);
                        }
                    }
                    continue;
                }
            };
            match ev {
                // Queries go out once the server listens for their answers.
                Event::Subscribed { .. } => {
                    asked_anyone = true;
                    self.reached
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    for q in lookup.queries.drain(..) {
                        let _ = client.publish(q);
                    }
                    ask_again.get_or_insert(tokio::time::Instant::now() + ASK_AGAIN_AFTER);
                }
                Event::Message(d) => {
                    let more_names = lookup.take(&d.message);
                    if more_names {
                        let _ = client.subscribe(lookup.subscriptions()).await;
                    }
                }
                _ => {}
            }
        }
        // At the deadline the best answer so far is taken.
        lookup.settle_ready(deadline + VERIFIED_GRACE);
        let mut missing = Vec::new();
        for n in &lookup.asked {
            let o = lookup.out.entry(n.clone()).or_insert(Outcome::NoAnswer);
            if !o.found() {
                missing.push(n.clone());
            }
        }
        if asked_anyone && mode == Mode::Learn {
            self.note_missing(store, &missing);
        }
        let _ = tokio::time::timeout(Duration::from_millis(300), client.close(false)).await;
        lookup.out
    }
}

/// What [`Lookup::settle_ready`] did.
struct Settled {
    /// Some name was settled.
    any: bool,
    /// Another signer's key must be asked for (subscribe again).
    more_names: bool,
}

/// The state of one discovery: names asked, answers offered, outcomes.
struct Lookup<'a> {
    store: &'a KeyStore,
    mode: Mode,
    /// The key id wanted for a name (the one a message was signed with).
    want: HashMap<KeyName, KeyId>,
    asked: Vec<KeyName>,
    out: HashMap<KeyName, Outcome>,
    /// Keys offered for names not settled yet.
    offers: HashMap<KeyName, Offers>,
    /// Answers signed by an ancestor whose key is being fetched.
    held: Vec<Message>,
    /// Queries not yet published (they wait for the subscription).
    queries: Vec<Message>,
}

impl Lookup<'_> {
    fn subscriptions(&self) -> SubscriptionList {
        SubscriptionList::new(
            self.asked
                .iter()
                .filter_map(|n| answer_location(n).ok())
                .map(SubEntry::include)
                .collect(),
        )
    }

    /// True once each group has a key for one of its names, or an outcome for all.
    fn done(&self, groups: &[Vec<KeyName>]) -> bool {
        groups.iter().all(|g| {
            g.iter()
                .any(|n| self.out.get(n).is_some_and(Outcome::found))
                || g.iter().all(|n| self.out.contains_key(n))
        })
    }

    /// Fresh queries for the names asked that nothing has answered yet.
    fn unanswered_queries(&self) -> Vec<Message> {
        self.asked
            .iter()
            .filter(|n| !self.out.contains_key(*n) && !self.offers.contains_key(*n))
            .filter_map(|n| query_message(n).ok())
            .collect()
    }

    /// When the earliest unsettled offer stops waiting for a better one.
    fn next_settle(&self) -> Option<tokio::time::Instant> {
        self.offers.values().filter_map(Offers::settles_at).min()
    }

    /// Checks one message against every name asked. True if a signer's key must
    /// be asked for too (subscribe again: its query waits for the subscription).
    fn take(&mut self, m: &Message) -> bool {
        let now = Timestamp::now();
        let mut more = false;
        for n in self.asked.clone() {
            if self.out.contains_key(&n) {
                continue;
            }
            match check_answer(m, &n, self.store, now) {
                Some(Answer::Key { key, trust }) => {
                    let want = self.want.get(&n).copied();
                    self.offers
                        .entry(n)
                        .or_insert_with(|| Offers::new(want))
                        .offer(key, trust, tokio::time::Instant::now());
                }
                Some(Answer::NotFound(why)) => {
                    // A key already offered for the name beats "no such key".
                    let offered = self.offers.contains_key(&n);
                    if !offered {
                        self.out.insert(n, Outcome::NotFound(why));
                    }
                }
                Some(Answer::SignerUnknown(signer)) => {
                    self.held.push(m.clone());
                    if !self.asked.contains(&signer) && self.asked.len() < MAX_NAMES {
                        if let Ok(q) = query_message(&signer) {
                            self.asked.push(signer);
                            self.queries.push(q);
                            more = true;
                        }
                    }
                }
                Some(Answer::Rejected(why)) => {
                    tracing::debug!("ignored an answer about {n}: {why}");
                }
                None => {}
            }
        }
        more
    }

    /// Settles every name whose offers have stopped waiting at `now`: stores the
    /// chosen key, then checks again the answers that waited for a signer's key.
    fn settle_ready(&mut self, now: tokio::time::Instant) -> Settled {
        let ready: Vec<KeyName> = self
            .offers
            .iter()
            .filter(|(_, o)| o.settled(now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &ready {
            let Some(offers) = self.offers.remove(n) else {
                continue;
            };
            if let Some(outcome) = self.keep(offers) {
                self.out.insert(n.clone(), outcome);
            }
        }
        let mut more_names = false;
        if !ready.is_empty() {
            // The signer an answer waited for may be known now.
            for m in std::mem::take(&mut self.held) {
                more_names |= self.take(&m);
            }
        }
        Settled {
            any: !ready.is_empty(),
            more_names,
        }
    }

    /// Stores the chosen key (unless probing) and says what happened.
    fn keep(&self, offers: Offers) -> Option<Outcome> {
        let (key, trust, others) = offers.into_best()?;
        if self.mode == Mode::Probe {
            return Some(Outcome::Found {
                key,
                trust,
                changed: None,
                others,
            });
        }
        Some(match self.store.learn(&key, Timestamp::now()) {
            Ok(Learned::Stored(done)) => Outcome::Found {
                key,
                trust,
                changed: done.changed,
                others,
            },
            Ok(Learned::Refused { kept }) => Outcome::Refused { offered: key, kept },
            Err(e) => {
                let mut why = e.to_string();
                if let Some(source) = std::error::Error::source(&e) {
                    why.push_str(&format!(" ({source})"));
                }
                Outcome::Unstorable { key, why }
            }
        })
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
