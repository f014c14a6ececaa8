//! Server links: who is linked, what each link wants, and what we tell each link.
//!
//! The sources of interest are this server's clients' positive subscription entries
//! and the locations each link has said it wants. What we advertise to link `L` is
//! the aggregate ([`Interest`]) of every source except `L`'s own (split horizon), and
//! it is sent as deltas. A link's own interest is held in the router's subscription
//! trie with the link as owner, so a message is forwarded over a link exactly when
//! the far side wants it, and the publishing owner (client or link) is skipped.
//!
//! Lock order: the federation lock, then the trie's lock; never the reverse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use gale_proto::{Location, SubEntry};

use crate::interest::{Delta, Interest};
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
    want: Interest,
    /// What this link told us it wants.
    received: HashSet<Location>,
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
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Federation {
    links: BTreeMap<u64, Link>,
    /// Positive subscription entries of local clients, counted per location.
    local: HashMap<Location, u32>,
}

fn send(link: &Link, deltas: Vec<Delta>) {
    if deltas.is_empty() {
        return;
    }
    let entries = deltas
        .into_iter()
        .map(|d| SubEntry {
            positive: d.add,
            location: d.location,
        })
        .collect();
    for f in interest_frames(false, entries, link.max_frame) {
        link.outbox.push_control(f);
    }
}

impl Federation {
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

    /// Registers a new link and sends it our full interest, in as many INTEREST
    /// frames as the protocol's entry limit and the link's frame size need.
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
        let mut want = Interest::new();
        for (loc, n) in &self.local {
            for _ in 0..*n {
                want.add(loc);
            }
        }
        for other in self.links.values() {
            for loc in &other.received {
                want.add(loc);
            }
        }
        let entries = want
            .advertised()
            .into_iter()
            .map(SubEntry::include)
            .collect();
        for f in interest_frames(true, entries, max_frame) {
            outbox.push_control(f);
        }
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
        };
        self.links.insert(id, link);
        Ok(())
    }

    /// Applies a link's INTEREST frame. Returns the locations to add to and remove
    /// from the trie for this link (the caller holds the trie).
    pub fn remote_interest(
        &mut self,
        id: u64,
        reset: bool,
        entries: &[SubEntry],
    ) -> (Vec<Location>, Vec<Location>) {
        let Some(link) = self.links.get_mut(&id) else {
            return (Vec::new(), Vec::new());
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        if reset {
            let new: HashSet<&Location> = entries
                .iter()
                .filter(|e| e.positive)
                .map(|e| &e.location)
                .collect();
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
        } else {
            for e in entries {
                let have = link.received.contains(&e.location);
                if e.positive && !have {
                    added.push(e.location.clone());
                } else if !e.positive && have {
                    removed.push(e.location.clone());
                }
            }
        }
        for l in &removed {
            link.received.remove(l);
        }
        if link.received.capacity() > 64 && link.received.len() < link.received.capacity() / 4 {
            link.received.shrink_to(link.received.len() * 2);
        }
        for l in &added {
            link.received.insert(l.clone());
        }
        for (other_id, other) in self.links.iter_mut() {
            if *other_id == id {
                continue;
            }
            let mut d = Vec::new();
            for l in &removed {
                d.extend(other.want.remove(l));
            }
            for l in &added {
                d.extend(other.want.add(l));
            }
            send(other, d);
        }
        (added, removed)
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

    /// Applies every INTEREST frame `from` queued to link `id` of `to`.
    fn deliver(from: &Outbox, to: &mut Federation, id: u64, max_frame: u32) {
        for f in from.queued() {
            assert!(
                f.len() - 4 <= max_frame as usize,
                "frame of {} bytes",
                f.len()
            );
            match Frame::decode(&mut BytesMut::from(&f[..]), max_frame) {
                Ok(Some(Frame::Interest { reset, entries })) => {
                    to.remote_interest(id, reset, &entries);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_link_comes_up_with_5000_subscriptions_and_a_small_frame_limit() {
        // Server A: 5,000 distinct client subscriptions; B links to it and agreed
        // to frames of 4,096 bytes.
        let mut a = Federation::default();
        for i in 0..5000 {
            a.local_add(&Location::parse(&format!("sub{i}.topic@example.org")).unwrap());
        }
        let to_b = Arc::new(Outbox::new(
            Kind::Link,
            1 << 20,
            1 << 30,
            MIN_MAX_FRAME,
            "B".into(),
        ));
        a.link_up("A", new_link(1, "B", MIN_MAX_FRAME, &to_b))
            .unwrap();
        let mut b = Federation::default();
        let to_a = Arc::new(Outbox::new(
            Kind::Link,
            1 << 20,
            1 << 30,
            MIN_MAX_FRAME,
            "A".into(),
        ));
        b.link_up("B", new_link(7, "A", MIN_MAX_FRAME, &to_a))
            .unwrap();
        deliver(&to_b, &mut b, 7, MIN_MAX_FRAME);
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
        let Ok(Some(Frame::Interest { reset, entries })) = last else {
            panic!("{last:?}")
        };
        assert!(!reset);
        assert_eq!(entries[0].location.as_str(), "late@example.org");
    }
}
