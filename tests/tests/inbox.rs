//! Inboxes (protocol version 3): private messages sent while their owner is
//! away wait on the server, through crashes, for each of the owner's devices,
//! and only the owner may read them. Real galed, gsub and gsend processes.

use std::process::{Command, Output, Stdio};

use gale_tests::keys::introduce;
use gale_tests::*;

/// `gsub --drain --json` as `user` with `args`: what the inbox holds, then exit.
fn drain(user: &User, server: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("gsub"));
    user.env(&mut cmd)
        .args(["-s", server, "--drain", "--json", "--key-timeout", "0"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run gsub --drain")
}

/// The bodies of the messages in a drain's JSON output, in order.
fn bodies(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("type").is_none())
        .map(|v| {
            v["body"]
                .as_str()
                .unwrap_or_default()
                .trim_end()
                .to_string()
        })
        .collect()
}

/// The `gap` objects in a drain's JSON output.
fn gaps(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "gap")
        .collect()
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "gsub --drain failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// alice and bob, each with a key, and alice holding bob's.
fn alice_and_bob() -> (User, User) {
    let (alice, bob) = (
        user_with_key("alice@example.org"),
        user_with_key("bob@example.org"),
    );
    introduce(&bob, &alice);
    (alice, bob)
}

fn send(from: &User, server: &str, to: &str, body: &str) {
    from.send_ok(server, &[to], body);
}

#[test]
fn three_messages_survive_a_kill_9_and_are_read_once_in_order() {
    let mut g = Galed::start(&[]);
    let (alice, bob) = alice_and_bob();
    // bob's laptop has been here before: his inbox exists, and he left.
    assert!(bodies(ok(&drain(&bob, &g.server(), &["--device", "laptop"]))).is_empty());
    for body in ["one", "two", "three"] {
        send(&alice, &g.server(), "bob@example.org", body);
    }
    // gsend returned once galed had the messages; the store commits within
    // 5 ms. Wait for the commit to be reported, then kill galed without warning.
    let status = wait_status(&g, |s| s["inboxes"]["messages"] == 3);
    assert_eq!(status["inboxes"]["list"][0]["name"], "bob@example.org");
    g.kill9();
    g.restart();
    let out = drain(&bob, &g.server(), &["--device", "laptop"]);
    assert_eq!(bodies(ok(&out)), ["one", "two", "three"]);
    assert!(gaps(&out).is_empty(), "no gap: {:?}", gaps(&out));
    // Read once: the next drain finds nothing, even after another restart
    // (once the acknowledgement is committed, within the same 5 ms).
    wait_status(&g, |s| s["inboxes"]["messages"] == 0);
    g.kill9();
    g.restart();
    assert!(bodies(ok(&drain(&bob, &g.server(), &["--device", "laptop"]))).is_empty());
}

/// Asks galed for its status until `done` holds for it.
fn wait_status(g: &Galed, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let out = Command::new(bin("galed"))
            .args(["--status", &g.server(), "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "status never matched: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn each_device_gets_everything() {
    let g = Galed::start(&[]);
    let (alice, bob) = alice_and_bob();
    for device in ["laptop", "desktop"] {
        ok(&drain(&bob, &g.server(), &["--device", device]));
    }
    send(&alice, &g.server(), "bob@example.org", "for both");
    send(&alice, &g.server(), "bob@example.org", "and again");
    let laptop = drain(&bob, &g.server(), &["--device", "laptop"]);
    assert_eq!(bodies(ok(&laptop)), ["for both", "and again"]);
    let desktop = drain(&bob, &g.server(), &["--device", "desktop"]);
    assert_eq!(bodies(ok(&desktop)), ["for both", "and again"]);
    // Both have read them: the store let them go.
    wait_status(&g, |s| s["inboxes"]["messages"] == 0);
}

#[test]
fn a_running_gsub_gets_its_private_messages_once_and_later_ones_wait() {
    let g = Galed::start(&[]);
    let (alice, bob) = alice_and_bob();
    // Subscribed to something else: the inbox brings bob's own messages.
    let sub = bob.gsub(
        &g.server(),
        &["--device", "laptop", "pub.other@example.org"],
    );
    sub.stderr.wait_for("inbox bob@example.org");
    send(&alice, &g.server(), "bob@example.org", "live");
    assert_eq!(sub.body(), "live");
    // gsub acknowledges what it has shown (a gsub killed in the instant
    // between showing and acknowledging would be shown it again: at least
    // once, never lost).
    wait_status(&g, |s| s["inboxes"]["list"][0]["devices"][0]["acked"] == 1);
    drop(sub);
    send(&alice, &g.server(), "bob@example.org", "while away");
    let out = drain(&bob, &g.server(), &["--device", "laptop"]);
    assert_eq!(
        bodies(ok(&out)),
        ["while away"],
        "the live one was not shown twice"
    );
}

#[test]
fn an_overflowing_inbox_keeps_the_newest_and_says_how_many_were_dropped() {
    let (g, _cfg) = galed_with("inbox_max_messages = 2\n");
    let (alice, bob) = alice_and_bob();
    ok(&drain(&bob, &g.server(), &["--device", "laptop"]));
    for n in 1..=5 {
        send(&alice, &g.server(), "bob@example.org", &format!("m{n}"));
    }
    wait_status(&g, |s| s["inboxes"]["dropped_limit"] == 3);
    let out = drain(&bob, &g.server(), &["--device", "laptop"]);
    assert_eq!(bodies(ok(&out)), ["m4", "m5"]);
    let gaps = gaps(&out);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["count"], 3);
    assert_eq!(gaps[0]["inbox"], "bob@example.org");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missed 3 messages in inbox bob@example.org"),
        "{err}"
    );
}

#[test]
fn a_stranger_cannot_open_someone_elses_inbox() {
    let g = Galed::start(&[]);
    let (alice, bob) = alice_and_bob();
    ok(&drain(&bob, &g.server(), &["--device", "laptop"]));
    send(&alice, &g.server(), "bob@example.org", "secret");
    // mallory has a key of her own, and names bob's inbox.
    let mallory = user_with_key("mallory@example.org");
    let out = drain(
        &mallory,
        &g.server(),
        &["--durable", "bob@example.org", "--device", "laptop"],
    );
    assert_eq!(out.status.code(), Some(1), "refused");
    assert!(bodies(&out).is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("inbox bob@example.org belongs to another key"),
        "{err}"
    );
    // Nothing was taken from bob.
    let out = drain(&bob, &g.server(), &["--device", "laptop"]);
    assert_eq!(bodies(ok(&out)), ["secret"]);
    let s = wait_status(&g, |s| s["inboxes"]["refused"] == 1);
    assert_eq!(s["inboxes"]["count"], 1);
}

#[test]
fn a_named_durable_subscription_keeps_its_locations() {
    let g = Galed::start(&[]);
    let bob = user_with_key("bob@example.org");
    let args = [
        "--durable",
        "alerts",
        "--device",
        "cron",
        "pub.alerts@example.org",
    ];
    ok(&drain(&bob, &g.server(), &args));
    for n in 1..=3 {
        send_ok(
            &g.server(),
            &["pub.alerts@example.org"],
            &format!("alert {n}"),
        );
    }
    let out = drain(&bob, &g.server(), &args);
    assert_eq!(bodies(ok(&out)), ["alert 1", "alert 2", "alert 3"]);
}

#[test]
fn an_unusable_store_leaves_live_delivery_working_and_says_so() {
    // The data directory is a file: the store cannot be opened.
    let file = tempfile::NamedTempFile::new().unwrap();
    let g = Galed::start(&["--data-dir", file.path().to_str().unwrap()]);
    g.stderr.wait_for("running without inboxes");
    let (alice, bob) = alice_and_bob();
    let sub = bob.gsub(&g.server(), &["--device", "laptop", "bob@example.org"]);
    sub.stderr.wait_for("inbox bob@example.org not opened");
    send(&alice, &g.server(), "bob@example.org", "still live");
    assert_eq!(sub.body(), "still live");
    let s = wait_status(&g, |s| s["inboxes"]["enabled"] == false);
    let why = s["inboxes"]["unavailable"].as_str().unwrap_or_default();
    assert!(why.contains("cannot be opened"), "{s}");
}

#[test]
fn a_store_at_its_size_limit_keeps_live_traffic_and_reports_the_gap() {
    // A store file limit far below what the store needs: every commit of a
    // message fails as full.
    let (g, _cfg) = galed_with("store_max_file_bytes = 4096\n");
    let (alice, bob) = alice_and_bob();
    ok(&drain(&bob, &g.server(), &["--device", "laptop"]));
    let sub = bob.gsub(&g.server(), &["--device", "desktop", "bob@example.org"]);
    for n in 1..=3 {
        send(&alice, &g.server(), "bob@example.org", &format!("live {n}"));
    }
    for n in 1..=3 {
        assert_eq!(sub.body(), format!("live {n}"));
    }
    let s = wait_status(&g, |s| s["inboxes"]["errors"].as_u64() > Some(0));
    assert!(s["inboxes"]["last_error"].is_string(), "{s}");
    drop(sub);
    // The laptop was away: it is told what the store could not keep.
    let out = drain(&bob, &g.server(), &["--device", "laptop"]);
    ok(&out);
    let told: u64 = gaps(&out).iter().filter_map(|g| g["count"].as_u64()).sum();
    assert!(told >= 3, "gaps told: {:?}", gaps(&out));
}

#[test]
fn an_inbox_taken_by_someone_else_is_refused_until_the_operator_drops_it() {
    let mut g = Galed::start(&[]);
    let (alice, bob) = alice_and_bob();
    // mallory gets there first, naming bob's inbox with her key.
    let mallory = user_with_key("mallory@example.org");
    let squat = [
        "--durable",
        "bob@example.org",
        "--device",
        "x",
        "bob@example.org",
    ];
    ok(&drain(&mallory, &g.server(), &squat));
    let out = drain(&bob, &g.server(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another key"));
    // The operator removes it, with galed stopped; bob's next gsub creates his.
    g.kill9();
    let dir = g.data_dir().unwrap().to_str().unwrap().to_string();
    let running = Command::new(bin("galed"))
        .args(["--data-dir", &dir, "--drop-inbox", "bob@example.org"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&running.stderr);
    assert!(running.status.success(), "{said}");
    assert!(said.contains("removed inbox bob@example.org"), "{said}");
    let again = Command::new(bin("galed"))
        .args(["--data-dir", &dir, "--drop-inbox", "bob@example.org"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "no such inbox any more");
    g.restart();
    let out = drain(&bob, &g.server(), &["--device", "laptop"]);
    assert!(String::from_utf8_lossy(&ok(&out).stderr).contains("created inbox bob@example.org"));
    send(&alice, &g.server(), "bob@example.org", "for bob");
    assert_eq!(
        bodies(ok(&drain(&bob, &g.server(), &["--device", "laptop"]))),
        ["for bob"]
    );
}

#[test]
fn an_inbox_keeps_its_interest_on_the_links_while_its_owner_is_away() {
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    wait_until("the link", || a.links_up() == 1);
    let (alice, bob) = alice_and_bob();
    // bob's inbox lives on B; he has gone.
    ok(&drain(&bob, &b.server(), &["--device", "laptop"]));
    wait_until("B's interest in bob's inbox", || {
        a.link("B")
            .is_some_and(|l| l["interest_received"].as_u64() >= Some(1))
    });
    // alice writes from the other server.
    send(&alice, &a.server(), "bob@example.org", "across the link");
    let out = drain(&bob, &b.server(), &["--device", "laptop"]);
    assert_eq!(bodies(ok(&out)), ["across the link"]);
}
