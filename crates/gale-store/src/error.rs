//! What can go wrong, as values. None of these stops live delivery: galed
//! logs them, counts them in its status and tells the owner about the gap.

/// An error of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source} (set --data-dir to a writable directory)")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the inbox store failed: {0}")]
    Engine(#[from] redb::Error),
    #[error("no inbox named {0:?} is registered")]
    UnknownInbox(String),
    #[error("the store is behind its disk by more than its bound; message dropped and counted")]
    Overloaded,
    #[error("the store file is at its size limit ({limit} bytes); new messages are dropped until space is freed")]
    Full { limit: u64 },
    #[error("a commit failed and its messages were lost: {0}")]
    CommitFailed(String),
    #[error("the inbox store is being reopened after an error; try again")]
    Unavailable,
    #[error("the store's committer thread has stopped")]
    Closed,
}

/// Any of redb's error types, as a `StoreError`.
pub(crate) fn engine<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Engine(e.into())
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
