//! Client configuration.

use std::time::Duration;

use std::sync::Arc;

use gale_proto::{Location, SubscriptionList};

use crate::recent_ids::DEFAULT_DEDUP_CAPACITY;
use crate::server::ServerAddr;
use crate::will::Will;
use gale_net::Backoff;

/// Most publishes held (queued or sent but not yet confirmed) by default.
pub const DEFAULT_QUEUE_LIMIT: usize = 10_000;
/// Default idle time before the client pings the server.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default limit on a TCP connect, and again on the handshake that follows (a
/// server that accepts the connection but never answers), per server and attempt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of the event channel; when it is full the client stops reading from
/// the server, which then counts the messages it drops and reports them (LOSSAGE).
pub const EVENT_CAPACITY: usize = 256;
/// Slots in the command channel (handle -> task) for commands other than
/// publishes: flush, subscribe, will, close. The channel holds `queue_limit` plus
/// this many commands; see [`crate::Client`] for what waits when it is full.
pub const CONTROL_COMMANDS: usize = 64;

/// Everything [`crate::Client::start`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Servers to try, in order; on a lost connection the next one is tried first.
    pub servers: Vec<ServerAddr>,
    /// Sent in HELLO, e.g. `gsub/0.1.0`.
    pub agent: String,
    /// Sent (as a replacement) on every connection.
    pub subscriptions: SubscriptionList,
    /// Registered on every connection, made afresh (with a fresh id) each time.
    pub will: Option<Will>,
    /// Most publishes held at once; beyond it `publish` fails with `QueueFull`.
    pub queue_limit: usize,
    pub backoff: Backoff,
    /// Ping after this long without sending; a server's smaller keepalive wins.
    pub keepalive: Duration,
    pub connect_timeout: Duration,
    /// How many recent message ids to remember for dropping duplicates.
    pub dedup_capacity: usize,
    /// The durable inbox to open on every connection (protocol version 3).
    pub inbox: Option<InboxConfig>,
}

/// Signs INBOX_OPEN with the key that owns the inbox.
pub trait InboxSigner: Send + Sync {
    /// The Ed25519 public key the inbox is bound to.
    fn public(&self) -> [u8; 32];
    /// An Ed25519 signature over `msg` (which begins with the request's own
    /// context string: `gale_proto::inbox::SIGNING_CONTEXT`).
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

/// A durable inbox: its name, this device, the locations it keeps, and the
/// owner's key.
#[derive(Clone)]
pub struct InboxConfig {
    pub name: String,
    pub device: String,
    /// Replaces the locations registered before; empty keeps them.
    pub locations: Vec<Location>,
    /// Fetch what is held and stop there: no live messages from the inbox.
    pub drain: bool,
    pub signer: Arc<dyn InboxSigner>,
}

impl std::fmt::Debug for InboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxConfig")
            .field("name", &self.name)
            .field("device", &self.device)
            .field("locations", &self.locations)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    pub fn new(servers: Vec<ServerAddr>, agent: impl Into<String>) -> Self {
        ClientConfig {
            servers,
            agent: agent.into(),
            subscriptions: SubscriptionList::default(),
            will: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            backoff: Backoff::default(),
            keepalive: DEFAULT_KEEPALIVE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            inbox: None,
        }
    }
}
