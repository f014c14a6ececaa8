//! The bounded cache of recently seen message ids that stops a message from being
//! routed twice: when links form a cycle, or a client re-sends after a reconnect.
//!
//! It is an 8-way set-associative table with twice `capacity` slots: a keyed hash
//! of the id picks a set of eight slots (two cache lines of ids), so a check costs
//! one or two cache misses instead of a hash map's several, and the oldest of the
//! eight is replaced. Clients choose ids, but the hash key is random
//! per process, so they cannot aim ids at one set. An id is forgotten after roughly
//! `capacity` newer ones (earlier only if eight newer ones hash to its set: for 10,000
//! ids in a 65,536 cache, about one chance in a hundred million).

use gale_proto::MessageId;

const WAYS: usize = 8;

/// See the module documentation.
#[derive(Debug)]
pub struct SeenIds {
    ids: Vec<[[u8; 16]; WAYS]>,
    /// Where each id came from; 0 marks an empty slot (owner ids start at 1).
    sources: Vec<[u64; WAYS]>,
    next: Vec<u8>,
    mask: usize,
    hasher: ahash::RandomState,
}

impl SeenIds {
    pub fn new(capacity: usize) -> SeenIds {
        let sets = (2 * capacity.max(1) / WAYS).max(1).next_power_of_two();
        SeenIds {
            // Zeroed allocations: pages are only touched once used.
            ids: vec![[[0; 16]; WAYS]; sets],
            sources: vec![[0; WAYS]; sets],
            next: vec![0; sets],
            mask: sets - 1,
            hasher: ahash::RandomState::new(),
        }
    }

    /// Records `id` as arriving from `source` (non-zero). Returns the first
    /// source if the id was already seen.
    pub fn check(&mut self, id: MessageId, source: u64) -> Option<u64> {
        let set = self.hasher.hash_one(id.0) as usize & self.mask;
        let (ids, sources) = (&mut self.ids[set], &mut self.sources[set]);
        for w in 0..WAYS {
            if sources[w] != 0 && ids[w] == id.0 {
                return Some(sources[w]);
            }
        }
        let w = usize::from(self.next[set]) % WAYS;
        self.next[set] = self.next[set].wrapping_add(1);
        ids[w] = id.0;
        sources[w] = source.max(1);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let mut s = SeenIds::new(4); // one set of eight
        let id = |n: u8| MessageId([n; 16]);
        assert_eq!(s.check(id(1), 7), None);
        assert_eq!(s.check(id(1), 8), Some(7));
        for n in 2..=8 {
            assert_eq!(s.check(id(n), 8), None);
        }
        assert_eq!(s.check(id(1), 9), Some(7), "still held: eight slots");
        assert_eq!(s.check(id(9), 8), None);
        assert_eq!(s.check(id(1), 9), None, "the oldest was replaced");
        assert_eq!(
            s.check(MessageId([0; 16]), 3),
            None,
            "the all-zero id is an id too"
        );
        assert_eq!(s.check(MessageId([0; 16]), 4), Some(3));
    }

    #[test]
    fn large_windows_hold_recent_ids() {
        let mut s = SeenIds::new(65_536);
        let ids: Vec<MessageId> = (0..10_000).map(|_| MessageId::generate()).collect();
        for id in &ids {
            assert_eq!(s.check(*id, 1), None);
        }
        let remembered = ids.iter().filter(|id| s.check(**id, 2).is_some()).count();
        assert!(
            remembered >= 9_999,
            "{remembered} of 10000 recent ids remembered"
        );
    }
}
