//! Gale's end-to-end security on the client side: who the user is, sealing and
//! signing what is sent, opening and verifying what arrives, and finding other
//! people's keys over Gale itself. Built on `gale-keys` (the key formats, store
//! and trust rules) and `gale-client` (the connection). Servers never need it.
//!
//! Module map:
//! - [`identity`]: who the user is, and their key, made on first use (unless the
//!   name already answers over Gale with a key: then it is to be copied).
//! - [`outgoing`]: which locations are private, the rule that no location is sent
//!   in clear by accident, the no-mixing rule, signing and sealing outgoing
//!   messages (gsend).
//! - [`incoming`]: [`incoming::Opener`], decrypting and verifying received
//!   messages, key mismatches and key changes (gsub).
//! - [`discovery`]: key discovery over Gale (`_gale.query.*` / `_gale.key.*`): the
//!   wire format and the rule for believing an answer (`discovery/wire.rs`),
//!   choosing among several answers (`discovery/offers.rs`), and
//!   [`discovery::Discovery`], which runs lookups and caches what they find.
//! - [`presence`]: signed presence notices and wills (gsub `-p`).
//! - [`people`]: presence that changes live, receipts, pings, who is around,
//!   away replies; the control socket of a running gsub.
//! - [`held`]: [`held::HeldMessages`], messages held while their signer's key is
//!   looked up (gsub).
//! - [`responder`]: answering key queries: [`responder::Responder`] for a domain
//!   (gdomain) and [`responder::OwnKeys`] for the user's own keys (gsub).

#![forbid(unsafe_code)]

pub mod discovery;
pub mod held;
pub mod identity;
pub mod incoming;
pub mod outgoing;
pub mod people;
pub mod presence;
pub mod responder;

/// A fresh key for `name`, as the unit tests make them.
#[cfg(test)]
pub(crate) fn test_key(name: &str) -> gale_keys::SecretKey {
    use gale_keys::{KeyName, KeyTemplate, SecretKey};
    use gale_proto::Timestamp;
    SecretKey::generate(
        KeyTemplate::new(
            KeyName::parse(name).unwrap(),
            Timestamp { secs: 1, nanos: 0 },
        ),
        &mut rand_core::OsRng,
    )
}
