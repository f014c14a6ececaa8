//! Keys: public keys with their signatures, secret keys, ids, fingerprints, and the
//! versioned binary format of `.gpub` and `.gpri` files.
//!
//! A public key file is [`PUBLIC_MAGIC`] followed by a gale-proto fragment list
//! (the same encoding as message payloads, without the kind byte):
//!
//! ```text
//! key.name               text   required  the key name (see name.rs)
//! key.owner              text   optional  free text, e.g. "Dan Egnor"
//! key.created            time   required
//! key.expires            time   optional
//! key.signing.ed25519    data   required  32-byte ed25519 public key
//! key.encryption.x25519  data   optional  32-byte x25519 public key
//! key.member             text   repeated  group member locations; "" is the world
//! key.redirect           text   optional  a location this one forwards to
//! (any other fragment)          kept in order, covered by signatures
//! key.signature          list   repeated  signer (text), signer.id (data 8),
//!                                         sig.ed25519 (data 64)
//! ```
//!
//! A key signature covers [`KEY_SIGNATURE_LABEL`] followed by the canonical encoding
//! of the key without its signatures ([`PublicKey::body`]): the magic, then the known
//! fields in the order above, then the unknown ones in the order they came. The
//! secret file format is in [`SecretKey::encode`].

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use gale_proto::{Fragments, FrameError, Timestamp, Value};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::hex;
use crate::name::{KeyName, NameError};

/// First bytes of a public key file (version 1).
pub const PUBLIC_MAGIC: [u8; 8] = *b"GALEKEY\x01";
/// First bytes of a secret key file (version 1).
pub const SECRET_MAGIC: [u8; 8] = *b"GALESEC\x01";
/// Domain-separation label in front of the data a key signature covers.
pub const KEY_SIGNATURE_LABEL: &[u8] = b"gale/key-signature/v1\0";
/// Domain-separation label in front of the public keys hashed into a fingerprint.
pub const FINGERPRINT_LABEL: &[u8] = b"gale/key-fingerprint/v1\0";
/// Largest key file accepted (as Gale did).
pub const MAX_KEY_FILE: usize = 64 * 1024;

/// Fragment names of the key format.
pub mod field {
    pub const NAME: &str = "key.name";
    pub const OWNER: &str = "key.owner";
    pub const CREATED: &str = "key.created";
    pub const EXPIRES: &str = "key.expires";
    pub const SIGNING_ED25519: &str = "key.signing.ed25519";
    pub const ENCRYPTION_X25519: &str = "key.encryption.x25519";
    pub const MEMBER: &str = "key.member";
    pub const REDIRECT: &str = "key.redirect";
    pub const SIGNATURE: &str = "key.signature";
    pub const SIG_SIGNER: &str = "signer";
    pub const SIG_SIGNER_ID: &str = "signer.id";
    pub const SIG_ED25519: &str = "sig.ed25519";
    pub const SECRET_PUBLIC: &str = "key.public";
    pub const SECRET_ED25519: &str = "key.secret.ed25519";
    pub const SECRET_X25519: &str = "key.secret.x25519";
}

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

/// One signature on a key, by the key named `signer` with id `signer_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySignature {
    pub signer: KeyName,
    pub signer_id: KeyId,
    pub sig: Signature,
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

    /// True if the world is a member: messages to this location go in clear.
    pub fn is_public(&self) -> bool {
        self.members.iter().any(|m| m.is_empty())
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

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

    fn body_fragments(&self) -> Fragments {
        let mut f = Fragments::new();
        f.push_text(field::NAME, self.name.as_str());
        if let Some(o) = &self.owner {
            f.push_text(field::OWNER, o.as_str());
        }
        f.push(field::CREATED, Value::Time(self.created));
        if let Some(e) = self.expires {
            f.push(field::EXPIRES, Value::Time(e));
        }
        f.push(field::SIGNING_ED25519, data(self.signing.as_bytes()));
        if let Some(x) = &self.encryption {
            f.push(field::ENCRYPTION_X25519, data(x.as_bytes()));
        }
        for m in &self.members {
            f.push_text(field::MEMBER, m.as_str());
        }
        if let Some(r) = &self.redirect {
            f.push_text(field::REDIRECT, r.as_str());
        }
        f.0.extend(self.extra.0.iter().cloned());
        f
    }

    /// The canonical encoding without signatures: what key signatures cover.
    pub fn body(&self) -> Vec<u8> {
        let mut out = BytesMut::with_capacity(256);
        out.extend_from_slice(&PUBLIC_MAGIC);
        self.body_fragments().encode(&mut out);
        out.to_vec()
    }

    /// The `.gpub` file contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut f = self.body_fragments();
        for s in &self.signatures {
            let mut l = Fragments::new();
            l.push_text(field::SIG_SIGNER, s.signer.as_str());
            l.push(field::SIG_SIGNER_ID, data(&s.signer_id.0));
            l.push(field::SIG_ED25519, data(&s.sig.to_bytes()));
            f.push(field::SIGNATURE, Value::List(l));
        }
        let mut out = BytesMut::with_capacity(512);
        out.extend_from_slice(&PUBLIC_MAGIC);
        f.encode(&mut out);
        out.to_vec()
    }

    /// Reads a `.gpub` file's contents.
    pub fn decode(buf: &[u8]) -> Result<PublicKey, KeyError> {
        if buf.len() > MAX_KEY_FILE {
            return Err(KeyError::TooLarge { len: buf.len() });
        }
        let Some(rest) = buf.strip_prefix(&PUBLIC_MAGIC[..]) else {
            return Err(if buf.starts_with(&SECRET_MAGIC) {
                KeyError::IsSecretKey
            } else {
                KeyError::NotAKey
            });
        };
        let frags = Fragments::decode(rest).map_err(KeyError::Fragments)?;
        let mut d = Decoded::default();
        for f in frags.0 {
            d.take(f.name, f.value)?;
        }
        d.finish()
    }
}

fn data(b: &[u8]) -> Value {
    Value::Data(Bytes::copy_from_slice(b))
}

#[derive(Default)]
struct Decoded {
    name: Option<KeyName>,
    owner: Option<String>,
    created: Option<Timestamp>,
    expires: Option<Timestamp>,
    signing: Option<VerifyingKey>,
    encryption: Option<X25519Public>,
    members: Vec<String>,
    redirect: Option<String>,
    extra: Fragments,
    signatures: Vec<KeySignature>,
}

fn malformed(s: String) -> KeyError {
    KeyError::Malformed(s)
}

fn once<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), KeyError> {
    if slot.replace(v).is_some() {
        return Err(malformed(format!("{name} appears more than once")));
    }
    Ok(())
}

fn text(name: &str, v: Value) -> Result<String, KeyError> {
    match v {
        Value::Text(t) => Ok(t),
        _ => Err(malformed(format!("{name} must be text"))),
    }
}

fn fixed<const N: usize>(name: &str, v: &Value) -> Result<[u8; N], KeyError> {
    match v {
        Value::Data(b) => b[..]
            .try_into()
            .map_err(|_| malformed(format!("{name} must be {N} bytes, not {}", b.len()))),
        _ => Err(malformed(format!("{name} must be data"))),
    }
}

fn time(name: &str, v: Value) -> Result<Timestamp, KeyError> {
    match v {
        Value::Time(t) => Ok(t),
        _ => Err(malformed(format!("{name} must be a time"))),
    }
}

pub(crate) fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
    let k = VerifyingKey::from_bytes(bytes)
        .map_err(|_| malformed("the ed25519 public key is not a valid point".into()))?;
    if k.is_weak() {
        return Err(malformed("the ed25519 public key is a weak key".into()));
    }
    Ok(k)
}

impl Decoded {
    fn take(&mut self, name: String, v: Value) -> Result<(), KeyError> {
        match name.as_str() {
            field::NAME => once(&mut self.name, &name, KeyName::parse(&text(&name, v)?)?),
            field::OWNER => once(&mut self.owner, &name, text(&name, v)?),
            field::CREATED => once(&mut self.created, &name, time(&name, v)?),
            field::EXPIRES => once(&mut self.expires, &name, time(&name, v)?),
            field::SIGNING_ED25519 => {
                let k = verifying_key(&fixed::<32>(&name, &v)?)?;
                once(&mut self.signing, &name, k)
            }
            field::ENCRYPTION_X25519 => {
                let k = X25519Public::from(fixed::<32>(&name, &v)?);
                once(&mut self.encryption, &name, k)
            }
            field::MEMBER => {
                self.members.push(text(&name, v)?);
                Ok(())
            }
            field::REDIRECT => once(&mut self.redirect, &name, text(&name, v)?),
            field::SIGNATURE => {
                let Value::List(l) = v else {
                    return Err(malformed(format!("{name} must be a list")));
                };
                let (mut signer, mut id, mut sig) = (None, None, None);
                for f in l.0 {
                    match f.name.as_str() {
                        field::SIG_SIGNER => {
                            let n = KeyName::parse(&text(&f.name, f.value)?)?;
                            once(&mut signer, field::SIG_SIGNER, n)?
                        }
                        field::SIG_SIGNER_ID => {
                            once(&mut id, &f.name, KeyId(fixed::<8>(&f.name, &f.value)?))?
                        }
                        field::SIG_ED25519 => {
                            let s = Signature::from_bytes(&fixed::<64>(&f.name, &f.value)?);
                            once(&mut sig, &f.name, s)?
                        }
                        // A signature by an algorithm this version does not know.
                        _ => {}
                    }
                }
                let (Some(signer), Some(signer_id)) = (signer, id) else {
                    return Err(malformed(
                        "a key.signature lacks signer or signer.id".into(),
                    ));
                };
                if let Some(sig) = sig {
                    self.signatures.push(KeySignature {
                        signer,
                        signer_id,
                        sig,
                    });
                }
                Ok(())
            }
            _ => {
                self.extra.push(name, v);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<PublicKey, KeyError> {
        let missing = |f: &str| malformed(format!("{f} is missing"));
        Ok(PublicKey {
            name: self.name.ok_or_else(|| missing(field::NAME))?,
            owner: self.owner,
            created: self.created.ok_or_else(|| missing(field::CREATED))?,
            expires: self.expires,
            signing: self.signing.ok_or_else(|| {
                malformed(format!(
                    "{} is missing (this version knows only ed25519 keys)",
                    field::SIGNING_ED25519
                ))
            })?,
            encryption: self.encryption,
            members: self.members,
            redirect: self.redirect,
            extra: self.extra,
            signatures: self.signatures,
        })
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

    pub(crate) fn sign_raw(&self, msg: &[u8]) -> Signature {
        self.signing.sign(msg)
    }

    pub(crate) fn x25519(&self) -> Option<&StaticSecret> {
        self.encryption.as_ref()
    }

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

    /// The `.gpri` file contents: [`SECRET_MAGIC`] then a fragment list of
    /// `key.public` (data: the whole `.gpub` encoding), `key.secret.ed25519` (data:
    /// the 32-byte seed) and, if the key can decrypt, `key.secret.x25519` (data: 32
    /// bytes). The buffer is zeroized when dropped.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let public = self.public.encode();
        let mut out = Zeroizing::new(Vec::with_capacity(public.len() + 160));
        out.extend_from_slice(&SECRET_MAGIC);
        put_data(&mut out, field::SECRET_PUBLIC, &public);
        put_data(
            &mut out,
            field::SECRET_ED25519,
            &*Zeroizing::new(self.signing.to_bytes()),
        );
        if let Some(x) = &self.encryption {
            put_data(
                &mut out,
                field::SECRET_X25519,
                &*Zeroizing::new(x.to_bytes()),
            );
        }
        out
    }

    /// Reads a `.gpri` file's contents, checking that the secrets match the public key.
    pub fn decode(buf: &[u8]) -> Result<SecretKey, KeyError> {
        if buf.len() > MAX_KEY_FILE {
            return Err(KeyError::TooLarge { len: buf.len() });
        }
        let Some(mut rest) = buf.strip_prefix(&SECRET_MAGIC[..]) else {
            return Err(KeyError::NotAKey);
        };
        let (mut public, mut ed, mut x) = (None, None, None);
        // Walk the list by hand so the secrets are never copied into a `Bytes`
        // that would not be zeroized.
        while !rest.is_empty() {
            let (name, value, next) = next_fragment(rest)?;
            rest = next;
            match name {
                field::SECRET_PUBLIC => once(&mut public, name, PublicKey::decode(value)?)?,
                field::SECRET_ED25519 => once(&mut ed, name, secret32(name, value)?)?,
                field::SECRET_X25519 => once(&mut x, name, secret32(name, value)?)?,
                _ => {}
            }
        }
        let public = public.ok_or_else(|| malformed("key.public is missing".into()))?;
        let ed = ed.ok_or_else(|| malformed("key.secret.ed25519 is missing".into()))?;
        let template = KeyTemplate {
            name: public.name.clone(),
            owner: None,
            created: public.created,
            expires: None,
            members: Vec::new(),
            redirect: None,
            encryption: x.is_some(),
        };
        let mut key = SecretKey::from_seeds(template, &ed, x.as_deref());
        if key.public.signing != public.signing || key.public.encryption != public.encryption {
            return Err(KeyError::Mismatch(public.name));
        }
        key.public = public;
        Ok(key)
    }
}

fn put_data(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(gale_proto::fragment::ty::DATA);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// One data fragment off the front of `buf`: (name, value, rest).
fn next_fragment(buf: &[u8]) -> Result<(&str, &[u8], &[u8]), KeyError> {
    let short = || malformed("secret key file is truncated".into());
    let (&ty, buf) = buf.split_first().ok_or_else(short)?;
    let (n, buf) = split_at(buf, 2).ok_or_else(short)?;
    let (name, buf) = split_at(buf, u16::from_be_bytes([n[0], n[1]]) as usize).ok_or_else(short)?;
    let (len, buf) = split_at(buf, 4).ok_or_else(short)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let (value, rest) = split_at(buf, len).ok_or_else(short)?;
    let name =
        std::str::from_utf8(name).map_err(|_| malformed("fragment name is not UTF-8".into()))?;
    if ty != gale_proto::fragment::ty::DATA {
        return Err(malformed(format!("{name} must be data")));
    }
    Ok((name, value, rest))
}

fn split_at(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (b.len() >= n).then(|| b.split_at(n))
}

fn secret32(name: &str, v: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if v.len() != 32 {
        return Err(malformed(format!("{name} must be 32 bytes")));
    }
    out.copy_from_slice(v);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, seed: u8) -> SecretKey {
        let mut t = KeyTemplate::new(
            KeyName::parse(name).unwrap(),
            Timestamp { secs: 1, nanos: 0 },
        );
        t.owner = Some("Owner".into());
        SecretKey::from_seeds(t, &[seed; 32], Some(&[seed + 1; 32]))
    }

    #[test]
    fn public_and_secret_round_trip() {
        let parent = key("ofb.net", 1);
        let mut sk = key("egnor@ofb.net", 3);
        let mut p = sk.public().clone();
        p.extra.push_text("x.custom", "kept");
        parent.sign_key(&mut p).unwrap();
        sk.public = p.clone();
        let back = PublicKey::decode(&p.encode()).unwrap();
        assert_eq!(back, p);
        back.verify_signature(parent.public()).unwrap();
        let enc = sk.encode();
        let s2 = SecretKey::decode(&enc).unwrap();
        assert_eq!(s2.public(), sk.public());
        assert_eq!(s2.signing.to_bytes(), sk.signing.to_bytes());
        assert!(matches!(
            PublicKey::decode(&enc),
            Err(KeyError::IsSecretKey)
        ));
        assert!(matches!(PublicKey::decode(b"junk"), Err(KeyError::NotAKey)));
    }

    #[test]
    fn debug_redacts_secrets() {
        let sk = key("egnor@ofb.net", 3);
        let dbg = format!("{sk:?}");
        assert!(dbg.contains("redacted"));
        assert!(!dbg.contains(&hex::encode(&sk.signing.to_bytes())));
        assert!(!dbg.contains("0303030303"));
    }

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

    #[test]
    fn mismatched_secret_is_refused() {
        let a = key("egnor@ofb.net", 3);
        let mut b = key("egnor@ofb.net", 7);
        b.public = a.public.clone();
        assert!(matches!(
            SecretKey::decode(&b.encode()),
            Err(KeyError::Mismatch(_))
        ));
    }

    #[test]
    fn key_id_text() {
        let id = key("a@b.org", 1).id();
        assert_eq!(id.to_string().parse::<KeyId>(), Ok(id));
        assert!("123".parse::<KeyId>().is_err());
        let fp = key("a@b.org", 1).public().fingerprint().to_string();
        assert_eq!(fp.split(' ').count(), 16);
    }
}
