//! The Gale wire protocol, with no I/O policy and no cryptography.
//!
//! Module map:
//! - [`limits`]: every size limit of the protocol, as named constants.
//! - [`location`]: the [`Location`] newtype (`local.part@domain`) and its validation.
//! - [`subscription`]: ordered `+`/`-` subscription lists and the reference matcher.
//! - [`trie`]: [`SubscriptionTrie`], the trie that matches a location against many
//!   subscriptions at a cost independent of how many there are.
//! - [`id`]: 128-bit [`MessageId`]s.
//! - [`fragment`]: typed, named fragments (the message payload) and their encoding.
//! - [`message`]: the routing header (id, hops, locations) in front of an opaque payload.
//! - [`resume`]: the RESUME and RESUMED bodies (version 2): replay after a
//!   reconnect, and gaps.
//! - [`frame`]: typed frames, the frame header, and byte-exact encode/decode.
//! - [`codec`]: a `tokio_util` codec over [`frame`] for clients.
//!
//! The format is specified byte by byte in `docs/protocol.md`; the tests in each module
//! pin it.

#![forbid(unsafe_code)]

pub mod codec;
pub mod fragment;
pub mod frame;
pub mod id;
pub mod inbox;
pub mod limits;
pub mod location;
pub mod message;
pub mod resume;
pub mod subscription;
pub mod trie;
mod wire;

pub use fragment::{names, Fragment, Fragments, Payload, Timestamp, Value};
pub use frame::{EncodeError, ErrorCode, Frame, FrameError, FrameType, Hello, LossEntry, Welcome};
pub use id::MessageId;
pub use inbox::{InboxDone, InboxOpen, InboxState, InboxStatus};
pub use location::{Location, LocationError, Reserved};
pub use message::{KnownLocations, Message, MessageView};
pub use resume::{Outcome, Resume, Resumed};
pub use subscription::{SubEntry, SubscriptionList};
pub use trie::SubscriptionTrie;
