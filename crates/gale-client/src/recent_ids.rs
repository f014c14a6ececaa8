//! A bounded set of recently seen message ids, so a message that arrives twice (a
//! resend after a reconnect, a redundant path) is shown once.

use std::collections::{HashSet, VecDeque};

use gale_proto::MessageId;

/// How many ids a client remembers by default.
pub const DEFAULT_DEDUP_CAPACITY: usize = 65_536;

/// The last `capacity` distinct ids seen; the oldest is forgotten first.
#[derive(Debug)]
pub struct RecentIds {
    set: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        RecentIds {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; true if it was not among the remembered ids.
    pub fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 16])
    }

    #[test]
    fn drops_repeats_and_forgets_oldest() {
        let mut r = RecentIds::new(3);
        assert!(r.insert(id(1)));
        assert!(!r.insert(id(1)));
        assert!(r.insert(id(2)));
        assert!(r.insert(id(3)));
        assert!(!r.insert(id(2)));
        assert!(r.insert(id(4))); // forgets 1
        assert_eq!(r.len(), 3);
        assert!(r.insert(id(1)));
        assert!(!r.insert(id(4)));
    }
}
