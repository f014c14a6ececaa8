//! The bounded cache of recently seen message ids that stops a message from being
//! routed twice: when links form a cycle, or a client re-sends after a reconnect.

use std::collections::{HashMap, VecDeque};

use gale_proto::MessageId;

/// Remembers the last `capacity` ids and where each came from.
#[derive(Debug)]
pub struct SeenIds {
    from: HashMap<MessageId, u64>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl SeenIds {
    pub fn new(capacity: usize) -> SeenIds {
        SeenIds {
            from: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id` as arriving from `source`. Returns the first source if the id
    /// was already seen.
    pub fn check(&mut self, id: MessageId, source: u64) -> Option<u64> {
        if let Some(first) = self.from.get(&id) {
            return Some(*first);
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.from.remove(&old);
            }
        }
        self.order.push_back(id);
        self.from.insert(id, source);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let mut s = SeenIds::new(2);
        let (a, b, c) = (MessageId([1; 16]), MessageId([2; 16]), MessageId([3; 16]));
        assert_eq!(s.check(a, 7), None);
        assert_eq!(s.check(a, 8), Some(7));
        assert_eq!(s.check(b, 8), None);
        assert_eq!(s.check(c, 8), None);
        assert_eq!(s.check(a, 9), None, "a was evicted");
    }
}
