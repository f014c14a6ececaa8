//! The original Gale protocol (the C implementation, "1.1happy"), as described in
//! `wire.md` and observed on the wire, and its mapping to and from ours. No I/O:
//! galed's gateway (`gale-server`'s `orig` module) and the clients use it.
//!
//! Module map:
//! - [`wire`]: primitives (UTF-16 text, `ltext`, time) and link-layer frames
//!   (the version word, `puff`, `will`, `gimme`, and frames that are skipped).
//! - [`fragment`]: the original fragment group (text, data, time, number, group).
//! - [`category`]: categories ↔ our locations, and subscription expressions with
//!   the original's latest-entry-wins prefix rule.
//! - [`convert`]: puffs ↔ our messages: payload kind [`convert::KIND_ORIGINAL`],
//!   ids for puffs, and what an original client is shown of our messages.
//!
//! docs/protocol.md §17 describes the mapping for people.

#![forbid(unsafe_code)]

pub mod category;
pub mod convert;
pub mod fragment;
pub mod wire;

pub use category::{Category, Expression};
pub use fragment::{Fragment, Value};
pub use wire::{OrigFrame, WireError};
