//! The operator's view: [`Status`], what `galed --status` prints (a STATUS frame's
//! JSON) and, as text, what SIGUSR1 logs. Its fields are listed in
//! docs/architecture.md §6; readers must ignore fields they do not know.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::router::Router;

/// The whole server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// `host:port` unless configured.
    pub name: String,
    pub up_secs: u64,
    /// The `--link` values.
    pub configured_links: Vec<String>,
    /// Entries in the subscription trie: clients' and links' interest together,
    /// and the most it may hold (`max_subscriptions`).
    pub subscriptions: usize,
    pub max_subscriptions: usize,
    /// Bytes of the memory budget in use (queues, big frames' buffers,
    /// subscription tables), and the budget.
    pub memory_used: usize,
    pub memory_limit: usize,
    /// The connection limit in force (lowered to fit the descriptor limit).
    pub max_connections: usize,
    /// Messages routed (wills included).
    pub published: u64,
    /// Deliveries queued.
    pub delivered: u64,
    pub wills_published: u64,
    pub duplicates_dropped: u64,
    pub hop_limit_dropped: u64,
    /// Connections closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Messages dropped for clients (their queues full), since start: those
    /// connected now (each client's `dropped`) and those gone.
    #[serde(default)]
    pub client_dropped: u64,
    /// Connections accepted since start, and refused at the connection limit.
    pub connections_total: u64,
    pub refused_connections: u64,
    /// Live connections; `clients` may list fewer (see `clients_omitted`).
    pub connections: usize,
    pub links: Vec<LinkStatus>,
    pub clients: Vec<ClientStatus>,
    /// Clients left out so that the report fits in one frame.
    pub clients_omitted: usize,
    /// Recently routed messages kept for clients that resume.
    #[serde(default)]
    pub resume_window: WindowStatus,
    /// Durable inboxes and their store.
    #[serde(default)]
    pub inboxes: InboxesStatus,
}

/// Durable inboxes ([`crate::inbox`]) and the store that keeps them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InboxesStatus {
    /// True when the store is open and inboxes are kept.
    pub enabled: bool,
    /// The data directory (absent when inboxes are turned off).
    pub data_dir: Option<String>,
    /// Why inboxes are not kept, when they are not.
    pub unavailable: Option<String>,
    /// Inboxes registered, messages and payload bytes held in all, the age of
    /// the oldest in seconds, the store file's size, messages queued for the
    /// next commit.
    pub count: u64,
    pub messages: u64,
    pub bytes: u64,
    pub oldest_secs: Option<u64>,
    pub file_bytes: u64,
    pub pending: u64,
    /// Counters since start: commits and failed commits; messages dropped at
    /// a limit, for their age, because the store was behind, or because their
    /// commit failed; and the last error.
    pub commits: u64,
    pub errors: u64,
    pub dropped_limit: u64,
    pub dropped_age: u64,
    pub dropped_overload: u64,
    pub dropped_failed: u64,
    pub last_error: Option<String>,
    /// Messages stored, sent to devices (replayed or live), inboxes opened,
    /// created and refused since start.
    pub stored: u64,
    pub sent: u64,
    pub opened: u64,
    pub created: u64,
    pub refused: u64,
    /// Messages whose publisher was held back because the store was behind
    /// its disk, and for how long in all (ms).
    pub store_holds: u64,
    pub store_held_ms: u64,
    /// Each inbox (the first 1,000 by name).
    pub list: Vec<InboxStatus>,
}

impl InboxesStatus {
    /// One line for a person: the store at a glance (the SIGUSR1 report and
    /// `galed --status`'s tables both show it).
    pub fn summary(&self) -> String {
        if !self.enabled {
            return format!(
                "none kept ({})",
                self.unavailable.as_deref().unwrap_or("turned off")
            );
        }
        format!(
            "{} in {}, {} messages ({} KiB, file {} KiB), oldest {}; {} stored, {} sent; \
             {} commits, {} errors, dropped {} at a limit, {} by age, {} behind, {} in \
             failed commits{}",
            self.count,
            self.data_dir.as_deref().unwrap_or("?"),
            self.messages,
            self.bytes >> 10,
            self.file_bytes >> 10,
            self.oldest_secs
                .map_or("-".to_string(), |s| format!("{s}s")),
            self.stored,
            self.sent,
            self.commits,
            self.errors,
            self.dropped_limit,
            self.dropped_age,
            self.dropped_overload,
            self.dropped_failed,
            self.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default(),
        )
    }
}

/// One durable inbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InboxStatus {
    pub name: String,
    pub locations: Vec<String>,
    /// The last seq given to a message (messages ever stored).
    pub last_seq: u64,
    /// Messages and payload bytes held for it (as of the store's last commit).
    pub messages: u64,
    pub bytes: u64,
    pub devices: Vec<DeviceStatus>,
}

/// One device of an inbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeviceStatus {
    pub name: String,
    /// The last seq it acknowledged, and how many came after it.
    pub acked: u64,
    pub waiting: u64,
    /// Connected and caught up.
    pub live: bool,
}

/// The resume window ([`crate::resume`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WindowStatus {
    /// Messages held whole, and the bytes they count for (frames and entries),
    /// against `max_bytes`.
    pub entries: usize,
    pub bytes: usize,
    pub max_bytes: usize,
    /// Age of the oldest message held, in seconds, against `max_secs`.
    pub oldest_secs: u64,
    pub max_secs: u64,
    /// Messages let go (window passed) still remembered by id, time and
    /// locations, so that a client resuming past them is told how many it lost.
    pub tombstones: usize,
    /// Resumes answered since start: complete, or with a gap.
    pub resumed: u64,
    pub gaps: u64,
    /// Bytes of the memory budget (`memory_used`) the window accounts for.
    #[serde(default)]
    pub budgeted: usize,
}

/// One link that is up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkStatus {
    pub id: u64,
    /// The other server's name.
    pub peer: String,
    pub addr: String,
    /// True if this server dialled it.
    pub dialed: bool,
    /// Always "up": links that are down are not listed (compare
    /// `configured_links`).
    pub state: String,
    pub up_secs: u64,
    /// Largest frame the link's handshake agreed on.
    pub max_frame: u32,
    /// Locations the peer wants from us, and those we told it we want.
    pub interest_received: usize,
    pub interest_advertised: usize,
    /// True if the peer is sent every message: it asked (INTEREST `all`), or
    /// sent more than `max_link_interest` (then `interest_received` is 0).
    #[serde(default)]
    pub flooded: bool,
    /// Most locations the peer holds for us (its LINK_LIMITS), and how what we
    /// advertise keeps to it: "exact", "depth N" (locations cut to N
    /// segments), "all", or "waiting" (for the peer's limits).
    #[serde(default)]
    pub interest_limit: usize,
    #[serde(default)]
    pub interest_mode: String,
    /// INTEREST frames received.
    pub interest_updates_in: u64,
    /// Frames and bytes queued for the peer and not yet written.
    pub queued_frames: usize,
    pub queued_bytes: usize,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub duplicates_in: u64,
    /// Messages the peer reported it dropped on their way here (LINK_LOSSAGE).
    pub lost_upstream: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Messages dropped for the peer here (too large for the link, or the link
    /// stuck), reported to it by location.
    pub dropped: u64,
    /// How often and how long publishers waited for room in the link's queue.
    pub holds: u64,
    pub held_ms: u64,
}

/// One client connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientStatus {
    pub id: u64,
    pub peer: String,
    /// From its HELLO.
    pub agent: String,
    pub up_secs: u64,
    pub subscriptions: usize,
    pub published: u64,
    pub queued_frames: usize,
    pub queued_bytes: usize,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Messages dropped for it (reported to it in LOSSAGE).
    pub dropped: u64,
    /// How often and how long publishers waited for room in its queue.
    pub holds: u64,
    pub held_ms: u64,
}

/// The inboxes' part of the status.
fn inboxes_status(router: &Router) -> InboxesStatus {
    let ib = &router.inboxes;
    let c = &ib.counters;
    let mut out = InboxesStatus {
        data_dir: ib.data_dir.as_ref().map(|d| d.display().to_string()),
        unavailable: ib.unavailable.clone(),
        stored: c.stored.load(Ordering::Relaxed),
        sent: c.sent.load(Ordering::Relaxed),
        opened: c.opened.load(Ordering::Relaxed),
        created: c.created.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        store_holds: c.store_holds.load(Ordering::Relaxed),
        store_held_ms: c.store_held_ms.load(Ordering::Relaxed),
        ..Default::default()
    };
    let Some(store) = ib.store() else {
        return out;
    };
    let st = store.stats();
    let now = crate::resume::now_ms();
    out.enabled = true;
    out.count = st.inboxes;
    out.messages = st.messages;
    out.bytes = st.bytes;
    out.oldest_secs = st.oldest.map(|t| now.saturating_sub(t) / 1000);
    out.file_bytes = st.file_bytes;
    out.pending = st.pending;
    out.commits = st.counters.commits;
    out.errors = st.counters.errors;
    out.dropped_limit = st.counters.dropped_limit;
    out.dropped_age = st.counters.dropped_age;
    out.dropped_overload = st.counters.dropped_overload;
    out.dropped_failed = st.counters.dropped_failed;
    out.last_error = st.last_error;
    let live = ib.live_devices();
    out.list = store
        .inboxes()
        .into_iter()
        .take(1000)
        .map(|i| {
            let live_here = live.get(&i.inbox);
            InboxStatus {
                devices: i
                    .devices
                    .iter()
                    .map(|(d, acked)| DeviceStatus {
                        name: d.clone(),
                        acked: *acked,
                        waiting: i.last_seq.saturating_sub(*acked),
                        live: live_here.is_some_and(|l| l.contains(d)),
                    })
                    .collect(),
                name: i.inbox,
                locations: i.locations,
                last_seq: i.last_seq,
                messages: i.messages,
                bytes: i.bytes,
            }
        })
        .collect();
    out
}

impl Status {
    /// The server's state now.
    pub fn collect(router: &Router) -> Status {
        let s = &router.stats;
        let links = router
            .fed
            .lock()
            .views()
            .into_iter()
            .map(|(v, outbox, st)| {
                let (queued_frames, queued_bytes) = outbox.depth();
                let o = &outbox.stats;
                LinkStatus {
                    id: v.id,
                    peer: v.peer,
                    addr: v.addr,
                    dialed: v.dialed,
                    state: "up".into(),
                    up_secs: v.up_secs,
                    max_frame: v.max_frame,
                    interest_received: v.interest_received,
                    interest_advertised: v.interest_advertised,
                    flooded: v.flooded,
                    interest_limit: v.interest_limit,
                    interest_mode: v.interest_mode,
                    interest_updates_in: st.interest_updates_in.load(Ordering::Relaxed),
                    queued_frames,
                    queued_bytes,
                    messages_in: st.messages_in.load(Ordering::Relaxed),
                    bytes_in: st.bytes_in.load(Ordering::Relaxed),
                    duplicates_in: st.duplicates_in.load(Ordering::Relaxed),
                    lost_upstream: st.lost_upstream.load(Ordering::Relaxed),
                    frames_out: o.frames_out.load(Ordering::Relaxed),
                    bytes_out: o.bytes_out.load(Ordering::Relaxed),
                    dropped: o.dropped.load(Ordering::Relaxed),
                    holds: o.holds.load(Ordering::Relaxed),
                    held_ms: o.held_ns.load(Ordering::Relaxed) / 1_000_000,
                }
            })
            .collect();
        let clients: Vec<ClientStatus> = router
            .connections()
            .into_iter()
            .map(|(id, c)| {
                let (queued_frames, queued_bytes) = c.outbox.depth();
                let o = &c.outbox.stats;
                ClientStatus {
                    id,
                    peer: c.peer.to_string(),
                    agent: c.agent,
                    up_secs: c.since.elapsed().as_secs(),
                    subscriptions: c.subscriptions.load(Ordering::Relaxed),
                    published: c.published.load(Ordering::Relaxed),
                    queued_frames,
                    queued_bytes,
                    frames_out: o.frames_out.load(Ordering::Relaxed),
                    bytes_out: o.bytes_out.load(Ordering::Relaxed),
                    dropped: o.dropped.load(Ordering::Relaxed),
                    holds: o.holds.load(Ordering::Relaxed),
                    held_ms: o.held_ns.load(Ordering::Relaxed) / 1_000_000,
                }
            })
            .collect();
        Status {
            name: router.config.name.clone(),
            up_secs: router.started.elapsed().as_secs(),
            configured_links: router.dials.configured(),
            subscriptions: router.subscription_count(),
            max_subscriptions: router.limits.max_subscriptions(),
            memory_used: router.memory.used(),
            memory_limit: router.memory.limit(),
            max_connections: router.limits.max_connections(),
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            wills_published: s.wills_published.load(Ordering::Relaxed),
            duplicates_dropped: s.duplicates_dropped.load(Ordering::Relaxed),
            hop_limit_dropped: s.hop_limit_dropped.load(Ordering::Relaxed),
            protocol_errors: s.protocol_errors.load(Ordering::Relaxed),
            client_dropped: s.client_dropped_closed.load(Ordering::Relaxed)
                + clients.iter().map(|c| c.dropped).sum::<u64>(),
            connections_total: s.connections_total.load(Ordering::Relaxed),
            refused_connections: s.refused_connections.load(Ordering::Relaxed),
            connections: clients.len(),
            links,
            clients,
            clients_omitted: 0,
            resume_window: {
                let now = crate::resume::now_ms();
                let mut w = router.window.lock();
                w.expire(now);
                let ws = w.stats(now);
                WindowStatus {
                    entries: ws.held,
                    bytes: ws.bytes,
                    max_bytes: router.config.resume_window_bytes,
                    oldest_secs: ws.oldest_ms / 1000,
                    max_secs: router.config.resume_window_secs,
                    tombstones: ws.tombstones,
                    resumed: s.resumed.load(Ordering::Relaxed),
                    gaps: s.resume_gaps.load(Ordering::Relaxed),
                    budgeted: ws.budgeted,
                }
            },
            inboxes: inboxes_status(router),
        }
    }

    /// As JSON of at most `max` bytes: if the whole report is longer (tens of
    /// thousands of clients), clients are left out, the count in
    /// `clients_omitted`.
    pub fn to_json(&self, max: usize) -> String {
        let mut s = self.clone();
        loop {
            let json = serde_json::to_string(&s).expect("status serializes");
            if json.len() <= max || s.clients.is_empty() {
                return json;
            }
            let keep = s.clients.len() / 2;
            s.clients_omitted += s.clients.len() - keep;
            s.clients.truncate(keep);
        }
    }

    /// As text, one connection per line (what SIGUSR1 logs).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "galed {} up {}s: {} connections ({} total, {} refused), {} links, {} \
             subscriptions, memory {} of {} MB, {} published, {} delivered, {} wills, {} \
             protocol errors",
            self.name,
            self.up_secs,
            self.connections,
            self.connections_total,
            self.refused_connections,
            self.links.len(),
            self.subscriptions,
            self.memory_used >> 20,
            self.memory_limit >> 20,
            self.published,
            self.delivered,
            self.wills_published,
            self.protocol_errors,
        );
        let w = &self.resume_window;
        let _ = writeln!(
            out,
            "  resume window: {} messages, {} of {} MB, oldest {}s of {}s, {} let go; {} \
             resumes, {} with a gap",
            w.entries,
            w.bytes >> 20,
            w.max_bytes >> 20,
            w.oldest_secs,
            w.max_secs,
            w.tombstones,
            w.resumed,
            w.gaps,
        );
        let _ = writeln!(out, "  inboxes: {}", self.inboxes.summary());
        for l in &self.links {
            let _ = writeln!(
                out,
                "  link {} {} ({}) up {}s: interest {}{} in/{} out ({}, limit {}), {} messages \
                 in, {} frames out, queued {} frames/{} bytes, dropped {}, lost upstream {}",
                l.id,
                l.peer,
                l.addr,
                l.up_secs,
                l.interest_received,
                if l.flooded { " (sent everything)" } else { "" },
                l.interest_advertised,
                l.interest_mode,
                l.interest_limit,
                l.messages_in,
                l.frames_out,
                l.queued_frames,
                l.queued_bytes,
                l.dropped,
                l.lost_upstream,
            );
        }
        for c in &self.clients {
            let _ = writeln!(
                out,
                "  conn {} {} agent={:?} up {}s subs={} published={} sent={} frames/{} bytes \
                 queued={} frames/{} bytes dropped={} held={}ms",
                c.id,
                c.peer,
                c.agent,
                c.up_secs,
                c.subscriptions,
                c.published,
                c.frames_out,
                c.bytes_out,
                c.queued_frames,
                c.queued_bytes,
                c.dropped,
                c.held_ms,
            );
        }
        out
    }
}

/// The status as JSON that fits in a frame of `max_frame` bytes.
pub fn json(router: &Router, max_frame: u32) -> String {
    // The frame's type byte counts too.
    Status::collect(router).to_json(max_frame as usize - 1)
}

/// The status as text.
pub fn report(router: &Router) -> String {
    Status::collect(router).to_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: u64) -> ClientStatus {
        ClientStatus {
            id,
            peer: "127.0.0.1:1".into(),
            agent: "a".repeat(100),
            up_secs: 0,
            subscriptions: 0,
            published: 0,
            queued_frames: 0,
            queued_bytes: 0,
            frames_out: 0,
            bytes_out: 0,
            dropped: 0,
            holds: 0,
            held_ms: 0,
        }
    }

    #[test]
    fn a_long_report_leaves_clients_out_to_fit_a_frame() {
        let router = Router::new(crate::Config::default());
        let mut s = Status::collect(&router);
        s.clients = (0..1000).map(client).collect();
        s.connections = 1000;
        let json = s.to_json(4095);
        assert!(json.len() <= 4095, "{}", json.len());
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.clients.len() + back.clients_omitted, 1000);
        assert!(back.clients_omitted > 0);
        assert_eq!(back.connections, 1000);
        // A short one is whole.
        let whole: Status = serde_json::from_str(&s.to_json(1 << 20)).unwrap();
        assert_eq!(whole, s);
    }
}
