//! The [`Client`] handle: cheap to clone, it only talks to the task that owns the
//! connection ([`crate::task`]).

use std::sync::Arc;

use gale_proto::limits::{DEFAULT_MAX_FRAME, MAX_LOCATIONS};
use gale_proto::{Message, SubscriptionList};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::{ClientConfig, EVENT_CAPACITY};
use crate::error::ClientError;
use crate::event::Events;
use crate::task::Task;

/// A publish on its way: the permit is given back when the server confirms it.
pub(crate) struct Outgoing {
    pub message: Message,
    /// Held only to be dropped with the message.
    pub _permit: OwnedSemaphorePermit,
}

pub(crate) enum Command {
    Publish(Outgoing),
    Flush(oneshot::Sender<()>),
    Subscribe(SubscriptionList),
    SetWill(Option<Message>),
    Close {
        clear_will: bool,
        done: oneshot::Sender<()>,
    },
}

/// A connection to Gale that reconnects by itself. Clones share the connection;
/// when the last clone is dropped the connection closes (and any will fires).
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::UnboundedSender<Command>,
    // Bounds the publishes held (queued plus unconfirmed): one permit each.
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Client {
    /// Starts the connection task and returns at once; connecting happens in the
    /// background and is reported on [`Events`]. Must be called within a tokio
    /// runtime.
    pub fn start(config: ClientConfig) -> (Client, Events) {
        let limit = config.queue_limit.max(1);
        let (tx, cmds) = mpsc::unbounded_channel();
        let (etx, erx) = mpsc::channel(EVENT_CAPACITY);
        tokio::spawn(Task::new(config, cmds, etx).run());
        let client = Client {
            tx,
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        };
        (client, Events { rx: erx })
    }

    fn check(message: &Message) -> Result<(), ClientError> {
        let count = message.to.len();
        if count == 0 || count > MAX_LOCATIONS {
            return Err(ClientError::BadLocationCount {
                count,
                max: MAX_LOCATIONS,
            });
        }
        let len = message.encoded_len() + 1;
        if len > DEFAULT_MAX_FRAME as usize {
            return Err(ClientError::TooLarge {
                len,
                max: DEFAULT_MAX_FRAME as usize,
            });
        }
        Ok(())
    }

    fn send_publish(
        &self,
        message: Message,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), ClientError> {
        self.tx
            .send(Command::Publish(Outgoing {
                message,
                _permit: permit,
            }))
            .map_err(|_| ClientError::Closed)
    }

    /// Queues a message. It is kept, and re-sent after reconnects, until the server
    /// confirms it. Fails with [`ClientError::QueueFull`] when `queue_limit`
    /// messages are already held; never waits.
    pub fn publish(&self, message: Message) -> Result<(), ClientError> {
        Self::check(&message)?;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                return Err(ClientError::QueueFull { limit: self.limit })
            }
            Err(TryAcquireError::Closed) => return Err(ClientError::Closed),
        };
        self.send_publish(message, permit)
    }

    /// Like [`Client::publish`], but waits for room in the queue instead of failing:
    /// back-pressure for a producer that may outrun the server (`gsend --lines`).
    pub async fn publish_wait(&self, message: Message) -> Result<(), ClientError> {
        Self::check(&message)?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        self.send_publish(message, permit)
    }

    /// Resolves once the server has confirmed every message published before this
    /// call, however many reconnects that takes. Put a timeout around it.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Flush(done))
            .map_err(|_| ClientError::Closed)?;
        wait.await.map_err(|_| ClientError::Closed)
    }

    /// Replaces the subscription list, now and on every reconnect.
    pub fn subscribe(&self, list: SubscriptionList) -> Result<(), ClientError> {
        self.tx
            .send(Command::Subscribe(list))
            .map_err(|_| ClientError::Closed)
    }

    /// Sets or clears the will, now and on every reconnect.
    pub fn set_will(&self, will: Option<Message>) -> Result<(), ClientError> {
        self.tx
            .send(Command::SetWill(will))
            .map_err(|_| ClientError::Closed)
    }

    /// Publishes held but not yet confirmed by the server.
    pub fn held(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Closes the connection gracefully: clears the will first if asked, waits for
    /// the server to confirm, then closes. Call [`Client::flush`] first to be sure
    /// messages were taken, and put a timeout around both; if the server cannot be
    /// reached this returns once the client gives up on the close.
    pub async fn close(&self, clear_will: bool) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Close { clear_will, done }).is_ok() {
            let _ = wait.await;
        }
    }
}
