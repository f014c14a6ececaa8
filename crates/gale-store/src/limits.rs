//! Limits on what is kept, and the commit policy. Every number here is a
//! default that galed's config can change; docs/store.md lists them.

use std::time::Duration;

/// How much the store keeps. Past a limit the oldest messages go first, and
/// every device that had not read them is told how many it lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages held for one inbox.
    pub inbox_messages: u64,
    /// Payload bytes held for one inbox.
    pub inbox_bytes: u64,
    /// Messages held for all inboxes together.
    pub total_messages: u64,
    /// Payload bytes held for all inboxes together.
    pub total_bytes: u64,
    /// A message older than this (by its own time) is dropped.
    pub max_age: Duration,
    /// The store file may not grow past this: a commit that finds it larger
    /// stores no new messages (an error, counted and reported as a gap) but
    /// still records acks and deletions. The file is larger than the payload
    /// it holds (B-tree pages, copy-on-write), about 3x at worst.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inbox_messages: DEFAULT_INBOX_MESSAGES,
            inbox_bytes: DEFAULT_INBOX_BYTES,
            total_messages: DEFAULT_TOTAL_MESSAGES,
            total_bytes: DEFAULT_TOTAL_BYTES,
            max_age: DEFAULT_MAX_AGE,
            file_bytes: DEFAULT_FILE_BYTES,
        }
    }
}

pub const DEFAULT_INBOX_MESSAGES: u64 = 10_000;
pub const DEFAULT_INBOX_BYTES: u64 = 64 << 20;
pub const DEFAULT_TOTAL_MESSAGES: u64 = 1_000_000;
pub const DEFAULT_TOTAL_BYTES: u64 = 1 << 30;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_FILE_BYTES: u64 = 4 << 30;

/// When the committer thread writes to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitPolicy {
    /// A batch is committed (with fsync) at most this long after its first
    /// operation was queued. This is the loss window of `kill -9`.
    pub interval: Duration,
    /// A batch this large is committed at once, without waiting.
    pub max_batch: usize,
    /// Messages queued and not yet committed; past this, `append` drops the
    /// message and counts it instead of growing memory.
    pub max_pending: usize,
    /// Payload bytes queued and not yet committed (same rule).
    pub max_pending_bytes: usize,
    /// Memory redb may use to cache the file's pages (its own default is
    /// 1 GiB, too much for a daemon on every host).
    pub cache_bytes: usize,
}

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            interval: DEFAULT_COMMIT_INTERVAL,
            max_batch: 8_192,
            max_pending: 65_536,
            max_pending_bytes: 64 << 20,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(5);
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;
