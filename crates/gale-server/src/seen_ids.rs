//! The bounded cache of recently seen message ids that stops a message from being
//! routed twice: when links form a cycle, or a client re-sends after a reconnect.
//!
//! It is an 8-way set-associative table with twice `capacity` slots. A keyed 64-bit
//! hash of the id picks a set of eight slots and is what the slot keeps (its
//! fingerprint): a set's fingerprints fill one 64-byte cache line and where they
//! came from a second, so a check costs at most two cache misses whatever the
//! table's size, and the oldest of the eight is replaced. Clients choose ids, but
//! the hash key is random per process, so they cannot aim ids at one set. An id is
//! forgotten after roughly `capacity` newer ones (earlier only if eight newer ones
//! hash to its set: for 10,000 ids in a 65,536 cache, about one chance in a hundred
//! million). Two different ids are mistaken for one only if they agree on 64 hash
//! bits within one set: about one chance in 10^15 per message.

use gale_proto::MessageId;

const WAYS: usize = 8;

/// One set's fingerprints (0: empty), in one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Fingerprints([u64; WAYS]);

/// Where each of a set's ids came from (the low 32 bits of the owner id), and
/// which slot is the oldest.
#[derive(Debug, Clone, Copy, Default)]
struct Sources {
    from: [u32; WAYS],
    next: u8,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SeenIds {
    fingerprints: Vec<Fingerprints>,
    sources: Vec<Sources>,
    mask: usize,
    hasher: ahash::RandomState,
}

impl SeenIds {
    pub fn new(capacity: usize) -> SeenIds {
        let sets = (2 * capacity.max(1) / WAYS).max(1).next_power_of_two();
        SeenIds {
            // Zeroed allocations: pages are only touched once used.
            fingerprints: vec![Fingerprints::default(); sets],
            sources: vec![Sources::default(); sets],
            mask: sets - 1,
            hasher: ahash::RandomState::new(),
        }
    }

    /// Records `id` as arriving from `source`. Returns the first source (the low
    /// 32 bits of its owner id) if the id was already seen.
    pub fn check(&mut self, id: MessageId, source: u64) -> Option<u32> {
        let h = self.hasher.hash_one(id.0);
        let set = h as usize & self.mask;
        let fp = h | 1;
        let slots = &mut self.fingerprints[set].0;
        if let Some(w) = slots.iter().position(|&x| x == fp) {
            return Some(self.sources[set].from[w]);
        }
        let meta = &mut self.sources[set];
        let w = usize::from(meta.next) % WAYS;
        meta.next = meta.next.wrapping_add(1);
        slots[w] = fp;
        meta.from[w] = source as u32;
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
        assert_eq!(std::mem::size_of::<Fingerprints>(), 64, "one cache line");
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
