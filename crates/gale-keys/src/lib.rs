//! Gale's end-to-end security: keys named by location, signed and encrypted message
//! payloads, the key store on disk, and the rules for trusting keys. Servers never
//! need this crate; clients do all of it.
//!
//! Module map:
//! - [`name`]: [`KeyName`] (`egnor@ofb.net`, `pub.*@ofb.net`, `ofb.net`), its
//!   parent by Gale's rule, wildcard candidates for a location, file-name escaping.
//! - [`key`]: [`PublicKey`], [`SecretKey`] (zeroized, redacted in `Debug`) and
//!   [`KeyTemplate`]; in its submodules `key/id.rs` ([`KeyId`], [`Fingerprint`]),
//!   `key/signature.rs` (key signatures) and `key/format.rs` (the `.gpub`/`.gpri`
//!   format).
//! - [`envelope`]: [`sign`], [`seal`] and [`open`] for message payloads of kind 1
//!   (signed) and 2 (encrypted), and batch signature checking.
//! - [`store`]: [`KeyStore`], the key files under `GALE_DIR` and `GALE_SYS_DIR`.
//! - [`trust`]: [`KeyStore::verify`] (chains to anchors), [`KeyStore::note_seen`]
//!   (changed keys), [`KeyStore::import`], [`KeyStore::learn`] (keys from the
//!   network: a verified key is never displaced), [`KeyStore::resolve`] and
//!   [`KeyStore::recipients`].
//! - [`hex`]: hex text for ids and test vectors.
//!
//! Every domain-separation label is a versioned constant
//! ([`key::KEY_SIGNATURE_LABEL`], [`key::FINGERPRINT_LABEL`],
//! [`envelope::MESSAGE_SIGNATURE_LABEL`], [`envelope::MESSAGE_ENCRYPTION_LABEL`],
//! [`envelope::WRAP_INFO`]). The formats are specified byte by byte in
//! `docs/security.md` and pinned by the vectors in `tests/vectors/`.
//!
//! Sending, in outline (errors elided):
//!
//! ```no_run
//! # use gale_keys::*;
//! # use gale_proto::{Fragments, Location, Message, MessageId, Timestamp};
//! # fn demo(store: &KeyStore, me: &SecretKey, to: Vec<Location>, mut body: Fragments) -> Option<()> {
//! let now = Timestamp::now();
//! body.push("id.time", gale_proto::Value::Time(now));
//! let id = MessageId::generate();
//! let signed = sign(id, &to, &body, me).ok()?;
//! let payload = match store.recipients(&to[0], now).ok()? {
//!     Recipients::Public => signed,
//!     Recipients::Private(keys) => seal(id, &to, &signed, &keys.iter().collect::<Vec<_>>()).ok()?,
//!     Recipients::NoKey => return None, // the caller's policy
//! };
//! let msg = Message { id, hops: 0, to, payload: payload.encode().ok()? };
//! # Some(()) }
//! ```
//!
//! Receiving:
//!
//! ```no_run
//! # use gale_keys::*;
//! # use gale_proto::{Message, Timestamp};
//! # fn demo(store: &KeyStore, msg: &Message) -> Result<(), Box<dyn std::error::Error>> {
//! let secrets = store.secrets()?; // a damaged key file is an error, never skipped
//! let mine: Vec<&SecretKey> = secrets.iter().collect();
//! let opened = open(msg, &mine, &|name, id| store.lookup(name, id).ok().flatten())?;
//! if let (SigState::Valid, Some(key)) = (opened.signature, &opened.signer_key) {
//!     let trust = store.verify(key, Timestamp::now()); // Verified, Unverified, ...
//!     if let Ok(Some(changed)) = store.note_seen(&key.name, key.id()) {
//!         eprintln!("{changed}");
//!     }
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod envelope;
pub mod hex;
pub mod key;
pub mod name;
pub mod store;
pub mod trust;

pub use envelope::{open, seal, sign, EnvelopeError, Opened, SigState};
pub use key::{Fingerprint, KeyError, KeyId, KeySignature, KeyTemplate, PublicKey, SecretKey};
pub use name::{KeyName, NameError};
pub use store::{Dir, KeyStore, Source, StoreError};
pub use trust::{Chain, Imported, KeyChanged, Learned, Recipients, Trust, TrustError};
