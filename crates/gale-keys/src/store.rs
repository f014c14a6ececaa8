//! The key store: key files under the user's Gale directory and the system's.
//!
//! ```text
//! GALE_DIR (default ~/.gale)          GALE_SYS_DIR (default /etc/gale)
//!   auth/private/NAME.gpri  0600 files in a 0700 directory: your secret keys
//!   auth/trusted/NAME.gpub  trust anchors (installed with `gkey trust`)
//!   auth/local/NAME.gpub    known public keys; trusted only through a chain
//!   auth/cache/NAME.gpub    public keys learned from the network
//!   auth/seen               "NAME KEYID" lines: every key id seen per name
//!   auth/missing            "NAME UNIX-SECONDS" lines: names recently found to
//!                           have no key (key discovery's negative cache)
//! ```
//!
//! No other crate spells out this layout: it asks [`KeyStore`] (e.g.
//! [`KeyStore::own_key_names`], [`KeyStore::missing_keys`]). The two record files
//! (`auth/seen`, `auth/missing`) are read and written in `store/records.rs`.
//!
//! NAME is [`KeyName::file_stem`]: bytes outside `[A-Za-z0-9._@+-]` are written as
//! `%XX`, so `pub.*@ofb.net` is `pub.%2A@ofb.net.gpub`. The user's directory is
//! searched before the system's; files are written only to the user's unless a
//! caller asks for the system's. Every write goes to a temporary file in the same
//! directory (`tempfile`), synced, then is renamed into place, so readers never see
//! half a key; a secret key is moved with `persist_noclobber` unless the caller
//! forces a replacement, so two writers cannot both think they made it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use zeroize::Zeroizing;

use crate::key::{KeyError, KeyId, PublicKey, SecretKey, MAX_KEY_FILE};
use crate::name::KeyName;

mod records;

/// The user's secret keys, under a store root.
const PRIVATE_DIR: &str = "auth/private";

/// Extension of public key files.
pub const PUBLIC_EXT: &str = "gpub";
/// Extension of secret key files.
pub const SECRET_EXT: &str = "gpri";

/// Where a public key file lives, in order of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// `auth/trusted`: anchors.
    Trusted,
    /// `auth/local`: installed by hand, verified through a chain.
    Local,
    /// `auth/cache`: learned from the network.
    Cache,
}

impl Dir {
    fn sub(self) -> &'static str {
        match self {
            Dir::Trusted => "auth/trusted",
            Dir::Local => "auth/local",
            Dir::Cache => "auth/cache",
        }
    }
}

/// Where a key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The public half of one of our secret keys, at this path.
    Secret(PathBuf),
    /// A public key file in one of the directories.
    Public(Dir, PathBuf),
    /// Learned from the network, but `auth/cache` could not be written: held in
    /// memory for the life of this program only.
    Memory,
}

/// Problems reading or writing key files.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("a secret key for {name} already exists at {path}; to replace it (and lose the old one for good) add --force")]
    SecretExists { name: KeyName, path: PathBuf },
    #[error(
        "secret key file {path} can be read by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    SecretReadable { path: PathBuf, mode: u32 },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("key file {path} is damaged or not a key; replace it with a good copy, or move it out of the way")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("key file {path} holds the key of {found}, not of {expected}: a key file must hold the key it is named after; move it away, or rename it to {found}'s file name if that is what it should be")]
    WrongName {
        path: PathBuf,
        expected: KeyName,
        found: KeyName,
    },
    #[error("no home directory (HOME is unset); set GALE_DIR to where your Gale keys should live")]
    NoHome,
}

/// The key directories of one user, and optionally of the system.
#[derive(Debug, Clone)]
pub struct KeyStore {
    user: PathBuf,
    system: Option<PathBuf>,
    /// Keys learned that could not be cached on disk (shared by clones), so that
    /// a cache that cannot be written costs a warning, not the key.
    memory: Arc<Mutex<Vec<PublicKey>>>,
}

impl KeyStore {
    /// A store over these directories (tests use temporary ones).
    pub fn new(user: impl Into<PathBuf>, system: Option<PathBuf>) -> KeyStore {
        KeyStore {
            user: user.into(),
            system,
            memory: Arc::default(),
        }
    }

    /// The store named by `GALE_DIR` (default `~/.gale`) and `GALE_SYS_DIR` (default
    /// `/etc/gale`).
    pub fn from_env() -> Result<KeyStore, StoreError> {
        let user = match std::env::var_os("GALE_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(std::env::var_os("HOME").ok_or(StoreError::NoHome)?).join(".gale"),
        };
        let system = match std::env::var_os("GALE_SYS_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from("/etc/gale"),
        };
        Ok(KeyStore::new(user, Some(system)))
    }

    pub fn user_dir(&self) -> &Path {
        &self.user
    }

    pub fn system_dir(&self) -> Option<&Path> {
        self.system.as_deref()
    }

    fn roots(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.user.as_path()).chain(self.system.as_deref())
    }

    /// The directory of the user's secret keys (`auth/private`), where a secret
    /// key file is installed by hand.
    pub fn private_dir(&self) -> PathBuf {
        self.user.join(PRIVATE_DIR)
    }

    /// Where the user's secret key for `name` is (or would be).
    pub fn secret_path(&self, name: &KeyName) -> PathBuf {
        secret_file(&self.user, name)
    }

    /// Where the user's (or, with `system`, the system's) public key file for
    /// `name` in `dir` is (or would be).
    pub fn public_path(&self, dir: Dir, name: &KeyName, system: bool) -> PathBuf {
        let root = match (system, &self.system) {
            (true, Some(s)) => s.as_path(),
            _ => self.user.as_path(),
        };
        root.join(dir.sub())
            .join(format!("{}.{PUBLIC_EXT}", name.file_stem()))
    }

    /// Writes a secret key as a 0600 file in a 0700 directory. Refuses to replace an
    /// existing one unless `force`.
    pub fn write_secret(&self, key: &SecretKey, force: bool) -> Result<PathBuf, StoreError> {
        let path = self.secret_path(key.name());
        let dir = self.private_dir();
        make_dir(&dir, 0o700)?;
        // Tighten a private directory someone made by hand with a wider mode.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
            StoreError::Write {
                path: dir.clone(),
                source,
            }
        })?;
        // Without `force` the final rename fails if the name exists, so there is no
        // check-then-write race with another gsend or gsub making the same key.
        let replace = if force { Replace::Yes } else { Replace::No };
        match write_atomic(&path, &key.encode(), 0o600, replace) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::SecretExists {
                name: key.name().clone(),
                path,
            }),
            Err(source) => Err(StoreError::Write { path, source }),
        }
    }

    /// Our secret key for `name` (the user's first, then the system's). A file
    /// that cannot be read, is damaged, is readable by others or holds another
    /// name's key is an error, never skipped.
    pub fn secret(&self, name: &KeyName) -> Result<Option<(SecretKey, PathBuf)>, StoreError> {
        for root in self.roots() {
            let path = secret_file(root, name);
            let Some(buf) = read_limited(&path)? else {
                continue;
            };
            if let Ok(meta) = fs::metadata(&path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(StoreError::SecretReadable { path, mode });
                }
            }
            let key = SecretKey::decode(&buf).map_err(|source| StoreError::Key {
                path: path.clone(),
                source,
            })?;
            check_name(&path, name, key.name())?;
            return Ok(Some((key, path)));
        }
        Ok(None)
    }

    /// Every secret key the user holds; the first file that cannot be used is an
    /// error.
    pub fn secrets(&self) -> Result<Vec<SecretKey>, StoreError> {
        let mut out = Vec::new();
        for n in self.own_key_names()? {
            if let Some((k, _)) = self.secret(&n)? {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Writes a public key file (0644), replacing any earlier one for that name.
    pub fn write_public(
        &self,
        dir: Dir,
        key: &PublicKey,
        system: bool,
    ) -> Result<PathBuf, StoreError> {
        let path = self.public_path(dir, &key.name, system);
        let parent = path.parent().expect("a key path has a directory");
        make_dir(parent, 0o755)?;
        write_atomic(&path, &key.encode(), 0o644, Replace::Yes).map_err(|source| {
            StoreError::Write {
                path: path.clone(),
                source,
            }
        })?;
        Ok(path)
    }

    /// Every copy of a public key named `name`: our secret keys' public halves first,
    /// then trusted, local and cache, the user's before the system's. A file that
    /// cannot be read, is damaged or holds another name's key is an error: skipping
    /// it could turn a private message into a clear one, or hide a key change.
    pub fn find(&self, name: &KeyName) -> Result<Vec<(Source, PublicKey)>, StoreError> {
        let mut out = Vec::new();
        if let Some((k, path)) = self.secret(name)? {
            out.push((Source::Secret(path), k.public().clone()));
        }
        for dir in [Dir::Trusted, Dir::Local, Dir::Cache] {
            for system in [false, true] {
                if system && self.system.is_none() {
                    continue;
                }
                let path = self.public_path(dir, name, system);
                let buf = match read_limited(&path) {
                    Ok(Some(buf)) => buf,
                    Ok(None) => continue,
                    // A file where the cache directory goes holds no keys: the
                    // cache is only a cache (writing to it fails, and says so).
                    // Anywhere else this is an error, as above.
                    Err(StoreError::Read { source, .. })
                        if dir == Dir::Cache && source.kind() == io::ErrorKind::NotADirectory =>
                    {
                        continue
                    }
                    Err(e) => return Err(e),
                };
                let k = PublicKey::decode(&buf).map_err(|source| StoreError::Key {
                    path: path.clone(),
                    source,
                })?;
                check_name(&path, name, &k.name)?;
                out.push((Source::Public(dir, path), k));
            }
        }
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(
            memory
                .iter()
                .filter(|k| &k.name == name)
                .map(|k| (Source::Memory, k.clone())),
        );
        Ok(out)
    }

    /// Holds `key` in memory for the life of this store (and its clones), for a
    /// key learned that could not be written to `auth/cache`.
    pub fn remember(&self, key: &PublicKey) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = memory.iter_mut().find(|k| k.id() == key.id()) {
            if key.signatures.len() > k.signatures.len() {
                *k = key.clone();
            }
        } else {
            memory.push(key.clone());
        }
    }

    /// The public key named `name` with id `id`, from anywhere in the store; the
    /// copy with the most signatures wins.
    pub fn lookup(&self, name: &KeyName, id: KeyId) -> Result<Option<PublicKey>, StoreError> {
        Ok(self
            .find(name)?
            .into_iter()
            .map(|(_, k)| k)
            .filter(|k| k.id() == id)
            .max_by_key(|k| k.signatures.len()))
    }

    /// The names of the user's secret key files, sorted (whether or not each file
    /// can be read: see [`KeyStore::secrets`] for the keys themselves). A private
    /// directory that exists but cannot be listed is an error.
    pub fn own_key_names(&self) -> Result<Vec<KeyName>, StoreError> {
        names_in(&self.private_dir(), SECRET_EXT)
    }
}

/// A key file must hold the key it is named after: `alice@x.org.gpri` holding
/// bob's key would otherwise make alice sign as bob.
fn check_name(path: &Path, expected: &KeyName, found: &KeyName) -> Result<(), StoreError> {
    if found == expected {
        return Ok(());
    }
    Err(StoreError::WrongName {
        path: path.to_path_buf(),
        expected: expected.clone(),
        found: found.clone(),
    })
}

/// The secret key file for `name` under the store root `root`.
fn secret_file(root: &Path, name: &KeyName) -> PathBuf {
    root.join(PRIVATE_DIR)
        .join(format!("{}.{SECRET_EXT}", name.file_stem()))
}

/// The names of every key file with extension `ext` in `dir`, sorted (none if
/// `dir` does not exist). Files whose names are not key names are not keys.
fn names_in(dir: &Path, ext: &str) -> Result<Vec<KeyName>, StoreError> {
    let err = |source| StoreError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut names = Vec::new();
    for e in entries {
        let name = e.map_err(err)?.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_suffix(&format!(".{ext}")))
        else {
            continue;
        };
        names.extend(KeyName::from_file_stem(stem));
    }
    names.sort();
    Ok(names)
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(err)?;
    // `mode` is filtered by the umask; the private directory must be 0700 whatever it is.
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(err)
}

/// Whether [`write_atomic`] may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    /// Fail with [`io::ErrorKind::AlreadyExists`] instead.
    No,
}

/// Writes `data` to a temporary file next to `path`, created with `mode` (never
/// wider) and synced, then renames it to `path` in one step. The temporary file is
/// removed on any failure.
fn write_atomic(path: &Path, data: &[u8], mode: u32, replace: Replace) -> io::Result<()> {
    let dir = path.parent().expect("a key store path has a directory");
    let mut tmp = tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    // The umask may have narrowed `mode` at creation; the file gets exactly `mode`.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    match replace {
        Replace::Yes => tmp.persist(path),
        Replace::No => tmp.persist_noclobber(path),
    }
    .map(drop)
    .map_err(|e| e.error)
}

/// A key file's contents, `None` if it does not exist; at most [`MAX_KEY_FILE`] bytes.
/// The buffer is sized up front and zeroized on drop, as it may hold a secret key.
fn read_limited(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let err = |source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let len = f
        .metadata()
        .map_or(0, |m| m.len() as usize)
        .min(MAX_KEY_FILE)
        + 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(len));
    f.take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(err)?;
    Ok(Some(buf))
}
