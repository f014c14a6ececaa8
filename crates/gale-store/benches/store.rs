//! The issue 11 benchmark, through the `Store` API with the default commit
//! policy: durable messages stored per second (appended, then flushed), and
//! the replay rate of a device coming back (read in pages, ack).
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/tgt-store cargo bench -p gale-store --bench store
//! ```
//! Targets on the 2-core machine: 100,000 msg/s stored, 200,000 msg/s replayed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gale_store::{Limits, Store, StoreError};

const MSG_BYTES: usize = 300;
const INBOXES: u64 = 100;
const PAGE: usize = 1_000;

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // then a small run only checks that the bench works.
    let full = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("GALE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let d = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        inbox_messages: u64::MAX,
        inbox_bytes: u64::MAX,
        total_messages: u64::MAX,
        total_bytes: u64::MAX,
        ..Limits::default()
    };
    let s = Store::open(d.path(), limits).expect("open");
    let names: Vec<String> = (0..INBOXES).map(|i| format!("user{i}@ofb.net")).collect();
    for name in &names {
        s.register(name, &[1; 8], std::slice::from_ref(name));
        s.read(name, "laptop", 0, 0).expect("device");
    }
    s.flush().expect("flush");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let body = vec![0xA5u8; MSG_BYTES];

    let start = Instant::now();
    let mut refused = 0u64;
    for i in 0..n {
        let inbox = &names[(i % INBOXES) as usize];
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        // Unpaced, as galed's router appends: a message the committer is too far
        // behind to take is lost (galed counts it and tells the owner), and the
        // loss is reported beside the rate rather than hidden by waiting.
        match s.append(inbox, id, now, &body) {
            Ok(_) => {}
            Err(StoreError::Overloaded) => refused += 1,
            Err(e) => panic!("append: {e}"),
        }
    }
    let appended = start.elapsed();
    s.flush().expect("flush");
    let stored = start.elapsed();
    let st = s.stats();
    println!(
        "stored   {} of {n} messages of {MSG_BYTES} B in {INBOXES} inboxes: {:>9.0} msg/s durable, loss {refused} ({:.2}%: refused while the committer was a full queue behind) ({:.2} s; appends alone {:.0} msg/s; {} commits)",
        n - refused,
        (n - refused) as f64 / stored.as_secs_f64(),
        refused as f64 * 100.0 / n as f64,
        stored.as_secs_f64(),
        n as f64 / appended.as_secs_f64(),
        st.counters.commits,
    );
    println!(
        "on disk  {:.1} MB for {:.1} MB of payload",
        st.file_bytes as f64 / 1e6,
        st.bytes as f64 / 1e6
    );

    let start = Instant::now();
    let mut got = 0u64;
    for name in &names {
        let mut after = 0;
        loop {
            let b = s.read(name, "laptop", after, PAGE).expect("read");
            let Some(last) = b.messages.last() else { break };
            after = last.seq;
            got += b.messages.len() as u64;
        }
        s.ack(name, "laptop", after).expect("ack");
    }
    let replayed = start.elapsed();
    assert_eq!(got, n - refused);
    s.flush().expect("flush");
    let all = start.elapsed();
    println!(
        "replayed {got} messages in pages of {PAGE}: {:>9.0} msg/s ({:.2} s; {:.2} s with deleting them after the acks)",
        got as f64 / replayed.as_secs_f64(),
        replayed.as_secs_f64(),
        all.as_secs_f64(),
    );
}
