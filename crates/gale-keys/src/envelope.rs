//! Signed and encrypted message payloads (payload kinds 1 and 2).
//!
//! Signed payload (kind [`kind::SIGNED`]):
//!
//! ```text
//! signer    u16 length + UTF-8   the signer's key name
//! key id    8 bytes
//! sig       64 bytes             ed25519 over signed_data() below
//! inner     the rest             a fragment list (as in a plain payload)
//! ```
//!
//! The signature covers [`MESSAGE_SIGNATURE_LABEL`] | message id (16) | location
//! count (u8) | each location as u16 length + canonical bytes | signer (u16 length +
//! bytes) | key id (8) | inner. The hop count is not covered: servers change it.
//!
//! Encrypted payload (kind [`kind::ENCRYPTED`]):
//!
//! ```text
//! ephemeral  32 bytes            x25519 public key, fresh per message
//! count      u16                 number of recipient stanzas, 1..=MAX_RECIPIENTS
//! stanzas    count × 48 bytes    the content key sealed to each recipient
//! ciphertext the rest            ChaCha20-Poly1305 of the inner payload (kind byte
//!                                included: normally SIGNED, or PLAIN if anonymous)
//! ```
//!
//! No recipient names or key ids travel: a recipient finds its stanza by trying
//! them. See `docs/security.md` for the key derivations.
//!
//! A signed payload's fragments may carry the signer's own public key
//! ([`SIGNER_KEY`], with its signatures), as Gale bundled keys: [`open`] checks the
//! signature against it when the lookup does not know the key, so a recipient
//! need not ask for it over Gale in clear (which would tell the server who wrote
//! to whom). Senders put it inside encrypted messages; it is covered by the
//! signature like any fragment, and [`open`] takes it out of the fragments it
//! returns.

use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::Signature;
use gale_proto::fragment::kind;
use gale_proto::{Fragments, FrameError, Location, Message, MessageId, Payload};
use hkdf::Hkdf;
use rand_core::{CryptoRng, OsRng, RngCore};
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroizing;

use crate::key::{KeyId, PublicKey, SecretKey};
use crate::name::KeyName;

/// Label in front of the data a message signature covers.
pub const MESSAGE_SIGNATURE_LABEL: &[u8] = b"gale/message-signature/v1\0";
/// Label in front of the associated data of the content encryption.
pub const MESSAGE_ENCRYPTION_LABEL: &[u8] = b"gale/message-encryption/v1\0";
/// HKDF `info` for the per-recipient wrap key.
pub const WRAP_INFO: &[u8] = b"gale/wrap/v1";
/// Fragment (data) of a signed payload carrying the signer's public key, in the
/// `.gpub` format with its signatures.
pub const SIGNER_KEY: &str = "signer.key";
/// Most recipients one encrypted message may have.
pub const MAX_RECIPIENTS: usize = 4096;
/// Size of one recipient stanza: a 32-byte content key plus a 16-byte tag.
pub const STANZA_LEN: usize = 48;

const ZERO_NONCE: [u8; 12] = [0; 12];

/// Why a payload could not be made or opened.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error(transparent)]
    Encode(#[from] gale_proto::EncodeError),
    #[error("malformed payload")]
    Fragments(#[source] FrameError),
    #[error("payload kind {0} is not one this version can open (0 plain, 1 signed, 2 encrypted); upgrade gale")]
    UnknownKind(u8),
    /// None of our secret keys opens any recipient stanza.
    #[error("this message is encrypted, and not to any key you hold")]
    NotARecipient,
    /// Our stanza opened but the content did not authenticate: the payload, its id
    /// or its locations were altered after sealing.
    #[error("this encrypted message was altered in transit (its content, id or locations do not match what was sealed)")]
    Tampered,
    #[error("an encrypted message needs at least one recipient")]
    NoRecipients,
    #[error("an encrypted message may have at most {MAX_RECIPIENTS} recipients, not {0}")]
    TooManyRecipients(usize),
    #[error("key {0} has no encryption key (it is a group or signing-only key); encrypt to its members instead")]
    NoEncryptionKey(KeyName),
    #[error("key {0} has an unusable x25519 key (a low-order point)")]
    WeakEncryptionKey(KeyName),
}

/// Whether a message's signature checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigState {
    /// Not signed: anonymous.
    None,
    /// Signed by the key in [`Opened::signer`], and the signature verifies. Whether
    /// that key is trusted is a separate question: see [`crate::trust`].
    Valid,
    /// The signature does not verify: forged or altered. Do not show the sender.
    Invalid,
    /// Signed, but the lookup did not have the signer's key (with that id).
    UnknownKey,
}

/// An opened message.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fragments: Fragments,
    /// True if the message was encrypted (to one of our keys).
    pub encrypted: bool,
    /// Who claims to have signed it (name and key id), if anyone.
    pub signer: Option<(KeyName, KeyId)>,
    /// The signer's key, when the lookup found it or the message carried it.
    pub signer_key: Option<PublicKey>,
    /// True if `signer_key` came from the message itself ([`SIGNER_KEY`]), not
    /// from the lookup: the caller may want to keep it.
    pub key_from_message: bool,
    pub signature: SigState,
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Id and locations as both constructions bind them.
fn put_header(out: &mut Vec<u8>, id: MessageId, to: &[Location]) {
    out.extend_from_slice(id.as_bytes());
    out.push(to.len() as u8);
    for l in to {
        put_str16(out, l.as_str());
    }
}

/// The bytes a message signature covers.
pub fn signature_data(
    id: MessageId,
    to: &[Location],
    signer: &KeyName,
    key_id: KeyId,
    inner: &[u8],
) -> Vec<u8> {
    let mut d = Vec::with_capacity(64 + to.len() * 32 + inner.len());
    d.extend_from_slice(MESSAGE_SIGNATURE_LABEL);
    put_header(&mut d, id, to);
    put_str16(&mut d, signer.as_str());
    d.extend_from_slice(&key_id.0);
    d.extend_from_slice(inner);
    d
}

/// Signs `fragments` as a message with this id and these locations (add `id.time`
/// to the fragments first: it is then covered too).
pub fn sign(
    id: MessageId,
    to: &[Location],
    fragments: &Fragments,
    key: &SecretKey,
) -> Result<Payload, EnvelopeError> {
    let mut inner = bytes::BytesMut::with_capacity(256);
    fragments.encode(&mut inner)?;
    let key_id = key.id();
    let sig = key.sign_raw(&signature_data(id, to, key.name(), key_id, &inner));
    let mut body = Vec::with_capacity(2 + key.name().as_str().len() + 72 + inner.len());
    put_str16(&mut body, key.name().as_str());
    body.extend_from_slice(&key_id.0);
    body.extend_from_slice(&sig.to_bytes());
    body.extend_from_slice(&inner);
    Ok(Payload::Sealed {
        kind: kind::SIGNED,
        raw: body.into(),
    })
}

/// Encrypts `inner` (normally the result of [`sign`]) to `recipients`, binding it
/// to this id and these locations. Randomness from the operating system.
pub fn seal(
    id: MessageId,
    to: &[Location],
    inner: &Payload,
    recipients: &[&PublicKey],
) -> Result<Payload, EnvelopeError> {
    seal_with_rng(id, to, inner, recipients, &mut OsRng)
}

/// [`seal`] with a caller's random generator (for reproducible test vectors).
pub fn seal_with_rng(
    id: MessageId,
    to: &[Location],
    inner: &Payload,
    recipients: &[&PublicKey],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Payload, EnvelopeError> {
    if recipients.is_empty() {
        return Err(EnvelopeError::NoRecipients);
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(EnvelopeError::TooManyRecipients(recipients.len()));
    }
    let eph = StaticSecret::random_from_rng(&mut *rng);
    let eph_pub = X25519Public::from(&eph);
    let mut content_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut *content_key);

    let mut body = Vec::with_capacity(34 + recipients.len() * STANZA_LEN + 64);
    body.extend_from_slice(eph_pub.as_bytes());
    body.extend_from_slice(&(recipients.len() as u16).to_be_bytes());
    for r in recipients {
        let their = r
            .encryption
            .ok_or_else(|| EnvelopeError::NoEncryptionKey(r.name.clone()))?;
        let shared = eph.diffie_hellman(&their);
        if !shared.was_contributory() {
            return Err(EnvelopeError::WeakEncryptionKey(r.name.clone()));
        }
        let wrap = wrap_cipher(shared.as_bytes(), &eph_pub, &their);
        let stanza = wrap
            .encrypt(&ZERO_NONCE.into(), &content_key[..])
            .map_err(|_| EnvelopeError::Malformed("wrap failed".into()))?;
        body.extend_from_slice(&stanza);
    }
    let aad = content_aad(id, to, &body);
    let plain = inner.encode()?;
    let ct = ChaCha20Poly1305::new((&*content_key).into())
        .encrypt(
            &ZERO_NONCE.into(),
            AeadPayload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| EnvelopeError::Malformed("encryption failed".into()))?;
    body.extend_from_slice(&ct);
    Ok(Payload::Sealed {
        kind: kind::ENCRYPTED,
        raw: body.into(),
    })
}

/// The cipher that seals the content key to one recipient: its key is
/// HKDF-SHA256(salt = ephemeral public | recipient public, ikm = X25519 shared
/// secret, info = [`WRAP_INFO`]). It is used once, so its nonce is zero.
fn wrap_cipher(
    shared: &[u8; 32],
    eph: &X25519Public,
    recipient: &X25519Public,
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph.as_bytes());
    salt[32..].copy_from_slice(recipient.as_bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(WRAP_INFO, &mut *okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new((&*okm).into())
}

/// Associated data of the content encryption: label | id | locations | the whole
/// envelope header (ephemeral key, count, every stanza).
fn content_aad(id: MessageId, to: &[Location], header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + to.len() * 32 + header.len());
    aad.extend_from_slice(MESSAGE_ENCRYPTION_LABEL);
    put_header(&mut aad, id, to);
    aad.extend_from_slice(header);
    aad
}

/// Opens a message's payload: decrypts it if it is encrypted (with any of
/// `secrets`), and checks its signature if it is signed, finding the signer's key
/// with `lookup(name, id)`.
///
/// A bad signature is not an error: it is reported as [`SigState::Invalid`] with the
/// content, so the caller can show it as forged. Errors are for payloads that cannot
/// be read at all: malformed, [`EnvelopeError::NotARecipient`], or
/// [`EnvelopeError::Tampered`].
pub fn open(
    message: &Message,
    secrets: &[&SecretKey],
    lookup: &dyn Fn(&KeyName, KeyId) -> Option<PublicKey>,
) -> Result<Opened, EnvelopeError> {
    // The kind byte is read here rather than through `Payload::decode`, which would
    // copy the payload: receiving is the hot path.
    let payload = &message.payload;
    match payload.first() {
        Some(&kind::ENCRYPTED) => {
            let plain = decrypt(message, &payload[1..], secrets)?;
            if plain.first() == Some(&kind::ENCRYPTED) {
                return Err(EnvelopeError::Malformed(
                    "an encrypted payload inside an encrypted payload".into(),
                ));
            }
            let mut opened = open_unencrypted(message, &plain, lookup)?;
            opened.encrypted = true;
            Ok(opened)
        }
        _ => open_unencrypted(message, payload, lookup),
    }
}

fn open_unencrypted(
    message: &Message,
    payload: &[u8],
    lookup: &dyn Fn(&KeyName, KeyId) -> Option<PublicKey>,
) -> Result<Opened, EnvelopeError> {
    match payload.first() {
        None => Err(EnvelopeError::Malformed("empty payload".into())),
        Some(&kind::PLAIN) => Ok(Opened {
            fragments: Fragments::decode(&payload[1..]).map_err(EnvelopeError::Fragments)?,
            encrypted: false,
            signer: None,
            signer_key: None,
            key_from_message: false,
            signature: SigState::None,
        }),
        Some(&kind::SIGNED) => {
            let s = SignedParts::parse(message, &payload[1..])?;
            let mut fragments = s.fragments;
            let carried = take_signer_key(&mut fragments, &s.signer, s.key_id);
            let known =
                lookup(&s.signer, s.key_id).filter(|k| k.name == s.signer && k.id() == s.key_id);
            let key_from_message = known.is_none() && carried.is_some();
            let key = known.or(carried);
            let signature = match &key {
                None => SigState::UnknownKey,
                Some(k) if k.signing.verify_strict(&s.signed, &s.sig).is_ok() => SigState::Valid,
                Some(_) => SigState::Invalid,
            };
            Ok(Opened {
                fragments,
                encrypted: false,
                signer: Some((s.signer, s.key_id)),
                signer_key: key,
                key_from_message,
                signature,
            })
        }
        Some(&k) => Err(EnvelopeError::UnknownKind(k)),
    }
}

/// Removes every [`SIGNER_KEY`] fragment from `fragments`; returns the key it
/// carries if it decodes and is the signer's (name and id).
fn take_signer_key(fragments: &mut Fragments, signer: &KeyName, id: KeyId) -> Option<PublicKey> {
    let mut found = None;
    fragments.0.retain(|f| {
        if f.name != SIGNER_KEY {
            return true;
        }
        if let (None, gale_proto::Value::Data(raw)) = (&found, &f.value) {
            found = PublicKey::decode(raw)
                .ok()
                .filter(|k| &k.name == signer && k.id() == id);
        }
        false
    });
    found
}

fn decrypt(
    message: &Message,
    raw: &[u8],
    secrets: &[&SecretKey],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let short = || EnvelopeError::Malformed("encrypted payload is truncated".into());
    if raw.len() < 34 {
        return Err(short());
    }
    let eph = X25519Public::from(<[u8; 32]>::try_from(&raw[..32]).map_err(|_| short())?);
    let count = u16::from_be_bytes([raw[32], raw[33]]) as usize;
    if count == 0 || count > MAX_RECIPIENTS {
        return Err(EnvelopeError::Malformed(format!(
            "{count} recipients; an encrypted payload has 1 to {MAX_RECIPIENTS}"
        )));
    }
    let header_len = 34 + count * STANZA_LEN;
    if raw.len() < header_len + 16 {
        return Err(short());
    }
    let (header, ct) = raw.split_at(header_len);
    let mut content_key = None;
    'keys: for sk in secrets {
        let Some(x) = sk.x25519() else { continue };
        let shared = x.diffie_hellman(&eph);
        if !shared.was_contributory() {
            continue;
        }
        let wrap = wrap_cipher(shared.as_bytes(), &eph, &X25519Public::from(x));
        for stanza in header[34..].chunks_exact(STANZA_LEN) {
            if let Ok(k) = wrap.decrypt(&ZERO_NONCE.into(), stanza) {
                content_key = Some(Zeroizing::new(k));
                break 'keys;
            }
        }
    }
    let key = content_key.ok_or(EnvelopeError::NotARecipient)?;
    if key.len() != 32 {
        return Err(EnvelopeError::Tampered);
    }
    let aad = content_aad(message.id, &message.to, header);
    ChaCha20Poly1305::new(key[..].into())
        .decrypt(&ZERO_NONCE.into(), AeadPayload { msg: ct, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Tampered)
}

/// A signed payload taken apart, for checking many signatures at once with
/// [`verify_batch`].
#[derive(Debug, Clone)]
pub struct SignedParts {
    pub signer: KeyName,
    pub key_id: KeyId,
    pub sig: Signature,
    /// The bytes the signature covers.
    pub signed: Vec<u8>,
    pub fragments: Fragments,
}

impl SignedParts {
    /// Parses the body of a kind-1 payload (after the kind byte) that arrived in
    /// `message`.
    pub fn parse(message: &Message, raw: &[u8]) -> Result<SignedParts, EnvelopeError> {
        let bad = |what: &str| EnvelopeError::Malformed(format!("signed payload: {what}"));
        if raw.len() < 2 {
            return Err(bad("truncated"));
        }
        let n = u16::from_be_bytes([raw[0], raw[1]]) as usize;
        if raw.len() < 2 + n + 8 + 64 {
            return Err(bad("truncated"));
        }
        let name = std::str::from_utf8(&raw[2..2 + n]).map_err(|_| bad("signer is not UTF-8"))?;
        let signer = KeyName::parse(name).map_err(|e| bad(&e.to_string()))?;
        if signer.as_str() != name {
            return Err(bad("signer name is not canonical"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2 + n..2 + n + 8]);
        let key_id = KeyId(id);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&raw[2 + n + 8..2 + n + 72]);
        let inner = &raw[2 + n + 72..];
        let fragments = Fragments::decode(inner).map_err(EnvelopeError::Fragments)?;
        let signed = signature_data(message.id, &message.to, &signer, key_id, inner);
        Ok(SignedParts {
            signer,
            key_id,
            sig: Signature::from_bytes(&sig),
            signed,
            fragments,
        })
    }
}

/// Checks many message signatures at once (ed25519 batch verification), about twice
/// as fast per signature as one by one. `keys[i]` must be the key of `parts[i]`. True
/// only if every signature is valid; on false, check them one by one to find which.
pub fn verify_batch(parts: &[SignedParts], keys: &[&PublicKey]) -> bool {
    if parts.len() != keys.len() {
        return false;
    }
    let msgs: Vec<&[u8]> = parts.iter().map(|p| &p.signed[..]).collect();
    let sigs: Vec<Signature> = parts.iter().map(|p| p.sig).collect();
    let vks: Vec<_> = keys.iter().map(|k| k.signing).collect();
    ed25519_dalek::verify_batch(&msgs, &sigs, &vks).is_ok()
}
