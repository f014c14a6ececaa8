//! Inboxes: durable subscriptions kept in the embedded store (`gale-store`,
//! docs/store.md) while their owners' devices are away, sent to each device in
//! order when it comes back, then as messages arrive (docs/protocol.md §4.15).
//!
//! - Every message routed here whose locations an inbox keeps is appended to it
//!   once (whatever the number of devices), from the router: `append` only
//!   queues for the store's committer and never waits for the disk.
//! - A device that opens its inbox (INBOX_OPEN, signed by the inbox's key over a
//!   challenge of this connection) gets a task ([`Inboxes::attach`]) that reads
//!   what is held after its cursor, in pages, from a blocking thread, and sends
//!   it as STORED frames while the connection's queue has room; once it has
//!   caught up it is *live*: the router then sends it each new message as it is
//!   stored. A live device whose queue fills falls back to reading from the
//!   store, so a slow device loses nothing and holds nothing in memory.
//! - The device acknowledges what it has shown (INBOX_ACK); the store deletes a
//!   message once every known device of the inbox has acknowledged it.
//! - The inboxes' locations are kept as interest on the server's links, whether
//!   their owners are connected or not.
//! - Store errors never stop live delivery: they are logged, counted in the
//!   status and told to the devices as a gap (INBOX_GAP, or INBOX_STATE's
//!   `dropped`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ed25519_dalek::{Signature, VerifyingKey};
use gale_proto::inbox::{InboxDone, InboxOpen, InboxState, InboxStatus, CHALLENGE_LEN};
use gale_proto::limits::FRAME_HEADER_LEN;
use gale_proto::trie::SubscriptionTrie;
use gale_proto::{Frame, FrameType, Location, MessageView};
use gale_store::{Store, StoreError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::flow::Routing;
use crate::outbox::Outbox;

/// Messages read from the store per page.
const PAGE: usize = 256;
/// Longest a publisher is held for one message while the store is behind its
/// disk; past it the message is dropped from the inboxes (counted, told).
pub const STORE_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// Counters for the status view.
#[derive(Debug, Default)]
pub struct InboxCounters {
    pub opened: AtomicU64,
    pub created: AtomicU64,
    pub refused: AtomicU64,
    pub stored: AtomicU64,
    /// Appends the store refused (behind its disk, or an error).
    pub store_refused: AtomicU64,
    /// Messages whose publisher waited for the store to catch up, and the
    /// time they waited in all.
    pub store_holds: AtomicU64,
    pub store_held_ms: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
}

/// One registered inbox, as the router sees it.
#[derive(Debug)]
pub struct Sink {
    pub name: String,
    pub key: [u8; 32],
    /// Its owner number in the index.
    num: u64,
    state: Mutex<SinkState>,
}

#[derive(Debug, Default)]
struct SinkState {
    locations: Vec<Location>,
    /// Devices connected and caught up: each new message is sent to them as
    /// it is stored.
    live: Vec<Live>,
}

#[derive(Debug)]
struct Live {
    device: String,
    conn: u64,
    outbox: Arc<Outbox>,
    /// The last seq sent to the device; shared with its task.
    sent: Arc<AtomicU64>,
    /// Wakes the device's task when it falls behind.
    behind: Arc<Notify>,
    queue_limit: usize,
}

/// The server's inboxes. Without a store (disabled, or it could not be
/// opened), every INBOX_OPEN is answered "unavailable".
pub struct Inboxes {
    store: Option<Arc<Store>>,
    /// Why there is no store, for the status view and for clients.
    pub unavailable: Option<String>,
    pub data_dir: Option<PathBuf>,
    max_inboxes: usize,
    index: RwLock<SubscriptionTrie<Arc<Sink>>>,
    by_name: Mutex<HashMap<String, Arc<Sink>>>,
    /// Inboxes registered: the router skips the index while it is 0.
    count: AtomicUsize,
    next_num: AtomicU64,
    pub counters: InboxCounters,
}

impl std::fmt::Debug for Inboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inboxes")
            .field("data_dir", &self.data_dir)
            .field("unavailable", &self.unavailable)
            .field("count", &self.count)
            .finish()
    }
}

/// What the connection does after INBOX_OPEN.
pub enum Opened {
    /// Refused or unavailable: the INBOX_STATE to send.
    Refused(InboxState),
    /// Open: the INBOX_STATE was queued; start the device's task.
    Open(Attach),
}

/// Everything a device's task needs.
pub struct Attach {
    sink: Arc<Sink>,
    device: String,
    drain: bool,
    created: bool,
    /// Where the device's cursor stood, and the drops already told.
    after: u64,
    told: u64,
}

impl Attach {
    pub fn inbox(&self) -> &str {
        &self.sink.name
    }

    pub fn device(&self) -> &str {
        &self.device
    }
}

impl Inboxes {
    /// Opens the store as `config` says. A store that cannot be opened is
    /// logged and leaves galed running without inboxes.
    pub fn open(config: &Config) -> Inboxes {
        let mut me = Inboxes::closed();
        me.max_inboxes = config.max_inboxes;
        if !config.inboxes {
            me.unavailable = Some("inboxes are turned off on this server (inboxes = false)".into());
            return me;
        }
        me.open_store(config);
        me
    }

    /// No store: every INBOX_OPEN is answered "unavailable".
    pub fn closed() -> Inboxes {
        Inboxes {
            index: RwLock::new(SubscriptionTrie::new()),
            by_name: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            next_num: AtomicU64::new(1),
            counters: InboxCounters::default(),
            max_inboxes: 0,
            unavailable: Some("this server was started without an inbox store".into()),
            store: None,
            data_dir: None,
        }
    }

    fn open_store(&mut self, config: &Config) {
        let me = self;
        me.unavailable = None;
        let dir = config.data_dir();
        me.data_dir = Some(dir.clone());
        match Store::open_with(&dir, config.store_limits(), config.commit_policy()) {
            Ok(store) => {
                let store = Arc::new(store);
                for r in store.list() {
                    let Ok(key) = <[u8; 32]>::try_from(r.owner.as_slice()) else {
                        tracing::warn!(inbox = %r.inbox, "inbox with a malformed key in the store; skipped");
                        continue;
                    };
                    let locations: Vec<Location> = r
                        .locations
                        .iter()
                        .filter_map(|l| Location::from_canonical(l).ok())
                        .collect();
                    me.add_sink(&r.inbox, key, locations);
                }
                tracing::info!(
                    "inboxes kept in {} ({} registered)",
                    dir.join(gale_store::FILE_NAME).display(),
                    me.count.load(Ordering::Relaxed)
                );
                me.store = Some(store);
            }
            Err(e) => {
                let why = format!("the inbox store in {} cannot be opened: {e}", dir.display());
                tracing::error!("{why}; running without inboxes (live delivery is unaffected)");
                me.unavailable = Some(why);
            }
        }
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Locations of every registered inbox, for the links' interest.
    pub fn locations(&self) -> Vec<Location> {
        self.by_name
            .lock()
            .values()
            .flat_map(|s| s.state.lock().locations.clone())
            .collect()
    }

    fn add_sink(&self, name: &str, key: [u8; 32], locations: Vec<Location>) -> Arc<Sink> {
        let num = self.next_num.fetch_add(1, Ordering::Relaxed);
        let sink = Arc::new(Sink {
            name: name.to_string(),
            key,
            num,
            state: Mutex::new(SinkState::default()),
        });
        self.by_name.lock().insert(name.to_string(), sink.clone());
        self.count.fetch_add(1, Ordering::SeqCst);
        self.set_locations(&sink, locations);
        sink
    }

    /// Replaces an inbox's locations in the index; returns (gained, lost).
    fn set_locations(
        &self,
        sink: &Arc<Sink>,
        locations: Vec<Location>,
    ) -> (Vec<Location>, Vec<Location>) {
        let mut st = sink.state.lock();
        let mut idx = self.index.write();
        let old = std::mem::take(&mut st.locations);
        for l in &old {
            idx.remove(l, sink.num, 0);
        }
        for l in &locations {
            idx.insert(l, sink.num, 0, true, sink.clone());
        }
        let gained = locations
            .iter()
            .filter(|l| !old.contains(l))
            .cloned()
            .collect();
        let lost = old
            .iter()
            .filter(|l| !locations.contains(l))
            .cloned()
            .collect();
        st.locations = locations;
        (gained, lost)
    }

    /// Stores `frame` (a DELIVER frame) in every inbox that keeps one of its
    /// locations, and sends it to their live devices. Never waits: when the
    /// store is behind its disk by its bound, the inboxes are left in `ctx`
    /// for the reader to wait on ([`Inboxes::hold`]), which holds the publisher
    /// back as a full outbox does; routing that may not wait (a will) stores at
    /// once, and the store counts what it cannot take.
    pub fn offer(&self, frame: &Bytes, view: &MessageView<'_>, now_ms: u64, ctx: &mut Routing) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(store) = &self.store else { return };
        let mut sinks: Vec<Arc<Sink>> = Vec::new();
        {
            let idx = self.index.read();
            for loc in view.locations() {
                idx.for_each_accepting(loc, |e| {
                    if !sinks.iter().any(|s| s.num == e.owner) {
                        sinks.push(e.value.clone());
                    }
                });
            }
        }
        if sinks.is_empty() {
            return;
        }
        let body = &frame[FRAME_HEADER_LEN..];
        if ctx.may_hold() && !store.has_room(body.len()) {
            ctx.store_waiting = sinks;
            return;
        }
        for sink in sinks {
            self.append(store, &sink, body, view.id.0, now_ms);
        }
    }

    /// Waits (reading nothing more from the publisher) until the store has room
    /// for the message `frame` that [`Inboxes::offer`] left in `ctx`, at most
    /// [`STORE_HOLD`], then stores it: past that the store drops it, counts it
    /// and tells the owners' devices.
    pub async fn hold(&self, ctx: &mut Routing, frame: &Bytes, shutdown: &CancellationToken) {
        let sinks = std::mem::take(&mut ctx.store_waiting);
        let Some(store) = &self.store else { return };
        if sinks.is_empty() {
            return;
        }
        let body = &frame[FRAME_HEADER_LEN..];
        let start = tokio::time::Instant::now();
        self.counters.store_holds.fetch_add(1, Ordering::Relaxed);
        while !store.has_room(body.len()) && start.elapsed() < STORE_HOLD {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
        }
        self.counters
            .store_held_ms
            .fetch_add(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        let Ok(view) = MessageView::parse(body) else {
            return;
        };
        for sink in sinks {
            self.append(store, &sink, body, view.id.0, ctx.now_ms());
        }
    }

    /// Appends one message to one inbox and sends it to its live devices.
    fn append(&self, store: &Store, sink: &Arc<Sink>, body: &[u8], id: [u8; 16], now_ms: u64) {
        // Under the inbox's lock: a device switching to live sees every
        // message either in the store before it or sent after it.
        let mut st = sink.state.lock();
        match store.append(&sink.name, id, now_ms, body) {
            Ok(seq) => {
                self.counters.stored.fetch_add(1, Ordering::Relaxed);
                if st.live.is_empty() {
                    return;
                }
                let stored = stored_frame(seq, body);
                st.live.retain(|d| {
                    if d.outbox.depth().1 + stored.len() > d.queue_limit {
                        // Behind: the task reads the rest from the store.
                        d.behind.notify_one();
                        return false;
                    }
                    d.outbox.push_control(stored.clone());
                    d.sent.store(seq, Ordering::SeqCst);
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    true
                });
            }
            Err(e) => {
                self.counters.store_refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(inbox = %sink.name, "message not stored: {e}");
                // The store counts it as a gap for devices that read later;
                // live devices are told now.
                for d in &st.live {
                    d.outbox.push_control(
                        Frame::InboxGap {
                            count: 1,
                            text: format!("a message for this inbox was not stored: {e}"),
                        }
                        .to_bytes(),
                    );
                }
            }
        }
    }

    /// Acts on a verified or unverified INBOX_OPEN from connection `conn`.
    /// `challenge` is the one this connection was given (taken: one use).
    /// Returns what to do, and the locations the links must now keep
    /// (gained, lost).
    pub fn open_inbox(
        &self,
        open: &InboxOpen,
        challenge: Option<[u8; CHALLENGE_LEN]>,
    ) -> (Opened, Vec<Location>, Vec<Location>) {
        let refuse = |status, text: String| {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            (
                Opened::Refused(InboxState {
                    status,
                    held: 0,
                    dropped: 0,
                    oldest_ms: 0,
                    text,
                }),
                Vec::new(),
                Vec::new(),
            )
        };
        let Some(store) = &self.store else {
            let why = self
                .unavailable
                .clone()
                .unwrap_or_else(|| "this server keeps no inboxes".into());
            return refuse(InboxStatus::Unavailable, why);
        };
        let Some(challenge) = challenge else {
            return refuse(
                InboxStatus::BadSignature,
                "no challenge was asked for on this connection: send INBOX_HELLO and sign \
                 the INBOX_CHALLENGE it answers"
                    .into(),
            );
        };
        let verified = (|| {
            let key = VerifyingKey::from_bytes(&open.key).ok()?;
            let signed = open.signed_bytes(&challenge).ok()?;
            key.verify_strict(&signed, &Signature::from_bytes(&open.signature))
                .ok()
        })();
        if verified.is_none() {
            return refuse(
                InboxStatus::BadSignature,
                format!(
                    "the signature on the request to open inbox {} does not verify with the \
                     key it names",
                    open.name
                ),
            );
        }
        let existing = self.by_name.lock().get(&open.name).cloned();
        let (sink, created, gained, lost) = match existing {
            Some(sink) if sink.key != open.key => {
                return refuse(
                    InboxStatus::WrongKey,
                    format!(
                        "inbox {} belongs to another key ({}); only its owner may open it",
                        open.name,
                        short_key(&sink.key)
                    ),
                );
            }
            Some(sink) => {
                let (g, l) =
                    if open.locations.is_empty() || open.locations == sink.state.lock().locations {
                        (Vec::new(), Vec::new())
                    } else {
                        let (g, l) = self.set_locations(&sink, open.locations.clone());
                        store.register(&open.name, &open.key, &strings(&open.locations));
                        (g, l)
                    };
                (sink, false, g, l)
            }
            None => {
                if open.locations.is_empty() {
                    return refuse(
                        InboxStatus::Refused,
                        format!(
                            "inbox {} does not exist here; a new inbox needs at least one location",
                            open.name
                        ),
                    );
                }
                if self.count.load(Ordering::Relaxed) >= self.max_inboxes {
                    return refuse(
                        InboxStatus::Refused,
                        format!(
                            "this server keeps its limit of {} inboxes (max_inboxes)",
                            self.max_inboxes
                        ),
                    );
                }
                store.register(&open.name, &open.key, &strings(&open.locations));
                let sink = self.add_sink(&open.name, open.key, open.locations.clone());
                let gained = open.locations.clone();
                (sink, true, gained, Vec::new())
            }
        };
        if created {
            self.counters.created.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.opened.fetch_add(1, Ordering::Relaxed);
        }
        let after = store.cursor(&sink.name, &open.device).unwrap_or(0);
        let attach = Attach {
            sink,
            device: open.device.clone(),
            drain: open.drain(),
            created,
            after,
            told: 0,
        };
        (Opened::Open(attach), gained, lost)
    }

    /// Records that `device` of `inbox` has shown everything up to `seq`.
    pub fn ack(&self, inbox: &str, device: &str, seq: u64) {
        if let Some(store) = &self.store {
            if store.ack(inbox, device, seq).is_ok() {
                self.counters.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes the device off its inbox's live list (its connection ended).
    pub fn detach(&self, inbox: &str, conn: u64) {
        if let Some(sink) = self.by_name.lock().get(inbox).cloned() {
            sink.state.lock().live.retain(|d| d.conn != conn);
        }
    }

    /// Live devices per inbox (status view).
    pub fn live_devices(&self) -> HashMap<String, Vec<String>> {
        self.by_name
            .lock()
            .iter()
            .map(|(n, s)| {
                let live = s
                    .state
                    .lock()
                    .live
                    .iter()
                    .map(|d| d.device.clone())
                    .collect();
                (n.clone(), live)
            })
            .collect()
    }

    /// Commits what is queued (at shutdown).
    pub fn flush(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.flush() {
                tracing::error!("the inbox store's last commit failed: {e}");
            }
        }
    }
}

/// Removes inbox `name` and everything it holds from the store in
/// `config`'s data directory (`galed --drop-inbox`): for an inbox bound to a
/// key its owner lost, or taken by someone else first. galed must be stopped
/// (the store file is locked while it runs).
pub fn drop_inbox(config: &Config, name: &str) -> Result<String, String> {
    let dir = config.data_dir();
    let store =
        Store::open_with(&dir, config.store_limits(), config.commit_policy()).map_err(|e| {
            format!(
                "cannot open the inbox store in {}: {e} (is galed running? stop it first)",
                dir.display()
            )
        })?;
    let owner = store
        .list()
        .into_iter()
        .find(|r| r.inbox == name)
        .map(|r| short_key(&r.owner))
        .ok_or_else(|| format!("no inbox named {name:?} in {}", dir.display()))?;
    store.unregister(name).map_err(|e| e.to_string())?;
    store.close().map_err(|e| e.to_string())?;
    Ok(format!(
        "removed inbox {name} (bound to key {owner}) and the messages it held from {}",
        dir.display()
    ))
}

/// A STORED frame: seq, then the message as delivered.
fn stored_frame(seq: u64, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(FRAME_HEADER_LEN + 8 + body.len());
    b.put_u32((1 + 8 + body.len()) as u32);
    b.put_u8(FrameType::Stored as u8);
    b.put_u64(seq);
    b.put_slice(body);
    b.freeze()
}

fn strings(locs: &[Location]) -> Vec<String> {
    locs.iter().map(|l| l.as_str().to_string()).collect()
}

/// The first bytes of a key, in hex, to name it in messages.
pub fn short_key(key: &[u8]) -> String {
    key.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Sends a device what its inbox holds after its cursor, then keeps it live
/// (unless it asked to drain), until `cancel` fires.
pub async fn run_device(
    router: Arc<crate::router::Router>,
    attach: Attach,
    conn: u64,
    outbox: Arc<Outbox>,
    queue_limit: usize,
    max_frame: u32,
    cancel: CancellationToken,
) {
    let Some(store) = router.inboxes.store().cloned() else {
        return;
    };
    let Attach {
        sink,
        device,
        drain,
        created,
        mut after,
        mut told,
    } = attach;
    let sent = Arc::new(AtomicU64::new(after));
    let behind = Arc::new(Notify::new());
    let mut replayed = 0u64;
    let mut first = true;
    let mut done_sent = false;
    loop {
        // Catch up from the store, a page at a time, while the queue has room.
        loop {
            if cancel.is_cancelled() {
                return;
            }
            while outbox.depth().1 > queue_limit / 2 {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                }
            }
            let (s, name, dev) = (store.clone(), sink.name.clone(), device.clone());
            let read = tokio::task::spawn_blocking(move || s.read(&name, &dev, after, PAGE)).await;
            let batch = match read {
                Ok(Ok(b)) => b,
                Ok(Err(StoreError::Unavailable)) => {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(inbox = %sink.name, %device, "reading the inbox failed: {e}");
                    outbox.push_control(
                        Frame::InboxGap {
                            count: 0,
                            text: format!("the inbox cannot be read now: {e}"),
                        }
                        .to_bytes(),
                    );
                    return;
                }
                Err(_) => return,
            };
            if first {
                first = false;
                // Exact when it fits a page, else at most this many.
                let held = if batch.messages.len() < PAGE {
                    batch.messages.len() as u64
                } else {
                    store
                        .last_seq(&sink.name)
                        .unwrap_or(0)
                        .saturating_sub(after)
                };
                told = batch.dropped;
                let oldest_ms = batch.messages.first().map_or(0, |m| m.time);
                outbox.push_control(
                    Frame::InboxState(InboxState {
                        status: if created {
                            InboxStatus::Created
                        } else {
                            InboxStatus::Opened
                        },
                        held,
                        dropped: batch.dropped,
                        oldest_ms,
                        text: String::new(),
                    })
                    .to_bytes(),
                );
            } else if batch.dropped > told {
                outbox.push_control(
                    Frame::InboxGap {
                        count: batch.dropped - told,
                        text: "the inbox dropped messages for this device (a limit, their age, \
                               or a store error)"
                            .into(),
                    }
                    .to_bytes(),
                );
                told = batch.dropped;
            }
            if batch.messages.is_empty() {
                break;
            }
            for m in &batch.messages {
                after = m.seq;
                if m.bytes.len() + 8 + 1 > max_frame as usize {
                    outbox.push_control(
                        Frame::InboxGap {
                            count: 1,
                            text: format!(
                                "a stored message of {} bytes is larger than this connection's \
                                 frame limit",
                                m.bytes.len()
                            ),
                        }
                        .to_bytes(),
                    );
                    continue;
                }
                outbox.push_control(stored_frame(m.seq, &m.bytes));
                replayed += 1;
            }
            router
                .inboxes
                .counters
                .sent
                .fetch_add(batch.messages.len() as u64, Ordering::Relaxed);
            sent.store(after, Ordering::SeqCst);
        }
        if drain {
            outbox.push_control(
                Frame::InboxDone(InboxDone {
                    replayed,
                    last_seq: after,
                    live: false,
                })
                .to_bytes(),
            );
            return;
        }
        // Caught up: go live, unless a message was stored since the last read.
        {
            let mut st = sink.state.lock();
            if store.last_seq(&sink.name).unwrap_or(0) != after {
                continue;
            }
            st.live.retain(|d| !(d.device == device && d.conn == conn));
            st.live.push(Live {
                device: device.clone(),
                conn,
                outbox: outbox.clone(),
                sent: sent.clone(),
                behind: behind.clone(),
                queue_limit,
            });
        }
        if !done_sent {
            done_sent = true;
            outbox.push_control(
                Frame::InboxDone(InboxDone {
                    replayed,
                    last_seq: after,
                    live: true,
                })
                .to_bytes(),
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = behind.notified() => {
                after = sent.load(Ordering::SeqCst);
            }
        }
    }
}
