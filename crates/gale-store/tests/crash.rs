//! `kill -9` loses at most the commit window: a child process (this test
//! binary again) appends without pause and prints the highest seq it knows is
//! on disk; the parent kills it with SIGKILL, reopens the store and finds every
//! message up to that seq.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gale_store::{CommitPolicy, Limits, Store, StoreError};

const CHILD_DIR: &str = "GALE_STORE_CRASH_CHILD_DIR";
const INBOX: &str = "egnor@ofb.net";
const TEST: &str = "kill_9_loses_nothing_reported_durable";

/// No limit gets in the way: everything appended is kept.
fn limits() -> Limits {
    Limits {
        inbox_messages: u64::MAX,
        inbox_bytes: u64::MAX,
        total_messages: u64::MAX,
        total_bytes: u64::MAX,
        ..Limits::default()
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; 300];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

/// The child: appends forever, printing `durable N` every 500 messages.
fn child(dir: &str) -> ! {
    let s = Store::open(dir.as_ref(), limits()).expect("child open");
    s.register(INBOX, b"key", &[INBOX.to_string()]);
    let mut out = std::io::stdout().lock();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut expected = 1;
    loop {
        for _ in 0..500 {
            match s.append(INBOX, [1; 16], now, &payload(expected)) {
                Ok(seq) => {
                    assert_eq!(seq, expected);
                    expected += 1;
                }
                Err(StoreError::Overloaded) => std::thread::yield_now(),
                Err(e) => panic!("append: {e}"),
            }
        }
        let durable = s.durable_seq(INBOX).expect("registered");
        // The parent may already have killed us; nothing to do about it.
        let _ = writeln!(out, "durable {durable} appended {}", expected - 1);
        let _ = out.flush();
    }
}

#[test]
fn kill_9_loses_nothing_reported_durable() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
    }
    let d = tempfile::tempdir().unwrap();
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let (mut durable, mut appended) = (0u64, 0u64);
    let start = Instant::now();
    for line in lines {
        let line = line.expect("child stdout");
        let mut w = line.split_whitespace();
        if w.next() != Some("durable") {
            continue;
        }
        durable = w.next().and_then(|n| n.parse().ok()).expect("a seq");
        appended = w.nth(1).and_then(|n| n.parse().ok()).expect("a seq");
        // Kill it mid-stream, once a good number of commits are behind us.
        if durable >= 30_000 || start.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    c.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    c.wait().expect("reap");
    assert!(durable > 0, "the child reported nothing durable");

    let s = Store::open(d.path(), limits()).expect("reopen after kill -9");
    assert_eq!(s.list().len(), 1);
    let b = s.read(INBOX, "laptop", 0, usize::MAX).expect("read");
    let kept = b.messages.len() as u64;
    assert!(kept >= durable, "{kept} kept < {durable} reported durable");
    for (i, m) in b.messages.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(m.seq, seq, "a hole in the inbox at {seq}");
        assert_eq!(m.bytes, payload(seq));
    }
    eprintln!(
        "reported durable {durable}, appended at least {appended}, found {kept} after kill -9"
    );
    // What was lost is what was queued or being committed: bounded by the
    // policy's bound on queued messages (the committer takes a whole queue).
    let bound = 2 * CommitPolicy::default().max_pending as u64;
    assert!(
        appended - kept <= bound,
        "lost {} > {bound}",
        appended - kept
    );
    // Seqs go on after the last kept message.
    assert!(s.append(INBOX, [2; 16], 0, b"x").unwrap() > kept);
}
