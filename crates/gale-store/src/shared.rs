//! What the `Store` handle and the committer thread share: the queue of
//! operations not yet committed, the registrations, and the counters. One
//! mutex guards it all; nobody holds it across disk I/O.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::stats::Counters;

/// One change for the committer to write.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Register {
        num: u64,
        name: String,
        owner: Vec<u8>,
        locations: Vec<String>,
    },
    Unregister {
        num: u64,
        name: String,
    },
    Append(Pending),
    Device {
        num: u64,
        device: String,
    },
    Ack {
        num: u64,
        device: String,
        seq: u64,
    },
    ForgetDevice {
        num: u64,
        device: String,
    },
}

impl Op {
    /// The inbox an operation changes.
    pub fn inbox(&self) -> Option<u64> {
        Some(match self {
            Op::Register { num, .. }
            | Op::Unregister { num, .. }
            | Op::Device { num, .. }
            | Op::Ack { num, .. }
            | Op::ForgetDevice { num, .. } => *num,
            Op::Append(p) => p.num,
        })
    }
}

/// A message handed to `append` and not yet known to be on disk.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub num: u64,
    pub seq: u64,
    pub id: [u8; 16],
    pub time: u64,
    pub bytes: Arc<[u8]>,
}

/// A registered inbox, as the handle sees it (the committer keeps the sizes).
#[derive(Clone, Debug)]
pub(crate) struct InboxMem {
    pub num: u64,
    pub owner: Vec<u8>,
    pub locations: Vec<String>,
    pub next_seq: u64,
    /// The highest seq known to be on disk.
    pub durable_seq: u64,
    /// Device → last seq it acked (including acks not yet committed).
    pub devices: HashMap<String, u64>,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub inboxes: HashMap<String, InboxMem>,
    pub next_num: u64,
    pub queue: Vec<(u64, Op)>,
    /// The batch the committer is writing: still readable until it is on disk.
    pub inflight: Arc<Vec<(u64, Op)>>,
    pub queued_at: Option<Instant>,
    pub queued_msgs: usize,
    pub queued_bytes: usize,
    /// Tickets number every operation; `done` is the last one committed (or
    /// given up on), `failed` the last one of a batch that failed.
    pub next_ticket: u64,
    pub done: u64,
    pub failed: u64,
    pub last_failure: Option<String>,
    /// Messages `append` refused, per inbox: gaps to record at the next commit.
    pub overflow: HashMap<u64, u64>,
    /// Gaps the committer has not yet written (its last commit failed).
    pub unrecorded: HashMap<u64, u64>,
    pub flush_wanted: bool,
    pub closing: bool,
    pub committer_gone: bool,
    pub counters: Counters,
    /// Messages and payload bytes on disk, as of the last commit.
    pub held: (u64, u64),
    /// The same per inbox (by number), for the status view.
    pub held_by: HashMap<u64, (u64, u64)>,
}

impl Shared {
    pub fn push(&mut self, op: Op) -> u64 {
        self.next_ticket += 1;
        if let Op::Append(p) = &op {
            self.queued_msgs += 1;
            self.queued_bytes += p.bytes.len();
        }
        if self.queued_at.is_none() {
            self.queued_at = Some(Instant::now());
        }
        self.queue.push((self.next_ticket, op));
        self.next_ticket
    }
}

/// The mutex and its two condition variables.
#[derive(Default)]
pub(crate) struct Sync {
    pub shared: Mutex<Shared>,
    /// Wakes the committer: work queued, a flush wanted, closing.
    pub work: Condvar,
    /// Wakes flushers: a batch done.
    pub done: Condvar,
}

impl Sync {
    /// The lock, even if a thread panicked while holding it: the state is
    /// counters and queues, still usable.
    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}
