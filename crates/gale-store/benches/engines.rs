//! The measurement behind the choice of embedded engine (redb or fjall).
//!
//! Stores N messages of ~300 bytes (a typical encrypted Gale message) the way
//! gale-store does: one producer hands messages over a bounded channel to a
//! committer thread, which commits (with fsync) whatever has arrived every
//! `COMMIT_MS` milliseconds, or sooner when the batch is large. Then it replays
//! them in order with a range scan, and reports messages/s both ways and the
//! size on disk.
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/tgt-store cargo bench -p gale-store --bench engines
//! GALE_BENCH_N=200000 GALE_BENCH_DIR=/var/tmp cargo bench -p gale-store --bench engines
//! ```

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const COMMIT_MS: u64 = 5;
const MAX_BATCH: usize = 16_384;
const MSG_BYTES: usize = 300;
const INBOXES: u64 = 16;

fn key(inbox: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&inbox.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn payload(seq: u64) -> Vec<u8> {
    // Ciphertext does not compress: fill with a cheap pseudo-random stream.
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..MSG_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

trait Engine: Send + 'static {
    fn commit(&mut self, batch: &[([u8; 16], Vec<u8>)]);
    /// Replays every inbox in order; returns (messages, bytes).
    fn replay(&self) -> (u64, u64);
    /// Deletes every message, inbox by inbox, `chunk` keys per commit (the
    /// acks of devices that caught up).
    fn drain(&mut self, n: u64, chunk: u64);
    /// Shrinks the files if the engine can; returns nothing.
    fn compact(&mut self) {}
}

struct Redb {
    db: redb::Database,
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("msgs");

impl Engine for Redb {
    fn commit(&mut self, batch: &[([u8; 16], Vec<u8>)]) {
        let tx = self.db.begin_write().expect("begin");
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for (k, v) in batch {
                t.insert(&k[..], &v[..]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }

    fn replay(&self) -> (u64, u64) {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(TABLE).expect("table");
        let (mut n, mut b) = (0, 0);
        for inbox in 0..INBOXES {
            let lo = key(inbox, 0);
            let hi = key(inbox, u64::MAX);
            for item in t.range(&lo[..]..&hi[..]).expect("range") {
                let (_k, v) = item.expect("item");
                n += 1;
                b += v.value().len() as u64;
            }
        }
        (n, b)
    }

    fn drain(&mut self, n: u64, chunk: u64) {
        let mut seq = 0;
        while seq < n {
            let tx = self.db.begin_write().expect("begin");
            {
                let mut t = tx.open_table(TABLE).expect("table");
                for s in seq..(seq + chunk).min(n) {
                    t.remove(&key(s % INBOXES, s)[..]).expect("remove");
                }
            }
            tx.commit().expect("commit");
            seq += chunk;
        }
    }

    fn compact(&mut self) {
        while self.db.compact().expect("compact") {}
    }
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Engine for Fjall {
    fn commit(&mut self, batch: &[([u8; 16], Vec<u8>)]) {
        let mut b = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for (k, v) in batch {
            b.insert(&self.ks, &k[..], &v[..]);
        }
        b.commit().expect("commit");
    }

    fn replay(&self) -> (u64, u64) {
        let (mut n, mut b) = (0, 0);
        for inbox in 0..INBOXES {
            let lo = key(inbox, 0);
            let hi = key(inbox, u64::MAX);
            for item in self.ks.range(lo..hi) {
                let v = item.value().expect("item");
                n += 1;
                b += v.len() as u64;
            }
        }
        (n, b)
    }

    fn drain(&mut self, n: u64, chunk: u64) {
        let mut seq = 0;
        while seq < n {
            let mut b = self
                .db
                .batch()
                .durability(Some(fjall::PersistMode::SyncData));
            for s in seq..(seq + chunk).min(n) {
                b.remove(&self.ks, &key(s % INBOXES, s)[..]);
            }
            b.commit().expect("commit");
            seq += chunk;
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).expect("read_dir").flatten() {
        let md = e.metadata().expect("metadata");
        total += if md.is_dir() {
            dir_size(&e.path())
        } else {
            md.len()
        };
    }
    total
}

/// Stores `n` messages through a group-committing thread; returns
/// (elapsed, commits).
fn store<E: Engine>(mut engine: E, n: u64) -> (E, Duration, u64) {
    let (tx, rx) = mpsc::sync_channel::<([u8; 16], Vec<u8>)>(MAX_BATCH * 4);
    let start = Instant::now();
    let committer = thread::spawn(move || {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut commits = 0u64;
        let mut open = true;
        while open {
            let deadline = Instant::now() + Duration::from_millis(COMMIT_MS);
            while batch.len() < MAX_BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(m) => batch.push(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                engine.commit(&batch);
                commits += 1;
                batch.clear();
            }
        }
        (engine, commits)
    });
    for seq in 0..n {
        let inbox = seq % INBOXES;
        tx.send((key(inbox, seq), payload(seq))).expect("send");
    }
    drop(tx);
    let (engine, commits) = committer.join().expect("committer");
    (engine, start.elapsed(), commits)
}

fn run<E: Engine>(name: &str, engine: E, dir: &Path, n: u64) {
    let (engine, stored, commits) = store(engine, n);
    let size = dir_size(dir);
    let start = Instant::now();
    let (got, bytes) = engine.replay();
    let replayed = start.elapsed();
    assert_eq!(got, n, "{name}: replayed {got} of {n}");
    assert_eq!(bytes, n * MSG_BYTES as u64);
    let mut engine = engine;
    let start = Instant::now();
    engine.drain(n, 10_000);
    let drained = start.elapsed();
    let (left, _) = engine.replay();
    assert_eq!(left, 0);
    let size_drained = dir_size(dir);
    engine.compact();
    let size_compacted = dir_size(dir);
    println!(
        "{name:6} stored {:>9.0} msg/s ({:.2} s, {commits} commits)  replayed {:>9.0} msg/s ({:.2} s)  on disk {:.1} MB ({:.0} B/msg)",
        n as f64 / stored.as_secs_f64(),
        stored.as_secs_f64(),
        n as f64 / replayed.as_secs_f64(),
        replayed.as_secs_f64(),
        size as f64 / 1e6,
        size as f64 / n as f64,
    );
    println!(
        "{name:6} deleted {:>9.0} msg/s (10,000 per commit)  on disk after deleting all {:.1} MB, after compaction {:.1} MB",
        n as f64 / drained.as_secs_f64(),
        size_drained as f64 / 1e6,
        size_compacted as f64 / 1e6,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // then a small run only checks that the bench works.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("GALE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let base = std::env::var_os("GALE_BENCH_DIR");
    let tmp = |name: &str| {
        match &base {
            Some(b) => tempfile::Builder::new().prefix(name).tempdir_in(b),
            None => tempfile::Builder::new().prefix(name).tempdir(),
        }
        .expect("tempdir")
    };
    println!(
        "{n} messages of {MSG_BYTES} bytes, {INBOXES} inboxes, commit (fsync) every {COMMIT_MS} ms or {MAX_BATCH} messages"
    );

    let only = std::env::var("GALE_BENCH_ENGINE").ok();
    if only.as_deref().is_none_or(|e| e == "redb") {
        let d = tmp("redb");
        let db = redb::Database::create(d.path().join("store.redb")).expect("redb");
        run("redb", Redb { db }, d.path(), n);
    }
    if only.as_deref().is_none_or(|e| e == "fjall") {
        let d = tmp("fjall");
        let db = fjall::Database::builder(d.path()).open().expect("fjall");
        let ks = db
            .keyspace("msgs", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        run("fjall", Fjall { db, ks }, d.path(), n);
    }
}
