//! One transaction of the committer: the batch, deletions of what every
//! device has read, the limits (oldest first, each loss counted for the
//! devices that had not read it).

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, Table};

use super::{Books, Committer};
use crate::error::{engine, Result, StoreError};
use crate::layout::{MessageKey, MessageValue, DEVICES, INBOXES, MESSAGES, NEXT_SEQ};
use crate::shared::Op;

type Messages<'t> = Table<'t, MessageKey, MessageValue>;
type Devices<'t> = Table<'t, (u64, &'static str), (u64, u64)>;

/// The oldest message of an inbox, and the sizes before it goes.
struct Head {
    seq: u64,
    time: u64,
    count: u64,
    bytes: u64,
    total_count: u64,
    total_bytes: u64,
}

/// Why messages leave an inbox.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Every device has read them: not a loss.
    Read,
    Limit,
    Age,
}

impl Committer {
    /// One transaction: the batch, deletions of what every device has read,
    /// the limits. Returns the highest seq stored per inbox.
    pub(super) fn write(&mut self, batch: &[(u64, Op)], sweep: bool) -> Result<HashMap<u64, u64>> {
        if !self.db.is_open() {
            // The last reopen failed: try again before this batch.
            self.db.reopen()?;
            self.books = self.db.with(Books::load)?;
        }
        let db = self.db.clone();
        db.with(|db| self.write_to(db, batch, sweep))
    }

    fn write_to(
        &mut self,
        db: &Database,
        batch: &[(u64, Op)],
        sweep: bool,
    ) -> Result<HashMap<u64, u64>> {
        let full = std::fs::metadata(&self.file)
            .map(|m| m.len() >= self.limits.file_bytes)
            .unwrap_or(false);
        let tx = db.begin_write().map_err(engine)?;
        let mut durable = HashMap::new();
        let mut refused = 0u64;
        let changed = {
            let mut inboxes = tx.open_table(INBOXES).map_err(engine)?;
            let mut messages = tx.open_table(MESSAGES).map_err(engine)?;
            let mut devices = tx.open_table(DEVICES).map_err(engine)?;
            let mut next_seq = tx.open_table(NEXT_SEQ).map_err(engine)?;
            let mut touched = HashSet::new();
            // Gaps: messages that never reached the disk. Recorded after the
            // batch (so devices it makes known are told), or before an ack
            // of the inbox in it (which tells them). If this commit fails
            // they stay in `self.lost` for the next.
            let mut gaps = self.lost.clone();
            let mut refused_now: HashMap<u64, u64> = HashMap::new();
            for (_, op) in batch {
                match op {
                    Op::Register {
                        num,
                        name,
                        owner,
                        locations,
                    } => {
                        let locs = locations.join("\n");
                        inboxes
                            .insert(name.as_str(), (*num, owner.as_slice(), locs.as_str()))
                            .map_err(engine)?;
                        self.books.inboxes.entry(*num).or_default();
                    }
                    Op::Unregister { num, name } => {
                        inboxes.remove(name.as_str()).map_err(engine)?;
                        next_seq.remove(*num).map_err(engine)?;
                        messages
                            .retain_in((*num, 0)..=(*num, u64::MAX), |_, _| false)
                            .map_err(engine)?;
                        devices
                            .retain_in((*num, "")..(*num + 1, ""), |_, _| false)
                            .map_err(engine)?;
                        if let Some(a) = self.books.inboxes.remove(num) {
                            self.books.count -= a.count;
                            self.books.bytes -= a.bytes;
                        }
                        touched.remove(num);
                    }
                    Op::Append(p) => {
                        let Some(a) = self.books.inboxes.get_mut(&p.num) else {
                            continue; // unregistered since
                        };
                        next_seq.insert(p.num, p.seq + 1).map_err(engine)?;
                        if full {
                            *refused_now.entry(p.num).or_default() += 1;
                            refused += 1;
                            continue;
                        }
                        messages
                            .insert((p.num, p.seq), (p.id, p.time, &p.bytes[..]))
                            .map_err(engine)?;
                        a.count += 1;
                        a.bytes += p.bytes.len() as u64;
                        self.books.count += 1;
                        self.books.bytes += p.bytes.len() as u64;
                        durable.insert(p.num, p.seq);
                        touched.insert(p.num);
                    }
                    Op::Device { num, device } => {
                        if let Some(a) = self.books.inboxes.get_mut(num) {
                            let v = *a.devices.entry(device.clone()).or_insert((0, 0));
                            devices.insert((*num, device.as_str()), v).map_err(engine)?;
                        }
                    }
                    Op::Ack { num, device, seq } => {
                        if let Some(n) = gaps.remove(num) {
                            self.record_gap(&mut devices, *num, n)?;
                        }
                        if let Some(a) = self.books.inboxes.get_mut(num) {
                            let v = a.devices.entry(device.clone()).or_insert((0, 0));
                            *v = (v.0.max(*seq), 0);
                            devices
                                .insert((*num, device.as_str()), *v)
                                .map_err(engine)?;
                            touched.insert(*num);
                        }
                    }
                    Op::ForgetDevice { num, device } => {
                        if let Some(a) = self.books.inboxes.get_mut(num) {
                            a.devices.remove(device);
                            devices.remove((*num, device.as_str())).map_err(engine)?;
                            touched.insert(*num);
                        }
                    }
                }
            }
            for (num, n) in refused_now {
                *gaps.entry(num).or_default() += n;
            }
            for (num, n) in gaps {
                self.record_gap(&mut devices, num, n)?;
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let oldest_kept = now.saturating_sub(self.limits.max_age.as_millis() as u64);
            let sweep_set: Vec<u64> = if sweep {
                self.books.inboxes.keys().copied().collect()
            } else {
                touched.iter().copied().collect()
            };
            let mut removed = 0;
            for num in sweep_set {
                let Some(a) = self.books.inboxes.get(&num) else {
                    continue;
                };
                if let Some(read) = a.devices.values().map(|v| v.0).min() {
                    removed +=
                        self.drop_head(&mut messages, &mut devices, num, Why::Read, |h| {
                            h.seq <= read
                        })?;
                }
                let (max_n, max_b) = (self.limits.inbox_messages, self.limits.inbox_bytes);
                removed += self.drop_head(&mut messages, &mut devices, num, Why::Limit, |h| {
                    h.count > max_n || h.bytes > max_b
                })?;
                removed += self.drop_head(&mut messages, &mut devices, num, Why::Age, |h| {
                    h.time < oldest_kept
                })?;
            }
            removed += self.enforce_totals(&mut messages, &mut devices)?;
            !batch.is_empty() || removed > 0
        };
        if changed {
            tx.commit().map_err(engine)?;
        } else {
            tx.abort().map_err(engine)?;
        }
        if refused > 0 {
            self.counters.dropped_failed += refused;
            self.counters.errors += 1;
            let e = StoreError::Full {
                limit: self.limits.file_bytes,
            };
            tracing::error!("inbox store: {e}");
            let mut s = self.sync.lock();
            s.last_failure = Some(e.to_string());
            s.failed = batch.last().map_or(s.failed, |(t, _)| *t);
        }
        Ok(durable)
    }

    /// Removes the oldest messages of inbox `num` while `more(head)` holds; a message not yet acked by a device counts as a drop for
    /// it unless `why` is `Read`.
    fn drop_head(
        &mut self,
        messages: &mut Messages<'_>,
        devices: &mut Devices<'_>,
        num: u64,
        why: Why,
        mut more: impl FnMut(&Head) -> bool,
    ) -> Result<u64> {
        let mut removed = 0;
        let mut dirty = false;
        loop {
            let Some(a) = self.books.inboxes.get_mut(&num) else {
                return Ok(removed);
            };
            let head = {
                let mut r = messages.range((num, 0)..=(num, u64::MAX)).map_err(engine)?;
                match r.next() {
                    None => None,
                    Some(row) => {
                        let (k, v) = row.map_err(engine)?;
                        let (_, time, bytes) = v.value();
                        Some((k.value().1, time, bytes.len() as u64))
                    }
                }
            };
            let Some((seq, time, len)) = head else { break };
            let h = Head {
                seq,
                time,
                count: a.count,
                bytes: a.bytes,
                total_count: self.books.count,
                total_bytes: self.books.bytes,
            };
            if !more(&h) {
                break;
            }
            messages.remove((num, seq)).map_err(engine)?;
            a.count -= 1;
            a.bytes -= len;
            self.books.count -= 1;
            self.books.bytes -= len;
            removed += 1;
            if why != Why::Read {
                for v in a.devices.values_mut() {
                    if v.0 < seq {
                        v.1 += 1;
                        dirty = true;
                    }
                }
                match why {
                    Why::Age => self.counters.dropped_age += 1,
                    _ => self.counters.dropped_limit += 1,
                }
            }
        }
        if dirty {
            if let Some(a) = self.books.inboxes.get(&num) {
                for (name, v) in &a.devices {
                    devices.insert((num, name.as_str()), *v).map_err(engine)?;
                }
            }
        }
        Ok(removed)
    }

    /// `n` messages of inbox `num` were lost: every device is told.
    fn record_gap(&mut self, devices: &mut Devices<'_>, num: u64, n: u64) -> Result<()> {
        if let Some(a) = self.books.inboxes.get_mut(&num) {
            for (name, v) in a.devices.iter_mut() {
                v.1 += n;
                devices.insert((num, name.as_str()), *v).map_err(engine)?;
            }
        }
        Ok(())
    }

    /// Past a server-wide limit, the oldest message of all inboxes goes first.
    fn enforce_totals(
        &mut self,
        messages: &mut Messages<'_>,
        devices: &mut Devices<'_>,
    ) -> Result<u64> {
        let mut removed = 0;
        while self.over_totals() {
            // The inbox whose head is oldest, and the next oldest head.
            let mut heads = Vec::new();
            for (&num, a) in &self.books.inboxes {
                if a.count == 0 {
                    continue;
                }
                let mut r = messages.range((num, 0)..=(num, u64::MAX)).map_err(engine)?;
                if let Some(row) = r.next() {
                    let (_, v) = row.map_err(engine)?;
                    heads.push((v.value().1, num));
                }
            }
            heads.sort_unstable();
            let Some(&(_, num)) = heads.first() else {
                break;
            };
            let next = heads.get(1).map_or(u64::MAX, |h| h.0);
            let (max_n, max_b) = (self.limits.total_messages, self.limits.total_bytes);
            let n = self.drop_head(messages, devices, num, Why::Limit, |h| {
                (h.total_count > max_n || h.total_bytes > max_b) && h.time <= next
            })?;
            if n == 0 {
                break;
            }
            removed += n;
        }
        Ok(removed)
    }

    fn over_totals(&self) -> bool {
        self.books.count > self.limits.total_messages || self.books.bytes > self.limits.total_bytes
    }
}
