//! Errors returned by the [`crate::Client`] handle.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("{limit} messages are already waiting to be sent; try again later")]
    QueueFull { limit: usize },
    #[error("message of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("the client has been closed")]
    Closed,
    #[error("a message must name at least 1 and at most {max} locations, not {count}")]
    BadLocationCount { count: usize, max: usize },
    /// A server would refuse the list (ERROR 6) and stop the client.
    #[error("{count} subscriptions: a server takes at most {max} on one connection")]
    TooManySubscriptions { count: usize, max: usize },
}
