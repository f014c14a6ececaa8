//! Trust: which keys are verified, which key controls a location, and who a message
//! to a location must be encrypted to.
//!
//! Rules (see `docs/security.md`):
//! - A key is *verified* if it is an anchor (a key in `auth/trusted`, the user's or
//!   the system's, with exactly the same contents), or if it
//!   carries a valid signature by its parent (by name, [`KeyName::parent`]) and that
//!   parent is itself verified, up to [`MAX_CHAIN_DEPTH`] links.
//! - Every key along the chain, anchors included, must be unexpired.
//! - Holding a secret key does not make it an anchor (Gale trusted its private
//!   directory): your own key shows the trust everyone else can give it, so an
//!   unsigned key of yours shows as unverified until it is signed or trusted.
//! - A key whose id for a known name changes is reported as [`KeyChanged`].
//! - The controlling key of a location is the most general existing wildcard key
//!   (`*@dom`, then `a.*@dom`, ...), else the exact key, as in Gale; a verified key is
//!   always preferred over an unverified one, and expired or badly signed keys are
//!   never used.

use std::collections::HashSet;
use std::fmt;

use gale_proto::{Location, LocationError, Timestamp};
use thiserror::Error;

use crate::envelope::MAX_RECIPIENTS;
use crate::key::{KeyId, PublicKey};
use crate::name::KeyName;
use crate::store::{Dir, KeyStore, Source, StoreError};

/// Longest chain of signatures followed from a key to an anchor.
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Deepest nesting of groups (members of members) and redirects followed.
pub const MAX_GROUP_DEPTH: usize = 8;

/// How far a key can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A chain of valid signatures leads to the trust anchor `anchor`.
    Verified { anchor: KeyName },
    /// No chain to an anchor: unsigned, or a signer is unknown here. Show such keys
    /// as unverified; never treat them as trusted.
    Unverified { why: String },
    /// The key `which`, on the chain, has expired.
    Expired { which: KeyName },
    /// The signature on `which` by its parent does not verify: altered or forged.
    BadSignature { which: KeyName },
}

impl Trust {
    pub fn is_verified(&self) -> bool {
        matches!(self, Trust::Verified { .. })
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Verified { anchor } => write!(f, "verified (trust anchor {anchor})"),
            Trust::Unverified { why } => write!(f, "UNVERIFIED: {why}"),
            Trust::Expired { which } => write!(f, "EXPIRED: key {which} on the chain has expired"),
            Trust::BadSignature { which } => write!(
                f,
                "BAD SIGNATURE: the signature on {which} does not verify; the key was altered or forged"
            ),
        }
    }
}

/// A verification and the keys it went through, from the key itself up.
#[derive(Debug, Clone)]
pub struct Chain {
    pub trust: Trust,
    pub links: Vec<PublicKey>,
}

/// The key for a known name has changed: a loud warning for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChanged {
    pub name: KeyName,
    pub old: Vec<KeyId>,
    pub new: KeyId,
}

impl fmt::Display for KeyChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old: Vec<String> = self.old.iter().map(|i| i.to_string()).collect();
        write!(
            f,
            "WARNING: THE KEY FOR {} HAS CHANGED: it was {}, it is now {}. \
             This is expected only if its owner made a new key. Otherwise someone may be \
             impersonating {}: check the new key's fingerprint with its owner \
             (gkey show {}) before trusting it.",
            self.name,
            old.join(", "),
            self.new,
            self.name,
            self.name
        )
    }
}

/// What [`KeyStore::import`] did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The file written.
    pub path: std::path::PathBuf,
    /// True if the key is one of ours and its signatures went into our secret file.
    pub into_secret: bool,
    /// Signatures added (all of them for a newly stored key).
    pub new_signatures: usize,
    /// Set if `name` was known with another key: warn loudly.
    pub changed: Option<KeyChanged>,
}

/// What [`KeyStore::learn`] did with a key learned from the network or from a
/// message.
#[derive(Debug, Clone)]
pub enum Learned {
    /// Stored in `auth/cache` (or merged into our own secret key file).
    Stored(Imported),
    /// Not stored: the name has a verified key, `kept`, and the key offered does
    /// not verify. Warn: someone may be answering for, or signing as, that name.
    Refused { kept: KeyId },
}

/// Who a message to a location goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// The world is a member: send in clear (signed).
    Public,
    /// No key controls the location; the caller decides (Gale refused to send).
    NoKey,
    /// Encrypt to these keys (deduplicated). Check each with [`KeyStore::verify`]
    /// before sending: unverified keys are included so the caller can warn.
    Private(Vec<PublicKey>),
}

/// Why the recipients of a location could not be worked out.
#[derive(Debug, Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("group {group} lists member {member:?}, which has no usable key here; fetch its key or ask the owner of {group} to fix the member list")]
    MissingMember { group: KeyName, member: String },
    #[error("key {key} names {target:?}, which is not a location")]
    BadLocation {
        key: KeyName,
        target: String,
        #[source]
        source: LocationError,
    },
    #[error(
        "key {0} has neither members nor an encryption key, so nothing can be encrypted to it"
    )]
    NoEncryptionKey(KeyName),
    #[error("groups or redirects nest deeper than {MAX_GROUP_DEPTH} levels at {0}")]
    TooDeep(KeyName),
    #[error("more than {MAX_RECIPIENTS} recipients")]
    TooMany,
}

impl KeyStore {
    /// True if `key` is an anchor: a file in `auth/trusted` with the same contents
    /// (not merely the same key material, so nobody can reuse an anchor's key with
    /// other members or another redirect).
    pub fn is_anchor(&self, key: &PublicKey) -> Result<bool, StoreError> {
        let body = key.body();
        Ok(self
            .find(&key.name)?
            .iter()
            .any(|(src, k)| matches!(src, Source::Public(Dir::Trusted, _)) && k.body() == body))
    }

    /// How far `key` can be trusted at time `now`. A key file on the chain that
    /// cannot be used (damaged, unreadable, another name's key) leaves the key
    /// [`Trust::Unverified`], with the file and the problem in `why`.
    pub fn verify(&self, key: &PublicKey, now: Timestamp) -> Trust {
        self.verify_chain(key, now).trust
    }

    /// [`KeyStore::verify`], also returning the keys of the chain.
    pub fn verify_chain(&self, key: &PublicKey, now: Timestamp) -> Chain {
        let mut links = vec![key.clone()];
        let trust = loop {
            let cur = links.last().expect("never empty");
            if links.len() > MAX_CHAIN_DEPTH {
                break Trust::Unverified {
                    why: format!("the chain is longer than {MAX_CHAIN_DEPTH} keys"),
                };
            }
            if cur.is_expired(now) {
                break Trust::Expired {
                    which: cur.name.clone(),
                };
            }
            match self.is_anchor(cur) {
                Ok(true) => {
                    break Trust::Verified {
                        anchor: cur.name.clone(),
                    }
                }
                Ok(false) => {}
                Err(e) => break unusable(e),
            }
            let Some(parent) = cur.name.parent() else {
                break Trust::Unverified {
                    why: format!(
                        "{} is a top-level key and not one of your trust anchors; if you trust it, run: gkey trust {}",
                        cur.name, cur.name
                    ),
                };
            };
            let ids: Vec<KeyId> = cur
                .signatures
                .iter()
                .filter(|s| s.signer == parent)
                .map(|s| s.signer_id)
                .collect();
            if ids.is_empty() {
                break Trust::Unverified {
                    why: format!(
                        "{} is not signed by {parent}; its owner should run `gkey export {}` and have the owner of {parent} sign it with `gkey sign`",
                        cur.name, cur.name
                    ),
                };
            }
            let copies: Vec<PublicKey> = match self.find(&parent) {
                Ok(found) => found
                    .into_iter()
                    .map(|(_, k)| k)
                    .filter(|k| ids.contains(&k.id()))
                    .collect(),
                Err(e) => break unusable(e),
            };
            if copies.is_empty() {
                // A domain's key is what a user installs as an anchor (README).
                let install = if parent.local().is_none() {
                    format!(
                        "if you trust {parent}, install its key as a trust anchor: `gkey trust {}.gpub`, with the file from its owner",
                        parent.file_stem()
                    )
                } else {
                    format!("import it with `gkey import FILE`, with the file from the owner of {parent}")
                };
                break Trust::Unverified {
                    why: format!(
                        "{} is signed by {parent} (key id {}), but that key is not known here; {install}",
                        cur.name, ids[0]
                    ),
                };
            }
            match copies.into_iter().find(|p| cur.verify_signature(p).is_ok()) {
                Some(p) => links.push(p),
                None => {
                    break Trust::BadSignature {
                        which: cur.name.clone(),
                    }
                }
            }
        };
        Chain { trust, links }
    }

    /// Records that `name` was seen with key `id`. Returns the change if `name` was
    /// seen before with other keys only: show it loudly.
    pub fn note_seen(&self, name: &KeyName, id: KeyId) -> Result<Option<KeyChanged>, StoreError> {
        let old = self.seen_ids(name)?;
        if old.contains(&id) {
            return Ok(None);
        }
        self.record_seen(name, id)?;
        Ok((!old.is_empty()).then(|| KeyChanged {
            name: name.clone(),
            old,
            new: id,
        }))
    }

    /// Stores a public key learned or received (in `auth/local` or `auth/cache`):
    /// if it is one of our own keys, its signatures are merged into our secret key
    /// file instead. Reports a changed key for a known name.
    pub fn import(&self, key: &PublicKey, dir: Dir) -> Result<Imported, StoreError> {
        let id = key.id();
        let mut merged = None;
        if let Some((mut mine, _)) = self.secret(&key.name)? {
            if mine.id() == id {
                if let Ok(n) = mine.merge_signatures(key) {
                    merged = Some((self.write_secret(&mine, true)?, n));
                }
            }
        }
        let (path, into_secret, new_signatures) = match merged {
            Some((path, n)) => (path, true, n),
            None => (
                self.write_public(dir, key, false)?,
                false,
                key.signatures.len(),
            ),
        };
        let changed = self.note_seen(&key.name, id)?;
        Ok(Imported {
            path,
            into_secret,
            new_signatures,
            changed,
        })
    }

    /// Stores a key learned from the network or carried by a message in
    /// `auth/cache`, unless that would put a key that does not verify beside a
    /// verified key of the same name (a verified key is never displaced by an
    /// unverified one). Reports a changed key as [`KeyStore::import`] does.
    pub fn learn(&self, key: &PublicKey, now: Timestamp) -> Result<Learned, StoreError> {
        if !self.verify(key, now).is_verified() {
            for (_, k) in self.find(&key.name)? {
                if k.id() != key.id() && self.verify(&k, now).is_verified() {
                    return Ok(Learned::Refused { kept: k.id() });
                }
            }
        }
        match self.import(key, Dir::Cache) {
            Ok(done) => Ok(Learned::Stored(done)),
            Err(e) => {
                // The cache cannot be written: the key is still used, this time.
                self.remember(key);
                Err(e)
            }
        }
    }

    /// The ids of the verified keys of `name` other than `id`: a message that
    /// claims `name` but is signed by `id` is then a key mismatch, not merely
    /// unverified.
    pub fn verified_ids_besides(
        &self,
        name: &KeyName,
        id: KeyId,
        now: Timestamp,
    ) -> Result<Vec<KeyId>, StoreError> {
        let mut out = Vec::new();
        for (_, k) in self.find(name)? {
            if k.id() != id && !out.contains(&k.id()) && self.verify(&k, now).is_verified() {
                out.push(k.id());
            }
        }
        Ok(out)
    }

    /// The key that controls `loc`, if any is usable (see the module rules). A key
    /// file that cannot be used is an error, not a missing key.
    pub fn resolve(&self, loc: &Location, now: Timestamp) -> Result<Option<PublicKey>, StoreError> {
        let mut unverified = None;
        for name in KeyName::candidates(loc) {
            for (_, k) in self.find(&name)? {
                match self.verify(&k, now) {
                    Trust::Verified { .. } => return Ok(Some(k)),
                    Trust::Unverified { .. } => {
                        unverified.get_or_insert(k);
                    }
                    Trust::Expired { .. } | Trust::BadSignature { .. } => {}
                }
            }
        }
        Ok(unverified)
    }

    /// Who a message to `loc` must be encrypted to: members expanded recursively
    /// (bounded by [`MAX_GROUP_DEPTH`]), redirects followed, and the key itself when
    /// it has no members. Any world member (`""`) anywhere makes it [`Recipients::Public`].
    /// This is per location: a caller sending to several must refuse to mix public and
    /// private ones rather than send the private ones in clear.
    pub fn recipients(&self, loc: &Location, now: Timestamp) -> Result<Recipients, TrustError> {
        let Some(key) = self.resolve(loc, now)? else {
            return Ok(Recipients::NoKey);
        };
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        if self.expand(loc, key, 0, now, &mut out, &mut visited)? {
            return Ok(Recipients::Public);
        }
        Ok(Recipients::Private(out))
    }

    /// Adds the keys behind `key` to `out`; true if the world is among them.
    fn expand(
        &self,
        loc: &Location,
        key: PublicKey,
        depth: usize,
        now: Timestamp,
        out: &mut Vec<PublicKey>,
        visited: &mut HashSet<(KeyName, KeyId)>,
    ) -> Result<bool, TrustError> {
        if depth > MAX_GROUP_DEPTH {
            return Err(TrustError::TooDeep(key.name));
        }
        if !visited.insert((key.name.clone(), key.id())) {
            return Ok(false);
        }
        let bad = |target: &str, source| TrustError::BadLocation {
            key: key.name.clone(),
            target: target.to_string(),
            source,
        };
        if let Some(r) = &key.redirect {
            let target = redirect_target(loc, &key.name, r).map_err(|e| bad(r, e))?;
            let next = self
                .resolve(&target, now)?
                .ok_or_else(|| TrustError::MissingMember {
                    group: key.name.clone(),
                    member: r.clone(),
                })?;
            return self.expand(&target, next, depth + 1, now, out, visited);
        }
        if key.members.is_empty() {
            if key.encryption.is_none() {
                return Err(TrustError::NoEncryptionKey(key.name));
            }
            if !out.iter().any(|k| k.id() == key.id()) {
                if out.len() >= MAX_RECIPIENTS {
                    return Err(TrustError::TooMany);
                }
                out.push(key);
            }
            return Ok(false);
        }
        for m in &key.members {
            if m.is_empty() {
                return Ok(true);
            }
            let mloc = Location::parse(m).map_err(|e| bad(m, e))?;
            let mk = self
                .resolve(&mloc, now)?
                .ok_or_else(|| TrustError::MissingMember {
                    group: key.name.clone(),
                    member: m.clone(),
                })?;
            if self.expand(&mloc, mk, depth + 1, now, out, visited)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The trust of a key whose chain runs into a key file that cannot be used.
fn unusable(e: StoreError) -> Trust {
    let mut why = e.to_string();
    if let Some(source) = std::error::Error::source(&e) {
        why.push_str(&format!(" ({source})"));
    }
    Trust::Unverified { why }
}

/// Where a redirect sends `loc`: the redirect itself, or for a wildcard key
/// `p.*@d` redirecting to `t@e`, `t.REST@e` for `loc` = `p.REST@d`.
fn redirect_target(
    loc: &Location,
    key: &KeyName,
    redirect: &str,
) -> Result<Location, LocationError> {
    let target = Location::parse(redirect)?;
    if let Some(prefix) = key.local().and_then(|l| l.strip_suffix('*')) {
        if let Some(rest) = loc.local().strip_prefix(prefix).filter(|r| !r.is_empty()) {
            let local = if target.local().is_empty() {
                rest.to_string()
            } else {
                format!("{}.{rest}", target.local())
            };
            return Location::parse(&format!("{local}@{}", target.domain()));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_carry_the_rest_of_a_wildcard() {
        let loc = Location::parse("pub.a.b@x.org").unwrap();
        let k = KeyName::parse("pub.*@x.org").unwrap();
        assert_eq!(
            redirect_target(&loc, &k, "news@y.org").unwrap().as_str(),
            "news.a.b@y.org"
        );
        let exact = KeyName::parse("pub.a.b@x.org").unwrap();
        assert_eq!(
            redirect_target(&loc, &exact, "news@y.org")
                .unwrap()
                .as_str(),
            "news@y.org"
        );
    }
}
