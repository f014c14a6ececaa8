//! The redb database behind a lock, so the committer can reopen it. After an
//! I/O error (a full disk, a failing device) redb refuses every further
//! operation until the file is opened again; the committer does that after
//! each failed commit, and readers get `Unavailable` in between.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use redb::{Database, WriteTransaction};

use crate::error::{engine, Result, StoreError};
use crate::layout::{DEVICES, INBOXES, MESSAGES, NEXT_SEQ};

pub(crate) struct Db {
    file: PathBuf,
    cache_bytes: usize,
    inner: RwLock<Option<Database>>,
}

impl Db {
    pub fn open(file: &Path, cache_bytes: usize) -> Result<Db> {
        let db = open_file(file, cache_bytes)?;
        Ok(Db {
            file: file.to_path_buf(),
            cache_bytes,
            inner: RwLock::new(Some(db)),
        })
    }

    /// Runs `f` on the open database; `Unavailable` while it is reopened.
    pub fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Unavailable),
        }
    }

    /// Closes the file and opens it again (redb repairs it if it must).
    pub fn reopen(&self) -> Result<()> {
        // Close first: redb refuses a second open of a file in one process.
        drop(self.inner.write().unwrap_or_else(|e| e.into_inner()).take());
        let db = open_file(&self.file, self.cache_bytes)?;
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

fn open_file(file: &Path, cache_bytes: usize) -> Result<Database> {
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(file)
        .map_err(engine)?;
    let tx = db.begin_write().map_err(engine)?;
    create_tables(&tx)?;
    tx.commit().map_err(engine)?;
    Ok(db)
}

/// Creates the tables, so that readers never find one missing.
fn create_tables(tx: &WriteTransaction) -> Result<()> {
    tx.open_table(INBOXES).map_err(engine)?;
    tx.open_table(MESSAGES).map_err(engine)?;
    tx.open_table(DEVICES).map_err(engine)?;
    tx.open_table(NEXT_SEQ).map_err(engine)?;
    Ok(())
}
