//! Naming a key by its contents: the [`Fingerprint`] (SHA-256 over the public
//! keys, read aloud to check a key) and the short [`KeyId`] taken from it.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::PublicKey;
use crate::hex;

/// Domain-separation label in front of the public keys hashed into a fingerprint.
pub const FINGERPRINT_LABEL: &[u8] = b"gale/key-fingerprint/v1\0";

/// A key's short id: the first 8 bytes of its [`Fingerprint`], shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Error parsing a key id from text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a key id is 16 hexadecimal digits, not {0:?}")]
pub struct BadKeyId(pub String);

impl FromStr for KeyId {
    type Err = BadKeyId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s)
            .and_then(|v| v.try_into().ok())
            .map(KeyId)
            .ok_or_else(|| BadKeyId(s.to_string()))
    }
}

/// A key's fingerprint: SHA-256 over [`FINGERPRINT_LABEL`], the ed25519 public key and
/// the x25519 public key (32 zero bytes when it has none). Displayed as 16 groups of 4
/// hex digits, for reading aloud.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn key_id(&self) -> KeyId {
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.0[..8]);
        KeyId(id)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&hex::encode(pair))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl PublicKey {
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_LABEL);
        h.update(self.signing.as_bytes());
        h.update(self.encryption.map_or([0u8; 32], |k| k.to_bytes()));
        Fingerprint(h.finalize().into())
    }

    pub fn id(&self) -> KeyId {
        self.fingerprint().key_id()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_key as key;
    use super::*;

    #[test]
    fn key_id_text() {
        let id = key("a@b.org", 1).id();
        assert_eq!(id.to_string().parse::<KeyId>(), Ok(id));
        assert!("123".parse::<KeyId>().is_err());
        let fp = key("a@b.org", 1).public().fingerprint().to_string();
        assert_eq!(fp.split(' ').count(), 16);
    }
}
