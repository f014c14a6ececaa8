//! The resume window: the messages this server routed recently, so that a client
//! that reconnects can be sent what it missed ([`ResumeWindow::plan`]), or told
//! exactly what it cannot be sent (protocol version 2, RESUME and RESUMED).
//!
//! Every routed message is appended, whoever wanted it, with a sequence number
//! (its *position*), its id, when it arrived and its location list. Its frame is
//! kept while the window's bounds allow (`resume_window_bytes`,
//! `resume_window_secs`, and the server's memory budget); past them the oldest
//! frame is let go and the entry kept as a *tombstone* (id, time, locations), up
//! to [`TOMBSTONES`] of them, so that a client whose position fell out of the
//! window is told how many messages it lost, not only that it lost some.
//!
//! Frames and location lists are copied, in order, into two byte rings the window
//! owns, so that appending and letting go cost a copy and some arithmetic: no
//! allocation, no reference count, nothing to free per message (sharing the
//! routed `Bytes`, as outboxes do, would also keep a publisher's whole 64 KiB read
//! buffer alive for as long as the window held one of its frames). A replay,
//! which is rare, copies its frames out. Entries are found by a scan from the
//! newest end: a client that was away briefly resumes near it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gale_proto::resume::{Outcome, Resume, Resumed};
use gale_proto::{MessageId, MessageView};

use crate::memory::MemoryBudget;

/// Tombstones kept (entries whose frame was let go), at most.
pub const TOMBSTONES: usize = 65_536;
/// What an entry costs besides its bytes (the entry itself and room in the
/// rings), counted against the window and the memory budget.
pub const ENTRY_COST: usize = 64;
/// The window takes from the memory budget in steps of this much, so that the
/// shared count is not touched for every message.
const BUDGET_STEP: usize = 1 << 20;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random epoch for this process, never 0 (which means "none" on the wire).
pub fn random_epoch() -> u64 {
    let id = MessageId::generate();
    let b: [u8; 8] = id.0[8..16].try_into().expect("8 bytes");
    u64::from_be_bytes(b).max(1)
}

#[derive(Debug)]
struct Entry {
    id: MessageId,
    at_ms: u64,
    /// Length of its frame in `frames`; 0 once let go.
    frame_len: u32,
    /// Length of its raw location list in `locs`.
    locs_len: u32,
}

/// `len` bytes at `at` in `ring`, borrowed when they are contiguous.
fn bytes_at(ring: &VecDeque<u8>, at: usize, len: usize) -> std::borrow::Cow<'_, [u8]> {
    let (a, b) = ring.as_slices();
    if at + len <= a.len() {
        a[at..at + len].into()
    } else if at >= a.len() {
        b[at - a.len()..at - a.len() + len].into()
    } else {
        ring.range(at..at + len)
            .copied()
            .collect::<Vec<u8>>()
            .into()
    }
}

/// What the window holds, for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Entries with their frame.
    pub held: usize,
    /// Bytes counted against `resume_window_bytes` (frames and entries).
    pub bytes: usize,
    /// Entries whose frame was let go.
    pub tombstones: usize,
    /// Age of the oldest frame held, in milliseconds.
    pub oldest_ms: u64,
    /// Bytes the window has taken from the memory budget (what it holds, and up
    /// to two steps more).
    pub budgeted: usize,
}

/// What to send a resuming client: the frames to replay, in order, and the
/// RESUMED that follows them.
#[derive(Debug)]
pub struct Plan {
    pub frames: Vec<Bytes>,
    pub resumed: Resumed,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ResumeWindow {
    epoch: u64,
    max_bytes: usize,
    max_age_ms: u64,
    max_tombstones: usize,
    entries: VecDeque<Entry>,
    /// Position of `entries[0]`; positions are consecutive.
    first: u64,
    /// Entries before this index are tombstones; from it on, frames are held.
    held_from: usize,
    /// The frames of `entries[held_from..]`, back to back.
    frames: VecDeque<u8>,
    /// The location lists of all entries, back to back.
    locs: VecDeque<u8>,
    /// Bytes of held entries (frames plus [`ENTRY_COST`]), against `max_bytes`.
    held_bytes: usize,
    memory: Option<Arc<MemoryBudget>>,
    /// Bytes taken from the memory budget: at least [`ResumeWindow::used`].
    reserved: usize,
}

impl ResumeWindow {
    /// A window of at most `max_bytes` of held frames, none older than `max_secs`.
    /// A zero bound keeps no frame (only tombstones).
    pub fn new(epoch: u64, max_bytes: usize, max_secs: u64) -> ResumeWindow {
        ResumeWindow {
            epoch,
            max_bytes,
            max_age_ms: max_secs.saturating_mul(1000),
            max_tombstones: TOMBSTONES,
            entries: VecDeque::new(),
            first: 1,
            held_from: 0,
            frames: VecDeque::new(),
            locs: VecDeque::new(),
            held_bytes: 0,
            memory: None,
            reserved: 0,
        }
    }

    /// Counts what the window holds against `memory`; a frame that does not fit
    /// the budget lets older ones go, or is kept as a tombstone.
    pub fn with_budget(mut self, memory: Arc<MemoryBudget>) -> ResumeWindow {
        self.memory = Some(memory);
        self
    }

    #[cfg(test)]
    fn with_tombstones(mut self, n: usize) -> ResumeWindow {
        self.max_tombstones = n;
        self
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The position the next message will take.
    pub fn next_position(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Appends a routed message (`frame` is its whole DELIVER frame).
    pub fn append(&mut self, frame: &[u8], view: &MessageView<'_>, now_ms: u64) {
        self.expire(now_ms);
        let raw = view.raw_locations();
        let cost = frame.len() + ENTRY_COST;
        let mut keep = cost <= self.max_bytes && self.max_age_ms > 0;
        if keep {
            while self.held_bytes + cost > self.max_bytes && self.let_go_oldest() {}
            while !self.take(cost + raw.len()) {
                if !self.let_go_oldest() {
                    keep = false;
                    break;
                }
            }
        }
        if !keep {
            // Nothing older is held now, so the tombstones stay a prefix.
            while self.let_go_oldest() {}
            self.force_take(ENTRY_COST + raw.len());
        }
        self.locs.extend(raw);
        let frame_len = if keep {
            self.frames.extend(frame);
            self.held_bytes += cost;
            frame.len() as u32
        } else {
            0
        };
        self.entries.push_back(Entry {
            id: view.id,
            at_ms: now_ms,
            frame_len,
            locs_len: raw.len() as u32,
        });
        if !keep {
            self.held_from += 1;
            self.trim_tombstones();
        }
    }

    /// Lets go of frames older than the window's age.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(e) = self.entries.get(self.held_from) {
            if now_ms.saturating_sub(e.at_ms) < self.max_age_ms {
                break;
            }
            self.let_go_oldest();
        }
    }

    /// Bytes the window holds, all told.
    fn used(&self) -> usize {
        self.held_bytes + self.held_from * ENTRY_COST + self.locs.len()
    }

    /// Makes sure the budget covers `n` more bytes (a step at a time when it
    /// can); false if the budget cannot give them.
    fn take(&mut self, n: usize) -> bool {
        let Some(m) = &self.memory else {
            return true;
        };
        let need = (self.used() + n).saturating_sub(self.reserved);
        if need == 0 {
            return true;
        }
        let got = if m.try_take(need.max(BUDGET_STEP)) {
            need.max(BUDGET_STEP)
        } else if m.try_take(need) {
            need
        } else {
            return false;
        };
        self.reserved += got;
        true
    }

    /// As [`Self::take`], over the budget if need be (a tombstone is small, and
    /// is what tells a client it lost something).
    fn force_take(&mut self, n: usize) {
        if let Some(m) = &self.memory {
            let need = (self.used() + n).saturating_sub(self.reserved);
            m.take(need);
            self.reserved += need;
        }
    }

    /// Gives back what the window no longer needs, keeping up to one step.
    fn give(&mut self) {
        if let Some(m) = &self.memory {
            let used = self.used();
            let keep = if used == 0 { 0 } else { used + BUDGET_STEP };
            if self.reserved > keep + BUDGET_STEP || (used == 0 && self.reserved > 0) {
                m.give(self.reserved - keep);
                self.reserved = keep;
            }
        }
    }

    /// Turns the oldest held entry into a tombstone; false if none is held.
    fn let_go_oldest(&mut self) -> bool {
        let Some(e) = self.entries.get_mut(self.held_from) else {
            return false;
        };
        let len = std::mem::take(&mut e.frame_len) as usize;
        self.frames.drain(..len);
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            // Idle (everything aged out): give the memory back to the system.
            self.frames = VecDeque::new();
        }
        self.held_bytes -= len + ENTRY_COST;
        self.held_from += 1;
        self.trim_tombstones();
        true
    }

    fn trim_tombstones(&mut self) {
        while self.held_from > self.max_tombstones {
            let e = self.entries.pop_front().expect("tombstone");
            self.locs.drain(..e.locs_len as usize);
            self.held_from -= 1;
            self.first += 1;
        }
        self.give();
    }

    pub fn stats(&self, now_ms: u64) -> WindowStats {
        WindowStats {
            budgeted: self.reserved,
            held: self.entries.len() - self.held_from,
            bytes: self.held_bytes,
            tombstones: self.held_from,
            oldest_ms: self
                .entries
                .get(self.held_from)
                .map_or(0, |e| now_ms.saturating_sub(e.at_ms)),
        }
    }

    /// What to send a client that sent `resume`, given which messages it wants
    /// (`wants` is called with each message's raw location list).
    pub fn plan(&mut self, resume: &Resume, now_ms: u64, wants: impl Fn(&[u8]) -> bool) -> Plan {
        self.expire(now_ms);
        let mut resumed = Resumed {
            epoch: self.epoch,
            position: self.next_position(),
            outcome: Outcome::Complete,
            replayed: 0,
            lost: None,
            from_ms: 0,
            to_ms: 0,
        };
        if resume.epoch == 0 {
            resumed.outcome = Outcome::Fresh;
            return Plan {
                frames: Vec::new(),
                resumed,
            };
        }
        if resume.epoch != self.epoch {
            resumed.outcome = Outcome::UnknownEpoch;
            resumed.to_ms = now_ms;
            return Plan {
                frames: Vec::new(),
                resumed,
            };
        }
        let end = self.next_position();
        // Where to start, and whether messages before the oldest entry may have
        // been missed too (the client's position is older than the window).
        let (start, unknown_before) = match resume.last_id {
            Some(id) => match self.entries.iter().rposition(|e| e.id == id) {
                Some(i) => (self.first + i as u64 + 1, false),
                None => (self.first, true),
            },
            None if resume.position >= self.first => (resume.position.min(end), false),
            None => (self.first, true),
        };
        let skip = (start - self.first) as usize;
        // Where the entry at `skip` starts in each ring.
        let mut locs_at: usize = self
            .entries
            .iter()
            .take(skip)
            .map(|e| e.locs_len as usize)
            .sum();
        let mut frame_at: usize = self
            .entries
            .iter()
            .take(skip)
            .map(|e| e.frame_len as usize)
            .sum();
        let mut frames = Vec::new();
        let (mut lost, mut first_lost, mut last_lost) = (0u64, 0u64, 0u64);
        for e in self.entries.iter().skip(skip) {
            let (l, f) = (e.locs_len as usize, e.frame_len as usize);
            let wanted = wants(&bytes_at(&self.locs, locs_at, l));
            if wanted && f > 0 {
                frames.push(Bytes::from(
                    bytes_at(&self.frames, frame_at, f).into_owned(),
                ));
            } else if wanted {
                lost += 1;
                if first_lost == 0 {
                    first_lost = e.at_ms;
                }
                last_lost = e.at_ms;
            }
            locs_at += l;
            frame_at += f;
        }
        resumed.replayed = frames.len() as u64;
        if unknown_before || lost > 0 {
            resumed.outcome = Outcome::WindowPassed;
            if unknown_before {
                // Anything older than the oldest entry may have been missed.
                let oldest = self.entries.front().map_or(now_ms, |e| e.at_ms);
                resumed.to_ms = last_lost.max(oldest);
            } else {
                resumed.lost = Some(lost);
                resumed.from_ms = first_lost;
                resumed.to_ms = last_lost;
            }
        }
        Plan { frames, resumed }
    }
}

impl Drop for ResumeWindow {
    fn drop(&mut self) {
        if let Some(m) = &self.memory {
            m.give(self.reserved);
        }
    }
}

/// The locations of a raw `str16` location list (already validated).
pub fn raw_locations(mut rest: &[u8]) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        if rest.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let s = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
        rest = &rest[2 + n..];
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gale_proto::limits::FRAME_HEADER_LEN;
    use gale_proto::{Frame, Location, Message};

    fn frame(n: u8, to: &str) -> Bytes {
        let m = Message {
            id: MessageId([n; 16]),
            hops: 0,
            to: vec![Location::parse(to).unwrap()],
            payload: Bytes::from(vec![0u8; 50]),
        };
        Frame::Deliver(m).to_bytes()
    }

    fn add(w: &mut ResumeWindow, n: u8, to: &str, at: u64) -> usize {
        let f = frame(n, to);
        let view = MessageView::parse(&f[FRAME_HEADER_LEN..]).unwrap();
        w.append(&f, &view, at);
        f.len()
    }

    fn ids(p: &Plan) -> Vec<u8> {
        p.frames.iter().map(|f| f[FRAME_HEADER_LEN]).collect()
    }

    fn after(id: u8) -> Resume {
        Resume {
            epoch: 7,
            position: 0,
            last_id: Some(MessageId([id; 16])),
        }
    }

    fn all(_: &[u8]) -> bool {
        true
    }

    #[test]
    fn replays_what_follows_the_last_id_and_matches() {
        let mut w = ResumeWindow::new(7, 1 << 20, 300);
        for n in 1..=5 {
            add(
                &mut w,
                n,
                if n % 2 == 0 { "b@x.org" } else { "a@x.org" },
                1000,
            );
        }
        let only_a = |l: &[u8]| raw_locations(l).any(|l| l == "a@x.org");
        let p = w.plan(&after(1), 2000, only_a);
        assert_eq!(ids(&p), [3, 5]);
        assert_eq!(p.resumed.outcome, Outcome::Complete);
        assert_eq!((p.resumed.replayed, p.resumed.position), (2, 6));
        // No message since the last RESUMED: from the position it gave.
        let at = |position| Resume {
            epoch: 7,
            position,
            last_id: None,
        };
        assert_eq!(ids(&w.plan(&at(4), 2000, all)), [4, 5]);
        assert_eq!(ids(&w.plan(&at(6), 2000, all)), [] as [u8; 0]);
        // Another epoch, or none.
        let p = w.plan(
            &Resume {
                epoch: 8,
                ..after(1)
            },
            2000,
            all,
        );
        assert_eq!(
            (p.resumed.outcome, p.frames.len()),
            (Outcome::UnknownEpoch, 0)
        );
        assert_eq!(p.resumed.to_ms, 2000);
        let p = w.plan(&Resume::default(), 2000, all);
        assert_eq!(p.resumed.outcome, Outcome::Fresh);
    }

    #[test]
    fn bytes_bound_keeps_tombstones_that_count_the_loss() {
        let len = frame(0, "a@x.org").len() + ENTRY_COST;
        let mut w = ResumeWindow::new(7, 2 * len, 300);
        for n in 1..=5 {
            add(&mut w, n, "a@x.org", 1000 + u64::from(n));
        }
        let s = w.stats(1010);
        assert_eq!((s.held, s.tombstones, s.bytes), (2, 3, 2 * len));
        let p = w.plan(&after(1), 2000, all);
        assert_eq!(ids(&p), [4, 5], "what is still held is replayed");
        assert_eq!(p.resumed.outcome, Outcome::WindowPassed);
        assert_eq!(p.resumed.lost, Some(2), "2 and 3 are gone");
        assert_eq!((p.resumed.from_ms, p.resumed.to_ms), (1002, 1003));
        // A loss the client did not want is no loss of its.
        let none = w.plan(&after(1), 2000, |l| {
            raw_locations(l).any(|l| l == "b@x.org")
        });
        assert_eq!(none.resumed.outcome, Outcome::Complete);
        // An id older than everything: count unknown.
        let p = w.plan(&after(99), 2000, all);
        assert_eq!(
            (p.resumed.outcome, p.resumed.lost),
            (Outcome::WindowPassed, None)
        );
        assert_eq!(ids(&p), [4, 5]);
    }

    #[test]
    fn replayed_frames_are_byte_for_byte_across_the_rings_wrapping() {
        let len = frame(0, "a@x.org").len() + ENTRY_COST;
        let mut w = ResumeWindow::new(7, 5 * len + 40, 300).with_tombstones(7);
        let mut sent = Vec::new();
        for n in 1..=60u8 {
            // Sizes vary, so the rings wrap at different places.
            let to = format!("{}@x.org", "a".repeat(1 + n as usize % 5));
            let f = frame(n, &to);
            let view = MessageView::parse(&f[FRAME_HEADER_LEN..]).unwrap();
            w.append(&f, &view, 1000);
            sent.push(f);
            if n > 6 {
                let p = w.plan(&after(n - 3), 1000, |l| raw_locations(l).count() == 1);
                assert_eq!(p.frames, sent[n as usize - 3..], "after {}", n - 3);
                assert_eq!(p.resumed.outcome, Outcome::Complete);
            }
        }
        let s = w.stats(1000);
        assert_eq!(s.tombstones, 7);
        assert!(s.held >= 4 && s.bytes <= 5 * len + 40, "{s:?}");
    }

    #[test]
    fn age_bound_and_tombstone_bound() {
        let mut w = ResumeWindow::new(7, 1 << 20, 10).with_tombstones(2);
        add(&mut w, 1, "a@x.org", 1_000);
        add(&mut w, 2, "a@x.org", 5_000);
        add(&mut w, 3, "a@x.org", 12_000); // 1 is older than 10 s now
        assert_eq!(w.stats(12_000).held, 2);
        w.expire(30_000);
        let s = w.stats(30_000);
        assert_eq!(
            (s.held, s.tombstones, s.bytes),
            (0, 2, 0),
            "1 fell off the end"
        );
        let p = w.plan(&after(2), 30_000, all);
        assert_eq!(
            (p.resumed.outcome, p.resumed.lost),
            (Outcome::WindowPassed, Some(1))
        );
        let p = w.plan(&after(1), 30_000, all);
        assert_eq!((p.resumed.lost, p.resumed.to_ms), (None, 12_000));
    }

    #[test]
    fn memory_budget_is_taken_and_given_back() {
        let m = Arc::new(MemoryBudget::new(1 << 20));
        let mut w = ResumeWindow::new(7, 1 << 20, 300).with_budget(m.clone());
        let len = add(&mut w, 1, "a@x.org", 1) + ENTRY_COST;
        assert!(
            m.used() >= len && m.used() <= len + BUDGET_STEP,
            "taken a step at a time"
        );
        // A budget with no room: the frame is not kept, the loss still counted.
        let tight = Arc::new(MemoryBudget::new(10));
        let mut t = ResumeWindow::new(7, 1 << 20, 300).with_budget(tight.clone());
        add(&mut t, 1, "a@x.org", 1);
        add(&mut t, 2, "a@x.org", 1);
        assert_eq!(t.stats(1).held, 0);
        assert_eq!(t.plan(&after(1), 2, all).resumed.lost, Some(1));
        drop(w);
        drop(t);
        assert_eq!((m.used(), tight.used()), (0, 0));
    }
}
