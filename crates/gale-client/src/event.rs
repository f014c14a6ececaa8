//! What the client tells its user: connection changes, messages, losses.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use gale_keys::{KeyChanged, KeyName};
use gale_proto::fragment::kind;
use gale_proto::{ErrorCode, Fragments, Message, MessageId, Payload};
use tokio::sync::mpsc;

use crate::server::ServerAddr;

/// How far a received message's origin is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Plain, unsigned: anyone could have sent it.
    Anonymous,
    /// Signed by `from`, whose key has a chain of signatures to one of our trust
    /// anchors.
    Verified { from: KeyName },
    /// Signed (or sealed) in a way that cannot be traced to a trust anchor: the
    /// signer's key is unknown here (`from` is then only what the message claims),
    /// or it is known but unsigned, or its chain stops at an unknown key. `why`
    /// says which, and what to do.
    Unverified { from: Option<KeyName>, why: String },
    /// The signature does not verify, or an encrypted message was altered: someone
    /// changed or forged it. `claimed` is who it claims to be from; never show it
    /// as the sender.
    Forged {
        claimed: Option<KeyName>,
        why: String,
    },
}

impl Verify {
    /// The name used in JSON output and hook environments: `anonymous`,
    /// `verified`, `unverified` or `forged`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verify::Anonymous => "anonymous",
            Verify::Verified { .. } => "verified",
            Verify::Unverified { .. } => "unverified",
            Verify::Forged { .. } => "forged",
        }
    }

    /// The sender to show: the signer when verified or unverified (the latter is
    /// only a claim; show it with the state), never a forger's claim.
    pub fn from(&self) -> Option<&KeyName> {
        match self {
            Verify::Verified { from } => Some(from),
            Verify::Unverified { from, .. } => from.as_ref(),
            Verify::Anonymous | Verify::Forged { .. } => None,
        }
    }

    /// Who a forged message claims to be from.
    pub fn claimed_from(&self) -> Option<&KeyName> {
        match self {
            Verify::Forged { claimed, .. } => claimed.as_ref(),
            _ => None,
        }
    }
}

/// Why an encrypted message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Encrypted, and not to any key we hold: someone else's private message.
    NotForYou,
    /// Our stanza opened but the content did not authenticate: altered in transit.
    Tampered,
    /// Not a payload this client can take apart.
    Malformed(String),
}

impl Unreadable {
    /// The name used in JSON output and hook environments.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unreadable::NotForYou => "not-for-you",
            Unreadable::Tampered => "tampered",
            Unreadable::Malformed(_) => "malformed",
        }
    }
}

/// A received message, decoded as far as this client can.
///
/// The connection task only decodes plain payloads; signed and encrypted ones
/// arrive as [`Payload::Sealed`] with [`Verify::Unverified`] until
/// `gale_security::incoming::Opener` opens them, which replaces `payload` with the
/// plain fragments and sets `verify`, `encrypted` and `unreadable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    pub payload: Payload,
    pub verify: Verify,
    /// True if the message travelled encrypted.
    pub encrypted: bool,
    /// Set when an encrypted message could not be opened (then `payload` is
    /// still sealed).
    pub unreadable: Option<Unreadable>,
    /// Set on the first message signed by a new key for a name that had another:
    /// show it loudly (`gsub --json`: `"key_changed": true`).
    pub key_changed: Option<Box<KeyChanged>>,
    /// Set when the message came from this client's inbox (STORED): its place
    /// there. Acknowledge it with [`crate::Client::ack`] once it has been shown,
    /// so that the server can forget it for this device.
    pub inbox_seq: Option<u64>,
}

impl Delivery {
    /// Decodes the payload of `message` (plain payloads only; see the type's doc).
    pub fn open(message: Message) -> Result<Delivery, gale_proto::FrameError> {
        let payload = Payload::decode(&message.payload)?;
        let (verify, encrypted) = match &payload {
            Payload::Plain(_) => (Verify::Anonymous, false),
            Payload::Sealed { kind: k, .. } => (
                Verify::Unverified {
                    from: None,
                    why: "the signature has not been checked".into(),
                },
                *k == kind::ENCRYPTED,
            ),
        };
        Ok(Delivery {
            message,
            payload,
            verify,
            encrypted,
            unreadable: None,
            key_changed: None,
            inbox_seq: None,
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
    /// The TCP connection to `server` is open and the handshake has been sent;
    /// [`Event::Connected`] follows when the server answers, or
    /// [`Event::ConnectFailed`] (within the client's `connect_timeout`) when it
    /// does not.
    Handshaking {
        server: ServerAddr,
    },
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
    /// After a reconnect, the server replayed the `replayed` messages this client
    /// missed (they came as [`Event::Message`]s just before): nothing was lost.
    Resumed {
        server: ServerAddr,
        replayed: u64,
    },
    /// Messages published while this client was away were not delivered and
    /// cannot be: between `from` and `to`, `count` of them if the server knows,
    /// and `why` (the server restarted, another server, its window passed).
    Gap {
        server: ServerAddr,
        from: SystemTime,
        to: SystemTime,
        count: Option<u64>,
        why: String,
    },
    /// The inbox was opened (after every connect): `held` messages (at most)
    /// follow as [`Event::Message`]s, then [`Event::InboxDone`]. `dropped`
    /// messages were lost for this device while it was away (the inbox's
    /// limits, their age, a store error): a gap to report.
    InboxOpened {
        server: ServerAddr,
        name: String,
        device: String,
        created: bool,
        held: u64,
        dropped: u64,
        /// Time (Unix ms) of the oldest message held; 0 when none.
        oldest_ms: u64,
    },
    /// The server would not open the inbox: another key owns it, the
    /// signature failed, or the server keeps no inboxes (`unavailable`). Live
    /// messages still flow.
    InboxRefused {
        server: ServerAddr,
        name: String,
        status: gale_proto::InboxStatus,
        text: String,
    },
    /// Everything the inbox held has been sent (`replayed` messages); with
    /// `live`, new messages keep coming this way; without (a drain), nothing
    /// more will.
    InboxDone {
        replayed: u64,
        live: bool,
    },
    /// The inbox lost messages for this device while it was connected
    /// (`count`, 0 when unknown), and why.
    InboxGap {
        count: u64,
        text: String,
    },
    /// The server refused this client for good: an ERROR whose code is not
    /// transient ([`ErrorCode::is_transient`]), such as too many subscriptions
    /// (ERROR 6) or a protocol version it does not speak (ERROR 1). Asking again
    /// would be refused again, so the client has stopped: this is its last event,
    /// and publishes, flushes and other commands now fail with
    /// [`crate::ClientError::Closed`]. A refusal of the handshake (a version)
    /// is about that server: the client then goes on with the others in its list
    /// (reporting it as [`Event::ConnectFailed`]) and stops only once every one
    /// has refused; a refusal on an established connection (its subscriptions,
    /// its messages) stops it at once. Transient errors (busy, shutting down, a
    /// deadline missed) are reported as [`Event::ConnectFailed`] or
    /// [`Event::Disconnected`], and the client reconnects with back-off.
    Refused {
        server: ServerAddr,
        code: ErrorCode,
        text: String,
    },
}

/// The stream of [`Event`]s: a [`futures_util::Stream`], or read it with
/// [`Events::next`]. It must be read: when it is full the client stops reading
/// from the server (and then loses messages, reported as [`Event::Lossage`]).
/// Dropping it discards all further events. It ends once the client task has.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client task has ended. The same as
    /// `StreamExt::next`, without importing it.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn events_are_a_stream_that_ends_with_the_task() {
        let (tx, rx) = mpsc::channel(4);
        let events = Events { rx };
        tx.send(Event::Lossage(1)).await.unwrap();
        tx.send(Event::Lossage(2)).await.unwrap();
        drop(tx);
        let got: Vec<Event> = events.collect().await;
        assert_eq!(got, [Event::Lossage(1), Event::Lossage(2)]);
    }
}
