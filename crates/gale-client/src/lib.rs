//! The Gale client library: one connection task behind a cheap handle, plus the
//! pieces gsend and gsub share (composing, display, JSON, hooks).
//!
//! Module map:
//! - [`server`]: [`ServerAddr`] lists (`host[:port],...`), `-s` / `$GALE_SERVER`.
//! - [`config`]: [`ClientConfig`] and its defaults.
//! - [`backoff`]: [`Backoff`], reconnect delays as a pure function.
//! - [`client`]: the [`Client`] handle: publish, flush, subscribe, will, close.
//! - `task` (private): the task that owns the socket: failover, replay on
//!   reconnect, PING/PONG confirmation of publishes, keepalive, dead-server detection.
//! - `conn` (private): one connection: TCP connect, handshake, buffered writes.
//! - [`event`]: [`Event`]s, the [`Events`] stream, received [`Delivery`]s.
//! - [`recent_ids`]: [`RecentIds`], the bounded set that drops duplicate message ids.
//! - [`error`]: the [`ClientError`] enum.
//! - [`args`]: locations and subscriptions from arguments, with `$GALE_DOMAIN`.
//! - [`compose`]: [`Compose`], building outgoing messages (gsend).
//! - [`input`]: reading gsend's standard input (whole body, or capped lines).
//! - [`format`]: the human display of messages (gsub).
//! - [`json`]: one JSON object per message (gsub `--json`).
//! - [`hook`]: running a program per message (gsub `-f`).
//! - [`presence`]: presence notices and the disconnection will (gsub `-p`).
//! - [`identity`]: who the user is, and their key, made on first use.
//! - [`secure`]: [`secure::Opener`], decrypting and verifying received messages.
//! - [`outgoing`]: which locations are private, the no-mixing rule, signing and
//!   sealing outgoing messages.
//! - [`akd`]: key discovery over Gale (`_gale.query.*` / `_gale.key.*`).
//! - [`responder`]: the domain key responder behind `gdomain`.

pub mod akd;
pub mod args;
pub mod backoff;
pub mod client;
pub mod compose;
pub mod config;
mod conn;
pub mod error;
pub mod event;
pub mod format;
pub mod hook;
pub mod identity;
pub mod input;
pub mod json;
pub mod outgoing;
pub mod presence;
pub mod recent_ids;
pub mod responder;
pub mod secure;
pub mod server;
mod task;

pub use backoff::Backoff;
pub use client::Client;
pub use compose::Compose;
pub use config::ClientConfig;
pub use error::ClientError;
pub use event::{Delivery, Event, Events, Unreadable, Verify};
pub use recent_ids::RecentIds;
pub use server::ServerAddr;
