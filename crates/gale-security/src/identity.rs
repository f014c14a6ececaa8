//! Who the user is, and their key: found in the key store, or made on first use.
//!
//! As in Gale, gsend and gsub make a key for `$GALE_ID` (default
//! `$USER@$GALE_DOMAIN`) the first time they need one. The new key is signed at once
//! if the user holds the parent's secret key (an administrator making their own key);
//! otherwise it is unsigned, and the notice says how to have it signed.
//!
//! Before making one, [`load_or_create_checked`] asks over Gale whether the name
//! already has a key: if it answers, the user most likely has their key on
//! another machine, and a second key would show their correspondents a key change
//! or leave them with the wrong key. Then no key is made, and the error says how
//! to copy the existing one.

use std::path::PathBuf;

use gale_keys::{KeyId, KeyName, KeyStore, KeyTemplate, NameError, SecretKey, StoreError, Trust};
use gale_proto::Timestamp;
use thiserror::Error;

use gale_client::presence::{id_from_env, UnknownId};

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot tell who you are: {0}")]
    Unknown(#[from] UnknownId),
    #[error("your id {id:?} is not a usable key name")]
    BadName {
        id: String,
        #[source]
        source: NameError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the key file for {0} was made by another program and cannot be read; try again")]
    Vanished(KeyName),
    #[error("{name} already has a key over Gale (id {id}, {trust}), but not in this key directory, so no new key was made: you most likely have it on another machine, and a second key would show your correspondents a key change (or leave them with the wrong one). Copy your key here instead: on the other machine run `gkey export {name} --secret --force > {stem}.gpri`, then install that file here as {path} (mode 0600). If that key is lost, make a new one on purpose with `gkey gen {name}`, and tell your correspondents", stem = name.file_stem(), path = path.display())]
    AnswersElsewhere {
        name: KeyName,
        id: KeyId,
        trust: Trust,
        path: PathBuf,
    },
}

/// The user's key name: `explicit` (e.g. `--id`), else `$GALE_ID`, else the
/// login name at `domain` (`$USER`, `$LOGNAME`, or the password database's). An
/// id without `@` gets `domain`.
pub fn key_name(explicit: Option<&str>, domain: Option<&str>) -> Result<KeyName, IdentityError> {
    let id = match explicit {
        Some(id) if id.contains('@') => id.to_string(),
        Some(id) => match domain {
            Some(d) => format!("{id}@{d}"),
            None => {
                return Err(UnknownId::IdWithoutDomain {
                    what: "--id",
                    id: id.to_string(),
                }
                .into())
            }
        },
        None => id_from_env(domain)?,
    };
    KeyName::parse(&id).map_err(|source| IdentityError::BadName { id, source })
}

/// The user's secret key, and whether it was just made.
#[derive(Debug)]
pub struct Own {
    pub key: SecretKey,
    /// Set if the key was made now: where it was saved.
    pub created: Option<PathBuf>,
}

impl Own {
    /// The notice to print when the key was just made (`prog` is `gsend` or
    /// `gsub`), or `None`.
    pub fn notice(&self, prog: &str) -> Option<String> {
        let path = self.created.as_ref()?;
        let name = self.key.name();
        let stem = name.file_stem();
        let signed = !self.key.public().signatures.is_empty();
        Some(match name.parent() {
            Some(_) if signed => format!(
                "{prog}: created a new key for {name} in {} (id {}), signed by its parent with your key for {}",
                path.display(),
                self.key.id(),
                name.parent().map(|p| p.to_string()).unwrap_or_default(),
            ),
            Some(parent) => format!(
                "{prog}: created a new key for {name} in {} (id {}); it is unsigned: ask the owner of {parent} to sign it \
                 (gkey export {name} > {stem}.gpub; they run gkey sign < {stem}.gpub > {stem}.signed.gpub; \
                 then gkey import {stem}.signed.gpub). Until then others see your messages as unverified",
                path.display(),
                self.key.id(),
            ),
            None => format!(
                "{prog}: created a new top-level key {name} in {} (id {}); nobody can sign it: others must trust it directly (gkey trust)",
                path.display(),
                self.key.id(),
            ),
        })
    }
}

/// [`load_or_create`], but before making a key, asks over Gale (with
/// `discovery`, if given) whether `name` already answers with one: then no key
/// is made, and the error says how to copy it ([`IdentityError::AnswersElsewhere`]).
pub async fn load_or_create_checked(
    store: &KeyStore,
    name: &KeyName,
    owner: Option<String>,
    discovery: Option<&crate::discovery::Discovery>,
) -> Result<Own, IdentityError> {
    if let Some((key, _)) = store.secret(name)? {
        return Ok(Own { key, created: None });
    }
    if let Some(d) = discovery {
        if let Some((key, trust)) = d.probe(store, name).await {
            // Another program of this user (a gsub started a moment before) may
            // have made the key while we asked: then the answer was our own key.
            if let Some((mine, _)) = store.secret(name)? {
                return Ok(Own {
                    key: mine,
                    created: None,
                });
            }
            return Err(IdentityError::AnswersElsewhere {
                name: name.clone(),
                id: key.id(),
                trust,
                path: store.secret_path(name),
            });
        }
    }
    load_or_create(store, name, owner)
}

/// The user's secret key for `name`, made (0600, never replacing an existing
/// file) if there is none. `owner` goes into a new key's `key.owner`.
pub fn load_or_create(
    store: &KeyStore,
    name: &KeyName,
    owner: Option<String>,
) -> Result<Own, IdentityError> {
    if let Some((key, _)) = store.secret(name)? {
        return Ok(Own { key, created: None });
    }
    let now = Timestamp::now();
    let mut t = KeyTemplate::new(
        name.clone(),
        Timestamp {
            secs: now.secs,
            nanos: 0,
        },
    );
    t.owner = owner;
    let mut key = SecretKey::generate(t, &mut rand_core::OsRng);
    if let Some(parent) = name.parent() {
        if let Ok(Some((signer, _))) = store.secret(&parent) {
            let mut public = key.public().clone();
            if signer.sign_key(&mut public).is_ok() {
                let _ = key.merge_signatures(&public);
            }
        }
    }
    match store.write_secret(&key, false) {
        Ok(path) => {
            let _ = store.note_seen(name, key.id());
            Ok(Own {
                key,
                created: Some(path),
            })
        }
        // Another gsend or gsub made it at the same moment: use theirs.
        Err(StoreError::SecretExists { .. }) => match store.secret(name)? {
            Some((key, _)) => Ok(Own { key, created: None }),
            None => Err(IdentityError::Vanished(name.clone())),
        },
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let name = KeyName::parse("alice@example.org").unwrap();
        let first = load_or_create(&store, &name, Some("Alice".into())).unwrap();
        let path = first.created.clone().expect("made");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let note = first.notice("gsend").unwrap();
        assert!(
            note.contains("created a new key for alice@example.org"),
            "{note}"
        );
        assert!(note.contains("ask the owner of example.org"), "{note}");
        let again = load_or_create(&store, &name, None).unwrap();
        assert!(again.created.is_none());
        assert_eq!(again.key.id(), first.key.id());
    }

    #[test]
    fn signed_by_a_parent_we_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        let dom = KeyName::parse("example.org").unwrap();
        load_or_create(&store, &dom, None).unwrap();
        let me = load_or_create(&store, &KeyName::parse("bob@example.org").unwrap(), None).unwrap();
        assert_eq!(me.key.public().signatures.len(), 1);
        assert!(me.notice("gsub").unwrap().contains("signed by its parent"));
    }

    #[test]
    fn names() {
        let n = key_name(Some("bob"), Some("x.org")).unwrap();
        assert_eq!(n.as_str(), "bob@x.org");
        assert!(matches!(
            key_name(Some("bob"), None),
            Err(IdentityError::Unknown(UnknownId::IdWithoutDomain { .. }))
        ));
    }
}
