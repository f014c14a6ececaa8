//! Opening received messages: decrypting with the user's secret keys, checking
//! signatures, and deciding how far the sender is known ([`Verify`]).
//!
//! Rules: a valid signature by a key whose chain reaches a trust anchor is
//! *verified*; a valid signature by any other usable key, or a signature by a key
//! not known here, is *unverified* (with the claimed signer); a signature that does
//! not verify, a signer key that is expired or badly signed, or an encrypted
//! message that was altered is *forged*; a plain payload is *anonymous*. An
//! encrypted message to nobody we hold a key for is [`Unreadable::NotForYou`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gale_keys::{
    open, EnvelopeError, KeyChanged, KeyId, KeyName, KeyStore, PublicKey, SecretKey, SigState,
    Trust,
};
use gale_proto::{Payload, Timestamp};

use gale_client::{Delivery, Unreadable, Verify};

/// How long a key's trust, once worked out, is reused before the key files are
/// read again (Gale re-read its key directories every 10 s).
pub const TRUST_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most entries a [`KeyCache`] holds before it starts again from empty.
const KEY_CACHE_LIMIT: usize = 10_000;

/// What was worked out about each key (by name and id), reused for
/// [`TRUST_CACHE_TTL`].
#[derive(Debug)]
struct KeyCache<V>(Mutex<HashMap<(KeyName, KeyId), (V, Instant)>>);

impl<V: Clone> KeyCache<V> {
    fn new() -> Self {
        KeyCache(Mutex::new(HashMap::new()))
    }

    /// The value for `(name, id)`, worked out again by `make` once it is older
    /// than [`TRUST_CACHE_TTL`].
    fn get_or(&self, name: &KeyName, id: KeyId, make: impl FnOnce() -> V) -> V {
        let k = (name.clone(), id);
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, at)) = cache.get(&k) {
            if at.elapsed() < TRUST_CACHE_TTL {
                return v.clone();
            }
        }
        let v = make();
        if cache.len() > KEY_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(k, (v.clone(), Instant::now()));
        v
    }

    fn forget(&self, name: &KeyName) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _), _| n != name);
    }
}

/// The result of opening one delivery.
#[derive(Debug)]
pub struct Opening {
    pub delivery: Delivery,
    /// The signer's key is not known here: discovering it (then opening again)
    /// may verify the message.
    pub missing_key: Option<(KeyName, KeyId)>,
    /// With `missing_key`: the delivery as it arrived, to open again once the key
    /// is known.
    pub sealed: Option<Delivery>,
    /// The signer's key differs from the one seen before for that name: warn
    /// loudly.
    pub changed: Option<KeyChanged>,
}

/// Opens deliveries with the user's keys; cheap to share between tasks.
#[derive(Debug)]
pub struct Opener {
    store: KeyStore,
    secrets: Vec<SecretKey>,
    trust: KeyCache<Trust>,
    /// Keys looked up in the store (or found missing).
    keys: KeyCache<Option<PublicKey>>,
    seen: Mutex<HashSet<(KeyName, KeyId)>>,
}

impl Opener {
    /// An opener with every secret key the user holds.
    pub fn new(store: KeyStore) -> Opener {
        let secrets = store.secrets();
        Opener {
            store,
            secrets,
            trust: KeyCache::new(),
            keys: KeyCache::new(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Forgets what was worked out about `name` (after its key was learned).
    pub fn forget(&self, name: &KeyName) {
        self.trust.forget(name);
        self.keys.forget(name);
    }

    /// The store's key `name` with id `id`, remembered for [`TRUST_CACHE_TTL`]:
    /// reading the key files for every message would cost more than checking its
    /// signature.
    fn lookup(&self, name: &KeyName, id: KeyId) -> Option<PublicKey> {
        self.keys.get_or(name, id, || self.store.lookup(name, id))
    }

    fn trust_of(&self, key: &PublicKey, now: Timestamp) -> Trust {
        self.trust
            .get_or(&key.name, key.id(), || self.store.verify(key, now))
    }

    fn note_seen(&self, key: &PublicKey) -> Option<KeyChanged> {
        let k = (key.name.clone(), key.id());
        if !self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k)
        {
            return None;
        }
        self.store.note_seen(&key.name, key.id()).ok().flatten()
    }

    /// Opens `d` if it is signed or encrypted (a plain one is returned as it is).
    pub fn open(&self, d: Delivery) -> Opening {
        let mut opening = Opening {
            delivery: d,
            missing_key: None,
            sealed: None,
            changed: None,
        };
        if !opening.delivery.is_sealed() {
            return opening;
        }
        let mut d = opening.delivery.clone();
        let mine: Vec<&SecretKey> = self.secrets.iter().collect();
        let lookup = |n: &KeyName, id| self.lookup(n, id);
        let opened = match open(&d.message, &mine, &lookup) {
            Ok(o) => o,
            Err(e) => {
                let (unreadable, verify) = match e {
                    EnvelopeError::NotARecipient => (
                        Unreadable::NotForYou,
                        Verify::Unverified {
                            from: None,
                            why: "encrypted to someone else".into(),
                        },
                    ),
                    EnvelopeError::Tampered => (
                        Unreadable::Tampered,
                        Verify::Forged {
                            claimed: None,
                            why: e.to_string(),
                        },
                    ),
                    other => (
                        Unreadable::Malformed(other.to_string()),
                        Verify::Unverified {
                            from: None,
                            why: other.to_string(),
                        },
                    ),
                };
                d.unreadable = Some(unreadable);
                d.verify = verify;
                opening.delivery = d;
                return opening;
            }
        };
        d.encrypted = opened.encrypted;
        d.payload = Payload::Plain(opened.fragments);
        let now = Timestamp::now();
        d.verify = match (opened.signature, opened.signer, opened.signer_key) {
            (SigState::None, _, _) => Verify::Anonymous,
            (SigState::Invalid, claimed, _) => Verify::Forged {
                claimed: claimed.map(|(n, _)| n),
                why:
                    "the signature does not verify: the message was altered, re-addressed or forged"
                        .into(),
            },
            (SigState::UnknownKey, Some((name, id)), _) => {
                opening.missing_key = Some((name.clone(), id));
                Verify::Unverified {
                    why: format!("the key of {name} (id {id}) is not known here"),
                    from: Some(name),
                }
            }
            (SigState::Valid, Some((name, _)), Some(key)) => {
                opening.changed = self.note_seen(&key);
                match self.trust_of(&key, now) {
                    Trust::Verified { .. } => Verify::Verified { from: name },
                    Trust::Unverified { why } => Verify::Unverified {
                        from: Some(name),
                        why,
                    },
                    t @ (Trust::Expired { .. } | Trust::BadSignature { .. }) => Verify::Forged {
                        claimed: Some(name),
                        why: format!("signed with a key that cannot be used: {t}"),
                    },
                }
            }
            (_, signer, _) => Verify::Unverified {
                from: signer.map(|(n, _)| n),
                why: "the signature could not be checked".into(),
            },
        };
        let arrived = std::mem::replace(&mut opening.delivery, d);
        if opening.missing_key.is_some() {
            opening.sealed = Some(arrived);
        }
        opening
    }
}
