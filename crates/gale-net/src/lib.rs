//! What every Gale program needs to reach a server, whichever side it is on.
//!
//! - [`addr`]: [`ServerAddr`] (`host[:port]`, lists, IPv6 in brackets) and
//!   [`DEFAULT_PORT`], for clients' `-s`, galed's `--listen`, `--link` and
//!   `--status`.
//! - [`backoff`]: [`Backoff`], jittered exponential retry delays as a pure function
//!   (clients reconnecting, servers redialling links), and [`backoff::jitter`].
//! - [`raw`]: [`RawClient`], a plain protocol client that sends and reads frames as
//!   they are (galed `--status`, the benchmarks, the tests), with a blocking
//!   wrapper for threads without a runtime.

#![forbid(unsafe_code)]

pub mod addr;
pub mod backoff;
pub mod raw;

pub use addr::{parse_server_list, ServerAddr, ServerAddrError, DEFAULT_PORT};
pub use backoff::Backoff;
pub use raw::{RawClient, RawError};
