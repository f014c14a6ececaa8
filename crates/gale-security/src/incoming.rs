//! Opening received messages: decrypting with the user's secret keys, checking
//! signatures, and deciding how far the sender is known ([`Verify`]).
//!
//! Rules (docs/security.md §12.5):
//! - a valid signature by a key whose chain reaches a trust anchor is *verified*;
//! - a valid signature by any other usable key, or a signature by a key not known
//!   here, is *unverified* (with the claimed signer), unless the claimed signer
//!   has a verified key here and the message is signed by another key: that is a
//!   key mismatch, shown as *forged*;
//! - a signature that does not verify, a signer key that is expired or badly
//!   signed, or an encrypted message that was altered is *forged*;
//! - a plain payload is *anonymous*; an encrypted message to nobody we hold a key
//!   for is [`Unreadable::NotForYou`].
//!
//! A message may carry its signer's key (gsend puts it inside encrypted
//! messages): the signature is then checked without asking for the key over Gale
//! in clear, which would tell the server who wrote to whom, and the key is kept
//! as one learned from the network ([`KeyStore::learn`]). A key change for a
//! known name is reported once, with the first message signed by the new key
//! ([`Opening::changed`], [`Delivery::key_changed`]), however it was learned.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gale_keys::{
    open, EnvelopeError, KeyChanged, KeyId, KeyName, KeyStore, Learned, PublicKey, SecretKey,
    SigState, StoreError, Trust,
};
use gale_proto::{Payload, Timestamp};

use gale_client::{Delivery, Unreadable, Verify};

use crate::discovery::Outcome;

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

/// A store error as one line: the error and its cause.
fn describe(e: &StoreError) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e} ({source})"),
        None => e.to_string(),
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
    /// loudly (also in `delivery.key_changed`).
    pub changed: Option<KeyChanged>,
    /// Problems to tell the user, one line each: a key file that cannot be used,
    /// a key that cannot be stored.
    pub warnings: Vec<String>,
}

/// Opens deliveries with the user's keys; cheap to share between tasks.
#[derive(Debug)]
pub struct Opener {
    store: KeyStore,
    secrets: Vec<SecretKey>,
    trust: KeyCache<Trust>,
    /// Keys looked up in the store (or found missing, or unusable).
    keys: KeyCache<Result<Option<PublicKey>, String>>,
    /// The verified keys of a name other than a given id.
    verified: KeyCache<Result<Vec<KeyId>, String>>,
    seen: Mutex<HashSet<(KeyName, KeyId)>>,
    /// Key changes recorded while learning a key (by discovery, or from a
    /// message), to be reported with the first message signed by the new key.
    changes: Mutex<HashMap<(KeyName, KeyId), KeyChanged>>,
}

impl Opener {
    /// An opener with every secret key the user holds; a secret key file that
    /// cannot be used is an error.
    pub fn new(store: KeyStore) -> Result<Opener, StoreError> {
        let secrets = store.secrets()?;
        Ok(Opener {
            store,
            secrets,
            trust: KeyCache::new(),
            keys: KeyCache::new(),
            verified: KeyCache::new(),
            seen: Mutex::new(HashSet::new()),
            changes: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Forgets what was worked out about `name` (after its key was learned).
    pub fn forget(&self, name: &KeyName) {
        self.trust.forget(name);
        self.keys.forget(name);
        self.verified.forget(name);
    }

    /// Takes in what a key discovery found: forgets what was worked out about
    /// those names, and keeps each key change to report with the first message
    /// signed by the new key. Returns the warnings to show now (keys offered and
    /// not used).
    pub fn learned(&self, outcomes: &HashMap<KeyName, Outcome>) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, outcome) in outcomes {
            self.forget(name);
            if let Outcome::Found {
                changed: Some(c), ..
            } = outcome
            {
                self.pending_change(c.clone());
            }
            warnings.extend(outcome.warning(name));
        }
        warnings
    }

    fn pending_change(&self, c: KeyChanged) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((c.name.clone(), c.new), c);
    }

    /// The store's key `name` with id `id`, remembered for [`TRUST_CACHE_TTL`]:
    /// reading the key files for every message would cost more than checking its
    /// signature.
    fn lookup(&self, name: &KeyName, id: KeyId) -> Result<Option<PublicKey>, String> {
        self.keys.get_or(name, id, || {
            self.store.lookup(name, id).map_err(|e| describe(&e))
        })
    }

    fn trust_of(&self, key: &PublicKey, now: Timestamp) -> Trust {
        self.trust
            .get_or(&key.name, key.id(), || self.store.verify(key, now))
    }

    /// The change to report for a valid signature by `key`, once.
    fn note_seen(&self, key: &PublicKey, warnings: &mut Vec<String>) -> Option<KeyChanged> {
        let k = (key.name.clone(), key.id());
        if !self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.clone())
        {
            return None;
        }
        let recorded = self
            .store
            .note_seen(&key.name, key.id())
            .unwrap_or_else(|e| {
                warnings.push(describe(&e));
                None
            });
        let pending = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
        recorded.or(pending)
    }

    /// If `name` has a verified key here other than `id`, the verdict for a
    /// message that claims `name` but is signed by `id`: forged, a key mismatch.
    fn mismatch(
        &self,
        name: &KeyName,
        id: KeyId,
        now: Timestamp,
        warnings: &mut Vec<String>,
    ) -> Option<Verify> {
        let others = self.verified.get_or(name, id, || {
            self.store
                .verified_ids_besides(name, id, now)
                .map_err(|e| describe(&e))
        });
        let verified = match others {
            Ok(ids) => *ids.first()?,
            Err(e) => {
                warnings.push(e);
                return None;
            }
        };
        Some(Verify::Forged {
            claimed: Some(name.clone()),
            why: format!(
                "signed with key {id}, not with {name}'s verified key {verified}: someone else is \
                 using the name (or {name} made a new key that is not signed yet)"
            ),
        })
    }

    /// Keeps a key that came with a message, as one learned from the network.
    fn keep_carried(&self, key: &PublicKey, now: Timestamp, warnings: &mut Vec<String>) {
        match self.store.learn(key, now) {
            Ok(Learned::Stored(done)) => {
                self.forget(&key.name);
                if let Some(c) = done.changed {
                    self.pending_change(c);
                }
            }
            // A mismatch: the verdict says so.
            Ok(Learned::Refused { .. }) => {}
            Err(e) => warnings.push(format!(
                "cannot keep the key of {} that came with a message: {}",
                key.name,
                describe(&e)
            )),
        }
    }

    /// Opens `d` if it is signed or encrypted (a plain one is returned as it is).
    pub fn open(&self, d: Delivery) -> Opening {
        let mut opening = Opening {
            delivery: d,
            missing_key: None,
            sealed: None,
            changed: None,
            warnings: Vec::new(),
        };
        if !opening.delivery.is_sealed() {
            return opening;
        }
        if let Payload::Sealed {
            kind: gale_orig::convert::KIND_ORIGINAL,
            raw,
        } = &opening.delivery.payload
        {
            let raw = raw.clone();
            original(&mut opening.delivery, &raw);
            return opening;
        }
        let mut d = opening.delivery.clone();
        let mine: Vec<&SecretKey> = self.secrets.iter().collect();
        let unusable = RefCell::new(None);
        let lookup = |n: &KeyName, id| {
            self.lookup(n, id).unwrap_or_else(|e| {
                unusable.replace(Some(e));
                None
            })
        };
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
        let warnings = &mut opening.warnings;
        d.verify = match (opened.signature, opened.signer, opened.signer_key) {
            (SigState::None, _, _) => Verify::Anonymous,
            (SigState::Invalid, claimed, _) => Verify::Forged {
                claimed: claimed.map(|(n, _)| n),
                why:
                    "the signature does not verify: the message was altered, re-addressed or forged"
                        .into(),
            },
            (SigState::UnknownKey, Some((name, id)), _) => match unusable.take() {
                Some(problem) => {
                    warnings.push(problem.clone());
                    Verify::Unverified {
                        why: format!("cannot check the signature: {problem}"),
                        from: Some(name),
                    }
                }
                None => {
                    opening.missing_key = Some((name.clone(), id));
                    self.mismatch(&name, id, now, warnings)
                        .unwrap_or_else(|| Verify::Unverified {
                            why: format!("the key of {name} (id {id}) is not known here"),
                            from: Some(name),
                        })
                }
            },
            (SigState::Valid, Some((name, id)), Some(key)) => {
                let trust = self.trust_of(&key, now);
                if opened.key_from_message
                    && matches!(trust, Trust::Verified { .. } | Trust::Unverified { .. })
                {
                    self.keep_carried(&key, now, warnings);
                }
                match trust {
                    Trust::Verified { .. } => {
                        opening.changed = self.note_seen(&key, warnings);
                        Verify::Verified { from: name }
                    }
                    Trust::Unverified { why } => match self.mismatch(&name, id, now, warnings) {
                        Some(forged) => forged,
                        None => {
                            opening.changed = self.note_seen(&key, warnings);
                            Verify::Unverified {
                                from: Some(name),
                                why,
                            }
                        }
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
        d.key_changed = opening.changed.clone().map(Box::new);
        let arrived = std::mem::replace(&mut opening.delivery, d);
        if opening.missing_key.is_some() {
            opening.sealed = Some(arrived);
        }
        opening
    }
}

/// A message from a client of the original Gale (docs/security.md §14): its
/// fragments are shown, but never as verified: an original signature is RSA/MD5
/// by a key outside our trust, which this client does not check.
fn original(d: &mut Delivery, content: &[u8]) {
    use gale_orig::convert::{describe, Security};
    match describe(content) {
        Ok(o) => {
            d.verify = match o.security {
                Security::Unsigned => Verify::Anonymous,
                Security::OriginalSignature { key } => Verify::Unverified {
                    from: key.as_deref().and_then(|k| KeyName::parse(k).ok()),
                    why: "signed with an original Gale (RSA) key, which this client cannot verify"
                        .into(),
                },
                Security::OriginalEncryption { recipients } => {
                    d.encrypted = true;
                    d.unreadable = Some(Unreadable::NotForYou);
                    d.verify = Verify::Unverified {
                        from: None,
                        why: format!(
                            "encrypted by an original Gale client to {}: this client cannot read it",
                            recipients.join(", ")
                        ),
                    };
                    return;
                }
            };
            let mut f = o.fragments;
            // An original puff's id is a hash, not a time: without its own
            // time, it is shown with the time it arrived.
            if f.time(gale_proto::names::ID_TIME).is_none() {
                f.push(
                    gale_proto::names::ID_TIME,
                    gale_proto::Value::Time(Timestamp::now()),
                );
            }
            d.payload = Payload::Plain(f);
        }
        Err(e) => {
            d.unreadable = Some(Unreadable::Malformed(e.to_string()));
            d.verify = Verify::Unverified {
                from: None,
                why: e.to_string(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_keys::Dir;
    use gale_proto::{Fragments, Location};

    fn name(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    /// A store that trusts `x.org`, and alice's key signed by it (in the cache).
    fn trusting_store() -> (tempfile::TempDir, KeyStore, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let domain = crate::test_key("x.org");
        store
            .write_public(Dir::Trusted, domain.public(), false)
            .unwrap();
        let mut alice = crate::test_key("alice@x.org");
        let mut public = alice.public().clone();
        domain.sign_key(&mut public).unwrap();
        alice.merge_signatures(&public).unwrap();
        store.write_public(Dir::Cache, &public, false).unwrap();
        (dir, store, alice)
    }

    fn signed_by(key: &SecretKey, body: &str) -> Delivery {
        let mut f = Fragments::new();
        f.push_text("message.body", body);
        let to = vec![Location::parse("pub.x@x.org").unwrap()];
        Delivery::open(crate::outgoing::signed(to, &f, key)).unwrap()
    }

    fn forged_claiming_alice(o: &Opening) -> bool {
        matches!(&o.delivery.verify,
            Verify::Forged { claimed: Some(n), .. } if n.as_str() == "alice@x.org")
    }

    #[test]
    fn another_key_claiming_a_verified_name_is_forged_not_unverified() {
        let (_d, store, alice) = trusting_store();
        let opener = Opener::new(store.clone()).unwrap();
        let o = opener.open(signed_by(&alice, "real"));
        assert!(
            matches!(o.delivery.verify, Verify::Verified { .. }),
            "{:?}",
            o.delivery.verify
        );

        // A self-made key named alice, unknown here: forged, though it is still
        // looked up (alice may have a new key, signed).
        let impostor = crate::test_key("alice@x.org");
        let o = opener.open(signed_by(&impostor, "fake"));
        assert!(forged_claiming_alice(&o), "{:?}", o.delivery.verify);
        assert_eq!(o.missing_key, Some((name("alice@x.org"), impostor.id())));

        // alice's real message with one byte of the key id flipped.
        let d = signed_by(&alice, "altered");
        let mut p = d.message.payload.to_vec();
        p[1 + 2 + "alice@x.org".len()] ^= 1;
        let mut m = d.message;
        m.payload = p.into();
        let o = opener.open(Delivery::open(m).unwrap());
        assert!(forged_claiming_alice(&o), "{:?}", o.delivery.verify);

        // The impostor's key in the store beside alice's verified one: forged,
        // and never recorded as a key alice had.
        let path = store.public_path(Dir::Local, &name("alice@x.org"), false);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, impostor.public().encode()).unwrap();
        let opener = Opener::new(store.clone()).unwrap();
        let o = opener.open(signed_by(&impostor, "fake"));
        assert!(forged_claiming_alice(&o), "{:?}", o.delivery.verify);
        assert!(o.changed.is_none());
        let seen = store.seen_ids(&name("alice@x.org")).unwrap();
        assert!(!seen.contains(&impostor.id()), "{seen:?}");
    }

    #[test]
    fn a_key_change_learned_by_discovery_is_reported_with_the_first_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let (old, new) = (
            crate::test_key("alice@x.org"),
            crate::test_key("alice@x.org"),
        );
        store.write_public(Dir::Cache, old.public(), false).unwrap();
        let opener = Opener::new(store.clone()).unwrap();
        assert!(opener.open(signed_by(&old, "old key")).changed.is_none());
        // A discovery stores alice's new key, recording the change.
        let done = store.import(new.public(), Dir::Cache).unwrap();
        let outcomes = HashMap::from([(
            name("alice@x.org"),
            Outcome::Found {
                key: Box::new(new.public().clone()),
                trust: Trust::Unverified {
                    why: "unsigned".into(),
                },
                changed: done.changed,
                others: Vec::new(),
            },
        )]);
        assert!(opener.learned(&outcomes).is_empty());
        let o = opener.open(signed_by(&new, "new key"));
        let c = o.changed.clone().expect("reported");
        assert_eq!((c.old.clone(), c.new), (vec![old.id()], new.id()));
        assert_eq!(o.delivery.key_changed, Some(Box::new(c)));
        // Once.
        assert!(opener.open(signed_by(&new, "again")).changed.is_none());
    }

    #[test]
    fn a_key_carried_by_an_encrypted_message_needs_no_lookup_and_is_kept() {
        let (_d, store, _alice) = trusting_store();
        let bob = crate::test_key("bob@x.org");
        store.write_secret(&bob, false).unwrap();
        let carol = crate::test_key("carol@x.org");
        let mut f = Fragments::new();
        f.push_text("message.body", "hi");
        let to = vec![Location::parse("bob@x.org").unwrap()];
        let enc = crate::outgoing::Decision::Encrypt(vec![bob.public().clone()]);
        let m = crate::outgoing::build(to, &f, Some(&carol), &enc).unwrap();
        let opener = Opener::new(store.clone()).unwrap();
        let o = opener.open(Delivery::open(m).unwrap());
        assert!(o.missing_key.is_none(), "nothing to ask for over Gale");
        assert!(
            matches!(&o.delivery.verify, Verify::Unverified { from: Some(n), .. } if n.as_str() == "carol@x.org"),
            "{:?}",
            o.delivery.verify
        );
        let f = o.delivery.fragments().unwrap();
        assert!(f.get(gale_keys::envelope::SIGNER_KEY).is_none());
        assert!(
            store.lookup(carol.name(), carol.id()).unwrap().is_some(),
            "kept"
        );
    }

    #[test]
    fn a_damaged_key_file_of_the_signer_is_reported() {
        let (_d, store, alice) = trusting_store();
        let path = store.public_path(Dir::Cache, &name("alice@x.org"), false);
        std::fs::write(&path, b"GALEKEY\x01garbage").unwrap();
        let opener = Opener::new(store).unwrap();
        let o = opener.open(signed_by(&alice, "hi"));
        assert!(o.missing_key.is_none(), "not looked up over a damaged file");
        assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);
        assert!(
            o.warnings[0].contains(&path.display().to_string()),
            "{:?}",
            o.warnings
        );
        assert!(matches!(o.delivery.verify, Verify::Unverified { .. }));
    }
}
