//! The `Store` handle: what galed calls. Appends and acks are queued for the
//! committer and return at once; reads look at the disk and at what is still
//! queued, so a message is readable as soon as `append` returns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::db::Db;

use crate::committer::{Books, Committer};
use crate::error::{engine, Result, StoreError};
use crate::layout::{DEVICES, INBOXES, MESSAGES, NEXT_SEQ};
use crate::limits::{CommitPolicy, Limits};
use crate::shared::{InboxMem, Op, Pending, Shared, Sync};
use crate::stats::Stats;

/// The name of the store file in the data directory.
pub const FILE_NAME: &str = "inboxes.redb";

/// A durable subscription: an inbox, the key that owns it, and the locations
/// galed keeps interest in on its links while the owner is away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub inbox: String,
    pub owner: Vec<u8>,
    pub locations: Vec<String>,
}

/// One inbox as the status view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxInfo {
    pub inbox: String,
    pub locations: Vec<String>,
    /// The last seq handed out (0 if none).
    pub last_seq: u64,
    /// Messages and payload bytes it holds on disk, as of the last commit.
    pub messages: u64,
    pub bytes: u64,
    /// Each known device and the last seq it acknowledged.
    pub devices: Vec<(String, u64)>,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Position in the inbox, from 1, never reused.
    pub seq: u64,
    pub id: [u8; 16],
    /// Unix time in milliseconds, as given to `append`.
    pub time: u64,
    pub bytes: Vec<u8>,
}

/// What `read` returns: messages in seq order, and how many messages this
/// device lost (limits, age, store errors) since it last acked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub dropped: u64,
    pub messages: Vec<Stored>,
}

/// The inbox store. Cheap calls from any thread; one committer thread writes.
pub struct Store {
    db: Arc<Db>,
    sync: Arc<Sync>,
    policy: CommitPolicy,
    file: PathBuf,
    committer: Option<JoinHandle<()>>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, with the default commit policy.
    pub fn open(dir: &Path, limits: Limits) -> Result<Store> {
        Store::open_with(dir, limits, CommitPolicy::default())
    }

    /// Opens the store with a commit policy of the caller's. Reads every
    /// message's size once (about a second per few million messages) to know
    /// the inboxes' sizes, then starts the committer thread.
    pub fn open_with(dir: &Path, limits: Limits, policy: CommitPolicy) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = dir.join(FILE_NAME);
        let db = Arc::new(Db::open(&file, policy.cache_bytes)?);
        let books = db.with(Books::load)?;
        let sync = Arc::new(Sync::default());
        db.with(|db| load_registrations(db, &books, &mut sync.lock()))?;
        {
            let mut s = sync.lock();
            s.held = (books.count, books.bytes);
            s.held_by = books.sizes();
        }
        let committer = Committer::new(
            db.clone(),
            sync.clone(),
            limits,
            policy.clone(),
            file.clone(),
            books,
        );
        let committer = std::thread::Builder::new()
            .name("gale-store".into())
            .spawn(move || committer.run())
            .map_err(|e| StoreError::CommitFailed(format!("cannot start the committer: {e}")))?;
        Ok(Store {
            db,
            sync,
            policy,
            file,
            committer: Some(committer),
        })
    }

    /// Registers (or updates) a durable subscription.
    pub fn register(&self, inbox: &str, owner: &[u8], locations: &[String]) {
        let mut s = self.sync.lock();
        let num = match s.inboxes.get_mut(inbox) {
            Some(m) => {
                m.owner = owner.to_vec();
                m.locations = locations.to_vec();
                m.num
            }
            None => {
                s.next_num += 1;
                let num = s.next_num;
                s.inboxes.insert(
                    inbox.to_string(),
                    InboxMem {
                        num,
                        owner: owner.to_vec(),
                        locations: locations.to_vec(),
                        next_seq: 1,
                        durable_seq: 0,
                        devices: Default::default(),
                    },
                );
                num
            }
        };
        self.enqueue(
            &mut s,
            Op::Register {
                num,
                name: inbox.to_string(),
                owner: owner.to_vec(),
                locations: locations.to_vec(),
            },
        );
    }

    /// Forgets an inbox, its messages and its devices.
    pub fn unregister(&self, inbox: &str) -> Result<()> {
        let mut s = self.sync.lock();
        let m = s
            .inboxes
            .remove(inbox)
            .ok_or_else(|| StoreError::UnknownInbox(inbox.to_string()))?;
        self.enqueue(
            &mut s,
            Op::Unregister {
                num: m.num,
                name: inbox.to_string(),
            },
        );
        Ok(())
    }

    /// The durable subscriptions, sorted by inbox.
    pub fn list(&self) -> Vec<Registration> {
        let s = self.sync.lock();
        let mut v: Vec<_> = s
            .inboxes
            .iter()
            .map(|(name, m)| Registration {
                inbox: name.clone(),
                owner: m.owner.clone(),
                locations: m.locations.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.inbox.cmp(&b.inbox));
        v
    }

    /// Queues a message for `inbox` and returns its seq. Never waits for the
    /// disk: past the policy's bound on queued messages it refuses
    /// (`Overloaded`), counts the drop and tells the devices at the next commit.
    pub fn append(&self, inbox: &str, id: [u8; 16], time: u64, bytes: &[u8]) -> Result<u64> {
        let mut s = self.sync.lock();
        let over = s.queued_msgs >= self.policy.max_pending
            || s.queued_bytes + bytes.len() > self.policy.max_pending_bytes;
        let m = s
            .inboxes
            .get_mut(inbox)
            .ok_or_else(|| StoreError::UnknownInbox(inbox.to_string()))?;
        let num = m.num;
        if over {
            // No seq: a gap for every device, told at the next commit.
            s.counters.dropped_overload += 1;
            *s.overflow.entry(num).or_default() += 1;
            return Err(StoreError::Overloaded);
        }
        let seq = m.next_seq;
        m.next_seq += 1;
        self.enqueue(
            &mut s,
            Op::Append(Pending {
                num,
                seq,
                id,
                time,
                bytes: Arc::from(bytes),
            }),
        );
        Ok(seq)
    }

    /// Messages of `inbox` after `after_seq`, at most `max`, in order, and the
    /// drops this device has not been told of. A device is known (and waited
    /// for before messages are deleted) from its first read or ack.
    pub fn read(&self, inbox: &str, device: &str, after_seq: u64, max: usize) -> Result<Batch> {
        let (num, queued, gaps) = {
            let mut s = self.sync.lock();
            let m = s
                .inboxes
                .get_mut(inbox)
                .ok_or_else(|| StoreError::UnknownInbox(inbox.to_string()))?;
            let num = m.num;
            if !m.devices.contains_key(device) {
                m.devices.insert(device.to_string(), 0);
                self.enqueue(
                    &mut s,
                    Op::Device {
                        num,
                        device: device.to_string(),
                    },
                );
            }
            // Copied before the disk is read: a batch committed in between
            // is then found twice (and merged), never missed.
            let mut queued = Vec::new();
            for (_, op) in s.inflight.iter().chain(s.queue.iter()) {
                if let Op::Append(p) = op {
                    if p.num == num && p.seq > after_seq {
                        queued.push(p.clone());
                    }
                }
            }
            let gaps = s.unrecorded.get(&num).copied().unwrap_or(0)
                + s.overflow.get(&num).copied().unwrap_or(0);
            (num, queued, gaps)
        };
        let (mut out, dropped) = self.db.with(|db| {
            let mut out = BTreeMap::new();
            let tx = db.begin_read().map_err(engine)?;
            let messages = tx.open_table(MESSAGES).map_err(engine)?;
            let start = after_seq.saturating_add(1);
            for row in messages
                .range((num, start)..=(num, u64::MAX))
                .map_err(engine)?
                .take(max)
            {
                let (k, v) = row.map_err(engine)?;
                let (id, time, bytes) = v.value();
                let seq = k.value().1;
                out.insert(
                    seq,
                    Stored {
                        seq,
                        id,
                        time,
                        bytes: bytes.to_vec(),
                    },
                );
            }
            let dropped = tx
                .open_table(DEVICES)
                .map_err(engine)?
                .get((num, device))
                .map_err(engine)?
                .map_or(0, |v| v.value().1);
            Ok((out, dropped))
        })?;
        for p in queued {
            out.entry(p.seq).or_insert_with(|| Stored {
                seq: p.seq,
                id: p.id,
                time: p.time,
                bytes: p.bytes.to_vec(),
            });
        }
        Ok(Batch {
            dropped: dropped + gaps,
            messages: out.into_values().take(max).collect(),
        })
    }

    /// This device has everything up to `seq` (and was told of its drops).
    /// Messages every known device has acked are deleted at the next commit.
    pub fn ack(&self, inbox: &str, device: &str, seq: u64) -> Result<()> {
        let mut s = self.sync.lock();
        let m = s
            .inboxes
            .get_mut(inbox)
            .ok_or_else(|| StoreError::UnknownInbox(inbox.to_string()))?;
        let num = m.num;
        // Nobody can have read what was not appended yet.
        let seq = seq.min(m.next_seq - 1);
        let acked = m.devices.entry(device.to_string()).or_insert(0);
        *acked = (*acked).max(seq);
        self.enqueue(
            &mut s,
            Op::Ack {
                num,
                device: device.to_string(),
                seq,
            },
        );
        Ok(())
    }

    /// The last seq this device acked (0 if none), if the device is known.
    pub fn cursor(&self, inbox: &str, device: &str) -> Option<u64> {
        let s = self.sync.lock();
        s.inboxes.get(inbox)?.devices.get(device).copied()
    }

    /// Forgets a device (a lost laptop), so it no longer holds messages back.
    pub fn forget_device(&self, inbox: &str, device: &str) -> Result<()> {
        let mut s = self.sync.lock();
        let m = s
            .inboxes
            .get_mut(inbox)
            .ok_or_else(|| StoreError::UnknownInbox(inbox.to_string()))?;
        let num = m.num;
        m.devices.remove(device);
        self.enqueue(
            &mut s,
            Op::ForgetDevice {
                num,
                device: device.to_string(),
            },
        );
        Ok(())
    }

    /// The last seq handed out for `inbox` (0 if none yet).
    pub fn last_seq(&self, inbox: &str) -> Option<u64> {
        let s = self.sync.lock();
        s.inboxes.get(inbox).map(|m| m.next_seq - 1)
    }

    /// Whether `append` would take a message of `len` bytes now (the committer
    /// is not behind by its bound): a caller that can wait checks this first.
    pub fn has_room(&self, len: usize) -> bool {
        let s = self.sync.lock();
        s.queued_msgs < self.policy.max_pending
            && s.queued_bytes + len <= self.policy.max_pending_bytes
    }

    /// Every inbox with its devices' cursors, sorted by name (status view).
    pub fn inboxes(&self) -> Vec<InboxInfo> {
        let s = self.sync.lock();
        let mut v: Vec<InboxInfo> = s
            .inboxes
            .iter()
            .map(|(name, m)| {
                let mut devices: Vec<(String, u64)> =
                    m.devices.iter().map(|(d, c)| (d.clone(), *c)).collect();
                devices.sort();
                let (messages, bytes) = s.held_by.get(&m.num).copied().unwrap_or_default();
                InboxInfo {
                    inbox: name.clone(),
                    locations: m.locations.clone(),
                    last_seq: m.next_seq - 1,
                    messages,
                    bytes,
                    devices,
                }
            })
            .collect();
        v.sort_by(|a, b| a.inbox.cmp(&b.inbox));
        v
    }

    /// The highest seq of `inbox` known to be on disk.
    pub fn durable_seq(&self, inbox: &str) -> Option<u64> {
        let s = self.sync.lock();
        s.inboxes.get(inbox).map(|m| m.durable_seq)
    }

    /// Commits everything queued before this call and waits for it. Returns
    /// the error of a commit that lost some of it (for tests and shutdown).
    pub fn flush(&self) -> Result<()> {
        let mut s = self.sync.lock();
        let since = s.done;
        let target = s.next_ticket;
        s.flush_wanted = true;
        self.sync.work.notify_one();
        while s.done < target {
            if s.committer_gone {
                return Err(StoreError::Closed);
            }
            s = self.sync.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.failed > since {
            let why = s.last_failure.clone().unwrap_or_default();
            return Err(StoreError::CommitFailed(why));
        }
        Ok(())
    }

    /// Figures for the status view (the oldest message's time is `None`
    /// while the store cannot be read).
    pub fn stats(&self) -> Stats {
        let (nums, pending, counters, last_error, (messages, bytes)) = {
            let s = self.sync.lock();
            (
                s.inboxes.values().map(|m| m.num).collect::<Vec<_>>(),
                s.queued_msgs as u64,
                s.counters.clone(),
                s.last_failure.clone(),
                s.held,
            )
        };
        // The oldest message is the oldest of the inboxes' first ones.
        let oldest = self
            .db
            .with(|db| {
                let tx = db.begin_read().map_err(engine)?;
                let table = tx.open_table(MESSAGES).map_err(engine)?;
                let mut oldest = None::<u64>;
                for &num in &nums {
                    if let Some(row) = table
                        .range((num, 0)..=(num, u64::MAX))
                        .map_err(engine)?
                        .next()
                    {
                        let time = row.map_err(engine)?.1.value().1;
                        oldest = Some(oldest.map_or(time, |o| o.min(time)));
                    }
                }
                Ok(oldest)
            })
            .unwrap_or(None);
        Stats {
            inboxes: nums.len() as u64,
            messages,
            bytes,
            oldest,
            file_bytes: std::fs::metadata(&self.file).map_or(0, |m| m.len()),
            pending,
            counters,
            last_error,
        }
    }

    /// Queues `op`; wakes the committer when it starts a batch (so the
    /// interval runs from the first operation) or fills one.
    fn enqueue(&self, s: &mut Shared, op: Op) {
        let first = s.queue.is_empty();
        s.push(op);
        if first || s.queue.len() >= self.policy.max_batch {
            self.sync.work.notify_one();
        }
    }

    /// Commits what is queued and stops the committer.
    pub fn close(mut self) -> Result<()> {
        let r = self.flush();
        self.stop();
        r
    }

    fn stop(&mut self) {
        if let Some(h) = self.committer.take() {
            self.sync.lock().closing = true;
            self.sync.work.notify_one();
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop();
    }
}

fn load_registrations(db: &Database, books: &Books, s: &mut Shared) -> Result<()> {
    let tx = db.begin_read().map_err(engine)?;
    let next_seq = tx.open_table(NEXT_SEQ).map_err(engine)?;
    let messages = tx.open_table(MESSAGES).map_err(engine)?;
    for row in tx
        .open_table(INBOXES)
        .map_err(engine)?
        .iter()
        .map_err(engine)?
    {
        let (k, v) = row.map_err(engine)?;
        let (num, owner, locs) = v.value();
        let last = messages
            .range((num, 0)..=(num, u64::MAX))
            .map_err(engine)?
            .next_back()
            .transpose()
            .map_err(engine)?
            .map_or(0, |(k, _)| k.value().1);
        let next = next_seq
            .get(num)
            .map_err(engine)?
            .map_or(1, |v| v.value())
            .max(last + 1);
        s.next_num = s.next_num.max(num);
        s.inboxes.insert(
            k.value().to_string(),
            InboxMem {
                num,
                owner: owner.to_vec(),
                locations: locs
                    .split('\n')
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
                next_seq: next,
                durable_seq: next - 1,
                // The committer read the devices' cursors already.
                devices: books.inboxes.get(&num).map_or_else(Default::default, |a| {
                    a.devices
                        .iter()
                        .map(|(d, (acked, _))| (d.clone(), *acked))
                        .collect()
                }),
            },
        );
    }
    Ok(())
}
