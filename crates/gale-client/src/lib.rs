//! The Gale client library: one connection task behind a cheap handle, and the
//! plain (unsecured) messages a client builds. Security and key discovery are in
//! `gale-security`; gsub's display, JSON and hooks live in gsub, gsend's input
//! reading in gsend.
//!
//! Module map:
//! - [`server`]: which servers to try: `-s`, `$GALE_SERVER` (addresses and
//!   [`Backoff`] are `gale-net`'s).
//! - [`config`]: [`ClientConfig`] and its defaults.
//! - [`client`]: the [`Client`] handle: publish, flush, subscribe, will, close.
//! - `task` (private): the task that owns the socket: failover, replay on
//!   reconnect, PING/PONG confirmation of publishes, keepalive, dead-server detection.
//! - `conn` (private): one connection: TCP connect, handshake, buffered writes.
//! - [`event`]: [`Event`]s, the [`Events`] stream, received [`Delivery`]s.
//! - `resume` (private): where the client stands on its server, the RESUME it
//!   sends after a reconnect, and the gap it reports when the server cannot replay.
//! - [`recent_ids`]: [`RecentIds`], the bounded set that drops duplicate message ids.
//! - [`error`]: the [`ClientError`] enum.
//! - [`args`]: locations and subscriptions from arguments, with `$GALE_DOMAIN`.
//! - [`compose`]: [`Compose`], the fragments of a plain message (gsend), and
//!   checks of `-t NAME=VALUE` and `/keyword` arguments.
//! - [`presence`]: presence notices and the disconnection will (gsub `-p`); they
//!   are signed by `gale_security::presence`.
//! - [`will`]: [`Will`], which makes the will afresh (new id) for every connection.
//! - [`logging`] (feature `logging`): the programs' stderr subscriber for the
//!   libraries' `tracing` warnings.

#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod compose;
pub mod config;
mod conn;
pub mod error;
pub mod event;
#[cfg(feature = "logging")]
pub mod logging;
pub mod presence;
pub mod recent_ids;
mod resume;
pub mod server;
mod task;
pub mod will;

pub use client::Client;
pub use compose::Compose;
pub use config::{ClientConfig, InboxConfig, InboxSigner};
pub use conn::describe_error;
pub use error::ClientError;
pub use event::{Delivery, Event, Events, Unreadable, Verify};
pub use gale_net::Backoff;
pub use recent_ids::RecentIds;
pub use resume::unix_ms;
pub use server::ServerAddr;
pub use will::Will;
