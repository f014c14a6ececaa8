//! End-to-end: real galed, gsub and gsend processes on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gale_tests::*;

#[test]
fn delivers_a_message_with_its_fields() {
    let g = Galed::start(&[]);
    let sub = Gsub::start(&g.server(), &["pub.tv@example.org"]);
    send_ok(
        &g.server(),
        &[
            "-t",
            "message.subject=buffy",
            "pub.tv.buffy@example.org",
            "/spoilers",
        ],
        "hello there\n",
    );
    let m = sub.message();
    assert_eq!(m["body"], "hello there\n");
    assert_eq!(m["to"], serde_json::json!(["pub.tv.buffy@example.org"]));
    assert_eq!(m["keywords"], serde_json::json!(["spoilers"]));
    // Signed by default with the sender's own (unsigned, so unverified) key.
    assert_eq!(m["from"], "tester@example.org");
    assert_eq!(m["verify"], "unverified");
    assert_eq!(m["encrypted"], false);
    assert_eq!(m["id"].as_str().map(str::len), Some(32));
    assert!(m["time"].is_string(), "{m}");
    let frags = m["fragments"].as_array().unwrap();
    assert!(
        frags
            .iter()
            .any(|f| f["name"] == "message.subject" && f["value"] == "buffy"),
        "{m}"
    );
}

#[test]
fn prefix_and_exclusion_subscriptions() {
    let g = Galed::start(&[]);
    let s = g.server();
    let sub = Gsub::start(
        &s,
        &[
            "pub@example.org",
            "-",
            "pub.spam@example.org",
            "pub.spam.ok@example.org",
        ],
    );
    for (to, body) in [
        ("pub.tv.buffy@example.org", "1 wanted"),
        ("pub.spam.eggs@example.org", "2 excluded"),
        ("pub.spamalot@example.org", "3 wanted: not under pub.spam"),
        ("pubs@example.org", "4 not under pub"),
        ("pub.spam.ok.x@example.org", "5 wanted: taken back"),
        ("pub@example.com", "6 other domain"),
        ("pub@example.org", "7 wanted"),
    ] {
        // pubs@example.org is not under pub, and has no key.
        send_ok(&s, &["--allow-clear", "-m", body, to], "");
    }
    let got: Vec<String> = (0..4).map(|_| sub.body()).collect();
    assert_eq!(
        got,
        [
            "1 wanted",
            "3 wanted: not under pub.spam",
            "5 wanted: taken back",
            "7 wanted"
        ]
    );
}

#[test]
fn gsub_reconnects_after_galed_is_killed_and_restarted() {
    let mut g = Galed::start(&["--keepalive-ms", "1000"]);
    let s = g.server();
    let sub = Gsub::start(&s, &["news@example.org"]);
    // news@example.org has no key: in clear only with --allow-clear.
    send_ok(
        &s,
        &["--allow-clear", "-m", "before", "news@example.org"],
        "",
    );
    assert_eq!(sub.body(), "before");
    g.kill9();
    sub.stderr.wait_for("lost");
    g.restart();
    sub.stderr.wait_for("gsub: subscribed");
    send_ok(
        &s,
        &["--allow-clear", "-m", "after", "news@example.org"],
        "",
    );
    assert_eq!(sub.body(), "after");
}

#[test]
fn gsend_during_an_outage_delivers_when_the_server_returns() {
    let mut g = Galed::down();
    let addr = g.server();
    // gsend starts while nothing listens, and keeps trying.
    let mut send = gsend_spawn(
        &addr,
        &[
            "--timeout",
            "60",
            "--allow-clear",
            "-m",
            "queued while down",
            "late@example.org",
        ],
    );
    drop(send.stdin.take());
    let err = Lines::spawn_reader(send.stderr.take().unwrap());
    err.wait_for("cannot connect");
    // Hold gsend back while the server returns and a subscriber is in place, so
    // the check below cannot depend on who got there first.
    signal_child(&send, Signal::STOP);
    g.restart();
    let sub = Gsub::start(&addr, &["late@example.org"]);
    signal_child(&send, Signal::CONT);
    let status = send.wait().unwrap();
    assert!(status.success(), "gsend: {status}: {}", err.dump());
    assert_eq!(sub.body(), "queued while down");
}

#[test]
fn gsend_with_no_server_fails_clearly_after_its_timeout() {
    let addr = Galed::down().server();
    let out = gsend(
        &addr,
        &[
            "--timeout",
            "1",
            "--allow-clear",
            "-m",
            "nobody home",
            "x@example.org",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "names the server: {err}");
    assert!(
        err.to_lowercase().contains("refused") || err.contains("timed out"),
        "says why: {err}"
    );
}

#[test]
fn garbage_oversized_and_half_frames_leave_other_clients_receiving() {
    let g = Galed::start(&[]);
    let s = g.server();
    let sub = Gsub::start(&s, &["calm@example.org"]);

    let mut garbage = TcpStream::connect(g.addr).unwrap();
    garbage
        .write_all(b"\x00\x00\x00\x05\x99hello, is this SMTP?\r\n")
        .unwrap();

    let mut big = TcpStream::connect(g.addr).unwrap();
    big.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0x10]).unwrap();
    let mut reply = Vec::new();
    big.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = big.read_to_end(&mut reply);
    assert!(
        reply.len() > 5 && reply[4] == 0x7F,
        "an ERROR frame before closing: {reply:?}"
    );

    let mut half = TcpStream::connect(g.addr).unwrap();
    half.write_all(&[0x00, 0x00, 0x10, 0x00, 0x10, 1, 2, 3])
        .unwrap();

    send_ok(
        &s,
        &["--allow-clear", "-m", "still here", "calm@example.org"],
        "",
    );
    assert_eq!(sub.body(), "still here");
    drop((garbage, half));
    send_ok(
        &s,
        &["--allow-clear", "-m", "and now", "calm@example.org"],
        "",
    );
    assert_eq!(sub.body(), "and now");
    g.stderr.wait_for("handshake failed");
}

#[test]
fn a_stalled_subscriber_does_not_stall_others_and_is_told_its_loss() {
    let g = Galed::start(&[]);
    let s = g.server();
    let started = std::time::Instant::now();
    let mut stalled = Gsub::start_stalled(&s, &["flood@example.org"]);
    // A subscriber that keeps up: it must get every message.
    let mut live = RawClient::connect(g.addr);
    live.subscribe("flood@example.org");
    // 20 MB: far more than the pipe, the sockets and galed's 1 MiB queue can hold.
    let n = 20_000u64;
    let reader = std::thread::spawn(move || live.count(n + 1));
    let pad = "x".repeat(1000);
    let input: String = (0..n).map(|i| format!("{i} {pad}\n")).collect();
    send_ok(
        &s,
        &["--allow-clear", "--lines", "flood@example.org"],
        &input,
    );
    send_ok(&s, &["--allow-clear", "-m", "end", "flood@example.org"], "");
    // The publisher finished, and the live subscriber got everything, while the
    // stalled one sat there.
    let (got, lost) = reader.join().unwrap();
    assert_eq!((got, lost), (n + 1, 0), "the live subscriber lost nothing");

    // The stalled one held the publisher back only within its hold budget: 20 ms,
    // 3% of its age and 500 ns per message written to it after its socket was
    // full (at most all it was written; plus timer slack).
    let st = g.status();
    let c = st["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["agent"].as_str().unwrap_or("").starts_with("gsub"))
        .expect("the stalled gsub's connection")
        .clone();
    let age_ms = started.elapsed().as_millis() as u64;
    let budget = 20 + age_ms * 3 / 100 + c["frames_out"].as_u64().unwrap() / 2000;
    let slack = 10 + 2 * c["holds"].as_u64().unwrap();
    let held = c["held_ms"].as_u64().unwrap();
    assert!(
        held <= budget + slack,
        "held {held} ms; budget {budget} ms: {c}"
    );
    assert!(c["dropped"].as_u64().unwrap() > 0, "{c}");
    g.stderr.wait_for("reads too slowly: dropped");

    // Let the stalled one drain: every message is either shown or reported lost.
    stalled.resume();
    let (shown, reported) = drain_gsub(&stalled, n + 1);
    assert_eq!(
        shown + reported,
        n + 1,
        "shown {shown}, reported lost {reported}"
    );
    assert!(reported > 0 && shown < n + 1);
}

/// Reads a gsub's JSON lines and its "lost N messages" reports until `n`
/// messages are accounted for; returns (shown, reported lost).
fn drain_gsub(g: &Gsub, n: u64) -> (u64, u64) {
    let (mut shown, mut lost) = (0u64, 0u64);
    let mut quiet = std::time::Instant::now();
    while shown + lost < n {
        let mut moved = false;
        if let Some(Some(_)) = g.stdout.next_within(Duration::from_millis(5)) {
            shown += 1;
            moved = true;
        }
        if let Some(Some(l)) = g.stderr.next_within(Duration::from_millis(1)) {
            if let Some(rest) = l.strip_prefix("gsub: lost ") {
                lost += rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
            moved = true;
        }
        if moved {
            quiet = std::time::Instant::now();
        }
        assert!(
            quiet.elapsed() < DEADLINE,
            "stuck at {shown} shown and {lost} reported lost of {n}"
        );
    }
    (shown, lost)
}

#[test]
fn a_burst_reaches_a_subscriber_that_keeps_up() {
    // The publisher writes as fast as its socket takes it; the subscriber reads as
    // fast as it can. galed holds the publisher back instead of dropping.
    let g = Galed::start(&[]);
    let mut subs: Vec<RawClient> = (0..4).map(|_| RawClient::connect(g.addr)).collect();
    for s in &mut subs {
        s.subscribe("burst@example.org");
    }
    let n = 200_000u64;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut s| std::thread::spawn(move || s.count(n)))
        .collect();
    let mut p = RawClient::connect(g.addr);
    p.publish_burst("burst@example.org", n, 128);
    for r in readers {
        assert_eq!(r.join().unwrap(), (n, 0), "every message, no loss");
    }
    let st = g.status();
    assert_eq!(st["delivered"].as_u64(), Some(4 * n), "{st}");
}

#[test]
fn a_killed_clients_will_is_delivered() {
    let g = Galed::start(&[]);
    let s = g.server();
    let watcher = Gsub::start(&s, &["_gale.notice@example.org"]);
    let mut mortal = Gsub::start(
        &s,
        &[
            "--presence",
            "in.present",
            "--id",
            "mortal@example.org",
            "x@example.org",
        ],
    );
    let hello = watcher.message();
    assert_eq!(
        hello["to"],
        serde_json::json!(["_gale.notice.mortal@example.org"]),
        "{hello}"
    );
    mortal.kill9();
    let will = watcher.message();
    assert_eq!(
        will["to"],
        serde_json::json!(["_gale.notice.mortal@example.org"])
    );
    let frags = will["fragments"].as_array().unwrap();
    assert!(
        frags
            .iter()
            .any(|f| f["name"] == "notice.presence" && f["value"] == "out.disconnected"),
        "{will}"
    );
}

#[test]
fn gsend_lines_keeps_order() {
    let g = Galed::start(&[]);
    let s = g.server();
    let sub = Gsub::start(&s, &["log.syslog@example.org"]);
    let n = 2_000;
    let input: String = (0..n).map(|i| format!("line {i}\n")).collect();
    send_ok(
        &s,
        &["--allow-clear", "--lines", "log.syslog@example.org"],
        &input,
    );
    for i in 0..n {
        assert_eq!(sub.body().trim_end(), format!("line {i}"));
    }
}

#[test]
fn galed_shuts_down_cleanly_on_sigterm() {
    let mut g = Galed::start(&[]);
    let sub = Gsub::start(&g.server(), &["x@example.org"]);
    g.signal(Signal::TERM);
    let status = g.wait();
    assert!(status.success(), "{status}");
    g.stderr.wait_for("shut down cleanly");
    sub.stderr.wait_for("shutting down");
    let _ = Duration::ZERO;
}

#[test]
fn many_stalled_subscribers_cost_a_publisher_no_more_than_one() {
    // Ten subscribers on ten locations that never read: each may hold publishers
    // for its own share of time, but one publisher's holds on credit nobody
    // earned by reading are capped (20 ms, then 5% of its time), however many
    // there are.
    let g = Galed::start(&[]);
    let locs: Vec<String> = (0..10).map(|i| format!("stuck{i}@example.org")).collect();
    let mut stalled = Vec::new();
    for l in &locs {
        let mut c = RawClient::connect(g.addr);
        c.subscribe(l);
        stalled.push(c); // never read again
    }
    let started = std::time::Instant::now();
    let mut p = RawClient::connect(g.addr);
    for l in &locs {
        p.publish_burst(l, 40_000, 128);
    }
    let age_ms = started.elapsed().as_millis() as u64;
    let st = g.status();
    let clients = st["clients"].as_array().unwrap();
    let held: u64 = clients.iter().map(|c| c["held_ms"].as_u64().unwrap()).sum();
    let holds: u64 = clients.iter().map(|c| c["holds"].as_u64().unwrap()).sum();
    let dropped: u64 = clients.iter().map(|c| c["dropped"].as_u64().unwrap()).sum();
    assert!(dropped > 0, "{st}");
    let budget = 20 + age_ms * 5 / 100 + 10 + 2 * holds;
    assert!(
        held <= budget,
        "publisher held {held} ms in {holds} holds over {age_ms} ms; budget {budget} ms"
    );
    drop(stalled);
}
