//! Server links: who is linked, what each link wants, and what we tell each link.
//!
//! The sources of interest are this server's clients' positive subscription entries
//! and the locations each link has said it wants. What we advertise to link `L` is
//! the aggregate ([`Interest`]) of every source except `L`'s own (split horizon), and
//! it is sent as deltas. A link's own interest is held in the router's subscription
//! trie with the link as owner, so a message is forwarded over a link exactly when
//! the far side wants it, and the publishing owner (client or link) is skipped.
//!
//! Each side holds at most `max_link_interest` locations for a link and says so
//! (LINK_LIMITS) when the link comes up; the advert to a link is sent once its
//! limits are known (or its first INTEREST shows an older peer that announces
//! none) and kept within them by coarsening ([`Advert`]). A peer that sends more
//! than we hold anyway is *flooded*: its list is dropped and it is sent every
//! message, which loses nothing, until it sends a list that fits; a peer that asks
//! for everything (INTEREST `all`) is flooded too, and either way the other links
//! are told we want everything.
//!
//! Lock order: the federation lock, then the trie's lock; never the reverse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use gale_proto::limits::DEFAULT_MAX_LINK_INTEREST;
use gale_proto::{Frame, Location, SubEntry};

use crate::coarse::{Advert, Out};
use crate::interest::Delta;
use crate::outbox::Outbox;
use crate::session::interest_frames;
use gale_proto::trie::shrink_if_sparse;

/// Counters for one link, updated without locks.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub duplicates_in: AtomicU64,
    pub interest_updates_in: AtomicU64,
    /// Messages the far side reported it dropped on its way here (LINK_LOSSAGE).
    pub lost_upstream: AtomicU64,
}

/// A link that has just come up, as [`Federation::link_up`] takes it.
#[derive(Debug)]
pub struct NewLink<'a> {
    pub id: u64,
    pub peer: &'a str,
    pub addr: SocketAddr,
    /// True if this server dialled it.
    pub dialed: bool,
    /// Largest frame the handshake agreed on.
    pub max_frame: u32,
    pub outbox: Arc<Outbox>,
    pub stats: Arc<LinkStats>,
}

/// A live link.
#[derive(Debug)]
pub struct Link {
    pub peer: String,
    pub addr: SocketAddr,
    /// True if this server dialled it.
    pub dialed: bool,
    /// Largest frame the handshake agreed on: INTEREST is framed to fit.
    pub max_frame: u32,
    pub since: Instant,
    pub outbox: Arc<Outbox>,
    pub stats: Arc<LinkStats>,
    /// What we advertise to this link.
    want: Advert,
    /// What this link told us it wants.
    received: HashSet<Location>,
    /// This link is sent every message: it asked, or it sent more than we hold.
    flooded: bool,
}

/// Why a link was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkRefused {
    #[error("this server is already linked to {0}")]
    Duplicate(String),
    #[error("a server cannot link to itself ({0}); check the --link addresses")]
    SelfLink(String),
}

/// A summary of one link, for the status report.
#[derive(Debug, Clone)]
pub struct LinkView {
    pub id: u64,
    pub peer: String,
    pub addr: String,
    pub dialed: bool,
    pub up_secs: u64,
    pub max_frame: u32,
    pub interest_received: usize,
    pub interest_advertised: usize,
    /// The peer is sent every message (see the module documentation).
    pub flooded: bool,
    /// Most entries the peer holds (its LINK_LIMITS), and how we keep to it.
    pub interest_limit: usize,
    pub interest_mode: String,
}

/// How a link's own interest changed, for the router's trie.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RemoteChange {
    pub added: Vec<Location>,
    pub removed: Vec<Location>,
    /// The link is now sent every message (`Some(true)`), or no longer.
    pub flooded: Option<bool>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Federation {
    links: BTreeMap<u64, Link>,
    /// Positive subscription entries of local clients, counted per location.
    local: HashMap<Location, u32>,
    /// Most locations held for one link (config `max_link_interest`).
    max_link_interest: usize,
}

impl Default for Federation {
    fn default() -> Self {
        Federation::new(DEFAULT_MAX_LINK_INTEREST as usize)
    }
}

/// Sends `outs` over `link`, in order, in as few INTEREST frames as fit.
fn send(link: &Link, outs: Vec<Out>) {
    let mut deltas: Vec<Delta> = Vec::new();
    let flush = |deltas: &mut Vec<Delta>| {
        if deltas.is_empty() {
            return;
        }
        let entries = deltas
            .drain(..)
            .map(|d| SubEntry {
                positive: d.add,
                location: d.location,
            })
            .collect();
        for f in interest_frames(false, entries, link.max_frame) {
            link.outbox.push_control(f);
        }
    };
    for o in outs {
        match o {
            Out::Deltas(d) => deltas.extend(d),
            Out::Reset(list) => {
                deltas.clear(); // replaced anyway
                let entries = list.into_iter().map(SubEntry::include).collect();
                for f in interest_frames(true, entries, link.max_frame) {
                    link.outbox.push_control(f);
                }
            }
            Out::All => {
                deltas.clear();
                let all = Frame::Interest {
                    reset: true,
                    all: true,
                    entries: Vec::new(),
                };
                link.outbox.push_control(all.to_bytes());
            }
        }
    }
    flush(&mut deltas);
}

impl Federation {
    pub fn new(max_link_interest: usize) -> Federation {
        Federation {
            links: BTreeMap::new(),
            local: HashMap::new(),
            max_link_interest: max_link_interest.max(1),
        }
    }

    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The link whose id has these low 32 bits (as the recent-id cache keeps them).
    pub fn link_by_tag(&self, tag: u32) -> Option<u64> {
        self.links.keys().copied().find(|id| *id as u32 == tag)
    }

    pub fn peer_name(&self, id: u64) -> Option<&str> {
        self.links.get(&id).map(|l| l.peer.as_str())
    }

    /// A local client's subscription now includes `loc` (once more).
    pub fn local_add(&mut self, loc: &Location) {
        *self.local.entry(loc.clone()).or_default() += 1;
        for link in self.links.values_mut() {
            let d = link.want.add(loc);
            send(link, d);
        }
    }

    /// A local client's subscription no longer includes `loc` (once).
    pub fn local_remove(&mut self, loc: &Location) {
        match self.local.get_mut(loc) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.local.remove(loc);
                shrink_if_sparse(&mut self.local);
            }
            None => return,
        }
        for link in self.links.values_mut() {
            let d = link.want.remove(loc);
            send(link, d);
        }
    }

    /// Registers a new link and tells it our limits (LINK_LIMITS). Our interest
    /// is sent once we know its limits ([`Federation::link_limits`]), or on its
    /// first INTEREST if it announces none.
    pub fn link_up(&mut self, own_name: &str, new: NewLink<'_>) -> Result<(), LinkRefused> {
        let NewLink {
            id,
            peer,
            addr,
            dialed,
            max_frame,
            outbox,
            stats,
        } = new;
        if peer == own_name {
            return Err(LinkRefused::SelfLink(peer.to_string()));
        }
        if self.links.values().any(|l| l.peer == peer) {
            return Err(LinkRefused::Duplicate(peer.to_string()));
        }
        let mut want = Advert::new();
        for (loc, n) in &self.local {
            for _ in 0..*n {
                want.add(loc);
            }
        }
        for other in self.links.values() {
            for loc in &other.received {
                want.add(loc);
            }
            if other.flooded {
                want.flood(true);
            }
        }
        let limits = Frame::LinkLimits {
            max_interest: self.max_link_interest.min(u32::MAX as usize) as u32,
        };
        outbox.push_control(limits.to_bytes());
        let link = Link {
            peer: peer.to_string(),
            addr,
            dialed,
            max_frame,
            since: Instant::now(),
            outbox,
            stats,
            want,
            received: HashSet::new(),
            flooded: false,
        };
        self.links.insert(id, link);
        Ok(())
    }

    /// The link announced it holds at most `max_interest` locations: our
    /// interest goes to it now, within that.
    pub fn link_limits(&mut self, id: u64, max_interest: u32) {
        if let Some(link) = self.links.get_mut(&id) {
            let out = link.want.start(max_interest as usize, true);
            send(link, out);
        }
    }

    /// Applies a link's INTEREST frame. Returns what changed of the link's own
    /// interest (the caller holds the trie).
    pub fn remote_interest(
        &mut self,
        id: u64,
        reset: bool,
        all: bool,
        entries: &[SubEntry],
    ) -> RemoteChange {
        let cap = self.max_link_interest;
        let Some(link) = self.links.get_mut(&id) else {
            return RemoteChange::default();
        };
        if !link.want.started() {
            // A peer that announces no limits is older: it holds what it is sent.
            let out = link.want.start(DEFAULT_MAX_LINK_INTEREST as usize, false);
            send(link, out);
        }
        let was_flooded = link.flooded;
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        let mut over = None;
        if all {
            link.flooded = true;
            removed.extend(link.received.drain());
        } else if reset {
            let new: HashSet<&Location> = entries
                .iter()
                .filter(|e| e.positive)
                .map(|e| &e.location)
                .collect();
            if new.len() > cap {
                over = Some(new.len());
                removed.extend(link.received.drain());
            } else {
                link.flooded = false;
                removed = link
                    .received
                    .iter()
                    .filter(|l| !new.contains(l))
                    .cloned()
                    .collect();
                added = new
                    .into_iter()
                    .filter(|l| !link.received.contains(*l))
                    .cloned()
                    .collect();
                for l in &removed {
                    link.received.remove(l);
                }
                for l in &added {
                    link.received.insert(l.clone());
                }
            }
        } else if !link.flooded {
            for e in entries {
                if e.positive {
                    if link.received.insert(e.location.clone()) {
                        added.push(e.location.clone());
                    }
                } else if link.received.remove(&e.location) {
                    removed.push(e.location.clone());
                }
            }
            if link.received.len() > cap {
                // What the trie holds for the link is what it held before.
                over = Some(link.received.len());
                let new: HashSet<Location> = added.drain(..).collect();
                removed.extend(link.received.drain().filter(|l| !new.contains(l)));
            }
        }
        // While flooded, deltas change nothing: the link already gets everything.
        if let Some(n) = over {
            link.flooded = true;
            tracing::warn!(
                "the link to {} wants {n} locations, more than this server holds for a link \
                 (max_link_interest = {cap}): every message is now forwarded to it, until it \
                 sends a list of at most {cap}",
                link.peer
            );
        }
        if link.received.capacity() > 64 && link.received.len() < link.received.capacity() / 4 {
            link.received.shrink_to(link.received.len() * 2);
        }
        let flooded = (link.flooded != was_flooded).then_some(link.flooded);
        for (other_id, other) in self.links.iter_mut() {
            if *other_id == id {
                continue;
            }
            // Wider first, so that the other side never wants less than it must.
            let mut d = Vec::new();
            if flooded == Some(true) {
                d.extend(other.want.flood(true));
            }
            for l in &added {
                d.extend(other.want.add(l));
            }
            for l in &removed {
                d.extend(other.want.remove(l));
            }
            if flooded == Some(false) {
                d.extend(other.want.flood(false));
            }
            send(other, d);
        }
        RemoteChange {
            added,
            removed,
            flooded,
        }
    }

    /// Forgets a link; returns what it wanted (to remove from the trie).
    pub fn link_down(&mut self, id: u64) -> Vec<Location> {
        let Some(link) = self.links.remove(&id) else {
            return Vec::new();
        };
        for other in self.links.values_mut() {
            let mut d = Vec::new();
            for l in &link.received {
                d.extend(other.want.remove(l));
            }
            if link.flooded {
                d.extend(other.want.flood(false));
            }
            send(other, d);
        }
        link.received.into_iter().collect()
    }

    pub fn views(&self) -> Vec<(LinkView, Arc<Outbox>, Arc<LinkStats>)> {
        self.links
            .iter()
            .map(|(id, l)| {
                let v = LinkView {
                    id: *id,
                    peer: l.peer.clone(),
                    addr: l.addr.to_string(),
                    dialed: l.dialed,
                    up_secs: l.since.elapsed().as_secs(),
                    max_frame: l.max_frame,
                    interest_received: l.received.len(),
                    interest_advertised: l.want.advertised_len(),
                    flooded: l.flooded,
                    interest_limit: l.want.cap(),
                    interest_mode: l.want.mode(),
                };
                (v, l.outbox.clone(), l.stats.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Kind;
    use bytes::BytesMut;
    use gale_proto::limits::MIN_MAX_FRAME;
    use gale_proto::Frame;

    fn new_link<'a>(id: u64, peer: &'a str, max_frame: u32, outbox: &Arc<Outbox>) -> NewLink<'a> {
        NewLink {
            id,
            peer,
            addr: "127.0.0.1:1".parse().unwrap(),
            dialed: true,
            max_frame,
            outbox: outbox.clone(),
            stats: Arc::default(),
        }
    }

    fn outbox(peer: &str) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            Kind::Link,
            1 << 20,
            1 << 30,
            MIN_MAX_FRAME,
            peer.into(),
        ))
    }

    /// Applies the link frames `from` queued to link `id` of `to`, from the
    /// `*done`th on.
    fn deliver(from: &Outbox, to: &mut Federation, id: u64, max_frame: u32, done: &mut usize) {
        let q = from.queued();
        for f in &q[*done..] {
            assert!(
                f.len() - 4 <= max_frame as usize,
                "frame of {} bytes",
                f.len()
            );
            match Frame::decode(&mut BytesMut::from(&f[..]), max_frame) {
                Ok(Some(Frame::Interest {
                    reset,
                    all,
                    entries,
                })) => {
                    to.remote_interest(id, reset, all, &entries);
                }
                Ok(Some(Frame::LinkLimits { max_interest })) => to.link_limits(id, max_interest),
                other => panic!("{other:?}"),
            }
        }
        *done = q.len();
    }

    #[test]
    fn a_link_comes_up_with_5000_subscriptions_and_a_small_frame_limit() {
        // Server A: 5,000 distinct client subscriptions; B links to it and agreed
        // to frames of 4,096 bytes.
        let mut a = Federation::default();
        for i in 0..5000 {
            a.local_add(&Location::parse(&format!("sub{i}.topic@example.org")).unwrap());
        }
        let (to_a, to_b) = (outbox("A"), outbox("B"));
        let (mut done_a, mut done_b) = (0, 0);
        a.link_up("A", new_link(1, "B", MIN_MAX_FRAME, &to_b))
            .unwrap();
        let mut b = Federation::default();
        b.link_up("B", new_link(7, "A", MIN_MAX_FRAME, &to_a))
            .unwrap();
        // Each side announces its limits, and sends its interest once it hears
        // the other's.
        deliver(&to_b, &mut b, 7, MIN_MAX_FRAME, &mut done_b);
        deliver(&to_a, &mut a, 1, MIN_MAX_FRAME, &mut done_a);
        deliver(&to_b, &mut b, 7, MIN_MAX_FRAME, &mut done_b);
        assert_eq!(
            b.links[&7].received.len(),
            5000,
            "B heard all of A's interest"
        );
        // A delta after the sync is one more INTEREST frame, adding.
        let before = to_b.queued().len();
        a.local_add(&Location::parse("late@example.org").unwrap());
        let q = to_b.queued();
        assert_eq!(q.len(), before + 1);
        let last = Frame::decode(&mut BytesMut::from(&q[before][..]), MIN_MAX_FRAME);
        let Ok(Some(Frame::Interest { reset, entries, .. })) = last else {
            panic!("{last:?}")
        };
        assert!(!reset);
        assert_eq!(entries[0].location.as_str(), "late@example.org");
    }

    #[test]
    fn a_link_is_sent_coarse_interest_within_the_limit_it_announced() {
        // A has 300 subscriptions under 3 prefixes; B holds at most 100 per link.
        let mut a = Federation::default();
        let locs: Vec<Location> = (0..300)
            .map(|i| Location::parse(&format!("p{}.n{i}@example.org", i % 3)).unwrap())
            .collect();
        for l in &locs {
            a.local_add(l);
        }
        let mut b = Federation::new(100);
        let (to_a, to_b) = (outbox("A"), outbox("B"));
        let (mut done_a, mut done_b) = (0, 0);
        a.link_up("A", new_link(1, "B", MIN_MAX_FRAME, &to_b))
            .unwrap();
        b.link_up("B", new_link(7, "A", MIN_MAX_FRAME, &to_a))
            .unwrap();
        deliver(&to_a, &mut a, 1, MIN_MAX_FRAME, &mut done_a);
        deliver(&to_b, &mut b, 7, MIN_MAX_FRAME, &mut done_b);
        let got = &b.links[&7].received;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(!b.links[&7].flooded);
        assert!(locs.iter().all(|l| got.iter().any(|c| c.covers(l))));
        assert_eq!(a.views()[0].0.interest_mode, "depth 1");
    }

    #[test]
    fn a_peer_sending_more_than_the_limit_is_sent_everything() {
        // B holds at most 10 for a link; A is an older server that announces no
        // limits, so keeps to none. C is another link of B's.
        let mut b = Federation::new(10);
        let (to_a, to_c) = (outbox("A"), outbox("C"));
        b.link_up("B", new_link(1, "A", MIN_MAX_FRAME, &to_a))
            .unwrap();
        b.link_up("B", new_link(2, "C", MIN_MAX_FRAME, &to_c))
            .unwrap();
        b.link_limits(2, 1000);
        let entries = |r: std::ops::Range<u32>| -> Vec<SubEntry> {
            r.map(|i| SubEntry::include(Location::parse(&format!("a{i}@x.org")).unwrap()))
                .collect()
        };
        assert_eq!(to_a.queued().len(), 1, "only LINK_LIMITS until A is heard");
        let ch = b.remote_interest(1, true, false, &entries(0..8));
        assert_eq!((ch.added.len(), ch.flooded), (8, None));
        // A announced no limits: its first INTEREST starts ours (the default).
        let q = to_a.queued();
        assert_eq!(q.len(), 2);
        assert!(matches!(
            Frame::decode(&mut BytesMut::from(&q[1][..]), MIN_MAX_FRAME),
            Ok(Some(Frame::Interest {
                reset: true,
                all: false,
                ..
            }))
        ));
        assert_eq!(b.views()[0].0.interest_limit, 65_536);
        // Three more: over the limit. The trie drops what it held; the link is
        // flooded, and C is told this server wants everything.
        let ch = b.remote_interest(1, false, false, &entries(8..11));
        assert_eq!(
            (ch.added.len(), ch.removed.len(), ch.flooded),
            (0, 8, Some(true))
        );
        assert_eq!(b.links[&1].received.len(), 0, "memory stays bounded");
        let last = to_c.queued().pop().unwrap();
        assert_eq!(
            Frame::decode(&mut BytesMut::from(&last[..]), MIN_MAX_FRAME).unwrap(),
            Some(Frame::Interest {
                reset: true,
                all: true,
                entries: vec![]
            })
        );
        // Deltas while flooded change nothing; a list that fits ends it.
        let ch = b.remote_interest(1, false, false, &entries(11..20));
        assert_eq!(ch, RemoteChange::default());
        let ch = b.remote_interest(1, true, false, &entries(0..5));
        assert_eq!((ch.added.len(), ch.flooded), (5, Some(false)));
        let last = to_c.queued().pop().unwrap();
        let Ok(Some(Frame::Interest {
            reset: true,
            all: false,
            entries: e,
        })) = Frame::decode(&mut BytesMut::from(&last[..]), MIN_MAX_FRAME)
        else {
            panic!("a reset to C")
        };
        assert_eq!(e.len(), 5);
        // A peer may ask for everything, and its trie entries go.
        let ch = b.remote_interest(1, true, true, &[]);
        assert_eq!((ch.removed.len(), ch.flooded), (5, Some(true)));
    }
}
