//! A reader's side of flow control.
//!
//! Each reader (of a client connection or of a server link) routes what it reads
//! with a [`Routing`]: the outboxes that got their first frame from it, which it
//! flushes itself once it has acted on what it read, and the full outboxes the
//! current message is still waiting for. While a message waits, the reader reads
//! nothing more from its socket, so TCP holds the publisher back; the wait for each
//! full outbox is bounded by that outbox's hold budget (see [`crate::outbox`]), and
//! past it the message is dropped for that outbox alone, and reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gale_proto::fragment::kind;
use gale_proto::limits::FRAME_HEADER_LEN;
use gale_proto::MessageView;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Budget, Hold, Offer, Outbox, HOLD_CAP, HOLD_START, PUBLISHER_HOLD_PER_MILLE};

/// Most outboxes a reader writes to itself after one read (see [`Routing::flush`]).
pub const DIRECT_FLUSHES: usize = 4;

/// See the module documentation.
#[derive(Debug)]
pub struct Routing {
    /// Outboxes that got their first frame from this reader: flush them.
    flush: Vec<Arc<Outbox>>,
    /// Full outboxes the current message still has to reach.
    blocked: Vec<Arc<Outbox>>,
    /// Wakes this reader when a full outbox it waits for has room (made when
    /// first needed: most connections never publish).
    room: Option<Arc<Notify>>,
    /// False for routing that must never wait (a will published at close).
    may_hold: bool,
    /// This publisher's budget for holds that the outboxes did not earn by
    /// reading: however many slow subscribers it meets, they cost it at most this
    /// share of its time.
    unearned: Budget,
    /// The outboxes the last location list routed to, while the router's trie
    /// stays at generation `generation`: a publisher sending to the same place
    /// again skips the trie (and its lock).
    targets: Vec<Arc<Outbox>>,
    key: Vec<u8>,
    generation: Option<u64>,
    /// Messages routed and deliveries made, not yet added to the router's totals.
    pub(crate) published: u64,
    pub(crate) delivered: u64,
    /// Private messages not offered to original-protocol clients since the
    /// publisher was last told ([`crate::orig::refusal_notice`]).
    pub(crate) private_refused: u64,
    /// The wall clock (ms since the Unix epoch) as of this reader's last read, for
    /// the resume window: reading it per message costs a publisher dearly on some
    /// virtual machines, and the window needs no finer time. 0: read it now.
    now_ms: u64,
    /// Inboxes the current message waits to be stored in (the store is
    /// behind its disk): see [`crate::inbox::Inboxes::hold`].
    pub(crate) store_waiting: Vec<Arc<crate::inbox::Sink>>,
}

/// Why a hold ended early.
#[derive(Debug)]
pub struct ShuttingDown;

impl Routing {
    pub fn new() -> Routing {
        Routing {
            flush: Vec::new(),
            blocked: Vec::new(),
            room: None,
            may_hold: true,
            unearned: Budget::new(HOLD_START, PUBLISHER_HOLD_PER_MILLE, HOLD_CAP),
            targets: Vec::new(),
            key: Vec::new(),
            generation: None,
            published: 0,
            delivered: 0,
            private_refused: 0,
            now_ms: 0,
            store_waiting: Vec::new(),
        }
    }

    /// Reads the clock: what is routed until the next call arrived now.
    pub(crate) fn tick(&mut self) {
        self.now_ms = crate::resume::now_ms();
    }

    /// The time of the last [`Routing::tick`], or now if there was none.
    pub(crate) fn now_ms(&self) -> u64 {
        if self.now_ms == 0 {
            crate::resume::now_ms()
        } else {
            self.now_ms
        }
    }

    /// Routing that drops rather than waits for a full outbox.
    pub fn without_holding() -> Routing {
        Routing {
            may_hold: false,
            ..Routing::new()
        }
    }

    /// Whether the cached targets are those of location list `key` (raw, as in
    /// the message header) at trie generation `generation`.
    pub(crate) fn cached(&self, generation: u64, key: &[u8]) -> bool {
        self.generation == Some(generation) && self.key == key
    }

    /// An empty target list to fill (the old one's allocation).
    pub(crate) fn reuse_targets(&mut self) -> Vec<Arc<Outbox>> {
        self.generation = None;
        let mut t = std::mem::take(&mut self.targets);
        t.clear();
        t
    }

    pub(crate) fn cache(&mut self, generation: u64, key: &[u8], targets: Vec<Arc<Outbox>>) {
        self.targets = targets;
        self.key.clear();
        self.key.extend_from_slice(key);
        self.generation = Some(generation);
    }

    /// Offers a delivery to every cached target. Returns how many queued it.
    pub(crate) fn offer_all(&mut self, frame: &Bytes, view: &MessageView<'_>) -> usize {
        let mut n = 0;
        let Routing {
            targets,
            room,
            unearned,
            flush,
            blocked,
            may_hold,
            private_refused,
            ..
        } = self;
        let room = room.get_or_insert_with(Default::default);
        let private = frame.get(FRAME_HEADER_LEN + view.payload_offset) == Some(&kind::ENCRYPTED);
        for ob in targets.iter() {
            if private && ob.is_original() {
                *private_refused += 1;
                continue;
            }
            let hold = may_hold.then_some(Hold {
                waker: room,
                unearned: &mut *unearned,
            });
            match ob.offer(frame, view, hold) {
                Offer::Queued { first } => {
                    n += 1;
                    if first {
                        flush.push(ob.clone());
                    }
                }
                Offer::Full => blocked.push(ob.clone()),
                Offer::Dropped => {}
            }
        }
        self.published += 1;
        self.delivered += n as u64;
        n
    }

    /// Makes sure `ob` is flushed with the rest (it has something new to send).
    pub(crate) fn touch(&mut self, ob: &Arc<Outbox>) {
        self.flush.push(ob.clone());
    }

    /// Whether the message just routed is waiting for full outboxes, or for
    /// the inbox store.
    pub fn is_blocked(&self) -> bool {
        !self.blocked.is_empty() || !self.store_waiting.is_empty()
    }

    /// False for routing that must never wait.
    pub(crate) fn may_hold(&self) -> bool {
        self.may_hold
    }

    /// Writes what this reader queued, as far as each socket takes it. The first
    /// [`DIRECT_FLUSHES`] outboxes are written from here, which costs no task
    /// switch; when a read fanned out to more, the rest are left to their own
    /// writer tasks, which other worker threads can run meanwhile.
    pub fn flush(&mut self) {
        for (i, ob) in self.flush.drain(..).enumerate() {
            if i < DIRECT_FLUSHES {
                ob.flush(true);
            } else {
                ob.wake();
            }
        }
    }

    /// Waits until every full outbox the message in `frame` (a whole DELIVER
    /// frame) is waiting for has taken it or given up (hold budget spent, or
    /// closed). Returns how many took it.
    pub async fn hold(
        &mut self,
        frame: &Bytes,
        shutdown: &CancellationToken,
    ) -> Result<usize, ShuttingDown> {
        self.flush();
        let view = MessageView::parse(&frame[FRAME_HEADER_LEN..]).expect("routed, so valid");
        let mut waiting = std::mem::take(&mut self.blocked);
        if waiting.is_empty() {
            return Ok(0);
        }
        let room = self
            .room
            .clone()
            .expect("a full outbox was offered a waker");
        let mut delivered = 0;
        while !waiting.is_empty() {
            // The wait is shared: each of the k full outboxes is charged 1/k of
            // it. It lasts until the first of them would run out, and no longer
            // than what they earned plus the publisher's own budget would pay.
            let unearned = self.unearned.available();
            let k = waiting.len() as u32;
            let credits: Vec<_> = waiting.iter().map(|o| o.credit()).collect();
            let each = credits
                .iter()
                .map(|(earned, share)| *earned + (*share).min(unearned))
                .min()
                .expect("not empty");
            let earned: Duration = credits.iter().map(|(e, _)| *e).sum();
            let allowance = (each * k).min(earned + unearned);
            let start = Instant::now();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    for o in &waiting {
                        o.forget_waiter(&room);
                    }
                    return Err(ShuttingDown);
                }
                _ = room.notified() => {}
                _ = tokio::time::sleep(allowance) => {}
            }
            let held = start.elapsed();
            // The outboxes that kept the message waiting share the charge; the
            // publisher's own budget pays what they had not earned.
            let unpaid: Duration = waiting.iter().map(|o| o.charge(held / k)).sum();
            self.unearned.spend(unpaid);
            let mut still = Vec::new();
            for o in waiting {
                let hold = Hold {
                    waker: &room,
                    unearned: &mut self.unearned,
                };
                match o.offer(frame, &view, Some(hold)) {
                    Offer::Queued { first } => {
                        delivered += 1;
                        self.delivered += 1;
                        if first {
                            self.flush.push(o);
                        }
                    }
                    Offer::Full => still.push(o),
                    Offer::Dropped => {}
                }
            }
            waiting = still;
            self.flush();
        }
        Ok(delivered)
    }
}

impl Default for Routing {
    fn default() -> Self {
        Routing::new()
    }
}
