//! Signatures on keys: a parent signs its child's key ([`SecretKey::sign_key`]),
//! anyone checks it ([`PublicKey::verify_signature`]), and signatures made
//! elsewhere are merged into one's own key ([`SecretKey::merge_signatures`]).
//!
//! A key signature covers [`KEY_SIGNATURE_LABEL`] followed by the canonical
//! encoding of the key without its signatures ([`PublicKey::body`]).

use ed25519_dalek::Signature;

use super::{KeyError, KeyId, PublicKey, SecretKey};
use crate::name::KeyName;

/// Domain-separation label in front of the data a key signature covers.
pub const KEY_SIGNATURE_LABEL: &[u8] = b"gale/key-signature/v1\0";

/// One signature on a key, by the key named `signer` with id `signer_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    pub signer: KeyName,
    pub signer_id: KeyId,
    pub sig: Signature,
}

impl PublicKey {
    /// The signature by `signer` (name and id), if any.
    pub fn signature_by(&self, signer: &KeyName, id: KeyId) -> Option<&KeySignature> {
        self.signatures
            .iter()
            .find(|s| &s.signer == signer && s.signer_id == id)
    }

    /// Checks the signature that `signer` made on this key.
    pub fn verify_signature(&self, signer: &PublicKey) -> Result<(), KeyError> {
        let id = signer.id();
        let s = self
            .signature_by(&signer.name, id)
            .ok_or_else(|| KeyError::NotSigned {
                key: self.name.clone(),
                signer: signer.name.clone(),
                id,
            })?;
        signer
            .signing
            .verify_strict(&self.signed_data(), &s.sig)
            .map_err(|_| KeyError::BadSignature {
                key: self.name.clone(),
                signer: signer.name.clone(),
            })
    }

    /// What a key signature covers: [`KEY_SIGNATURE_LABEL`] then [`PublicKey::body`].
    pub fn signed_data(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(KEY_SIGNATURE_LABEL.len() + body.len());
        out.extend_from_slice(KEY_SIGNATURE_LABEL);
        out.extend_from_slice(&body);
        out
    }
}

impl SecretKey {
    /// Signs `key` as its parent. Refuses unless this key's name is `key`'s parent
    /// (any other signature would be ignored by [`crate::trust`]). Replaces an
    /// earlier signature by this same key.
    pub fn sign_key(&self, key: &mut PublicKey) -> Result<(), KeyError> {
        let parent = key.name.parent();
        if parent.as_ref() != Some(&self.public.name) {
            return Err(KeyError::NotParent {
                signer: self.public.name.clone(),
                key: key.name.clone(),
                parent,
            });
        }
        let id = self.id();
        let sig = self.sign_raw(&key.signed_data());
        key.signatures
            .retain(|s| !(s.signer == self.public.name && s.signer_id == id));
        key.signatures.push(KeySignature {
            signer: self.public.name.clone(),
            signer_id: id,
            sig,
        });
        Ok(())
    }

    /// Copies the signatures of `signed` (the same key, signed elsewhere) into this
    /// key's public part. Returns how many were new.
    pub fn merge_signatures(&mut self, signed: &PublicKey) -> Result<usize, KeyError> {
        if signed.body() != self.public.body() {
            return Err(KeyError::NotSameKey {
                ours: self.public.name.clone(),
                our_id: self.id(),
                theirs: signed.name.clone(),
                their_id: signed.id(),
            });
        }
        let mut added = 0;
        for s in &signed.signatures {
            if !self.public.signatures.contains(s) {
                self.public.signatures.push(s.clone());
                added += 1;
            }
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_key as key;
    use super::*;

    #[test]
    fn only_the_parent_signs_and_alteration_breaks_it() {
        let parent = key("ofb.net", 1);
        let other = key("other.net", 5);
        let mut p = key("egnor@ofb.net", 3).public().clone();
        assert!(matches!(
            other.sign_key(&mut p),
            Err(KeyError::NotParent { .. })
        ));
        assert!(matches!(
            p.verify_signature(parent.public()),
            Err(KeyError::NotSigned { .. })
        ));
        parent.sign_key(&mut p).unwrap();
        p.owner = Some("Mallory".into());
        assert!(matches!(
            p.verify_signature(parent.public()),
            Err(KeyError::BadSignature { .. })
        ));
    }
}
