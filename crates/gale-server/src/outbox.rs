//! The bounded outgoing queue of one connection or link, its writer, and its flow
//! control.
//!
//! Routing hands an outbox shared, already-encoded frames ([`Outbox::offer`]). The
//! reader that routed them then writes them to the socket itself
//! ([`Outbox::flush`]) when it has finished with what it read, without waking
//! another task; only when the socket is full does the outbox's own writer task
//! (`write_loop`) take over and wait for the socket to drain.
//!
//! A full outbox first **holds** its publishers (the reader stops reading the
//! publisher's socket, so TCP slows the publisher down) and only drops when its
//! hold budget is spent:
//!
//! - a full queue is only the subscriber's doing while its socket is full too
//!   (the last write did not take all it was offered); until then galed's own
//!   writer has yet to run, and publishers wait for it free of charge;
//! - a client's outbox may hold publishers for what it has earned by reading:
//!   500 ns for every message written into room the subscriber made by reading
//!   from a full socket (saved up to 250 ms), plus a 3% share of wall-clock time
//!   (starting full, at 20 ms, saved up to 20 ms). So a subscriber that reads
//!   fast earns the right to slow a fast publisher to its own pace, one that
//!   pauses (a scheduling hiccup) for up to 20 ms loses nothing, and one that
//!   reads slowly or not at all costs publishers about 3% of their time, after
//!   the first 20 ms;
//! - a publisher pays for the share part from a budget of its own (5% of its
//!   time, starting full at 20 ms), so however many slow subscribers it meets,
//!   they cost it at most that;
//! - when a publisher waits for several full outboxes at once, they share the
//!   charge;
//! - a link's outbox holds for as long as the link makes progress, and drops only
//!   once it has written nothing for a second (the far server is stuck): the far
//!   server applies the same rules to its own clients, so a slow reader there costs
//!   a publisher here no more than one here would.
//!
//! A message dropped for a client is counted and the client is told how many it
//! lost (LOSSAGE) before its next frames. A message dropped for a link is counted
//! by the locations it was addressed to and the far server is told (LINK_LOSSAGE),
//! so it can tell each client that would have received it.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gale_proto::frame::{Frame, LossEntry};
use gale_proto::limits::{MAX_LOCATIONS, MAX_LOSS_ENTRIES};
use gale_proto::{Location, MessageView};
use parking_lot::Mutex;

use crate::memory::{MemoryBudget, QUEUE_STEP};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Share of wall-clock time a client's outbox may hold its publishers on credit
/// it has not earned by reading: 3%.
pub const HOLD_SHARE_PER_MILLE: u64 = 30;
/// Hold time a client's outbox earns per message written to its socket while
/// publishers were waiting for it.
pub const HOLD_PER_MESSAGE: Duration = Duration::from_nanos(500);
/// Share of wall-clock time a publisher may be held by outboxes on credit they did
/// not earn by reading, however many of them there are: 5%.
pub const PUBLISHER_HOLD_PER_MILLE: u64 = 50;
/// Most share credit a client's outbox (or a publisher) can save up.
pub const HOLD_CAP: Duration = Duration::from_millis(20);
/// Most credit a client's outbox can save up by reading: a subscriber that has
/// shown it reads fast may pause this long (a scheduling hiccup, a burst of work)
/// in the middle of a burst without losing anything.
pub const HOLD_EARNED_CAP: Duration = Duration::from_millis(250);
/// Share credit a new client's outbox (and a new publisher) starts with: the
/// longest pause of a subscriber that has yet to earn anything that costs it
/// nothing.
pub const HOLD_START: Duration = Duration::from_millis(20);
/// Publishers wait for a full outbox only if it has at least this much credit
/// left; otherwise the message is dropped for it at once.
pub const HOLD_MIN: Duration = Duration::from_micros(200);
/// How long a publisher waits, at a time, for an outbox whose socket still has
/// room (its writer has not run yet), without charging anyone.
pub const UNSATURATED_WAIT: Duration = Duration::from_millis(50);
/// While a client's outbox is dropping, only one offer in this many looks at the
/// clock to see whether it may hold publishers again; the rest are dropped at the
/// cost of two atomic operations.
const RECHECK_EVERY: u64 = 256;
/// A link that has written nothing for this long while it had frames queued is
/// stuck: publishers stop waiting for it and its messages are dropped (and
/// reported to the far side) until it moves again.
pub const LINK_STUCK: Duration = Duration::from_secs(1);
/// Most distinct location sets a link's loss report tracks before it reports by
/// domain instead.
const LOSS_KEYS: usize = 1024;
/// Most slices handed to one vectored write.
const IOV_BATCH: usize = 512;
/// A client's drops are logged at most this often.
const LOSS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whose outbox this is: the flow-control rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Link,
}

/// Counters kept per outbox, readable without locking.
#[derive(Debug, Default)]
pub struct OutboxStats {
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Messages dropped for this destination here (its queue was full and its
    /// hold budget spent, or a message was larger than it accepts).
    pub dropped: AtomicU64,
    /// Times a publisher waited for room in this outbox, and for how long in all.
    pub holds: AtomicU64,
    pub held_ns: AtomicU64,
}

/// What a publisher that may wait brings to [`Outbox::offer`].
#[derive(Debug)]
pub struct Hold<'a> {
    /// Told when the outbox has room.
    pub waker: &'a Arc<Notify>,
    /// The publisher's own budget for holds not earned by the subscribers it
    /// waits for (read only when the outbox is full).
    pub unearned: &'a mut Budget,
}

/// What [`Outbox::offer`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued. `first`: the queue was empty, so the caller must see that it is
    /// flushed ([`Outbox::flush`]).
    Queued { first: bool },
    /// The queue is full but the destination may hold the publisher: wait on the
    /// waker that was passed, then offer again.
    Full,
    /// Dropped, and counted (or the outbox is closed).
    Dropped,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    Idle,
    /// The socket is full (or another flusher is at work): the writer task will
    /// finish the job.
    Blocked,
    /// Closed and drained; the writer should shut the socket down.
    Closed,
    /// The socket failed; the outbox is closed.
    Failed,
}

/// A bucket of hold time, in nanoseconds: it fills with a share of wall-clock
/// time, holds at most a cap, and may go into debt (a wait overshoots its
/// allowance by the timer's granularity).
#[derive(Debug, Clone)]
pub struct Budget {
    ns: i64,
    at: Instant,
    per_mille: i64,
    cap: i64,
}

impl Budget {
    pub fn new(start: Duration, per_mille: u64, cap: Duration) -> Budget {
        Budget {
            ns: start.as_nanos() as i64,
            at: Instant::now(),
            per_mille: per_mille as i64,
            cap: cap.as_nanos() as i64,
        }
    }

    /// What is in the bucket now (0 when in debt).
    pub fn available(&mut self) -> Duration {
        let now = Instant::now();
        let dt = now.duration_since(self.at).as_nanos() as i64;
        self.ns = self
            .ns
            .saturating_add(dt.saturating_mul(self.per_mille) / 1000)
            .min(self.cap);
        self.at = now;
        Duration::from_nanos(self.ns.max(0) as u64)
    }

    pub fn spend(&mut self, d: Duration) {
        self.available();
        self.ns -= d.as_nanos() as i64;
    }
}

/// A client outbox's hold credit: what it earned by reading while publishers
/// waited, spent first, and its share of wall-clock time.
#[derive(Debug)]
struct Credit {
    earned: i64,
    share: Budget,
}

/// Messages dropped on a link, by the raw location list (the message header's
/// `str16` locations) they were addressed to.
#[derive(Debug, Default)]
struct LossMap {
    by_locations: HashMap<Box<[u8]>, u64>,
    /// Dropped when even the per-domain entries overflowed: reported as "unknown".
    unknown: u64,
}

#[derive(Debug)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Frames and bytes not yet written: queued, or taken by a flusher and in flight.
    count: usize,
    bytes: usize,
    /// Client: messages lost upstream (reported over a link) since the last LOSSAGE.
    unreported: u64,
    /// Client: drops already reported (of `stats.dropped`).
    reported: u64,
    /// Link: messages dropped since the last LINK_LOSSAGE.
    lost: Option<Box<LossMap>>,
    closed: bool,
    /// Readers waiting for room.
    waiters: Vec<Arc<Notify>>,
    /// It has dropped since it was last empty: it drains slowly, so frames are
    /// copied into the queue rather than pin the publishers' read buffers.
    slow: bool,
    credit: Credit,
    /// Link: when the link last wrote, or last went from empty to non-empty.
    progress: Instant,
    /// Bytes taken from the server's memory budget for this queue (in steps, so
    /// the shared count is not touched per frame); at least `bytes`.
    reserved: usize,
    /// Drops already logged (of `stats.dropped`), and when they were last logged.
    logged: u64,
    logged_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Wire {
    /// Frames taken from the queue and not yet fully written.
    batch: VecDeque<Bytes>,
    /// The last write found the socket full; only the writer task tries again.
    blocked: bool,
    /// The socket, from the writer's start until the connection is over (routes
    /// cached by other readers may keep the outbox longer, not the socket).
    sock: Option<Arc<TcpStream>>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    wire: Mutex<Wire>,
    /// Wakes the writer task.
    notify: Notify,
    /// A client's queue is full and its hold budget spent: drop without locking.
    dropping: AtomicBool,
    /// The socket's buffer is full: the last write did not take all it was
    /// offered. Only then is a full queue the peer's doing (it does not read fast
    /// enough) rather than galed's (its writer has not run yet), and only then is
    /// holding publishers charged to it. What a write takes while saturated is
    /// room the peer made by reading, which earns credit.
    saturated: AtomicBool,
    /// The gateway of an original-protocol client (`crate::orig`): it is not
    /// offered private messages, which it could not decrypt.
    original: AtomicBool,
    kind: Kind,
    max_frames: usize,
    max_bytes: usize,
    /// Largest frame (length field value) this peer agreed to receive.
    max_frame: usize,
    /// Who this is, for logs.
    label: String,
    /// The server's memory budget, which queued frames count against.
    memory: Option<Arc<MemoryBudget>>,
    pub stats: OutboxStats,
}

impl Outbox {
    pub fn new(
        kind: Kind,
        max_frames: usize,
        max_bytes: usize,
        max_frame: u32,
        label: String,
    ) -> Outbox {
        let now = Instant::now();
        Outbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                count: 0,
                bytes: 0,
                unreported: 0,
                reported: 0,
                lost: None,
                closed: false,
                waiters: Vec::new(),
                slow: false,
                credit: Credit {
                    earned: 0,
                    share: Budget::new(HOLD_START, HOLD_SHARE_PER_MILLE, HOLD_CAP),
                },
                progress: now,
                reserved: 0,
                logged: 0,
                logged_at: None,
            }),
            wire: Mutex::new(Wire::default()),
            notify: Notify::new(),
            dropping: AtomicBool::new(false),
            saturated: AtomicBool::new(false),
            original: AtomicBool::new(false),
            kind,
            max_frames,
            max_bytes,
            max_frame: max_frame as usize,
            label,
            memory: None,
            stats: OutboxStats::default(),
        }
    }

    /// Counts this queue against `memory`: past the budget, deliveries are
    /// dropped (and reported) rather than queued.
    pub fn with_budget(mut self, memory: Arc<MemoryBudget>) -> Outbox {
        self.memory = Some(memory);
        self
    }

    /// Whether the memory budget has room for `len` more queued bytes (taking a
    /// step of it when needed). `force` takes it even over the budget.
    fn budget(&self, q: &mut Queue, len: usize, force: bool) -> bool {
        let Some(m) = &self.memory else {
            return true;
        };
        let need = q.bytes + len;
        if need <= q.reserved {
            return true;
        }
        let step = (need - q.reserved).max(QUEUE_STEP);
        if force {
            m.take(step);
        } else if !m.try_take(step) {
            return false;
        }
        q.reserved += step;
        true
    }

    /// Gives back what the queue no longer needs, keeping one step.
    fn unbudget(&self, q: &mut Queue) {
        if let Some(m) = &self.memory {
            let keep = if q.bytes == 0 {
                0
            } else {
                q.bytes + QUEUE_STEP
            };
            if q.reserved > keep + QUEUE_STEP || (q.bytes == 0 && q.reserved > 0) {
                m.give(q.reserved - keep);
                q.reserved = keep;
            }
        }
    }

    /// Marks this as an original-protocol client's outbox.
    pub fn set_original(&self) {
        self.original.store(true, Ordering::Relaxed);
    }

    pub fn is_original(&self) -> bool {
        self.original.load(Ordering::Relaxed)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Gives the outbox its socket; until then frames only queue.
    pub fn attach(&self, sock: Arc<TcpStream>) {
        self.wire.lock().sock = Some(sock);
    }

    /// Lets go of the socket once the connection is over.
    pub fn detach(&self) {
        self.wire.lock().sock = None;
    }

    /// Offers a delivery (a whole DELIVER frame, `view` its parsed message). If the
    /// queue is full and the destination may still hold this publisher, the
    /// publisher's waker is registered to be told when there is room, and
    /// [`Offer::Full`] returned; with no `hold` (the caller may not wait), or no
    /// hold budget left, the message is dropped and counted.
    pub fn offer(&self, frame: &Bytes, view: &MessageView<'_>, hold: Option<Hold<'_>>) -> Offer {
        if self.dropping.load(Ordering::Relaxed)
            && !self
                .stats
                .dropped
                .load(Ordering::Relaxed)
                .is_multiple_of(RECHECK_EVERY)
        {
            self.stats.dropped.fetch_add(1, Ordering::SeqCst);
            return Offer::Dropped;
        }
        let mut q = self.queue.lock();
        if q.closed {
            return Offer::Dropped;
        }
        let fits = frame.len().saturating_sub(4) <= self.max_frame;
        let room = q.count < self.max_frames && q.bytes + frame.len() <= self.max_bytes;
        if fits && room && !self.budget(&mut q, frame.len(), false) {
            // The server as a whole is at its memory budget: refuse the work
            // rather than hold publishers for memory that others hold.
            self.count_drop(&mut q, view);
            return Offer::Dropped;
        }
        if fits && room {
            // A frame shares the publisher's read buffer (64 KiB). In the queue of
            // a destination that drains slowly it would keep that whole buffer
            // alive for a long time, one buffer per frame at worst: copy it.
            let frame = if q.slow {
                Bytes::copy_from_slice(frame)
            } else {
                frame.clone()
            };
            return Offer::Queued {
                first: self.enqueue(&mut q, frame),
            };
        }
        if let (true, Some(h)) = (fits, hold) {
            let unearned = h.unearned.available();
            if self.allowance_locked(&mut q, unearned) >= HOLD_MIN {
                if !q.waiters.iter().any(|x| Arc::ptr_eq(x, h.waker)) {
                    q.waiters.push(h.waker.clone());
                }
                return Offer::Full;
            }
        }
        if self.kind == Kind::Client {
            self.dropping.store(true, Ordering::Relaxed);
        }
        q.slow = true;
        self.count_drop(&mut q, view);
        let log = self.due_log(&mut q);
        drop(q);
        if let Some((n, since)) = log {
            self.log_loss(n, since);
        }
        Offer::Dropped
    }

    fn enqueue(&self, q: &mut Queue, frame: Bytes) -> bool {
        if q.count == 0 {
            q.progress = Instant::now();
        }
        q.count += 1;
        q.bytes += frame.len();
        q.frames.push_back(frame);
        q.frames.len() == 1
    }

    fn count_drop(&self, q: &mut Queue, view: &MessageView<'_>) {
        self.stats.dropped.fetch_add(1, Ordering::SeqCst);
        if self.kind == Kind::Link {
            q.lost
                .get_or_insert_with(Default::default)
                .add(view.raw_locations(), 1);
        }
    }

    /// How long this outbox may hold a publisher now, as (what it earned by
    /// reading, which the publisher does not pay for; its share of wall time,
    /// which the publisher's own budget must also cover). A link's time left
    /// before it counts as stuck is all "earned".
    pub fn credit(&self) -> (Duration, Duration) {
        let mut q = self.queue.lock();
        self.credit_locked(&mut q)
    }

    fn credit_locked(&self, q: &mut Queue) -> (Duration, Duration) {
        match self.kind {
            // Not the peer's doing: galed's own writer has yet to run.
            Kind::Client if !self.saturated.load(Ordering::Relaxed) => {
                (UNSATURATED_WAIT, Duration::ZERO)
            }
            Kind::Client => (
                Duration::from_nanos(q.credit.earned.max(0) as u64),
                q.credit.share.available(),
            ),
            Kind::Link => (
                LINK_STUCK.saturating_sub(q.progress.elapsed()),
                Duration::ZERO,
            ),
        }
    }

    /// How long a publisher whose own budget for unearned holds is `unearned` may
    /// wait for room here alone.
    pub fn allowance(&self, unearned: Duration) -> Duration {
        let (earned, share) = self.credit();
        earned + share.min(unearned)
    }

    fn allowance_locked(&self, q: &mut Queue, unearned: Duration) -> Duration {
        let (earned, share) = self.credit_locked(q);
        earned + share.min(unearned)
    }

    /// A publisher waited `held` for room here. Returns the part of it not paid
    /// for by what this outbox earned by reading (for the publisher's own budget).
    pub fn charge(&self, held: Duration) -> Duration {
        self.stats.holds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .held_ns
            .fetch_add(held.as_nanos() as u64, Ordering::Relaxed);
        if self.kind == Kind::Link || !self.saturated.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let mut q = self.queue.lock();
        let held_ns = held.as_nanos() as i64;
        let from_earned = held_ns.min(q.credit.earned.max(0));
        q.credit.earned -= from_earned;
        let rest = Duration::from_nanos((held_ns - from_earned) as u64);
        q.credit.share.spend(rest);
        rest
    }

    /// Forgets a waiter (its reader gave up or went away).
    pub fn forget_waiter(&self, w: &Arc<Notify>) {
        self.queue.lock().waiters.retain(|x| !Arc::ptr_eq(x, w));
    }

    /// Records `count` messages to `locations` (raw `str16` list; empty: unknown)
    /// lost on the way to this destination, reported with its next frames.
    /// Returns true if the caller must see that the outbox is flushed.
    pub fn add_loss(&self, count: u64, locations: &[u8]) -> bool {
        let mut q = self.queue.lock();
        if q.closed || count == 0 {
            return false;
        }
        let idle = q.frames.is_empty();
        match self.kind {
            Kind::Client => q.unreported += count,
            Kind::Link => q
                .lost
                .get_or_insert_with(Default::default)
                .add(locations, count),
        }
        idle
    }

    /// Queues a control frame (PONG, PING, ERROR, INTEREST, STATUS) that must not
    /// be dropped, and wakes the writer. These answer what the peer sent or follow
    /// its subscriptions, so the peer's own traffic bounds them.
    pub fn push_control(&self, frame: Bytes) {
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        self.budget(&mut q, frame.len(), true);
        let first = self.enqueue(&mut q, frame);
        drop(q);
        if first {
            self.notify.notify_one();
        }
    }

    /// Queues messages replayed to a client that resumed, like control frames
    /// (the resume window bounds them, and holds their bytes already); one too
    /// large for this connection is dropped and reported as LOSSAGE. Returns how
    /// many were queued.
    pub fn replay(&self, frames: Vec<Bytes>) -> u64 {
        let mut q = self.queue.lock();
        if q.closed {
            return 0;
        }
        let mut queued = 0;
        let mut first = false;
        for f in frames {
            if f.len().saturating_sub(4) > self.max_frame {
                q.unreported += 1;
                continue;
            }
            self.budget(&mut q, f.len(), true);
            first |= self.enqueue(&mut q, f);
            queued += 1;
        }
        drop(q);
        if first {
            self.notify.notify_one();
        }
        queued
    }

    /// Wakes the writer task to flush (for pushes made outside a reader).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Moves everything queued into `into` (which must be empty), with the loss
    /// report in front. Returns false when there is nothing to write.
    fn take(&self, into: &mut VecDeque<Bytes>) -> bool {
        let mut q = self.queue.lock();
        let dropped = self.stats.dropped.load(Ordering::SeqCst);
        let new_drops = match self.kind {
            Kind::Client => dropped - q.reported,
            Kind::Link => 0, // reported through `lost`
        };
        if q.frames.is_empty() && new_drops == 0 && q.unreported == 0 && q.lost.is_none() {
            return false;
        }
        std::mem::swap(&mut q.frames, into);
        // Reported ahead of the frames: the drops happened while they queued, so a
        // PONG among them also vouches that the loss was reported.
        let mut report = Vec::new();
        let lost = new_drops + std::mem::take(&mut q.unreported);
        q.reported = dropped;
        if lost > 0 {
            report.push(Frame::Lossage(lost).to_bytes());
        }
        if let Some(lost) = q.lost.take() {
            report.extend(lost.frames(self.max_frame));
        }
        for f in report.into_iter().rev() {
            q.count += 1;
            q.bytes += f.len();
            into.push_front(f);
        }
        let log = self.due_log(&mut q);
        drop(q);
        if let Some((n, since)) = log {
            self.log_loss(n, since);
        }
        true
    }

    /// Drops not yet logged, if it is time to log them (at most every
    /// [`LOSS_LOG_EVERY`]), and since when.
    fn due_log(&self, q: &mut Queue) -> Option<(u64, Option<Instant>)> {
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        if dropped <= q.logged || q.logged_at.is_some_and(|t| t.elapsed() < LOSS_LOG_EVERY) {
            return None;
        }
        let since = q.logged_at;
        let n = dropped - q.logged;
        q.logged = dropped;
        q.logged_at = Some(Instant::now());
        Some((n, since))
    }

    fn log_loss(&self, n: u64, since: Option<Instant>) {
        let total = self.stats.dropped.load(Ordering::Relaxed);
        let when = since.map_or(String::new(), |t| {
            format!(" in the last {}s", t.elapsed().as_secs())
        });
        match self.kind {
            Kind::Client => tracing::warn!(
                "client {} reads too slowly: dropped {n} messages for it{when} ({total} in all); \
                 it is told how many (LOSSAGE) when it reads again",
                self.label
            ),
            Kind::Link => tracing::warn!(
                "link to {} is stuck: dropped {n} messages for it{when} ({total} in all); \
                 the far side is told which locations lost them (LINK_LOSSAGE) when it reads \
                 again",
                self.label
            ),
        }
    }

    /// Frames were written: `bytes` bytes, `frames` of them complete;
    /// `read_by_peer`: into room the peer made by reading (the socket had been
    /// full), which earns hold credit.
    fn written(&self, bytes: usize, frames: usize, read_by_peer: bool) {
        self.stats
            .bytes_out
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.stats
            .frames_out
            .fetch_add(frames as u64, Ordering::Relaxed);
        if frames > 0 && self.dropping.load(Ordering::Relaxed) {
            self.dropping.store(false, Ordering::Relaxed);
        }
        let mut q = self.queue.lock();
        if read_by_peer && self.kind == Kind::Client {
            // Read as fast as it can: it earns the right to hold publishers.
            let earned = HOLD_PER_MESSAGE.as_nanos() as i64 * frames as i64;
            q.credit.earned = (q.credit.earned + earned).min(HOLD_EARNED_CAP.as_nanos() as i64);
        }
        q.bytes -= bytes.min(q.bytes);
        q.count -= frames.min(q.count);
        q.progress = Instant::now();
        self.unbudget(&mut q);
        if q.count == 0 {
            q.slow = false;
        }
        if !q.waiters.is_empty() && q.count <= self.max_frames / 2 && q.bytes <= self.max_bytes / 2
        {
            for w in q.waiters.drain(..) {
                w.notify_one();
            }
        }
    }

    /// Writes what is queued without waiting. `direct` is true for a reader
    /// flushing what it routed: it leaves a full socket to the writer task. The
    /// writer task passes false.
    pub fn flush(&self, direct: bool) -> Flushed {
        let mut wire = if direct {
            match self.wire.try_lock() {
                Some(w) => w,
                None => {
                    // The writer or another reader is writing; make sure it looks again.
                    self.notify.notify_one();
                    return Flushed::Blocked;
                }
            }
        } else {
            self.wire.lock()
        };
        if direct && wire.blocked {
            return Flushed::Blocked;
        }
        let Some(sock) = wire.sock.clone() else {
            // Not attached yet (the writer will flush when it starts), or over.
            return Flushed::Blocked;
        };
        loop {
            if wire.batch.is_empty() && !self.take(&mut wire.batch) {
                let q = self.queue.lock();
                return if q.closed && q.frames.is_empty() {
                    Flushed::Closed
                } else {
                    Flushed::Idle
                };
            }
            match write_some(&sock, &mut wire.batch) {
                Ok((bytes, frames, complete)) => {
                    let read_by_peer = self.saturated.swap(!complete, Ordering::Relaxed);
                    wire.blocked = false;
                    self.written(bytes, frames, read_by_peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.saturated.store(true, Ordering::Relaxed);
                    wire.blocked = true;
                    drop(wire);
                    if direct {
                        self.notify.notify_one();
                    }
                    return Flushed::Blocked;
                }
                Err(_) => {
                    drop(wire);
                    self.close();
                    return Flushed::Failed;
                }
            }
        }
    }

    /// Refuses further frames and wakes everyone waiting; the writer drains what is
    /// queued, then stops.
    pub fn close(&self) {
        let mut q = self.queue.lock();
        q.closed = true;
        self.dropping.store(false, Ordering::Relaxed);
        for w in q.waiters.drain(..) {
            w.notify_one();
        }
        drop(q);
        self.notify.notify_one();
    }

    /// The frames queued (for tests of what others queue).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> Vec<Bytes> {
        self.queue.lock().frames.iter().cloned().collect()
    }

    /// Frames and bytes not yet written.
    pub fn depth(&self) -> (usize, usize) {
        let q = self.queue.lock();
        (q.count, q.bytes)
    }
}

/// Drains the outbox to its socket until it is closed and empty. The readers that
/// route to it write what they can themselves; this task finishes when the socket
/// was full, and writes control frames. (A writer stuck on a peer that stopped
/// reading is aborted by its owner.)
pub(crate) async fn write_loop(outbox: Arc<Outbox>, sock: Arc<TcpStream>) {
    outbox.attach(sock.clone());
    loop {
        match outbox.flush(false) {
            Flushed::Idle => outbox.notify.notified().await,
            Flushed::Blocked => {
                if sock.writable().await.is_err() {
                    outbox.close();
                    return;
                }
            }
            Flushed::Closed => {
                shutdown_write(&sock);
                return;
            }
            Flushed::Failed => return,
        }
    }
}

/// Half-closes the socket: the peer reads what was sent, then end of stream.
fn shutdown_write(sock: &TcpStream) {
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Write);
}

/// One vectored write of the front of `batch`, without waiting. Returns the bytes
/// written, how many frames were completed, and whether the socket took all it
/// was offered.
fn write_some(
    sock: &TcpStream,
    batch: &mut VecDeque<Bytes>,
) -> std::io::Result<(usize, usize, bool)> {
    let mut iov = [IoSlice::new(&[]); IOV_BATCH];
    let n = batch.len().min(IOV_BATCH);
    for (slot, b) in iov.iter_mut().zip(batch.iter()) {
        *slot = IoSlice::new(b);
    }
    let offered: usize = iov[..n].iter().map(|s| s.len()).sum();
    let written = sock.try_write_vectored(&iov[..n])?;
    if written == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    let (mut left, mut frames) = (written, 0);
    while left > 0 {
        let front = batch
            .front_mut()
            .expect("written bytes came from the batch");
        if left >= front.len() {
            left -= front.len();
            batch.pop_front();
            frames += 1;
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Ok((written, frames, written == offered))
}

impl LossMap {
    /// Counts `n` messages lost to `raw` (`str16` locations, as in a message
    /// header). Past [`LOSS_KEYS`] distinct lists, losses are kept per domain of the
    /// first location; past twice that, as "unknown" (reported to everyone).
    fn add(&mut self, raw: &[u8], n: u64) {
        if let Some(c) = self.by_locations.get_mut(raw) {
            *c += n;
            return;
        }
        if self.by_locations.len() < LOSS_KEYS {
            self.by_locations.insert(raw.into(), n);
            return;
        }
        let domain = first_domain_key(raw);
        if let Some(c) = domain.as_deref().and_then(|d| self.by_locations.get_mut(d)) {
            *c += n;
        } else if let (Some(d), true) = (domain, self.by_locations.len() < 2 * LOSS_KEYS) {
            self.by_locations.insert(d.into(), n);
        } else {
            self.unknown += n;
        }
    }

    /// The LINK_LOSSAGE frames that report this map, none over `max_frame`.
    fn frames(self, max_frame: usize) -> Vec<Bytes> {
        let mut entries: Vec<LossEntry> = self
            .by_locations
            .into_iter()
            .map(|(raw, count)| LossEntry {
                count,
                locations: decode_raw(&raw),
            })
            .collect();
        if self.unknown > 0 {
            entries.push(LossEntry {
                count: self.unknown,
                locations: Vec::new(),
            });
        }
        let budget = max_frame.saturating_sub(16).max(1024);
        let mut out = Vec::new();
        let mut chunk: Vec<LossEntry> = Vec::new();
        let mut size = 3;
        for mut e in entries {
            let mut len = entry_len(&e);
            if len > budget {
                // Too long to report as is (32 long locations): report by domain.
                e.locations.truncate(1);
                if let Some(d) = e.locations[0].domain_location() {
                    e.locations[0] = d;
                }
                len = entry_len(&e);
            }
            if !chunk.is_empty() && (size + len > budget || chunk.len() == MAX_LOSS_ENTRIES) {
                out.push(Frame::LinkLossage(std::mem::take(&mut chunk)).to_bytes());
                size = 3;
            }
            size += len;
            chunk.push(e);
        }
        if !chunk.is_empty() {
            out.push(Frame::LinkLossage(chunk).to_bytes());
        }
        out
    }
}

fn entry_len(e: &LossEntry) -> usize {
    9 + e
        .locations
        .iter()
        .map(|l| 2 + l.as_str().len())
        .sum::<usize>()
}

/// The `str16` location list at the start of a validated message header.
fn decode_raw(mut raw: &[u8]) -> Vec<Location> {
    let mut v = Vec::new();
    while raw.len() >= 2 && v.len() < MAX_LOCATIONS {
        let n = u16::from_be_bytes([raw[0], raw[1]]) as usize;
        let Some(s) = raw.get(2..2 + n).and_then(|b| std::str::from_utf8(b).ok()) else {
            break;
        };
        if let Ok(l) = Location::from_canonical(s) {
            v.push(l);
        }
        raw = &raw[2 + n..];
    }
    v
}

/// The raw `str16` key for the whole domain of the first location in `raw`.
fn first_domain_key(raw: &[u8]) -> Option<Vec<u8>> {
    let first = decode_raw(raw).into_iter().next()?;
    let d = first.domain_location()?;
    Some(raw_locations(std::slice::from_ref(&d)))
}

/// Encodes locations as a message header lists them (`str16` each).
pub fn raw_locations(locs: &[Location]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for l in locs {
        b.put_u16(l.as_str().len() as u16);
        b.put_slice(l.as_str().as_bytes());
    }
    b.to_vec()
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(m) = &self.memory {
            m.give(self.queue.get_mut().reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_proto::Message;

    fn frame(to: &str) -> Bytes {
        let m = Message::new(
            vec![Location::parse(to).unwrap()],
            Bytes::from_static(b"\0x"),
        );
        Frame::Deliver(m).to_bytes()
    }

    fn view(f: &Bytes) -> MessageView<'_> {
        MessageView::parse(&f[5..]).unwrap()
    }

    /// A publisher that may wait, with a fresh budget of its own.
    fn hold<'a>(w: &'a Arc<Notify>, b: &'a mut Budget) -> Option<Hold<'a>> {
        Some(Hold {
            waker: w,
            unearned: b,
        })
    }

    fn budget() -> Budget {
        Budget::new(HOLD_START, PUBLISHER_HOLD_PER_MILLE, HOLD_CAP)
    }

    #[test]
    fn queues_until_full_then_holds_then_drops_and_counts() {
        let f = frame("a@x.org");
        let ob = Outbox::new(Kind::Client, 2, 1000, 4096, "t".into());
        let w = Arc::new(Notify::new());
        let mut b = budget();
        assert_eq!(ob.offer(&f, &view(&f), None), Offer::Queued { first: true });
        assert_eq!(
            ob.offer(&f, &view(&f), None),
            Offer::Queued { first: false }
        );
        // Full while its socket still has room: galed's writer has yet to run, so
        // a reader with a waker waits, whatever the budgets.
        assert_eq!(ob.offer(&f, &view(&f), hold(&w, &mut b)), Offer::Full);
        assert_eq!(ob.charge(HOLD_CAP * 10), Duration::ZERO, "free");
        // Full with a full socket: the peer's doing. A fresh outbox has credit ...
        ob.saturated.store(true, Ordering::Relaxed);
        assert_eq!(ob.offer(&f, &view(&f), hold(&w, &mut b)), Offer::Full);
        // ... one without drops it.
        assert_eq!(ob.offer(&f, &view(&f), None), Offer::Dropped);
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 1);
        // Spending the credit ends the holding.
        ob.charge(HOLD_CAP);
        assert_eq!(ob.offer(&f, &view(&f), hold(&w, &mut b)), Offer::Dropped);
        // A publisher whose own budget for unearned holds is spent does not wait
        // even for an outbox that could still hold it.
        let fresh = Outbox::new(Kind::Client, 1, 1000, 4096, "t".into());
        fresh.saturated.store(true, Ordering::Relaxed);
        assert!(matches!(
            fresh.offer(&f, &view(&f), None),
            Offer::Queued { .. }
        ));
        let mut spent = budget();
        spent.spend(HOLD_CAP);
        assert_eq!(
            fresh.offer(&f, &view(&f), hold(&w, &mut spent)),
            Offer::Dropped
        );
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 2);
        ob.push_control(Frame::Pong(1).to_bytes());
        let mut batch = VecDeque::new();
        assert!(ob.take(&mut batch));
        assert_eq!(batch.len(), 4, "LOSSAGE, two deliveries, PONG");
        assert_eq!(batch[0], Frame::Lossage(2).to_bytes());
        assert_eq!(ob.depth().0, 4, "taken but not written still counts");
        ob.written(batch.iter().map(|b| b.len()).sum(), 4, false);
        assert_eq!(ob.depth(), (0, 0));
        batch.clear();
        assert!(!ob.take(&mut batch));
    }

    #[test]
    fn a_slow_destination_keeps_copies_not_the_publishers_buffers() {
        let f = frame("a@x.org");
        let ob = Outbox::new(Kind::Client, 1, 1000, 4096, "t".into());
        assert!(matches!(
            ob.offer(&f, &view(&f), None),
            Offer::Queued { .. }
        ));
        assert_eq!(ob.offer(&f, &view(&f), None), Offer::Dropped);
        // Room again, but it has dropped since it was last empty: slow.
        ob.queue.lock().count = 0;
        ob.queue.lock().bytes = 0;
        ob.dropping.store(false, Ordering::Relaxed);
        assert!(matches!(
            ob.offer(&f, &view(&f), None),
            Offer::Queued { .. }
        ));
        let q = ob.queue.lock();
        assert_eq!(q.frames[0].as_ptr(), f.as_ptr(), "first: shared");
        assert_ne!(q.frames[1].as_ptr(), f.as_ptr(), "while slow: a copy");
        assert_eq!(q.frames[1], f);
    }

    #[test]
    fn room_wakes_waiters_and_close_refuses() {
        let f = frame("a@x.org");
        let ob = Outbox::new(Kind::Client, 1, 1000, 4096, "t".into());
        let w = Arc::new(Notify::new());
        let mut b = budget();
        assert!(matches!(
            ob.offer(&f, &view(&f), None),
            Offer::Queued { .. }
        ));
        assert_eq!(ob.offer(&f, &view(&f), hold(&w, &mut b)), Offer::Full);
        let mut batch = VecDeque::new();
        assert!(ob.take(&mut batch));
        ob.written(f.len(), 1, false);
        // The waiter was told (a stored permit makes this ready at once).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), w.notified())
                .await
                .expect("woken when there was room");
        });
        ob.close();
        assert_eq!(ob.offer(&f, &view(&f), hold(&w, &mut b)), Offer::Dropped);
    }

    #[test]
    fn too_large_for_the_peer_is_dropped() {
        let big = Message::new(
            vec![Location::parse("a@x.org").unwrap()],
            Bytes::from(vec![0u8; 5000]),
        );
        let f = Frame::Deliver(big).to_bytes();
        let ob = Outbox::new(Kind::Client, 100, 1 << 20, 4096, "t".into());
        let w = Arc::new(Notify::new());
        let mut b = budget();
        assert_eq!(ob.offer(&f, &view(&f), hold(&w, &mut b)), Offer::Dropped);
        assert_eq!(ob.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn credit_is_earned_by_what_the_peer_reads() {
        let ob = Outbox::new(Kind::Client, 1, 1000, 4096, "t".into());
        ob.saturated.store(true, Ordering::Relaxed);
        ob.charge(HOLD_CAP * 2);
        assert_eq!(ob.allowance(HOLD_CAP), Duration::ZERO, "in debt");
        // Written into socket buffers that had room (filling them, say): nothing
        // is known to have been read, nothing earned.
        ob.written(1, 1_000_000, false);
        assert_eq!(ob.allowance(HOLD_CAP), Duration::ZERO);
        // Written into room the peer made by reading a full socket: each message
        // earns; 1,000,000 of them pay the debt, and the credit is capped.
        ob.written(1, 1_000_000, true);
        // Earned credit is spendable whatever the publisher's own budget.
        assert_eq!(ob.allowance(Duration::ZERO), HOLD_EARNED_CAP);
        // Spending it costs the publisher nothing; past it, the rest is unearned.
        assert_eq!(ob.charge(HOLD_EARNED_CAP), Duration::ZERO);
        assert_eq!(
            ob.charge(Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn link_losses_are_kept_by_location_and_reported() {
        let ob = Outbox::new(Kind::Link, 1, 1000, 4096, "peer".into());
        let (a, b) = (frame("a@x.org"), frame("b.c@y.org"));
        assert!(matches!(
            ob.offer(&a, &view(&a), None),
            Offer::Queued { .. }
        ));
        for _ in 0..3 {
            assert_eq!(ob.offer(&a, &view(&a), None), Offer::Dropped);
        }
        assert_eq!(ob.offer(&b, &view(&b), None), Offer::Dropped);
        let mut batch = VecDeque::new();
        assert!(ob.take(&mut batch));
        let mut report = BytesMut::from(&batch[0][..]);
        let Some(Frame::LinkLossage(mut e)) = Frame::decode(&mut report, 1 << 20).unwrap() else {
            panic!("expected LINK_LOSSAGE first");
        };
        e.sort_by_key(|e| e.count);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].count, e[0].locations[0].as_str()), (1, "b.c@y.org"));
        assert_eq!((e[1].count, e[1].locations[0].as_str()), (3, "a@x.org"));
    }

    #[test]
    fn loss_map_stays_bounded() {
        let mut m = LossMap::default();
        for i in 0..3 * LOSS_KEYS {
            let l = Location::parse(&format!("l{i}@d{i}.org")).unwrap();
            m.add(&raw_locations(&[l]), 1);
        }
        assert!(m.by_locations.len() <= 2 * LOSS_KEYS);
        assert_eq!(m.unknown, LOSS_KEYS as u64);
        let frames = m.frames(4096);
        let mut total = 0;
        for f in frames {
            assert!(f.len() - 4 <= 4096);
            let Some(Frame::LinkLossage(e)) =
                Frame::decode(&mut BytesMut::from(&f[..]), 4096).unwrap()
            else {
                panic!()
            };
            total += e.iter().map(|e| e.count).sum::<u64>();
        }
        assert_eq!(total, 3 * LOSS_KEYS as u64, "every loss reported once");
    }
}
