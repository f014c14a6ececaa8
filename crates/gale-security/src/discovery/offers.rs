//! Choosing among the keys offered for one name: pure bookkeeping, no I/O; the
//! caller passes the time.
//!
//! A key whose chain verifies beats one that does not; among equals, the key
//! wanted (the one a message was signed with) beats another, and then the first
//! offered. The name is settled at once by a verified answer with the wanted key
//! (or any verified answer when no key is wanted); otherwise discovery waits up
//! to [`VERIFIED_GRACE`] after the first offer for a better one: a person's second
//! machine with an unsigned key of its own, or an impostor, may answer before
//! the owner's signed key arrives.

use std::time::Duration;

use gale_keys::{KeyId, PublicKey, Trust};
use tokio::time::Instant;

/// How long after the first acceptable answer for a name discovery waits for a
/// better one (a verified key, or the wanted one).
pub const VERIFIED_GRACE: Duration = Duration::from_millis(500);

/// The keys offered so far for one name.
#[derive(Debug)]
pub(super) struct Offers {
    want: Option<KeyId>,
    best: Option<(Box<PublicKey>, Trust)>,
    /// Ids of other keys offered, not (or no longer) the best.
    others: Vec<KeyId>,
    first_at: Option<Instant>,
}

impl Offers {
    pub fn new(want: Option<KeyId>) -> Offers {
        Offers {
            want,
            best: None,
            others: Vec::new(),
            first_at: None,
        }
    }

    fn rank(&self, key: &PublicKey, trust: &Trust) -> (bool, bool) {
        (trust.is_verified(), self.want == Some(key.id()))
    }

    /// Another acceptable answer, at `now`.
    pub fn offer(&mut self, key: Box<PublicKey>, trust: Trust, now: Instant) {
        self.first_at.get_or_insert(now);
        let better = match &self.best {
            None => true,
            Some((b, bt)) => self.rank(&key, &trust) > self.rank(b, bt),
        };
        let (loser, winner) = if better {
            (self.best.take(), (key, trust))
        } else {
            (
                Some((key, trust)),
                self.best.take().expect("not better than nothing"),
            )
        };
        if let Some((l, _)) = loser {
            if l.id() != winner.0.id() && !self.others.contains(&l.id()) {
                self.others.push(l.id());
            }
        }
        self.others.retain(|&i| i != winner.0.id());
        self.best = Some(winner);
    }

    /// Nothing better can come: the best verifies and is the key wanted.
    fn final_answer(&self) -> bool {
        self.best
            .as_ref()
            .is_some_and(|(k, t)| t.is_verified() && self.want.is_none_or(|w| w == k.id()))
    }

    /// When this name stops waiting for a better answer, if it has any.
    pub fn settles_at(&self) -> Option<Instant> {
        let first = self.first_at?;
        Some(if self.final_answer() {
            first
        } else {
            first + VERIFIED_GRACE
        })
    }

    /// True once the name can be settled at `now`.
    pub fn settled(&self, now: Instant) -> bool {
        self.settles_at().is_some_and(|t| t <= now)
    }

    /// The chosen key, its trust, and the ids of the other keys offered.
    pub fn into_best(self) -> Option<(Box<PublicKey>, Trust, Vec<KeyId>)> {
        let (k, t) = self.best?;
        Some((k, t, self.others))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: &str) -> Box<PublicKey> {
        Box::new(crate::test_key(seed).public().clone())
    }

    fn verified() -> Trust {
        Trust::Verified {
            anchor: gale_keys::KeyName::parse("x.org").unwrap(),
        }
    }

    fn unverified() -> Trust {
        Trust::Unverified {
            why: "unsigned".into(),
        }
    }

    #[test]
    fn an_unverified_answer_waits_for_a_verified_one() {
        let t = Instant::now();
        let (stranger, owner) = (key("a@x.org"), key("a@x.org"));
        let mut o = Offers::new(None);
        o.offer(stranger.clone(), unverified(), t);
        assert!(!o.settled(t));
        assert_eq!(o.settles_at(), Some(t + VERIFIED_GRACE));
        o.offer(owner.clone(), verified(), t + VERIFIED_GRACE / 2);
        assert!(
            o.settled(t + VERIFIED_GRACE / 2),
            "a verified key ends the wait"
        );
        let (k, trust, others) = o.into_best().unwrap();
        assert_eq!(k.id(), owner.id());
        assert!(trust.is_verified());
        assert_eq!(others, [stranger.id()]);
    }

    #[test]
    fn a_verified_answer_is_not_displaced_and_alone_is_taken_after_the_grace() {
        let t = Instant::now();
        let (owner, stranger) = (key("a@x.org"), key("a@x.org"));
        let mut o = Offers::new(None);
        o.offer(owner.clone(), verified(), t);
        o.offer(stranger.clone(), unverified(), t);
        assert_eq!(o.into_best().unwrap().0.id(), owner.id());

        let mut alone = Offers::new(None);
        alone.offer(stranger.clone(), unverified(), t);
        assert!(!alone.settled(t + VERIFIED_GRACE / 2));
        assert!(alone.settled(t + VERIFIED_GRACE));
        let (k, _, others) = alone.into_best().unwrap();
        assert_eq!(k.id(), stranger.id());
        assert!(others.is_empty());
    }

    #[test]
    fn the_wanted_key_wins_among_equals() {
        let t = Instant::now();
        let (first, wanted) = (key("a@x.org"), key("a@x.org"));
        let mut o = Offers::new(Some(wanted.id()));
        o.offer(first.clone(), unverified(), t);
        o.offer(wanted.clone(), unverified(), t);
        assert!(!o.settled(t), "neither verifies: wait for one that does");
        assert_eq!(o.into_best().unwrap().0.id(), wanted.id());
        // A verified key beats the wanted one that is not.
        let mut o = Offers::new(Some(wanted.id()));
        o.offer(wanted.clone(), unverified(), t);
        o.offer(first.clone(), verified(), t);
        assert!(!o.settled(t), "still hoping for the wanted key, verified");
        assert_eq!(o.into_best().unwrap().0.id(), first.id());
    }
}
