//! The versioned binary format of `.gpub` and `.gpri` files.
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
//! [`PublicKey::body`] is the canonical encoding without signatures (what key
//! signatures cover): the magic, then the known fields in the order above, then
//! the unknown ones in the order they came. The secret file format is in
//! [`SecretKey::encode`].

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signature, VerifyingKey};
use gale_proto::{Fragments, Timestamp, Value};
use x25519_dalek::PublicKey as X25519Public;
use zeroize::Zeroizing;

use super::{KeyError, KeyId, KeySignature, KeyTemplate, PublicKey, SecretKey};
use crate::name::KeyName;

/// First bytes of a public key file (version 1).
pub const PUBLIC_MAGIC: [u8; 8] = *b"GALEKEY\x01";
/// First bytes of a secret key file (version 1).
pub const SECRET_MAGIC: [u8; 8] = *b"GALESEC\x01";
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

impl PublicKey {
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
        self.body_fragments()
            .encode(&mut out)
            .expect("key fields have fixed names and sizes");
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
        f.encode(&mut out)
            .expect("key fields have fixed names and sizes");
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

fn verifying_key(bytes: &[u8; 32]) -> Result<VerifyingKey, KeyError> {
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

impl SecretKey {
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
    use super::super::test_key as key;
    use super::*;

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
    fn mismatched_secret_is_refused() {
        let a = key("egnor@ofb.net", 3);
        let mut b = key("egnor@ofb.net", 7);
        b.public = a.public.clone();
        assert!(matches!(
            SecretKey::decode(&b.encode()),
            Err(KeyError::Mismatch(_))
        ));
    }
}
