//! Keys: public keys with their signatures, secret keys, ids, fingerprints, and the
//! versioned binary format of `.gpub` and `.gpri` files.
//!
//! This module holds the key types ([`PublicKey`], [`SecretKey`], [`KeyTemplate`])
//! and their errors ([`KeyError`]); the rest is split by concern:
//! - `id`: [`KeyId`] and [`Fingerprint`], naming a key by its contents;
//! - `format`: the `.gpub`/`.gpri` file format ([`PublicKey::encode`],
//!   [`SecretKey::decode`], [`field`] names, [`MAX_KEY_FILE`]);
//! - `signature`: [`KeySignature`]s on keys, made by a parent and checked by anyone.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use gale_proto::{Fragments, FrameError, Timestamp};
use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::name::{KeyName, NameError};

mod format;
mod id;
mod signature;

pub use format::{field, MAX_KEY_FILE, PUBLIC_MAGIC, SECRET_MAGIC};
pub use id::{BadKeyId, Fingerprint, KeyId, FINGERPRINT_LABEL};
pub use signature::{KeySignature, KEY_SIGNATURE_LABEL};

/// Problems with key data and key signatures.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error(
        "this is a Gale secret key, not a public key; to get the public key run `gkey export NAME`"
    )]
    IsSecretKey,
    #[error("this is not a Gale key file (it does not start with \"GALEKEY\\x01\" or \"GALESEC\\x01\"); is it an old-format or corrupted file?")]
    NotAKey,
    #[error("key file is {len} bytes; the limit is {max}", max = MAX_KEY_FILE)]
    TooLarge { len: usize },
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("malformed key: bad fragment list")]
    Fragments(#[source] FrameError),
    #[error("malformed key: bad key name")]
    Name(#[from] NameError),
    #[error("{signer} cannot sign {key}: only its parent {} can", .parent.as_ref().map_or("(none: it is a top-level key)".to_string(), |p| p.to_string()))]
    NotParent {
        signer: KeyName,
        key: KeyName,
        parent: Option<KeyName>,
    },
    #[error("{key} carries no signature by {signer} (id {id})")]
    NotSigned {
        key: KeyName,
        signer: KeyName,
        id: KeyId,
    },
    #[error("the signature by {signer} on {key} is invalid: the key was altered or the signature forged")]
    BadSignature { key: KeyName, signer: KeyName },
    #[error(
        "the public and secret halves of key {0} do not match; the secret key file is damaged"
    )]
    Mismatch(KeyName),
    #[error(
        "signatures for {theirs} (id {their_id}) cannot be merged into key {ours} (id {our_id})"
    )]
    NotSameKey {
        ours: KeyName,
        our_id: KeyId,
        theirs: KeyName,
        their_id: KeyId,
    },
}

/// A public key and what it says about its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: KeyName,
    pub owner: Option<String>,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub signing: VerifyingKey,
    pub encryption: Option<X25519Public>,
    /// Member locations of a group key; `""` is the world (the location is public).
    pub members: Vec<String>,
    pub redirect: Option<String>,
    /// Fragments this version does not know; kept and covered by signatures.
    pub extra: Fragments,
    pub signatures: Vec<KeySignature>,
}

/// What a new key says, apart from its key material.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    pub name: KeyName,
    pub owner: Option<String>,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub members: Vec<String>,
    pub redirect: Option<String>,
    /// Give the key an x25519 encryption key (a group key usually has none: messages
    /// to it are encrypted to its members).
    pub encryption: bool,
}

impl KeyTemplate {
    /// A person's key: created now, never expires, with encryption.
    pub fn new(name: KeyName, created: Timestamp) -> KeyTemplate {
        KeyTemplate {
            name,
            owner: None,
            created,
            expires: None,
            members: Vec::new(),
            redirect: None,
            encryption: true,
        }
    }
}

impl PublicKey {
    /// True if the world is a member: messages to this location go in clear.
    pub fn is_public(&self) -> bool {
        self.members.iter().any(|m| m.is_empty())
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// A secret key: the public key with its ed25519 and x25519 secrets. The secrets are
/// zeroized when dropped (by `ed25519-dalek` and `x25519-dalek`), and `Debug` shows
/// only the public part.
#[derive(Clone)]
pub struct SecretKey {
    public: PublicKey,
    signing: SigningKey,
    encryption: Option<StaticSecret>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.public.name)
            .field("id", &self.public.id())
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl SecretKey {
    /// A new key with fresh secrets from `rng`.
    pub fn generate(t: KeyTemplate, rng: &mut (impl RngCore + CryptoRng)) -> SecretKey {
        let mut ed = Zeroizing::new([0u8; 32]);
        let mut x = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *ed);
        rng.fill_bytes(&mut *x);
        let x = t.encryption.then_some(&*x);
        SecretKey::from_seeds(t, &ed, x)
    }

    /// A key from fixed secrets (for test vectors and for reading files). The
    /// template's `encryption` flag is ignored: `x25519` decides.
    pub fn from_seeds(t: KeyTemplate, ed25519: &[u8; 32], x25519: Option<&[u8; 32]>) -> SecretKey {
        let signing = SigningKey::from_bytes(ed25519);
        let encryption = x25519.map(|s| StaticSecret::from(*s));
        SecretKey {
            public: PublicKey {
                name: t.name,
                owner: t.owner,
                created: t.created,
                expires: t.expires,
                signing: signing.verifying_key(),
                encryption: encryption.as_ref().map(X25519Public::from),
                members: t.members,
                redirect: t.redirect,
                extra: Fragments::new(),
                signatures: Vec::new(),
            },
            signing,
            encryption,
        }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn name(&self) -> &KeyName {
        &self.public.name
    }

    pub fn id(&self) -> KeyId {
        self.public.id()
    }

    /// Signs a request to a server (INBOX_OPEN: docs/protocol.md §4.15) with
    /// the signing key. The request's bytes begin with their own context string,
    /// so such a signature cannot pass for one over a message or a key.
    pub fn sign_request(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The Ed25519 public key that verifies [`SecretKey::sign_request`].
    pub fn signing_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub(crate) fn sign_raw(&self, msg: &[u8]) -> Signature {
        self.signing.sign(msg)
    }

    pub(crate) fn x25519(&self) -> Option<&StaticSecret> {
        self.encryption.as_ref()
    }
}

#[cfg(test)]
pub(crate) fn test_key(name: &str, seed: u8) -> SecretKey {
    let mut t = KeyTemplate::new(
        KeyName::parse(name).unwrap(),
        Timestamp { secs: 1, nanos: 0 },
    );
    t.owner = Some("Owner".into());
    SecretKey::from_seeds(t, &[seed; 32], Some(&[seed + 1; 32]))
}

#[cfg(test)]
mod tests {
    use super::test_key as key;
    use crate::hex;

    #[test]
    fn debug_redacts_secrets() {
        let sk = key("egnor@ofb.net", 3);
        let dbg = format!("{sk:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&hex::encode(&sk.signing.to_bytes())));
        assert!(!dbg.contains("0303030303"));
    }
}
