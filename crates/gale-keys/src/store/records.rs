//! The store's two record files, each of `NAME VALUE` lines, rewritten whole and
//! atomically: `auth/seen` (every key id seen per name, to warn when a key
//! changes) and `auth/missing` (names recently found to have no key, so that key
//! discovery does not ask again at once). A line that cannot be read is skipped:
//! both files only save work or feed warnings.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::{make_dir, write_atomic, KeyStore, Replace, StoreError};
use crate::key::KeyId;
use crate::name::KeyName;

/// Every key id seen per name.
const SEEN_FILE: &str = "auth/seen";
/// Names recently found to have no key.
const MISSING_FILE: &str = "auth/missing";

impl KeyStore {
    fn seen_path(&self) -> PathBuf {
        self.user.join(SEEN_FILE)
    }

    /// Key ids recorded for `name`, oldest first.
    pub fn seen_ids(&self, name: &KeyName) -> Result<Vec<KeyId>, StoreError> {
        Ok(self
            .read_seen()?
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, id)| id)
            .collect())
    }

    /// Records that `name` had key `id`.
    pub fn record_seen(&self, name: &KeyName, id: KeyId) -> Result<(), StoreError> {
        let mut seen = self.read_seen()?;
        if seen.iter().any(|(n, i)| n == name && *i == id) {
            return Ok(());
        }
        seen.push((name.clone(), id));
        self.write_record(self.seen_path(), &seen)
    }

    fn read_seen(&self) -> Result<Vec<(KeyName, KeyId)>, StoreError> {
        let path = self.seen_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        // Lines we cannot read are skipped, not fatal: the record only feeds warnings.
        Ok(parse_record(&text))
    }

    /// The negative cache of key discovery: names found to have no key, each with
    /// when (Unix seconds). Every readable entry, however old: how long one counts
    /// is the caller's policy. An unreadable file counts as empty.
    pub fn missing_keys(&self) -> Vec<(KeyName, i64)> {
        fs::read_to_string(self.user.join(MISSING_FILE))
            .map(|text| parse_record(&text))
            .unwrap_or_default()
    }

    /// Replaces the negative cache of key discovery with `entries` (see
    /// [`KeyStore::missing_keys`]).
    pub fn write_missing_keys(&self, entries: &[(KeyName, i64)]) -> Result<(), StoreError> {
        self.write_record(self.user.join(MISSING_FILE), entries)
    }

    fn write_record<V: std::fmt::Display>(
        &self,
        path: PathBuf,
        lines: &[(KeyName, V)],
    ) -> Result<(), StoreError> {
        let text: String = lines.iter().map(|(n, v)| format!("{n} {v}\n")).collect();
        let dir = path.parent().expect("auth has a parent");
        make_dir(dir, 0o755)?;
        write_atomic(&path, text.as_bytes(), 0o644, Replace::Yes)
            .map_err(|source| StoreError::Write { path, source })
    }
}

/// `NAME VALUE` lines; a line that does not parse is skipped.
fn parse_record<V: std::str::FromStr>(text: &str) -> Vec<(KeyName, V)> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(' ')?;
            Some((KeyName::parse(n).ok()?, v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> KeyName {
        KeyName::parse(s).unwrap()
    }

    #[test]
    fn missing_keys_round_trip_and_skip_damaged_lines() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path(), None);
        assert!(store.missing_keys().is_empty());
        let entries = vec![(name("a@x.org"), 100), (name("pub.*@x.org"), 200)];
        store.write_missing_keys(&entries).unwrap();
        assert_eq!(store.missing_keys(), entries);
        let file = dir.path().join(MISSING_FILE);
        let mut text = fs::read_to_string(&file).unwrap();
        assert_eq!(text, "a@x.org 100\npub.*@x.org 200\n");
        text.push_str("garbage\nb@x.org soon\n");
        fs::write(&file, text).unwrap();
        assert_eq!(store.missing_keys(), entries);
    }
}
