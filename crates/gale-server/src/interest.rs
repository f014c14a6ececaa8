//! Interest aggregation for one direction of one server link, without I/O.
//!
//! Each *source* of interest (a local client's positive subscription entry, or a
//! location another link told us it wants) adds one count to a location. What we
//! advertise over the link is the set of wanted locations with no wanted ancestor:
//! `pub@x` covers `pub.tv@x`, so only `pub@x` is sent. Changes are turned into
//! deltas (`+loc`, `-loc`) only when they change that aggregated set, so a
//! thousand clients subscribing to `pub.tv@x` cost one `+pub.tv@x` over each link.
//!
//! Exclusions are not advertised: `pub - pub.spam` advertises `pub`, a superset.
//! Over-delivery is safe (the receiving server filters exactly for its clients);
//! under-delivery would lose messages.

use std::collections::BTreeMap;

use gale_proto::Location;

/// One change to the advertised set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub add: bool,
    pub location: Location,
}

/// Sort key that keeps a location's descendants contiguous after it:
/// `domain \0 local`, and descendants of `a.b` start with `domain \0 a.b.`.
pub(crate) fn key(loc: &Location) -> String {
    format!("{}\0{}", loc.domain(), loc.local())
}

fn descendants_prefix(loc: &Location) -> String {
    if loc.local().is_empty() {
        format!("{}\0", loc.domain())
    } else {
        format!("{}\0{}.", loc.domain(), loc.local())
    }
}

/// The proper ancestors of `loc`, nearest first, ending with the domain itself.
pub(crate) fn ancestors(loc: &Location) -> impl Iterator<Item = String> + '_ {
    let local = loc.local();
    let cuts: Vec<usize> = local.match_indices('.').map(|(i, _)| i).rev().collect();
    let domain = loc.domain();
    cuts.into_iter()
        .map(move |i| format!("{domain}\0{}", &local[..i]))
        .chain((!local.is_empty()).then(|| format!("{domain}\0")))
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Interest {
    want: BTreeMap<String, (u32, Location)>,
    /// Size of the aggregated set, kept up to date by the deltas.
    advertised: usize,
}

impl Interest {
    pub fn new() -> Self {
        Self::default()
    }

    fn covered(&self, loc: &Location) -> bool {
        ancestors(loc).any(|a| self.want.contains_key(&a))
    }

    /// Wanted descendants of `loc` that no other wanted location covers, other
    /// than `loc` itself.
    fn exposed_below(&self, loc: &Location) -> Vec<Location> {
        let prefix = descendants_prefix(loc);
        let own = key(loc);
        self.want
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, (_, d))| ancestors(d).all(|a| a == own || !self.want.contains_key(&a)))
            .map(|(_, (_, d))| d.clone())
            .collect()
    }

    /// One more source wants `loc`.
    pub fn add(&mut self, loc: &Location) -> Vec<Delta> {
        let d = self.add_inner(loc);
        self.count(&d);
        d
    }

    /// One source no longer wants `loc`.
    pub fn remove(&mut self, loc: &Location) -> Vec<Delta> {
        let d = self.remove_inner(loc);
        self.count(&d);
        d
    }

    fn count(&mut self, deltas: &[Delta]) {
        for d in deltas {
            if d.add {
                self.advertised += 1;
            } else {
                self.advertised -= 1;
            }
        }
    }

    /// Number of locations advertised (the size of [`Interest::advertised`]).
    pub fn advertised_len(&self) -> usize {
        self.advertised
    }

    fn add_inner(&mut self, loc: &Location) -> Vec<Delta> {
        let k = key(loc);
        if let Some((n, _)) = self.want.get_mut(&k) {
            *n += 1;
            return Vec::new();
        }
        if self.covered(loc) {
            self.want.insert(k, (1, loc.clone()));
            return Vec::new();
        }
        // Newly advertised; what it covers is no longer advertised on its own.
        let hidden = self.exposed_below(loc);
        self.want.insert(k, (1, loc.clone()));
        let mut out = vec![Delta {
            add: true,
            location: loc.clone(),
        }];
        out.extend(hidden.into_iter().map(|location| Delta {
            add: false,
            location,
        }));
        out
    }

    fn remove_inner(&mut self, loc: &Location) -> Vec<Delta> {
        let k = key(loc);
        match self.want.get_mut(&k) {
            None => return Vec::new(),
            Some((n, _)) if *n > 1 => {
                *n -= 1;
                return Vec::new();
            }
            Some(_) => {}
        }
        self.want.remove(&k);
        if self.covered(loc) {
            return Vec::new();
        }
        let mut out = vec![Delta {
            add: false,
            location: loc.clone(),
        }];
        let exposed = self.exposed_below(loc);
        out.extend(exposed.into_iter().map(|location| Delta {
            add: true,
            location,
        }));
        out
    }

    /// The aggregated set, for a full sync.
    pub fn advertised(&self) -> Vec<Location> {
        self.want
            .values()
            .filter(|(_, l)| !self.covered(l))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Distinct locations wanted (before aggregation).
    pub fn len(&self) -> usize {
        self.want.len()
    }

    pub fn is_empty(&self) -> bool {
        self.want.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn l(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    fn d(add: bool, s: &str) -> Delta {
        Delta {
            add,
            location: l(s),
        }
    }

    #[test]
    fn broader_interest_covers_narrower() {
        let mut i = Interest::new();
        assert_eq!(i.add(&l("pub.tv@x.org")), [d(true, "pub.tv@x.org")]);
        assert_eq!(i.add(&l("pub.tv@x.org")), []);
        assert_eq!(i.add(&l("pub.tv.buffy@x.org")), [], "covered by pub.tv");
        assert_eq!(
            i.add(&l("pub.tvguide@x.org")),
            [d(true, "pub.tvguide@x.org")],
            "not covered"
        );
        assert_eq!(
            i.add(&l("pub@x.org")),
            [
                d(true, "pub@x.org"),
                d(false, "pub.tv@x.org"),
                d(false, "pub.tvguide@x.org")
            ]
        );
        assert_eq!(i.advertised(), [l("pub@x.org")]);
        assert_eq!(
            i.remove(&l("pub@x.org")),
            [
                d(false, "pub@x.org"),
                d(true, "pub.tv@x.org"),
                d(true, "pub.tvguide@x.org")
            ]
        );
        assert_eq!(i.remove(&l("pub.tv@x.org")), [], "one source left");
        assert_eq!(
            i.remove(&l("pub.tv@x.org")),
            [d(false, "pub.tv@x.org"), d(true, "pub.tv.buffy@x.org")]
        );
        assert_eq!(
            i.add(&l("@x.org")),
            [
                d(true, "@x.org"),
                d(false, "pub.tv.buffy@x.org"),
                d(false, "pub.tvguide@x.org")
            ]
        );
        assert_eq!(
            i.add(&l("a@y.org")),
            [d(true, "a@y.org")],
            "other domains are separate"
        );
    }

    fn arb_loc() -> impl Strategy<Value = Location> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "a-b"]), 0..4),
            prop::sample::select(vec!["x.org", "y.org"]),
        )
            .prop_map(|(segs, dom)| l(&format!("{}@{dom}", segs.join("."))))
    }

    proptest! {
        /// Applying the deltas in order always yields exactly the aggregated set.
        #[test]
        fn deltas_track_the_aggregate(ops in prop::collection::vec((any::<bool>(), arb_loc()), 0..40)) {
            let mut i = Interest::new();
            let mut counts: std::collections::HashMap<Location, u32> = Default::default();
            let mut seen: BTreeSet<Location> = BTreeSet::new();
            for (add, loc) in ops {
                let deltas = if add {
                    *counts.entry(loc.clone()).or_default() += 1;
                    i.add(&loc)
                } else if counts.get(&loc).copied().unwrap_or(0) > 0 {
                    *counts.get_mut(&loc).unwrap() -= 1;
                    i.remove(&loc)
                } else {
                    continue;
                };
                for dl in deltas {
                    if dl.add { prop_assert!(seen.insert(dl.location)); } else { prop_assert!(seen.remove(&dl.location)); }
                }
                let wanted: Vec<&Location> = counts.iter().filter(|(_, n)| **n > 0).map(|(l, _)| l).collect();
                let expect: BTreeSet<Location> = wanted.iter()
                    .filter(|w| !wanted.iter().any(|o| o != *w && o.covers(w)))
                    .map(|w| (*w).clone()).collect();
                prop_assert_eq!(&seen, &expect);
                prop_assert_eq!(i.advertised_len(), expect.len());
                prop_assert_eq!(i.advertised().into_iter().collect::<BTreeSet<_>>(), expect);
            }
        }
    }
}
