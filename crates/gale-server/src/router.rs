//! Shared routing state: the subscription trie and the table of live connections.
//!
//! Publishing takes the trie's read lock and pushes one shared `Bytes` into each
//! accepting connection's outbox, so the message is encoded once whatever the
//! fan-out. Subscription changes take the write lock briefly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gale_proto::index::SubscriptionIndex;
use gale_proto::limits::MAX_SUBS_PER_CONNECTION;
use gale_proto::{Location, MessageView, SubEntry};
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::outbox::Outbox;

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_total: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub wills_published: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub refused_connections: AtomicU64,
}

/// What the router knows of one live connection (for the status report).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub agent: String,
    pub since: Instant,
    pub outbox: Arc<Outbox>,
    pub subscriptions: Arc<AtomicUsize>,
    pub published: Arc<AtomicU64>,
}

/// One connection's subscription list as the router holds it: each location once,
/// with the priority (position) of its latest entry.
#[derive(Debug, Default)]
pub struct ConnSubs {
    entries: HashMap<Location, (u64, bool)>,
    next_priority: u64,
}

impl ConnSubs {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Refusal to hold more subscriptions than the limit.
#[derive(Debug, thiserror::Error)]
#[error("subscription list too long: {have} entries, the limit is {max}")]
pub struct TooManySubscriptions {
    pub have: usize,
    pub max: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Router {
    pub config: Config,
    index: RwLock<SubscriptionIndex<Arc<Outbox>>>,
    conns: Mutex<HashMap<u64, ConnInfo>>,
    next_id: AtomicU64,
    pub stats: ServerStats,
    pub started: Instant,
}

impl Router {
    pub fn new(config: Config) -> Router {
        Router {
            config,
            index: RwLock::new(SubscriptionIndex::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats: ServerStats::default(),
            started: Instant::now(),
        }
    }

    /// Adds a connection, or refuses it when the server is at its connection limit.
    pub fn register(&self, info: ConnInfo) -> Option<u64> {
        let mut conns = self.conns.lock();
        if conns.len() >= self.config.max_connections {
            self.stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        conns.insert(id, info);
        self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    /// Removes a connection and all its subscriptions.
    pub fn unregister(&self, id: u64, subs: &mut ConnSubs) {
        self.conns.lock().remove(&id);
        let mut idx = self.index.write();
        for (loc, (prio, _)) in subs.entries.drain() {
            idx.remove(&loc, id, prio);
        }
    }

    /// Applies a SUBSCRIBE: appends `entries` (after clearing the list if `replace`).
    /// A location already in the list moves to the end with its new sign.
    pub fn subscribe(
        &self,
        id: u64,
        outbox: &Arc<Outbox>,
        subs: &mut ConnSubs,
        replace: bool,
        entries: &[SubEntry],
    ) -> Result<(), TooManySubscriptions> {
        let mut idx = self.index.write();
        if replace {
            for (loc, (prio, _)) in subs.entries.drain() {
                idx.remove(&loc, id, prio);
            }
        }
        let new = entries
            .iter()
            .filter(|e| !subs.entries.contains_key(&e.location))
            .count();
        if subs.entries.len() + new > MAX_SUBS_PER_CONNECTION {
            return Err(TooManySubscriptions {
                have: subs.entries.len() + new,
                max: MAX_SUBS_PER_CONNECTION,
            });
        }
        for e in entries {
            if let Some((prio, _)) = subs.entries.remove(&e.location) {
                idx.remove(&e.location, id, prio);
            }
            let prio = subs.next_priority;
            subs.next_priority += 1;
            idx.insert(&e.location, id, prio, e.positive, outbox.clone());
            subs.entries.insert(e.location.clone(), (prio, e.positive));
        }
        Ok(())
    }

    /// Applies an UNSUBSCRIBE: removes each entry whose sign and location match.
    pub fn unsubscribe(&self, id: u64, subs: &mut ConnSubs, entries: &[SubEntry]) {
        let mut idx = self.index.write();
        for e in entries {
            if let Some(&(prio, positive)) = subs.entries.get(&e.location) {
                if positive == e.positive {
                    subs.entries.remove(&e.location);
                    idx.remove(&e.location, id, prio);
                }
            }
        }
    }

    /// Delivers `frame` (a whole DELIVER frame) to every connection but `sender`
    /// whose list accepts one of the message's locations. Returns the fan-out.
    pub fn route(&self, frame: &Bytes, view: &MessageView<'_>, sender: u64) -> usize {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        let idx = self.index.read();
        let mut delivered = 0usize;
        if view.count == 1 {
            let loc = view.locations().next().expect("count is 1");
            idx.for_each_accepting(loc, |e| {
                if e.owner != sender && e.value.push(frame.clone()) {
                    delivered += 1;
                }
            });
        } else {
            // A connection accepting several of the locations gets the message once.
            let mut seen: HashSet<u64> = HashSet::new();
            for loc in view.locations() {
                idx.for_each_accepting(loc, |e| {
                    if e.owner != sender && seen.insert(e.owner) && e.value.push(frame.clone()) {
                        delivered += 1;
                    }
                });
            }
        }
        drop(idx);
        self.stats
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// A snapshot of the live connections.
    pub fn connections(&self) -> Vec<(u64, ConnInfo)> {
        let mut v: Vec<_> = self
            .conns
            .lock()
            .iter()
            .map(|(k, c)| (*k, c.clone()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Number of subscription entries held, over all connections.
    pub fn subscription_count(&self) -> usize {
        self.index.read().len()
    }
}
