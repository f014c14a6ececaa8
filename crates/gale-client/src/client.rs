//! The [`Client`] handle: cheap to clone, it only talks to the task that owns the
//! connection ([`crate::task`]) over a bounded command channel.

use std::sync::Arc;

use gale_proto::limits::{DEFAULT_MAX_FRAME, MAX_LOCATIONS, MAX_SUBS_PER_CONNECTION};
use gale_proto::{Message, SubscriptionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::{ClientConfig, CONTROL_COMMANDS, EVENT_CAPACITY};
use crate::error::ClientError;
use crate::event::Events;
use crate::task::Task;
use crate::will::Will;

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
    SetWill(Option<Will>),
    /// A message from the inbox has been shown.
    Ack(u64),
    Close {
        clear_will: bool,
        done: oneshot::Sender<()>,
    },
}

/// A connection to Gale that reconnects by itself. Clones share the connection;
/// when the last clone is dropped the connection closes (and any will fires).
///
/// Back-pressure: the handle talks to the connection task over a bounded channel
/// of `queue_limit` + [`CONTROL_COMMANDS`] commands. Each publish first takes one
/// of `queue_limit` places in the queue, given back when the server confirms that
/// message; so a publisher that finds the queue full waits for the server
/// ([`Client::publish_wait`]) or is told [`ClientError::QueueFull`] at once
/// ([`Client::publish`]), and publishes alone never fill the channel. The other
/// commands ([`Client::flush`], [`Client::subscribe`], [`Client::set_will`],
/// [`Client::close`]) wait for a free slot, which the task makes as it takes
/// commands, connected or not.
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Command>,
    // Bounds the publishes held (queued plus unconfirmed): one permit each.
    permits: Arc<Semaphore>,
    limit: usize,
}

impl Client {
    /// Starts the connection task and returns at once; connecting happens in the
    /// background and is reported on [`Events`]. Must be called within a tokio
    /// runtime.
    pub fn start(config: ClientConfig) -> (Client, Events) {
        let limit = config.queue_limit.clamp(1, Semaphore::MAX_PERMITS);
        let commands = limit
            .saturating_add(CONTROL_COMMANDS)
            .min(Semaphore::MAX_PERMITS);
        let (tx, cmds) = mpsc::channel(commands);
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

    fn publish_command(message: Message, permit: OwnedSemaphorePermit) -> Command {
        Command::Publish(Outgoing {
            message,
            _permit: permit,
        })
    }

    /// Queues a message. It is kept, and re-sent after reconnects, until the server
    /// confirms it. Fails with [`ClientError::QueueFull`] when `queue_limit`
    /// messages are already held (or, rarely, when other commands fill the
    /// channel); never waits.
    pub fn publish(&self, message: Message) -> Result<(), ClientError> {
        Self::check(&message)?;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                return Err(ClientError::QueueFull { limit: self.limit })
            }
            Err(TryAcquireError::Closed) => return Err(ClientError::Closed),
        };
        self.tx
            .try_send(Self::publish_command(message, permit))
            .map_err(|e| match e {
                TrySendError::Full(_) => ClientError::QueueFull { limit: self.limit },
                TrySendError::Closed(_) => ClientError::Closed,
            })
    }

    /// Like [`Client::publish`], but waits for room in the queue instead of failing
    /// (for the server to confirm an earlier message): back-pressure for a producer
    /// that may outrun the server (`gsend --lines`).
    pub async fn publish_wait(&self, message: Message) -> Result<(), ClientError> {
        Self::check(&message)?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ClientError::Closed)?;
        self.command(Self::publish_command(message, permit)).await
    }

    /// Sends `cmd` to the task, waiting for a free slot in the channel.
    async fn command(&self, cmd: Command) -> Result<(), ClientError> {
        self.tx.send(cmd).await.map_err(|_| ClientError::Closed)
    }

    /// Resolves once the server has confirmed every message published before this
    /// call, however many reconnects that takes. Put a timeout around it.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.command(Command::Flush(done)).await?;
        wait.await.map_err(|_| ClientError::Closed)
    }

    /// Replaces the subscription list, now and on every reconnect. Waits only for
    /// a free slot in the command channel, not for the server. A list longer than
    /// a server takes on one connection ([`MAX_SUBS_PER_CONNECTION`]) is refused
    /// here ([`ClientError::TooManySubscriptions`]) rather than sent to be
    /// refused by the server, which would stop the client.
    pub async fn subscribe(&self, list: SubscriptionList) -> Result<(), ClientError> {
        let count = list.entries.len();
        if count > MAX_SUBS_PER_CONNECTION {
            return Err(ClientError::TooManySubscriptions {
                count,
                max: MAX_SUBS_PER_CONNECTION,
            });
        }
        self.command(Command::Subscribe(list)).await
    }

    /// Says that the inbox message `seq` ([`crate::Delivery::inbox_seq`]) has
    /// been shown, so the server may forget it for this device. Acknowledge
    /// each one, in any order; the client tells the server, at most every few
    /// messages, up to where everything has been.
    pub async fn ack(&self, seq: u64) -> Result<(), ClientError> {
        self.command(Command::Ack(seq)).await
    }

    /// Sets or clears the will, now and on every reconnect. Waits only for a free
    /// slot in the command channel, not for the server.
    pub async fn set_will(&self, will: Option<Will>) -> Result<(), ClientError> {
        self.command(Command::SetWill(will)).await
    }

    /// True once the connection task has ended: after [`crate::Event::Refused`],
    /// or a [`Client::close`]. Every command then fails with
    /// [`ClientError::Closed`].
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
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
        if self
            .command(Command::Close { clear_will, done })
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use gale_proto::{Location, Payload};

    use super::*;
    use crate::ServerAddr;

    fn message() -> Message {
        let to = vec![Location::parse("a@x.org").unwrap()];
        Message::new(to, Payload::Plain(Default::default()).encode().unwrap())
    }

    /// Publishes take their room in the queue first, so however many the queue
    /// holds fit in the command channel, even before the task has taken any, and
    /// other commands still find a slot.
    #[tokio::test]
    async fn a_full_queue_never_fills_the_command_channel() {
        // Nothing listens there; the task does not run until this test awaits.
        let server = ServerAddr {
            host: "127.0.0.1".into(),
            port: 1,
        };
        let mut config = ClientConfig::new(vec![server], "test");
        config.queue_limit = 1_000;
        let (client, _events) = Client::start(config);
        for _ in 0..1_000 {
            client.publish(message()).unwrap();
        }
        assert_eq!(
            client.publish(message()),
            Err(ClientError::QueueFull { limit: 1_000 })
        );
        assert_eq!(client.held(), 1_000);
        for _ in 0..CONTROL_COMMANDS {
            client.set_will(None).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_list_no_server_would_take_is_refused_before_sending() {
        let server = ServerAddr {
            host: "127.0.0.1".into(),
            port: 1,
        };
        let (client, _events) = Client::start(ClientConfig::new(vec![server], "test"));
        let mut list = SubscriptionList::default();
        for i in 0..=MAX_SUBS_PER_CONNECTION {
            let loc = Location::parse(&format!("l{i}@x.org")).unwrap();
            list.entries.push(gale_proto::SubEntry::include(loc));
        }
        assert_eq!(
            client.subscribe(list.clone()).await,
            Err(ClientError::TooManySubscriptions {
                count: MAX_SUBS_PER_CONNECTION + 1,
                max: MAX_SUBS_PER_CONNECTION
            })
        );
        list.entries.pop();
        client.subscribe(list).await.unwrap();
    }
}
