//! What the client tells its user: connection changes, messages, losses.

use std::time::Duration;

use gale_proto::{ErrorCode, Fragments, Message, MessageId, Payload};
use tokio::sync::mpsc;

use crate::server::ServerAddr;

/// How far a received message's origin is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Plain, unsigned: anyone could have sent it.
    Anonymous,
    /// Signed or encrypted in a way this client cannot check (yet).
    Unverified,
}

impl Verify {
    /// The name used in JSON output and hook environments.
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::Anonymous => "anonymous",
            Verify::Unverified => "unverified",
        }
    }
}

/// A received message, decoded as far as this client can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    pub payload: Payload,
    pub verify: Verify,
}

impl Delivery {
    /// Decodes the payload of `message`.
    pub fn open(message: Message) -> Result<Delivery, gale_proto::FrameError> {
        let payload = Payload::decode(&message.payload)?;
        let verify = match payload {
            Payload::Plain(_) => Verify::Anonymous,
            Payload::Sealed { .. } => Verify::Unverified,
        };
        Ok(Delivery {
            message,
            payload,
            verify,
        })
    }

    /// The fragments, if the payload could be opened.
    pub fn fragments(&self) -> Option<&Fragments> {
        match &self.payload {
            Payload::Plain(f) => Some(f),
            Payload::Sealed { .. } => None,
        }
    }

    /// True if the payload is sealed (signed or encrypted) and could not be opened.
    pub fn is_sealed(&self) -> bool {
        matches!(self.payload, Payload::Sealed { .. })
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected {
        server: ServerAddr,
        /// The name the server gave in WELCOME.
        name: String,
    },
    /// The server has installed this client's subscription list (sent after
    /// every connect and every change, once the server confirms it).
    Subscribed {
        server: ServerAddr,
        /// Entries in the list.
        entries: usize,
    },
    Disconnected {
        server: ServerAddr,
        reason: String,
    },
    /// Every server failed (or a connection died at once); waiting `delay` before
    /// round `attempt` (1-based).
    Reconnecting {
        attempt: u32,
        delay: Duration,
    },
    ConnectFailed {
        server: ServerAddr,
        error: String,
    },
    Message(Delivery),
    /// A message arrived whose payload could not be decoded; it was dropped.
    Undecodable {
        id: MessageId,
        error: String,
    },
    /// A publish the server could never take (larger than its frame limit); dropped.
    PublishDropped {
        id: MessageId,
        reason: String,
    },
    /// The server dropped this many messages for us because we read too slowly.
    Lossage(u64),
    ServerError {
        code: ErrorCode,
        text: String,
    },
}

/// The stream of [`Event`]s. It must be read: when it is full the client stops
/// reading from the server (and then loses messages, reported as
/// [`Event::Lossage`]). Dropping it discards all further events.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client task has ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}
