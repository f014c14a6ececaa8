//! galed's memory budget: one count of the bytes its work holds (queued frames,
//! read buffers of big frames, subscription tables), against one limit. Past the
//! limit galed refuses new work (connections, subscriptions, big frames) with
//! ERROR 9 (Busy) and keeps serving what it already holds; queues treat the
//! budget like their own bound (publishers held, then drops reported).

use std::sync::atomic::{AtomicUsize, Ordering};

/// What one subscription entry costs, all tables together (the trie's node and
/// entry, the connection's list, the links' interest counts): measured at about
/// 700 bytes (issue 10: 1,000,000 entries over 16 connections took 704 MB).
pub const SUBSCRIPTION_COST: usize = 720;
/// Queues take from the budget in steps of this much, so that the shared count is
/// touched once per step rather than once per frame.
pub const QUEUE_STEP: usize = 64 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new limit (a reload): what is held already stays; new work is
    /// measured against the new limit.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.limit()
    }

    /// Takes `n` bytes if they fit; false (and nothing taken) if not.
    pub fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit())
            })
            .is_ok()
    }

    /// Takes `n` bytes whether they fit or not (for what must not be refused: a
    /// link's interest, a frame already queued).
    pub fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub fn give(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// A budget for this machine: half its memory, or half the cgroup's limit when
/// galed runs in one with less; 1 GiB if neither can be read.
pub fn default_limit() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c) / 2,
        (Some(t), None) => t / 2,
        (None, Some(c)) => c / 2,
        (None, None) => 1 << 30,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_fits_and_gives_back() {
        let b = MemoryBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41), "over the limit: refused, nothing taken");
        assert_eq!(b.used(), 60);
        b.take(50); // forced
        assert!(b.exhausted());
        b.give(200);
        assert_eq!(b.used(), 0, "never below zero");
        assert!(default_limit() >= 64 << 20);
    }
}
