//! Messages held back while their signer's key is discovered (gsub): a message
//! signed by a key not known here waits for the lookup of that key, then is
//! opened again and shown, verified if the key was found, instead of being shown
//! at once as unverified. Other messages are not held up. Lookups are per key
//! (name and id): a new key of a name looked up a minute ago is looked up at once,
//! so a running gsub learns it without a restart.
//!
//! Only the bookkeeping lives here (no I/O, no clock: callers pass `now`); gsub
//! runs the lookups ([`crate::discovery::Discovery`]) and re-opens what
//! [`HeldMessages::finish`] hands back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gale_client::Delivery;
use gale_keys::{KeyId, KeyName};

/// After a lookup of a signer's key ended, messages signed by that key are shown
/// at once (unverified if it is still unknown) for this long, not held again.
pub const RETRY_LOOKUP: Duration = Duration::from_secs(300);

/// What to do with a message whose signer's key is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held, and it is the first for this signer: start a lookup of the key.
    StartLookup,
    /// Held behind a lookup already running.
    Queued,
    /// Not held: that key was looked up recently; show the message now.
    Show,
}

/// A signer's key: its name and id.
type Signer = (KeyName, KeyId);

/// Messages waiting for a signer's key, and when each key was last looked up.
#[derive(Debug, Default)]
pub struct HeldMessages {
    waiting: HashMap<Signer, Vec<Delivery>>,
    looked_up: HashMap<Signer, Instant>,
}

impl HeldMessages {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no message waits for a key.
    pub fn is_empty(&self) -> bool {
        self.waiting.values().all(|v| v.is_empty())
    }

    /// Holds `sealed` (the message as it arrived) until the lookup of `signer`'s
    /// key `id` ends, unless that key was looked up within [`RETRY_LOOKUP`].
    pub fn hold(&mut self, signer: &KeyName, id: KeyId, sealed: &Delivery, now: Instant) -> Hold {
        let key = (signer.clone(), id);
        if self
            .looked_up
            .get(&key)
            .is_some_and(|&t| now.saturating_duration_since(t) < RETRY_LOOKUP)
        {
            return Hold::Show;
        }
        let queue = self.waiting.entry(key).or_default();
        queue.push(sealed.clone());
        if queue.len() == 1 {
            Hold::StartLookup
        } else {
            Hold::Queued
        }
    }

    /// True while messages wait for `signer`'s key `id`.
    pub fn is_waiting(&self, signer: &KeyName, id: KeyId) -> bool {
        self.waiting.contains_key(&(signer.clone(), id))
    }

    /// The lookup of `signer`'s key `id` ended (found or not): the messages that
    /// waited for it, in arrival order, to open again and show.
    pub fn finish(&mut self, signer: &KeyName, id: KeyId, now: Instant) -> Vec<Delivery> {
        let key = (signer.clone(), id);
        self.looked_up.insert(key.clone(), now);
        self.waiting.remove(&key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_proto::{Fragments, Location, Message, Payload};

    fn name(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    const K1: KeyId = KeyId([1; 8]);
    const K2: KeyId = KeyId([2; 8]);

    fn delivery(body: &str) -> Delivery {
        let mut f = Fragments::new();
        f.push_text("message.body", body);
        let to = vec![Location::parse("a@x.org").unwrap()];
        Delivery::open(Message::new(to, Payload::Plain(f).encode().unwrap())).unwrap()
    }

    #[test]
    fn first_message_starts_a_lookup_the_rest_queue_behind_it() {
        let mut held = HeldMessages::new();
        let (bob, carol) = (name("bob@x.org"), name("carol@x.org"));
        let t = Instant::now();
        let (m1, m2, m3) = (delivery("1"), delivery("2"), delivery("3"));
        assert_eq!(held.hold(&bob, K1, &m1, t), Hold::StartLookup);
        assert_eq!(held.hold(&bob, K1, &m2, t), Hold::Queued);
        assert_eq!(held.hold(&carol, K1, &m3, t), Hold::StartLookup);
        assert!(held.is_waiting(&bob, K1) && held.is_waiting(&carol, K1));
        assert_eq!(held.finish(&bob, K1, t), vec![m1, m2]);
        assert!(!held.is_waiting(&bob, K1));
        assert!(held.is_waiting(&carol, K1));
        // A lookup that ends with nothing waiting hands back nothing.
        assert!(held.finish(&name("dave@x.org"), K1, t).is_empty());
    }

    #[test]
    fn a_name_looked_up_recently_is_not_held_again() {
        let mut held = HeldMessages::new();
        let bob = name("bob@x.org");
        let t = Instant::now();
        assert_eq!(held.hold(&bob, K1, &delivery("1"), t), Hold::StartLookup);
        held.finish(&bob, K1, t);
        let soon = t + RETRY_LOOKUP - Duration::from_secs(1);
        assert_eq!(held.hold(&bob, K1, &delivery("2"), soon), Hold::Show);
        assert!(!held.is_waiting(&bob, K1));
        let later = t + RETRY_LOOKUP;
        assert_eq!(
            held.hold(&bob, K1, &delivery("3"), later),
            Hold::StartLookup
        );
    }

    #[test]
    fn a_new_key_of_a_name_looked_up_recently_is_looked_up() {
        // bob made a new key: a running gsub must learn it, not show bob's new
        // messages as unverified until it is restarted.
        let mut held = HeldMessages::new();
        let bob = name("bob@x.org");
        let t = Instant::now();
        assert_eq!(
            held.hold(&bob, K1, &delivery("old key"), t),
            Hold::StartLookup
        );
        held.finish(&bob, K1, t);
        let soon = t + Duration::from_secs(1);
        assert_eq!(
            held.hold(&bob, K2, &delivery("new key"), soon),
            Hold::StartLookup
        );
    }
}
