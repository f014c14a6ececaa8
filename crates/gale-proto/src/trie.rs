//! A trie of subscriptions, keyed by domain and then by local-part segment.
//!
//! Matching a location walks one node per segment and looks only at the entries on
//! that path, so its cost depends on the location's depth and on how many
//! subscriptions actually cover it, never on the total number held.
//!
//! Each entry belongs to an *owner* (a connection, or a server link) and carries a
//! *priority* (its position in that owner's list). For each owner, the
//! highest-priority entry covering the location decides, as in
//! [`SubscriptionList::accepts`](crate::SubscriptionList::accepts).

use ahash::AHashMap as HashMap;

use crate::location::Location;

/// One subscription entry stored in the index.
#[derive(Debug, Clone)]
pub struct IndexEntry<T> {
    pub owner: u64,
    pub priority: u64,
    pub positive: bool,
    pub value: T,
}

#[derive(Debug)]
struct Node<T> {
    entries: Vec<IndexEntry<T>>,
    negatives: usize,
    children: HashMap<Box<str>, Node<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            entries: Vec::new(),
            negatives: 0,
            children: HashMap::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.children.is_empty()
    }
}

/// The subscription trie. See the module documentation.
#[derive(Debug)]
pub struct SubscriptionTrie<T> {
    domains: HashMap<Box<str>, Node<T>>,
    len: usize,
}

impl<T> Default for SubscriptionTrie<T> {
    fn default() -> Self {
        SubscriptionTrie {
            domains: HashMap::new(),
            len: 0,
        }
    }
}

/// Gives back a map's memory once it is mostly empty (a map keeps its largest
/// size otherwise: a server that once held a million subscriptions would keep
/// their tables after the clients left).
pub fn shrink_if_sparse<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

fn split(loc: &str) -> (&str, &str) {
    let at = loc.rfind('@').unwrap_or(0);
    (&loc[..at], &loc[at + 1..])
}

fn segments(local: &str) -> impl Iterator<Item = &str> {
    local.split('.').filter(move |_| !local.is_empty())
}

impl<T> SubscriptionTrie<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an entry for `owner` at `loc`.
    pub fn insert(&mut self, loc: &Location, owner: u64, priority: u64, positive: bool, value: T) {
        let mut node = self.domains.entry(loc.domain().into()).or_default();
        for seg in loc.segments() {
            node = node.children.entry(seg.into()).or_default();
        }
        if !positive {
            node.negatives += 1;
        }
        node.entries.push(IndexEntry {
            owner,
            priority,
            positive,
            value,
        });
        self.len += 1;
    }

    /// Removes `owner`'s entry with `priority` at `loc`, pruning nodes left empty.
    pub fn remove(&mut self, loc: &Location, owner: u64, priority: u64) -> Option<T> {
        fn go<'a, T>(
            node: &mut Node<T>,
            mut segs: impl Iterator<Item = &'a str>,
            owner: u64,
            priority: u64,
        ) -> Option<T> {
            match segs.next() {
                None => {
                    let i = node
                        .entries
                        .iter()
                        .position(|e| e.owner == owner && e.priority == priority)?;
                    let e = node.entries.swap_remove(i);
                    if !e.positive {
                        node.negatives -= 1;
                    }
                    Some(e.value)
                }
                Some(seg) => {
                    let child = node.children.get_mut(seg)?;
                    let out = go(child, segs, owner, priority);
                    if child.is_empty() {
                        node.children.remove(seg);
                        shrink_if_sparse(&mut node.children);
                    }
                    out
                }
            }
        }
        let root = self.domains.get_mut(loc.domain())?;
        let out = go(root, loc.segments(), owner, priority);
        if root.is_empty() {
            self.domains.remove(loc.domain());
            shrink_if_sparse(&mut self.domains);
        }
        if out.is_some() {
            self.len -= 1;
        }
        out
    }

    /// Calls `f` once for each owner that accepts the canonical location `loc`, with
    /// that owner's deciding (latest covering) entry.
    ///
    /// An owner must hold at most one entry per location (replace, don't add, when the
    /// same location is subscribed again); then the common case (one node on the path
    /// holds entries, none of them exclusions) calls `f` straight from the trie
    /// without sorting or allocating.
    pub fn for_each_accepting(&self, loc: &str, mut f: impl FnMut(&IndexEntry<T>)) {
        let (local, domain) = split(loc);
        let Some(root) = self.domains.get(domain) else {
            return;
        };
        let mut path: [Option<&Node<T>>; crate::limits::MAX_SEGMENTS + 1] =
            [None; crate::limits::MAX_SEGMENTS + 1];
        path[0] = Some(root);
        let mut depth = 1;
        let mut negatives = root.negatives;
        let mut holding = usize::from(!root.entries.is_empty());
        let mut node = root;
        for seg in segments(local) {
            let Some(child) = node.children.get(seg) else {
                break;
            };
            if depth >= path.len() {
                break;
            }
            path[depth] = Some(child);
            depth += 1;
            negatives += child.negatives;
            holding += usize::from(!child.entries.is_empty());
            node = child;
        }
        let path = path[..depth].iter().flatten();
        if negatives == 0 && holding <= 1 {
            for n in path {
                n.entries.iter().for_each(&mut f);
            }
            return;
        }
        let mut all: Vec<&IndexEntry<T>> = path.flat_map(|n| n.entries.iter()).collect();
        all.sort_unstable_by(|a, b| a.owner.cmp(&b.owner).then(b.priority.cmp(&a.priority)));
        let mut last = None;
        for e in all {
            if last == Some(e.owner) {
                continue;
            }
            last = Some(e.owner);
            if e.positive {
                f(e);
            }
        }
    }

    /// The owners that accept `loc`, sorted (for tests and diagnostics).
    pub fn accepting_owners(&self, loc: &str) -> Vec<u64> {
        let mut v = Vec::new();
        self.for_each_accepting(loc, |e| v.push(e.owner));
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::SubscriptionList;
    use proptest::prelude::*;

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    #[test]
    fn prefix_and_exclusion() {
        let mut idx = SubscriptionTrie::new();
        idx.insert(&loc("pub@x.org"), 1, 0, true, ());
        idx.insert(&loc("pub.spam@x.org"), 1, 1, false, ());
        idx.insert(&loc("pub.tv@x.org"), 2, 0, true, ());
        idx.insert(&loc("@x.org"), 3, 0, true, ());
        assert_eq!(idx.accepting_owners("pub.tv.buffy@x.org"), [1, 2, 3]);
        assert_eq!(idx.accepting_owners("pub.spam.eggs@x.org"), [3]);
        assert_eq!(idx.accepting_owners("pub.tvguide@x.org"), [1, 3]);
        assert_eq!(idx.accepting_owners("pub@y.org"), Vec::<u64>::new());
        assert_eq!(idx.len(), 4);
        assert!(idx.remove(&loc("pub.spam@x.org"), 1, 1).is_some());
        assert_eq!(idx.accepting_owners("pub.spam.eggs@x.org"), [1, 3]);
        assert!(idx.remove(&loc("pub.spam@x.org"), 1, 1).is_none());
        for (l, o) in [("pub@x.org", 1), ("pub.tv@x.org", 2), ("@x.org", 3)] {
            assert!(idx.remove(&loc(l), o, 0).is_some());
        }
        assert!(idx.is_empty());
        assert!(idx.domains.is_empty(), "empty nodes are pruned");
    }

    // Small alphabets so that generated subscriptions and locations overlap often.
    fn arb_loc() -> impl Strategy<Value = Location> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..4),
            prop::sample::select(vec!["x.org", "y.org"]),
        )
            .prop_map(|(segs, d)| loc(&format!("{}@{d}", segs.join("."))))
    }

    proptest! {
        #[test]
        fn matches_reference(
            lists in prop::collection::vec(prop::collection::vec((any::<bool>(), arb_loc()), 0..6), 1..5),
            probes in prop::collection::vec(arb_loc(), 1..10),
            removals in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut idx = SubscriptionTrie::new();
            let mut refs: Vec<SubscriptionList> = Vec::new();
            for (owner, list) in lists.iter().enumerate() {
                let mut entries = Vec::new();
                for (prio, (positive, l)) in list.iter().enumerate() {
                    // One entry per owner and location: a repeat replaces the earlier one.
                    if let Some(i) = entries.iter().position(|(_, e): &(usize, crate::SubEntry)| &e.location == l) {
                        let (old_prio, _) = entries.remove(i);
                        idx.remove(l, owner as u64, old_prio as u64);
                    }
                    idx.insert(l, owner as u64, prio as u64, *positive, ());
                    entries.push((prio, crate::SubEntry { positive: *positive, location: l.clone() }));
                }
                // Remove a few entries from both sides.
                for r in &removals {
                    if entries.is_empty() { break; }
                    let (prio, e) = entries.remove(r.index(entries.len()));
                    prop_assert!(idx.remove(&e.location, owner as u64, prio as u64).is_some());
                }
                refs.push(SubscriptionList::new(entries.into_iter().map(|(_, e)| e).collect()));
            }
            for p in &probes {
                let want: Vec<u64> = refs.iter().enumerate()
                    .filter(|(_, l)| l.accepts(p)).map(|(o, _)| o as u64).collect();
                prop_assert_eq!(idx.accepting_owners(p.as_str()), want, "probe {}", p);
            }
        }
    }
}
