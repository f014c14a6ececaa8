//! The committer thread: the store's only writer. It takes everything queued,
//! writes it in one transaction with the limits applied, commits (fsync), and
//! tells waiting flushers. A failed commit is counted and its messages are
//! reported to their devices as a gap at the next commit that succeeds; the
//! thread never panics on a disk error and the callers never wait for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::db::Db;

mod apply;

use crate::error::{engine, Result};
use crate::layout::{DEVICES, INBOXES, MESSAGES};
use crate::limits::{CommitPolicy, Limits};
use crate::shared::{Op, Sync};
use crate::stats::Counters;

/// How often messages past `max_age` are looked for when nothing else happens.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long the committer waits after a failed commit before the next.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What the committer knows of one inbox on disk.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acct {
    pub count: u64,
    pub bytes: u64,
    /// Device → (last seq acked, drops not yet told).
    pub devices: BTreeMap<String, (u64, u64)>,
}

/// The sizes of everything on disk, loaded at open and kept by the committer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Books {
    pub inboxes: HashMap<u64, Acct>,
    pub count: u64,
    pub bytes: u64,
}

impl Books {
    /// Messages and payload bytes held, per inbox.
    pub fn sizes(&self) -> HashMap<u64, (u64, u64)> {
        self.inboxes
            .iter()
            .map(|(n, a)| (*n, (a.count, a.bytes)))
            .collect()
    }

    pub fn load(db: &Database) -> Result<Books> {
        let tx = db.begin_read().map_err(engine)?;
        let mut books = Books::default();
        for row in tx
            .open_table(INBOXES)
            .map_err(engine)?
            .iter()
            .map_err(engine)?
        {
            let (_, v) = row.map_err(engine)?;
            books.inboxes.insert(v.value().0, Acct::default());
        }
        for row in tx
            .open_table(DEVICES)
            .map_err(engine)?
            .iter()
            .map_err(engine)?
        {
            let (k, v) = row.map_err(engine)?;
            let (num, device) = k.value();
            if let Some(a) = books.inboxes.get_mut(&num) {
                a.devices.insert(device.to_string(), v.value());
            }
        }
        for row in tx
            .open_table(MESSAGES)
            .map_err(engine)?
            .iter()
            .map_err(engine)?
        {
            let (k, v) = row.map_err(engine)?;
            let len = v.value().2.len() as u64;
            let a = books.inboxes.entry(k.value().0).or_default();
            a.count += 1;
            a.bytes += len;
            books.count += 1;
            books.bytes += len;
        }
        Ok(books)
    }
}

pub(crate) struct Committer {
    pub db: Arc<Db>,
    pub sync: Arc<Sync>,
    pub limits: Limits,
    pub policy: CommitPolicy,
    pub file: std::path::PathBuf,
    pub books: Books,
    /// Messages never stored (failed commits), per inbox: each device that
    /// had not read them is told at the next commit that succeeds.
    lost: HashMap<u64, u64>,
    counters: Counters,
    last_sweep: Instant,
    /// After a failed commit, the next waits until then (unless closing).
    retry_at: Option<Instant>,
}

impl Committer {
    pub fn new(
        db: Arc<Db>,
        sync: Arc<Sync>,
        limits: Limits,
        policy: CommitPolicy,
        file: std::path::PathBuf,
        books: Books,
    ) -> Committer {
        Committer {
            db,
            sync,
            limits,
            policy,
            file,
            books,
            lost: HashMap::new(),
            counters: Counters::default(),
            last_sweep: Instant::now(),
            retry_at: None,
        }
    }

    pub fn run(mut self) {
        loop {
            let (batch, closing) = self.wait_for_work();
            let sweep = self.last_sweep.elapsed() >= SWEEP_EVERY;
            if batch.is_empty() && !sweep {
                if closing {
                    break;
                }
                continue;
            }
            let last = batch.last().map(|(t, _)| *t);
            let result = self.write(&batch, sweep);
            if sweep {
                self.last_sweep = Instant::now();
            }
            self.finish(last, &batch, result, sweep);
        }
        let mut s = self.sync.lock();
        s.committer_gone = true;
        self.sync.done.notify_all();
    }

    /// Waits until a batch is due (interval elapsed since its first
    /// operation, large enough, or a flush asked for), then takes it.
    fn wait_for_work(&mut self) -> (Arc<Vec<(u64, Op)>>, bool) {
        let mut s = self.sync.lock();
        loop {
            let backoff = self.retry_at.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            let due = match s.queued_at {
                None => None,
                Some(_) if !backoff.is_zero() && !s.closing => Some(backoff),
                Some(_) if s.flush_wanted || s.closing => Some(Duration::ZERO),
                Some(_) if s.queue.len() >= self.policy.max_batch => Some(Duration::ZERO),
                Some(at) => Some(self.policy.interval.saturating_sub(at.elapsed())),
            };
            let wait = match due {
                Some(d) if d.is_zero() => break,
                Some(d) => d,
                None if s.closing => break,
                None => SWEEP_EVERY.saturating_sub(self.last_sweep.elapsed()),
            };
            if wait.is_zero() {
                break;
            }
            s = self
                .sync
                .work
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let batch = Arc::new(std::mem::take(&mut s.queue));
        s.inflight = batch.clone();
        s.queued_at = None;
        s.queued_msgs = 0;
        s.queued_bytes = 0;
        s.flush_wanted = false;
        for (num, n) in s.overflow.drain() {
            *self.lost.entry(num).or_default() += n;
        }
        (batch, s.closing)
    }

    fn finish(
        &mut self,
        last: Option<u64>,
        batch: &[(u64, Op)],
        result: Result<HashMap<u64, u64>>,
        sweep: bool,
    ) {
        let durable = match result {
            Ok(durable) => {
                self.counters.commits += 1;
                self.lost.clear();
                self.retry_at = None;
                durable
            }
            Err(e) => {
                tracing::error!("inbox store: {e}; the messages of this batch are lost and their owners will be told");
                self.counters.errors += 1;
                for (_, op) in batch {
                    if let Op::Append(p) = op {
                        *self.lost.entry(p.num).or_default() += 1;
                        self.counters.dropped_failed += 1;
                    }
                }
                // After an I/O error redb refuses everything until reopened;
                // and what this batch changed in memory did not reach the disk.
                match self.db.reopen().and_then(|()| self.db.with(Books::load)) {
                    Ok(b) => self.books = b,
                    Err(e) => tracing::error!("inbox store: cannot reopen the store: {e}"),
                }
                let mut s = self.sync.lock();
                s.last_failure = Some(e.to_string());
                if let Some(t) = last {
                    s.failed = t;
                }
                // Registrations, devices and acks are not lost: they go first
                // in the next batch, which waits a little for the disk.
                let mut retry: Vec<(u64, Op)> = batch
                    .iter()
                    .filter(|(_, op)| !matches!(op, Op::Append(_)))
                    .cloned()
                    .collect();
                if !retry.is_empty() {
                    retry.append(&mut s.queue);
                    s.queue = retry;
                    s.queued_at.get_or_insert_with(Instant::now);
                }
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                HashMap::new()
            }
        };
        let mut s = self.sync.lock();
        if let Some(t) = last {
            s.done = s.done.max(t);
        }
        s.inflight = Arc::new(Vec::new());
        for inbox in s.inboxes.values_mut() {
            if let Some(&seq) = durable.get(&inbox.num) {
                inbox.durable_seq = inbox.durable_seq.max(seq);
            }
        }
        s.held = (self.books.count, self.books.bytes);
        // Each inbox's size for the status view: those this batch touched, and
        // all of them after a sweep (limits may have dropped from any).
        let acct = |a: Option<&Acct>| a.map_or((0, 0), |a| (a.count, a.bytes));
        if sweep {
            s.held_by = self.books.sizes();
        } else {
            for (_, op) in batch {
                if let Some(num) = op.inbox() {
                    let v = acct(self.books.inboxes.get(&num));
                    s.held_by.insert(num, v);
                }
            }
        }
        s.unrecorded = self.lost.clone();
        let overload = s.counters.dropped_overload;
        s.counters = self.counters.clone();
        s.counters.dropped_overload = overload;
        self.sync.done.notify_all();
    }
}
