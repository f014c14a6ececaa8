//! galed's embedded store of durable subscriptions and personal inboxes
//! (issue 11): while someone is away, galed keeps their interest on its links
//! and stores the (end-to-end encrypted) messages addressed to them here; each
//! of their devices reads them back in order with its own cursor.
//!
//! One [redb] file in the data directory; one committer thread writes it in
//! group commits (every `CommitPolicy::interval`, 5 ms by default), so
//! `append` never waits for the disk. See docs/store.md for the layout, the
//! commit policy and its loss window, the limits and the errors.
//!
//! Module map:
//! - `store`: the [`Store`] handle (open, register, append, read, ack, flush, stats)
//! - `committer`: the writer thread: batches, failures, reopening; `committer/apply`:
//!   one transaction, with deletions and limits
//! - `db`: the redb database, reopened after an I/O error
//! - `shared`: what the handle and the committer share (queue, registrations)
//! - `layout`: the tables and their keys
//! - `limits`: [`Limits`], [`CommitPolicy`] and their defaults
//! - `stats`: [`Stats`] for the status view
//! - `error`: [`StoreError`]
#![forbid(unsafe_code)]

mod committer;
mod db;
mod error;
mod layout;
mod limits;
mod shared;
mod stats;
mod store;

pub use error::{Result, StoreError};
pub use limits::{
    CommitPolicy, Limits, DEFAULT_CACHE_BYTES, DEFAULT_COMMIT_INTERVAL, DEFAULT_FILE_BYTES,
    DEFAULT_INBOX_BYTES, DEFAULT_INBOX_MESSAGES, DEFAULT_MAX_AGE, DEFAULT_TOTAL_BYTES,
    DEFAULT_TOTAL_MESSAGES,
};
pub use stats::{Counters, Stats};
pub use store::{Batch, InboxInfo, Registration, Store, Stored, FILE_NAME};
