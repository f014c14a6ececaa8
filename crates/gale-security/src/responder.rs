//! Answering key queries, for a domain and for a user's own keys.
//!
//! [`Responder`] is the domain key responder (gdomain): it answers key queries
//! for one domain from a key store, signing each answer with the domain's key,
//! and signing "no such key" answers too, so that clients can tell a real absence
//! from a missing responder. It listens on `_gale.query@<domain>`, which covers
//! every query for a key in the domain (see [`crate::discovery`] for the wire
//! format), and answers on `_gale.key.<name>`. Keys it serves are those its
//! [`KeyStore`] holds (trusted, local, cached, or our own), preferring one whose
//! chain verifies.
//!
//! [`OwnKeys`] answers queries for the keys the user holds (gsub, unless `-a`):
//! with the key itself, signed by itself, at most once per [`ANSWER_INTERVAL`]
//! per key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gale_client::Delivery;
use gale_keys::{KeyName, KeyStore, PublicKey, SecretKey};
use gale_proto::fragment::names;
use gale_proto::{
    Fragments, Location, LocationError, Message, Payload, SubEntry, SubscriptionList, Timestamp,
    Value,
};
use thiserror::Error;

use crate::discovery::{answer_location, answer_message, asked_for, query_location};

/// Answer queries for one of the user's keys at most this often.
pub const ANSWER_INTERVAL: Duration = Duration::from_secs(1);

/// What the responder did with one message.
#[derive(Debug)]
pub enum Reply {
    /// Answered with this key (its id in the log line).
    Key(Message, Box<PublicKey>),
    /// Answered that there is no such key.
    NotFound(Message, KeyName),
    /// Not a query for this domain (or not a query at all).
    Ignored(String),
    /// A query for this domain that cannot be answered because a key file of
    /// the name cannot be used (the file and the problem): neither the key nor
    /// "no such key" is sent, since the key may well exist. Tell the operator.
    Unusable(String),
}

/// See the module documentation.
pub struct Responder {
    domain: KeyName,
    signer: SecretKey,
    store: KeyStore,
}

impl Responder {
    /// `signer` must be the domain's own key (`example.org`).
    pub fn new(signer: SecretKey, store: KeyStore) -> Responder {
        Responder {
            domain: signer.name().clone(),
            signer,
            store,
        }
    }

    pub fn domain(&self) -> &KeyName {
        &self.domain
    }

    /// The subscription that brings every query for the domain.
    pub fn subscription(&self) -> Result<SubscriptionList, LocationError> {
        let loc = Location::parse(&format!("_gale.query@{}", self.domain.domain()))?;
        Ok(SubscriptionList::new(vec![SubEntry::include(loc)]))
    }

    /// Answers one received message.
    pub fn answer(&self, m: &Message, now: Timestamp) -> Reply {
        let Ok(Payload::Plain(f)) = Payload::decode(&m.payload) else {
            return Reply::Ignored("not a plain query".into());
        };
        let Some(asked) = f.text(names::QUESTION_KEY) else {
            return Reply::Ignored("no question.key".into());
        };
        let Ok(name) = KeyName::parse(asked) else {
            return Reply::Ignored(format!("bad key name {asked:?}"));
        };
        if name.domain() != self.domain.domain() {
            return Reply::Ignored(format!("{name} is not in {}", self.domain));
        }
        let found = match self.store.find(&name) {
            Ok(found) => found.into_iter().map(|(_, k)| k),
            Err(e) => {
                let mut why = format!("cannot answer for {name}: {e}");
                if let Some(source) = std::error::Error::source(&e) {
                    why.push_str(&format!(" ({source})"));
                }
                return Reply::Unusable(why);
            }
        };
        // A key whose chain verifies beats one that does not; never serve one that
        // is expired or badly signed.
        let mut best: Option<(bool, PublicKey)> = None;
        for k in found {
            let trust = self.store.verify(&k, now);
            let good = trust.is_verified();
            let bad = matches!(
                trust,
                gale_keys::Trust::BadSignature { .. } | gale_keys::Trust::Expired { .. }
            );
            if !bad && best.as_ref().is_none_or(|(g, _)| good && !g) {
                best = Some((good, k));
            }
        }
        match best {
            Some((_, key)) => match answer_message(&key, &self.signer) {
                Ok(msg) => Reply::Key(msg, Box::new(key)),
                Err(e) => Reply::Ignored(format!("cannot answer for {name}: {e}")),
            },
            None => match self.not_found(&name) {
                Ok(msg) => Reply::NotFound(msg, name),
                Err(e) => Reply::Ignored(format!("cannot answer for {name}: {e}")),
            },
        }
    }

    /// A signed "no key for NAME" answer.
    fn not_found(&self, name: &KeyName) -> Result<Message, LocationError> {
        let to = vec![answer_location(name)?];
        let mut f = Fragments::new();
        f.push_text(
            names::ANSWER_KEY_ERROR,
            format!("no key for {name} at {}", self.domain),
        );
        f.push_text(names::QUESTION_KEY, name.as_str());
        f.push(names::ID_TIME, Value::Time(Timestamp::now()));
        Ok(crate::outgoing::signed(to, &f, &self.signer))
    }
}

/// An answer to a query for one of our keys could not be made.
#[derive(Debug, Error)]
#[error("cannot answer the query for {name}")]
pub struct AnswerError {
    pub name: KeyName,
    #[source]
    pub source: LocationError,
}

/// Answers queries for the user's own keys; see the module documentation.
#[derive(Debug)]
pub struct OwnKeys {
    names: Vec<KeyName>,
    answered: HashMap<KeyName, Instant>,
}

impl OwnKeys {
    /// Answers for the keys named `names` (the user's: [`KeyStore::own_key_names`]).
    pub fn new(names: Vec<KeyName>) -> OwnKeys {
        OwnKeys {
            names,
            answered: HashMap::new(),
        }
    }

    pub fn names(&self) -> &[KeyName] {
        &self.names
    }

    /// The subscriptions that bring queries for these keys.
    pub fn subscriptions(&self) -> Vec<SubEntry> {
        self.names
            .iter()
            .filter_map(|n| query_location(n).ok())
            .map(SubEntry::include)
            .collect()
    }

    /// The answer to `d`, if it is a query for one of these keys, the secret key
    /// is in `store`, and that key was not answered for within
    /// [`ANSWER_INTERVAL`]. Call [`OwnKeys::sent`] once the answer is published.
    pub fn answer(
        &self,
        store: &KeyStore,
        d: &Delivery,
        now: Instant,
    ) -> Result<Option<(KeyName, Message)>, AnswerError> {
        let Some(f) = d.fragments() else {
            return Ok(None);
        };
        let Some(name) = asked_for(&d.message, f, &self.names) else {
            return Ok(None);
        };
        if self
            .answered
            .get(name)
            .is_some_and(|&t| now.saturating_duration_since(t) < ANSWER_INTERVAL)
        {
            return Ok(None);
        }
        let Ok(Some((key, _))) = store.secret(name) else {
            return Ok(None);
        };
        match answer_message(key.public(), &key) {
            Ok(m) => Ok(Some((name.clone(), m))),
            Err(source) => Err(AnswerError {
                name: name.clone(),
                source,
            }),
        }
    }

    /// The answer for `name` went out at `now`.
    pub fn sent(&mut self, name: KeyName, now: Instant) {
        self.answered.insert(name, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{check_answer, query_message, Answer};
    use gale_keys::key::KeyTemplate;
    use gale_keys::store::Dir;

    fn key(name: &str, seed: u8) -> SecretKey {
        let t = KeyTemplate::new(KeyName::parse(name).unwrap(), Timestamp::now());
        SecretKey::from_seeds(t, &[seed; 32], Some(&[seed ^ 0x55; 32]))
    }

    #[test]
    fn answers_known_keys_and_signs_absence() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().to_path_buf(), None);
        let domain = key("example.org", 1);
        let mut alice = key("alice@example.org", 2);
        let mut pubkey = alice.public().clone();
        domain.sign_key(&mut pubkey).unwrap();
        alice.merge_signatures(&pubkey).unwrap();
        store.write_public(Dir::Local, &pubkey, false).unwrap();
        let domain_pub = domain.public().clone();
        let r = Responder::new(domain, store);
        assert_eq!(
            r.subscription().unwrap().entries[0].location.as_str(),
            "_gale.query@example.org"
        );

        // A client that trusts the domain key accepts both answers.
        let cdir = tempfile::tempdir().unwrap();
        let client = KeyStore::new(cdir.path().to_path_buf(), None);
        client
            .write_public(Dir::Trusted, &domain_pub, false)
            .unwrap();
        let now = Timestamp::now();

        let q = query_message(&KeyName::parse("alice@example.org").unwrap()).unwrap();
        let Reply::Key(answer, k) = r.answer(&q, now) else {
            panic!("expected a key")
        };
        assert_eq!(k.id(), alice.id());
        let asked = KeyName::parse("alice@example.org").unwrap();
        match check_answer(&answer, &asked, &client, now) {
            Some(Answer::Key { trust, .. }) => assert!(trust.is_verified(), "{trust}"),
            other => panic!("{other:?}"),
        }

        let nobody = KeyName::parse("nobody@example.org").unwrap();
        let Reply::NotFound(answer, _) = r.answer(&query_message(&nobody).unwrap(), now) else {
            panic!("expected not found")
        };
        assert!(matches!(
            check_answer(&answer, &nobody, &client, now),
            Some(Answer::NotFound(_))
        ));

        let other = KeyName::parse("bob@elsewhere.net").unwrap();
        assert!(matches!(
            r.answer(&query_message(&other).unwrap(), now),
            Reply::Ignored(_)
        ));
    }

    #[test]
    fn own_keys_answer_queries_for_them_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path().to_path_buf(), None);
        let alice = key("alice@example.org", 7);
        store.write_secret(&alice, false).unwrap();
        let mut own = OwnKeys::new(store.own_key_names().unwrap());
        assert_eq!(own.names(), [alice.name().clone()]);
        let subs: Vec<String> = own.subscriptions().iter().map(|e| e.to_string()).collect();
        assert_eq!(subs, ["_gale.query.alice@example.org"]);

        let query = |n: &str| {
            let m = query_message(&KeyName::parse(n).unwrap()).unwrap();
            gale_client::Delivery::open(m).unwrap()
        };
        let t = Instant::now();
        let (name, answer) = own
            .answer(&store, &query("alice@example.org"), t)
            .unwrap()
            .expect("an answer");
        assert_eq!(&name, alice.name());
        match check_answer(&answer, &name, &store, Timestamp::now()) {
            Some(Answer::Key { key, .. }) => assert_eq!(key.id(), alice.id()),
            other => panic!("{other:?}"),
        }
        // Not one of ours: no answer.
        assert!(own
            .answer(&store, &query("bob@example.org"), t)
            .unwrap()
            .is_none());
        // Once sent, not again within ANSWER_INTERVAL; unsent, it is tried again.
        let soon = t + ANSWER_INTERVAL / 2;
        assert!(own
            .answer(&store, &query("alice@example.org"), soon)
            .unwrap()
            .is_some());
        own.sent(name, t);
        assert!(own
            .answer(&store, &query("alice@example.org"), soon)
            .unwrap()
            .is_none());
        let later = t + ANSWER_INTERVAL;
        assert!(own
            .answer(&store, &query("alice@example.org"), later)
            .unwrap()
            .is_some());
    }
}
