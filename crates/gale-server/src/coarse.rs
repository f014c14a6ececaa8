//! Keeping the interest advertised over one link within what the peer holds.
//!
//! A peer announces (LINK_LIMITS) how many INTEREST entries it holds for a link.
//! When the exact aggregate ([`Interest`]) would be longer, [`Advert`] sends a
//! coarser one instead: every location cut to its first `depth` segments
//! (`pub.tv.buffy@x` at depth 1 is `pub@x`, at depth 0 `@x`), at the deepest depth
//! that fits, and as a last resort INTEREST `all`. A coarse entry covers the exact
//! ones it replaced, so the peer forwards more than we need (we filter for our
//! clients) and never less.
//!
//! Hysteresis: once coarse, the advert stays coarse (cutting deeper when it grows)
//! until the exact aggregate is down to half the peer's limit, so a list that
//! hovers at the limit does not make the link swap lists back and forth.

use std::collections::HashSet;

use gale_proto::Location;

use crate::interest::{ancestors, key, Delta, Interest};

/// `loc` cut to at most `depth` segments of its local part (0: the whole domain).
pub fn truncate(loc: &Location, depth: usize) -> Location {
    let local = loc.local();
    let cut = if depth == 0 {
        Some(0)
    } else {
        local.match_indices('.').nth(depth - 1).map(|(i, _)| i)
    };
    match cut {
        None => loc.clone(),
        Some(i) => Location::from_canonical(&format!("{}@{}", &local[..i], loc.domain()))
            // A whole-segment prefix of a valid location is valid; the domain
            // would do (coarser still covers) if it somehow were not.
            .unwrap_or_else(|_| loc.domain_location().unwrap_or_else(|| loc.clone())),
    }
}

/// How many entries `set`, cut to `depth` segments, aggregates to (no entry
/// below another).
pub fn size_at(set: &[Location], depth: usize) -> usize {
    let cut: HashSet<Location> = set.iter().map(|l| truncate(l, depth)).collect();
    let keys: HashSet<String> = cut.iter().map(key).collect();
    cut.iter()
        .filter(|l| !ancestors(l).any(|a| keys.contains(&a)))
        .count()
}

/// The deepest depth, shallower than the deepest entry of `set`, at which `set`
/// aggregates to at most `cap` entries; `None` if not even whole domains fit.
pub fn fitting_depth(set: &[Location], cap: usize) -> Option<usize> {
    let deepest = set.iter().map(|l| l.segments().count()).max()?;
    (0..deepest).rev().find(|d| size_at(set, *d) <= cap)
}

/// What to send over the link, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Changes to what the peer holds.
    Deltas(Vec<Delta>),
    /// A list that replaces what the peer holds.
    Reset(Vec<Location>),
    /// Every message is wanted (INTEREST `all`).
    All,
}

#[derive(Debug)]
enum Mode {
    Exact,
    /// `agg` aggregates the exact entries cut to `depth` segments.
    Coarse {
        depth: usize,
        agg: Interest,
    },
    /// `floods`: because another source wants everything (else: because not
    /// even whole domains fit).
    All {
        floods: bool,
    },
}

/// The interest advertised over one link. See the module documentation.
#[derive(Debug)]
pub struct Advert {
    exact: Interest,
    /// Most entries the peer holds.
    cap: usize,
    /// The peer announced LINK_LIMITS, so it takes INTEREST `all`.
    all_ok: bool,
    /// Sources that want every message (links sent everything).
    floods: u32,
    /// Nothing is sent until the peer's limits are known.
    started: bool,
    mode: Mode,
}

impl Advert {
    /// An advert that sends nothing until [`Advert::start`].
    pub fn new() -> Advert {
        Advert {
            exact: Interest::new(),
            cap: gale_proto::limits::DEFAULT_MAX_LINK_INTEREST as usize,
            all_ok: false,
            floods: 0,
            started: false,
            mode: Mode::Exact,
        }
    }

    /// One more source wants `loc`.
    pub fn add(&mut self, loc: &Location) -> Vec<Out> {
        let d = self.exact.add(loc);
        self.follow(d)
    }

    /// One source no longer wants `loc`.
    pub fn remove(&mut self, loc: &Location) -> Vec<Out> {
        let d = self.exact.remove(loc);
        self.follow(d)
    }

    /// One more (`true`) or one fewer source wants every message.
    pub fn flood(&mut self, on: bool) -> Vec<Out> {
        if on {
            self.floods += 1;
        } else {
            self.floods = self.floods.saturating_sub(1);
        }
        self.rebalance()
    }

    /// The peer holds at most `cap` entries (and takes `all` if `all_ok`): sends
    /// the whole advert within that.
    pub fn start(&mut self, cap: usize, all_ok: bool) -> Vec<Out> {
        self.cap = cap.max(1);
        self.all_ok = all_ok;
        self.started = true;
        self.mode = self.fresh();
        vec![self.full()]
    }

    pub fn started(&self) -> bool {
        self.started
    }

    /// Entries the peer holds from us (0 when it is sent everything).
    pub fn advertised_len(&self) -> usize {
        match &self.mode {
            _ if !self.started => 0,
            Mode::Exact => self.exact.advertised_len(),
            Mode::Coarse { agg, .. } => agg.advertised_len(),
            Mode::All { .. } => 0,
        }
    }

    /// Entries of the exact aggregate.
    pub fn exact_len(&self) -> usize {
        self.exact.advertised_len()
    }

    /// The peer's limit we keep to.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// "waiting" (for the peer's limits), "exact", "depth N" or "all".
    pub fn mode(&self) -> String {
        match &self.mode {
            _ if !self.started => "waiting".into(),
            Mode::Exact => "exact".into(),
            Mode::Coarse { depth, .. } => format!("depth {depth}"),
            Mode::All { .. } => "all".into(),
        }
    }

    /// Passes exact changes on as the current mode sends them.
    fn follow(&mut self, deltas: Vec<Delta>) -> Vec<Out> {
        if !self.started || deltas.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        match &mut self.mode {
            Mode::Exact => out.push(Out::Deltas(deltas)),
            Mode::Coarse { depth, agg } => {
                let mut d = Vec::new();
                for x in deltas {
                    let cut = truncate(&x.location, *depth);
                    d.extend(if x.add {
                        agg.add(&cut)
                    } else {
                        agg.remove(&cut)
                    });
                }
                if !d.is_empty() {
                    out.push(Out::Deltas(d));
                }
            }
            Mode::All { .. } => {}
        }
        // A change of mode sends a whole list, which the deltas were part of.
        let changed = self.rebalance();
        if changed.is_empty() {
            out
        } else {
            changed
        }
    }

    /// The mode to take now, from nothing.
    fn fresh(&self) -> Mode {
        if self.floods > 0 && self.all_ok {
            return Mode::All { floods: true };
        }
        if self.exact.advertised_len() <= self.cap {
            return Mode::Exact;
        }
        let set = self.exact.advertised();
        let depth = match fitting_depth(&set, self.cap) {
            Some(d) => d,
            None if self.all_ok => return Mode::All { floods: false },
            // An older peer cannot be told `all`; it holds whatever it is sent.
            None => 0,
        };
        let mut agg = Interest::new();
        for l in &set {
            agg.add(&truncate(l, depth));
        }
        Mode::Coarse { depth, agg }
    }

    fn full(&self) -> Out {
        match &self.mode {
            Mode::Exact => Out::Reset(self.exact.advertised()),
            Mode::Coarse { agg, .. } => Out::Reset(agg.advertised()),
            Mode::All { .. } => Out::All,
        }
    }

    /// Changes mode when the advert no longer fits, or fits well again.
    fn rebalance(&mut self) -> Vec<Out> {
        if !self.started {
            return Vec::new();
        }
        let exact = self.exact.advertised_len();
        let well_under = exact <= self.cap / 2;
        let next = match &self.mode {
            Mode::All { .. } if self.floods > 0 && self.all_ok => None,
            _ if self.floods > 0 && self.all_ok => Some(Mode::All { floods: true }),
            Mode::All { floods: true } => Some(self.fresh()),
            Mode::Exact => (exact > self.cap).then(|| self.fresh()),
            Mode::Coarse { .. } if well_under => Some(Mode::Exact),
            Mode::Coarse { depth, agg } => (agg.advertised_len() > self.cap
                && (*depth > 0 || self.all_ok))
                .then(|| self.fresh()),
            Mode::All { floods: false } => well_under.then_some(Mode::Exact),
        };
        let Some(next) = next else {
            return Vec::new();
        };
        let resend = !matches!((&self.mode, &next), (Mode::All { .. }, Mode::All { .. }));
        self.mode = next;
        if resend {
            vec![self.full()]
        } else {
            Vec::new()
        }
    }
}

impl Default for Advert {
    fn default() -> Self {
        Advert::new()
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

    /// What the peer holds after applying `outs` to `held` (`None`: everything).
    fn apply(held: &mut Option<BTreeSet<Location>>, outs: Vec<Out>) {
        for o in outs {
            match o {
                Out::All => *held = None,
                Out::Reset(v) => *held = Some(v.into_iter().collect()),
                Out::Deltas(d) => {
                    let h = held.as_mut().expect("no deltas after all");
                    for x in d {
                        if x.add {
                            assert!(h.insert(x.location));
                        } else {
                            assert!(h.remove(&x.location));
                        }
                    }
                }
            }
        }
    }

    fn covered(held: &Option<BTreeSet<Location>>, loc: &Location) -> bool {
        held.as_ref()
            .is_none_or(|h| h.iter().any(|c| c.covers(loc)))
    }

    #[test]
    fn truncation_cuts_whole_segments() {
        let x = l("pub.tv.buffy@ofb.net");
        assert_eq!(truncate(&x, 0), l("@ofb.net"));
        assert_eq!(truncate(&x, 1), l("pub@ofb.net"));
        assert_eq!(truncate(&x, 2), l("pub.tv@ofb.net"));
        assert_eq!(truncate(&x, 3), x);
        assert_eq!(truncate(&x, 9), x);
        assert_eq!(truncate(&l("@ofb.net"), 0), l("@ofb.net"));
        assert_eq!(
            truncate(&l("_gale.notice.a@x.org"), 2),
            l("_gale.notice@x.org")
        );
    }

    #[test]
    fn coarsens_level_by_level_to_fit() {
        // 3 domains × 4 × 10 leaves: 120 exact entries.
        let mut a = Advert::new();
        let mut held = None;
        apply(&mut held, a.start(1000, true));
        let mut all = Vec::new();
        for d in ["x.org", "y.org", "z.org"] {
            for g in 0..4 {
                for i in 0..10 {
                    let loc = l(&format!("pub.g{g}.n{i}@{d}"));
                    apply(&mut held, a.add(&loc));
                    all.push(loc);
                }
            }
        }
        assert_eq!((a.mode().as_str(), a.advertised_len()), ("exact", 120));
        // Limits of 100, 12, 3 and 2 take depths 2, 1, 0 and then everything.
        for (cap, mode, len) in [
            (100, "depth 2", 12),
            (12, "depth 2", 12),
            (11, "depth 1", 3),
        ] {
            apply(&mut held, a.start(cap, true));
            assert_eq!(
                (a.mode(), a.advertised_len()),
                (mode.to_string(), len),
                "cap {cap}"
            );
            assert!(all.iter().all(|x| covered(&held, x)));
        }
        apply(&mut held, a.start(3, true));
        // `pub@d` is the only depth-1 entry per domain: depth 1 is as coarse as 0.
        assert_eq!(a.advertised_len(), 3);
        apply(&mut held, a.start(2, true));
        assert_eq!((a.mode().as_str(), held.is_none()), ("all", true));
        // An older peer cannot be told `all`: whole domains, over its limit.
        apply(&mut held, a.start(2, false));
        assert_eq!(held.as_ref().map(|h| h.len()), Some(3));
        assert_eq!(a.mode(), "depth 0");
    }

    #[test]
    fn hysteresis_returns_to_exact_only_below_half() {
        let mut a = Advert::new();
        let mut held = None;
        apply(&mut held, a.start(10, true));
        let locs: Vec<Location> = (0..11).map(|i| l(&format!("a.n{i}@x.org"))).collect();
        for x in &locs[..10] {
            apply(&mut held, a.add(x));
        }
        assert_eq!(a.mode(), "exact");
        // The 11th entry does not fit: one coarse entry instead.
        let out = a.add(&locs[10]);
        assert_eq!(out, [Out::Reset(vec![l("a@x.org")])]);
        apply(&mut held, out);
        // Back to 10, then 6: still coarse (no flapping at the limit).
        for x in &locs[6..] {
            apply(&mut held, a.remove(x));
            assert_eq!(a.mode(), "depth 1");
        }
        assert_eq!(a.exact_len(), 6);
        // Once at half the limit, exact again.
        let out = a.remove(&locs[5]);
        assert!(
            matches!(&out[..], [Out::Reset(v)] if v.len() == 5),
            "{out:?}"
        );
        apply(&mut held, out);
        assert_eq!(a.mode(), "exact");
        assert!(locs[..5].iter().all(|x| covered(&held, x)));
    }

    #[test]
    fn another_link_wanting_everything_is_passed_on() {
        let mut a = Advert::new();
        let mut held = None;
        assert_eq!(a.add(&l("a@x.org")), [], "nothing before the peer's limits");
        apply(&mut held, a.start(10, true));
        assert_eq!(held.as_ref().unwrap().len(), 1);
        assert_eq!(a.flood(true), [Out::All]);
        assert_eq!(a.add(&l("b@x.org")), [], "all covers it");
        assert_eq!(a.flood(true), []);
        assert_eq!(a.flood(false), []);
        let out = a.flood(false);
        assert_eq!(out, [Out::Reset(vec![l("a@x.org"), l("b@x.org")])]);
    }

    fn arb_loc() -> impl Strategy<Value = Location> {
        (
            prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 0..5),
            prop::sample::select(vec!["x.org", "y.org", "z.org"]),
        )
            .prop_map(|(segs, dom)| l(&format!("{}@{dom}", segs.join("."))))
    }

    proptest! {
        /// Whatever the changes and the limit, the peer holds at most the limit
        /// (or everything) and every wanted location is covered.
        #[test]
        fn every_subscription_stays_covered_within_the_limit(
            cap in 1usize..12,
            all_ok in any::<bool>(),
            ops in prop::collection::vec((any::<bool>(), arb_loc()), 0..80),
        ) {
            let mut a = Advert::new();
            let mut held = None;
            apply(&mut held, a.start(cap, all_ok));
            let mut wanted: Vec<Location> = Vec::new();
            for (add, loc) in ops {
                let out = if add {
                    wanted.push(loc.clone());
                    a.add(&loc)
                } else if let Some(i) = wanted.iter().position(|w| *w == loc) {
                    wanted.swap_remove(i);
                    a.remove(&loc)
                } else {
                    continue;
                };
                apply(&mut held, out);
                for w in &wanted {
                    prop_assert!(covered(&held, w), "{w} not covered by {held:?}");
                }
                let n = held.as_ref().map_or(0, |h| h.len());
                prop_assert_eq!(n, a.advertised_len());
                let domains: BTreeSet<&str> = wanted.iter().map(|w| w.domain()).collect();
                if all_ok || domains.len() <= cap {
                    prop_assert!(n <= cap, "{n} entries held, limit {cap}");
                }
            }
        }
    }
}
