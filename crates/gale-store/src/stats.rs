//! Figures for galed's status view.

/// Counters kept since the store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Batches committed.
    pub commits: u64,
    /// Commits that failed (I/O error, full disk, file at its limit).
    pub errors: u64,
    /// Messages dropped because an inbox or the server was at a limit.
    pub dropped_limit: u64,
    /// Messages dropped because they were older than `max_age`.
    pub dropped_age: u64,
    /// Messages refused by `append` because the committer was too far behind.
    pub dropped_overload: u64,
    /// Messages lost because their commit failed.
    pub dropped_failed: u64,
}

/// A snapshot of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub inboxes: u64,
    /// Messages held on disk.
    pub messages: u64,
    /// Payload bytes held on disk.
    pub bytes: u64,
    /// Time (Unix ms) of the oldest message held.
    pub oldest: Option<u64>,
    /// Size of the store file.
    pub file_bytes: u64,
    /// Messages queued, not yet committed.
    pub pending: u64,
    pub counters: Counters,
    /// The last error, for the operator.
    pub last_error: Option<String>,
}
