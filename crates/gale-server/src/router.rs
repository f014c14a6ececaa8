//! Shared routing state: the subscription trie, the live connections, the links.
//!
//! Publishing takes the trie's read lock and pushes one shared `Bytes` into each
//! accepting owner's outbox (a client connection, or a server link), so the message
//! is encoded once whatever the fan-out. Subscription changes take the write lock
//! briefly, then tell the federation (lock order: federation, then trie).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gale_proto::limits::MAX_SUBS_PER_CONNECTION;
use gale_proto::trie::SubscriptionTrie;
use gale_proto::{Location, LossEntry, MessageView, SubEntry};
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::federation::{Federation, LinkRefused, NewLink};
use crate::flow::Routing;
use crate::memory::{MemoryBudget, SUBSCRIPTION_COST};
use crate::outbox::{raw_locations, Outbox};
use crate::resume::{now_ms, random_epoch, raw_locations as locations_of, ResumeWindow};
use crate::seen_ids::SeenIds;
use gale_proto::resume::{Resume, Resumed};
use gale_proto::ErrorCode;

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_total: AtomicU64,
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub wills_published: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub refused_connections: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    pub hop_limit_dropped: AtomicU64,
    /// RESUMEs answered, and of those, gaps reported.
    pub resumed: AtomicU64,
    pub resume_gaps: AtomicU64,
    /// Messages dropped for clients that have since gone (see `Status::client_dropped`).
    pub client_dropped_closed: AtomicU64,
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
/// with the priority (position) of its latest entry and its sign.
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

/// Why a SUBSCRIBE was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeRefused {
    #[error("subscription list too long: {have} entries, the limit is {max} per connection")]
    TooMany { have: usize, max: usize },
    #[error(
        "the server holds its limit of {max} subscriptions; try again later or another server"
    )]
    ServerFull { max: usize },
    #[error("the server is at its memory budget; try again later or another server")]
    Memory,
}

impl SubscribeRefused {
    /// The ERROR code to close with: the connection's own limit is permanent,
    /// the server's are not.
    pub fn code(&self) -> ErrorCode {
        match self {
            SubscribeRefused::TooMany { .. } => ErrorCode::LimitExceeded,
            SubscribeRefused::ServerFull { .. } | SubscribeRefused::Memory => ErrorCode::Busy,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefused {
    #[error("the server is at its limit of {0} connections; try again later or another server")]
    Connections(usize),
    #[error("the server is at its memory budget; try again later or another server")]
    Memory,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Router {
    pub config: Config,
    index: RwLock<SubscriptionTrie<Arc<Outbox>>>,
    /// Links sent every message (see [`crate::federation`]); changed only under
    /// the trie's write lock, so that route caches see the change.
    flooded: RwLock<Vec<(u64, Arc<Outbox>)>>,
    /// Bumped whenever the trie changes; a reader's cached routes are good while
    /// it stays the same.
    generation: AtomicU64,
    conns: Mutex<HashMap<u64, ConnInfo>>,
    next_id: AtomicU64,
    pub stats: ServerStats,
    /// What the server's work may hold in memory (see [`crate::memory`]).
    pub memory: Arc<MemoryBudget>,
    /// Refused connections, logged at most every 10 s.
    pub refusals: crate::logs::Every,
    /// Failed accepts (out of descriptors), likewise, apart: a refusal logged
    /// just before must not hide them.
    pub accept_failures: crate::logs::Every,
    /// Refused subscriptions (server limit, memory), likewise.
    pub sub_refusals: crate::logs::Every,
    pub started: Instant,
    pub(crate) fed: Mutex<Federation>,
    /// The limits a reload may change ([`crate::live`]); read these, not `config`.
    pub limits: crate::live::Limits,
    /// The configured links being dialled ([`crate::dials`]).
    pub dials: crate::dials::Dials,
    seen: Mutex<SeenIds>,
    /// Recently routed messages, for clients that resume (see [`crate::resume`]).
    pub window: Mutex<ResumeWindow>,
    /// True once links are configured or have come up: only then can a message
    /// come back to us, so only then is the id cache consulted.
    federated: AtomicBool,
    /// When a cycle was last reported for a pair of sources.
    cycle_warned: Mutex<HashMap<(u64, u64), Instant>>,
    /// Durable inboxes (see [`crate::inbox`]).
    pub inboxes: crate::inbox::Inboxes,
    /// Addresses the gateways of original-protocol clients dial this server
    /// from (`crate::orig`), until their connection is accepted.
    pub orig_gateways: Mutex<HashSet<SocketAddr>>,
}

impl Router {
    /// A router without inboxes (every INBOX_OPEN is answered "unavailable"):
    /// for tests and embedders. galed uses [`Router::open`].
    pub fn new(config: Config) -> Router {
        Router::build(config, crate::inbox::Inboxes::closed())
    }

    /// A router with the inbox store `config` names (opened now; a store that
    /// cannot be opened is logged, and the router runs without inboxes).
    pub fn open(config: Config) -> Router {
        let inboxes = crate::inbox::Inboxes::open(&config);
        Router::build(config, inboxes)
    }

    fn build(config: Config, inboxes: crate::inbox::Inboxes) -> Router {
        let federated = !config.links.is_empty() || !config.orig_links.is_empty();
        let mut fed = Federation::new(config.max_link_interest);
        // Inboxes keep their interest on the links whether their owners are
        // connected or not.
        for l in inboxes.locations() {
            fed.local_add(&l);
        }
        let seen = SeenIds::new(config.dedup_cache);
        let memory = Arc::new(MemoryBudget::new(config.memory_budget()));
        let window = ResumeWindow::new(
            random_epoch(),
            config.resume_window_bytes,
            config.resume_window_secs,
        )
        .with_budget(memory.clone());
        let limits = crate::live::Limits::new(&config);
        let dials = crate::dials::Dials::new(&config.links);
        Router {
            config,
            index: RwLock::new(SubscriptionTrie::new()),
            flooded: RwLock::new(Vec::new()),
            generation: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats: ServerStats::default(),
            memory,
            refusals: crate::logs::Every::new(std::time::Duration::from_secs(10)),
            accept_failures: crate::logs::Every::new(std::time::Duration::from_secs(10)),
            sub_refusals: crate::logs::Every::new(std::time::Duration::from_secs(10)),
            started: Instant::now(),
            fed: Mutex::new(fed),
            limits,
            dials,
            seen: Mutex::new(seen),
            window: Mutex::new(window),
            federated: AtomicBool::new(federated),
            cycle_warned: Mutex::new(HashMap::new()),
            inboxes,
            orig_gateways: Mutex::new(HashSet::new()),
        }
    }

    /// The trie, for changing. Every change makes the readers' route caches stale.
    fn index_write(&self) -> parking_lot::RwLockWriteGuard<'_, SubscriptionTrie<Arc<Outbox>>> {
        let idx = self.index.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        idx
    }

    /// A fresh owner id, for connections and links alike.
    pub fn next_owner_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a connection, or refuses it when the server is at its connection limit
    /// or its memory budget.
    pub fn register(&self, info: ConnInfo) -> Result<u64, ConnectRefused> {
        let mut conns = self.conns.lock();
        let refused = if conns.len() >= self.limits.max_connections() {
            Some(ConnectRefused::Connections(self.limits.max_connections()))
        } else if self.memory.exhausted() {
            Some(ConnectRefused::Memory)
        } else {
            None
        };
        if let Some(r) = refused {
            self.stats
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        let id = self.next_owner_id();
        conns.insert(id, info);
        self.stats.connections_total.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Removes a connection and all its subscriptions.
    pub fn unregister(&self, id: u64, subs: &mut ConnSubs) {
        {
            let mut conns = self.conns.lock();
            if let Some(c) = conns.remove(&id) {
                // What was dropped for it stays counted (status, metrics).
                let dropped = c.outbox.stats.dropped.load(Ordering::Relaxed);
                self.stats
                    .client_dropped_closed
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            gale_proto::trie::shrink_if_sparse(&mut conns);
        }
        self.memory.give(subs.entries.len() * SUBSCRIPTION_COST);
        let mut gone = Vec::new();
        let mut idx = self.index_write();
        for (loc, (prio, positive)) in subs.entries.drain() {
            idx.remove(&loc, id, prio);
            if positive {
                gone.push(loc);
            }
        }
        drop(idx);
        let mut fed = self.fed.lock();
        for l in &gone {
            fed.local_remove(l);
        }
    }

    /// Applies a SUBSCRIBE: appends `entries` (after clearing the list if `replace`).
    /// A location already in the list moves to the end with its new sign.
    ///
    /// With `resume` (the connection sent RESUME before this SUBSCRIBE), what the
    /// client missed and the new list accepts is queued for it, then RESUMED, all
    /// before the trie's lock is let go: no message routed meanwhile can reach the
    /// connection ahead of the replay. A message is added to the resume window
    /// before its routes are looked up, so each one is either in the replay or
    /// routed with the new list (or both: the client drops the second copy).
    pub fn subscribe(
        &self,
        id: u64,
        outbox: &Arc<Outbox>,
        subs: &mut ConnSubs,
        replace: bool,
        entries: &[SubEntry],
        resume: Option<&Resume>,
    ) -> Result<Option<Resumed>, SubscribeRefused> {
        let kept = if replace { 0 } else { subs.entries.len() };
        let new = entries
            .iter()
            .filter(|e| replace || !subs.entries.contains_key(&e.location))
            .count();
        if kept + new > MAX_SUBS_PER_CONNECTION {
            return Err(SubscribeRefused::TooMany {
                have: kept + new,
                max: MAX_SUBS_PER_CONNECTION,
            });
        }
        let before = subs.entries.len();
        let growth = (kept + new).saturating_sub(before);
        if growth > 0 {
            let max = self.limits.max_subscriptions();
            if self.subscription_count() + growth > max {
                return Err(SubscribeRefused::ServerFull { max });
            }
            if !self.memory.try_take(growth * SUBSCRIPTION_COST) {
                return Err(SubscribeRefused::Memory);
            }
        }
        // Positive entries gained and lost are what other servers must hear about.
        let (mut gained, mut lost) = (Vec::new(), Vec::new());
        let mut idx = self.index_write();
        if replace {
            for (loc, (prio, positive)) in subs.entries.drain() {
                idx.remove(&loc, id, prio);
                if positive {
                    lost.push(loc);
                }
            }
        }
        for e in entries {
            if let Some((prio, positive)) = subs.entries.remove(&e.location) {
                idx.remove(&e.location, id, prio);
                if positive {
                    lost.push(e.location.clone());
                }
            }
            let prio = subs.next_priority;
            subs.next_priority += 1;
            idx.insert(&e.location, id, prio, e.positive, outbox.clone());
            subs.entries.insert(e.location.clone(), (prio, e.positive));
            if e.positive {
                gained.push(e.location.clone());
            }
        }
        let resumed = resume.map(|r| self.replay(r, outbox, subs));
        drop(idx);
        // Entries can be fewer than taken for (a repeat within `entries`), or
        // fewer than before (a replacing list).
        let taken = before + growth;
        self.memory
            .give(taken.saturating_sub(subs.entries.len()) * SUBSCRIPTION_COST);
        let mut fed = self.fed.lock();
        for l in &gained {
            fed.local_add(l);
        }
        for l in &lost {
            fed.local_remove(l);
        }
        Ok(resumed)
    }

    /// Queues for `outbox` what the resume window holds after `resume` that `subs`
    /// accepts, then RESUMED (called with the trie's write lock held).
    fn replay(&self, resume: &Resume, outbox: &Outbox, subs: &ConnSubs) -> Resumed {
        let mut list: SubscriptionTrie<()> = SubscriptionTrie::new();
        for (loc, (prio, positive)) in &subs.entries {
            list.insert(loc, 0, *prio, *positive, ());
        }
        let wants = |raw: &[u8]| {
            locations_of(raw).any(|l| {
                let mut yes = false;
                list.for_each_accepting(l, |_| yes = true);
                yes
            })
        };
        let plan = self.window.lock().plan(resume, now_ms(), wants);
        let mut resumed = plan.resumed;
        self.stats.resumed.fetch_add(1, Ordering::Relaxed);
        if resumed.outcome.is_gap() {
            self.stats.resume_gaps.fetch_add(1, Ordering::Relaxed);
        }
        resumed.replayed = outbox.replay(plan.frames);
        outbox.push_control(gale_proto::Frame::Resumed(resumed).to_bytes());
        resumed
    }

    /// Applies an UNSUBSCRIBE: removes each entry whose sign and location match.
    pub fn unsubscribe(&self, id: u64, subs: &mut ConnSubs, entries: &[SubEntry]) {
        let before = subs.entries.len();
        let mut lost = Vec::new();
        let mut idx = self.index_write();
        for e in entries {
            if let Some(&(prio, positive)) = subs.entries.get(&e.location) {
                if positive == e.positive {
                    subs.entries.remove(&e.location);
                    idx.remove(&e.location, id, prio);
                    if positive {
                        lost.push(e.location.clone());
                    }
                }
            }
        }
        drop(idx);
        self.memory
            .give((before - subs.entries.len()) * SUBSCRIPTION_COST);
        let mut fed = self.fed.lock();
        for l in &lost {
            fed.local_remove(l);
        }
    }

    /// Decides whether a message from `source` (a connection or link id) is new.
    /// A repeat is dropped; one that came back over a link means the links form a
    /// cycle, which is logged (once a minute per pair of sources) naming the links.
    pub fn first_sighting(&self, view: &MessageView<'_>, source: u64) -> bool {
        if !self.federated.load(Ordering::Relaxed) {
            return true;
        }
        let Some(tag) = self.seen.lock().check(view.id, source) else {
            return true;
        };
        self.stats
            .duplicates_dropped
            .fetch_add(1, Ordering::Relaxed);
        let fed = self.fed.lock();
        let Some(via) = fed.peer_name(source) else {
            return false; // a client re-sent after reconnecting: not a cycle
        };
        // The cache keeps the low 32 bits of the first source's id.
        let first = fed.link_by_tag(tag).unwrap_or(u64::from(tag));
        let mut warned = self.cycle_warned.lock();
        if warned
            .get(&(first, source))
            .is_some_and(|t| t.elapsed().as_secs() < 60)
        {
            return false;
        }
        warned.insert((first, source), Instant::now());
        let origin = match fed.peer_name(first) {
            Some(p) if first != source => format!("the link to {p}"),
            Some(_) => "the same link".to_string(),
            None => "a client of this server".to_string(),
        };
        tracing::warn!(
            "message {} came back over the link to {via} after first arriving from {origin}: \
             the links of {} form a cycle through the link to {via}; the duplicate was \
             dropped, but each message now crosses the cycle twice: remove a link, or list \
             it as an alternate (--link a:11512,b:11512) instead",
            view.id,
            self.config.name,
        );
        false
    }

    /// Registers a link (see [`Federation::link_up`]).
    /// Links are configured now (a reload added some): from here on messages
    /// are checked for duplicates.
    pub fn note_federated(&self) {
        self.federated.store(true, Ordering::Relaxed);
    }

    pub fn link_up(&self, link: NewLink<'_>) -> Result<(), LinkRefused> {
        self.federated.store(true, Ordering::Relaxed);
        self.fed.lock().link_up(&self.config.name, link)
    }

    /// Applies a link's LINK_LIMITS (see [`Federation::link_limits`]).
    pub fn link_limits(&self, id: u64, max_interest: u32) {
        self.fed.lock().link_limits(id, max_interest);
    }

    /// Applies a link's INTEREST: updates the trie and tells the other links.
    pub fn link_interest(
        &self,
        id: u64,
        outbox: &Arc<Outbox>,
        reset: bool,
        all: bool,
        entries: &[SubEntry],
    ) {
        let mut fed = self.fed.lock();
        let ch = fed.remote_interest(id, reset, all, entries);
        let mut idx = self.index_write();
        for l in &ch.removed {
            idx.remove(l, id, 0);
        }
        for l in &ch.added {
            idx.insert(l, id, 0, true, outbox.clone());
        }
        match ch.flooded {
            Some(true) => self.flooded.write().push((id, outbox.clone())),
            Some(false) => self.flooded.write().retain(|(o, _)| *o != id),
            None => {}
        }
        drop(idx);
        // A link's interest is not refused (the far side would lose messages
        // without knowing): past `max_link_interest` the link is sent everything
        // instead, which holds nothing. What it holds is counted.
        self.memory.take(ch.added.len() * SUBSCRIPTION_COST);
        self.memory.give(ch.removed.len() * SUBSCRIPTION_COST);
    }

    /// Forgets a link and withdraws its interest everywhere.
    pub fn link_down(&self, id: u64) {
        let mut fed = self.fed.lock();
        let gone = fed.link_down(id);
        let mut idx = self.index_write();
        for l in &gone {
            idx.remove(l, id, 0);
        }
        self.flooded.write().retain(|(o, _)| *o != id);
        self.memory.give(gone.len() * SUBSCRIPTION_COST);
    }

    /// Delivers `frame` (a whole DELIVER frame) to every owner but `sender` whose
    /// list accepts one of the message's locations. Outboxes that are full are left
    /// in `ctx` for the caller to wait on ([`Routing::hold`]). Returns how many
    /// took the message at once.
    pub fn route(
        &self,
        frame: &Bytes,
        view: &MessageView<'_>,
        sender: u64,
        ctx: &mut Routing,
    ) -> usize {
        // Into the window first: a client resuming now either finds the message
        // there or is already in the routes looked up below (see `subscribe`).
        let now = ctx.now_ms();
        self.window.lock().append(frame, view, now);
        let generation = self.generation.load(Ordering::SeqCst);
        let raw = view.raw_locations();
        if !ctx.cached(generation, raw) {
            let idx = self.index.read();
            let generation = self.generation.load(Ordering::SeqCst);
            let mut targets = ctx.reuse_targets();
            // A flooded link has no entries in the trie: it is added once here.
            for (owner, ob) in self.flooded.read().iter() {
                if *owner != sender {
                    targets.push(ob.clone());
                }
            }
            if view.count == 1 {
                let loc = view.locations().next().expect("count is 1");
                idx.for_each_accepting(loc, |e| {
                    if e.owner != sender {
                        targets.push(e.value.clone());
                    }
                });
            } else {
                // An owner accepting several of the locations gets the message once.
                let mut seen: HashSet<u64> = HashSet::new();
                for loc in view.locations() {
                    idx.for_each_accepting(loc, |e| {
                        if e.owner != sender && seen.insert(e.owner) {
                            targets.push(e.value.clone());
                        }
                    });
                }
            }
            drop(idx);
            ctx.cache(generation, raw, targets);
        }
        let n = ctx.offer_all(frame, view);
        self.inboxes.offer(frame, view, now, ctx);
        n
    }

    /// An inbox now keeps `gained` and no longer `lost`: tell the links.
    pub fn inbox_interest(&self, gained: &[Location], lost: &[Location]) {
        if gained.is_empty() && lost.is_empty() {
            return;
        }
        let mut fed = self.fed.lock();
        for l in gained {
            fed.local_add(l);
        }
        for l in lost {
            fed.local_remove(l);
        }
    }

    /// Adds what a reader routed since the last call to the server's totals.
    pub fn tally(&self, ctx: &mut Routing) {
        if ctx.published > 0 {
            let p = std::mem::take(&mut ctx.published);
            self.stats.published.fetch_add(p, Ordering::Relaxed);
        }
        if ctx.delivered > 0 {
            let d = std::mem::take(&mut ctx.delivered);
            self.stats.delivered.fetch_add(d, Ordering::Relaxed);
        }
    }

    /// Passes on a loss report that came over link `source`: each owner (client or
    /// link) that would have received the lost messages is told, once per entry.
    pub fn route_loss(&self, entries: &[LossEntry], source: u64, ctx: &mut Routing) {
        for e in entries {
            let raw = raw_locations(&e.locations);
            let mut tell = |ob: &Arc<Outbox>| {
                if ob.add_loss(e.count, &raw) {
                    ctx.touch(ob);
                }
            };
            if e.locations.is_empty() {
                // Lost to locations unknown: everyone might have wanted them.
                for (_, c) in self.conns.lock().iter() {
                    tell(&c.outbox);
                }
                for (v, ob, _) in self.fed.lock().views() {
                    if v.id != source {
                        tell(&ob);
                    }
                }
                continue;
            }
            let idx = self.index.read();
            let mut seen: HashSet<u64> = HashSet::new();
            for (owner, ob) in self.flooded.read().iter() {
                if *owner != source && seen.insert(*owner) {
                    tell(ob);
                }
            }
            for loc in &e.locations {
                idx.for_each_accepting(loc.as_str(), |x| {
                    if x.owner != source && seen.insert(x.owner) {
                        tell(&x.value);
                    }
                });
            }
        }
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

    /// Number of subscription entries held, clients' and links' together.
    pub fn subscription_count(&self) -> usize {
        self.index.read().len()
    }
}
