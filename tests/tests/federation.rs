//! Federation end to end: trees of real galed processes on loopback.

use std::collections::HashSet;

use gale_tests::*;

/// Waits until `g` has heard interest for something over its link to `peer`.
fn wait_interest(g: &Galed, peer: &str, at_least: u64) {
    wait_until(&format!("{} to hear interest from {peer}", g.addr), || {
        g.link(peer)
            .is_some_and(|l| l["interest_received"].as_u64() >= Some(at_least))
    });
}

#[test]
fn a_line_of_three_delivers_end_to_end() {
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    let c = Galed::start_linked("C", &[b.server()], &[]);
    let sub = Gsub::start(&c.server(), &["pub.news@example.org"]);
    wait_interest(&a, "B", 1);
    send_ok(
        &a.server(),
        &["-m", "over two hops", "pub.news.today@example.org"],
        "",
    );
    assert_eq!(sub.body(), "over two hops");
    // And back the other way.
    let sub_a = Gsub::start(&a.server(), &["pub.back@example.org"]);
    wait_interest(&c, "B", 1);
    send_ok(&c.server(), &["-m", "and back", "pub.back@example.org"], "");
    assert_eq!(sub_a.body(), "and back");
    let status = b.status();
    assert_eq!(status["links"].as_array().unwrap().len(), 2, "{status}");
}

#[test]
fn a_tree_of_seven_delivers_to_every_leaf_once() {
    //        R
    //      /   \
    //     M1    M2
    //    / \   / \
    //   L1 L2 L3 L4
    let r = Galed::start_linked("R", &[], &[]);
    let m1 = Galed::start_linked("M1", &[r.server()], &[]);
    let m2 = Galed::start_linked("M2", &[r.server()], &[]);
    let leaves: Vec<Galed> = [("L1", &m1), ("L2", &m1), ("L3", &m2), ("L4", &m2)]
        .iter()
        .map(|(n, m)| Galed::start_linked(n, &[m.server()], &[]))
        .collect();
    let subs: Vec<Gsub> = leaves
        .iter()
        .map(|l| Gsub::start(&l.server(), &["pub.all@example.org"]))
        .collect();
    // Interest from all four leaves has reached the root over both branches.
    wait_interest(&r, "M1", 1);
    wait_interest(&r, "M2", 1);
    // A leaf's own interest reaches its siblings' middle server through R.
    wait_interest(&m1, "R", 1);
    wait_interest(&m2, "R", 1);
    send_ok(
        &leaves[0].server(),
        &["-m", "from a leaf", "pub.all@example.org"],
        "",
    );
    send_ok(
        &r.server(),
        &["-m", "from the root", "pub.all@example.org"],
        "",
    );
    for (i, s) in subs.iter().enumerate() {
        // L1's gsub is on the publishing server: it gets its neighbour's message too.
        let got: Vec<String> = (0..2).map(|_| s.body()).collect();
        assert_eq!(got, ["from a leaf", "from the root"], "leaf {}", i + 1);
    }
    // Nothing more arrives: each message came exactly once.
    send_ok(&r.server(), &["-m", "sentinel", "pub.all@example.org"], "");
    for s in &subs {
        assert_eq!(s.body(), "sentinel");
    }
}

#[test]
fn a_message_nobody_beyond_wants_never_leaves_its_server() {
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    wait_until("the link", || a.links_up() == 1);
    let local = Gsub::start(&a.server(), &["only.here@example.org"]);
    let remote = Gsub::start(&b.server(), &["wanted.there@example.org"]);
    wait_interest(&a, "B", 1);
    for i in 0..20 {
        send_ok(
            &a.server(),
            &[
                "--allow-clear",
                "-m",
                &format!("local {i}"),
                "only.here@example.org",
            ],
            "",
        );
    }
    for i in 0..20 {
        assert_eq!(local.body(), format!("local {i}"));
    }
    send_ok(
        &a.server(),
        &["--allow-clear", "-m", "for b", "wanted.there@example.org"],
        "",
    );
    assert_eq!(remote.body(), "for b");
    // B received exactly one message over the link: the one it wanted.
    let link = b.link("A").expect("link up");
    assert_eq!(link["messages_in"], 1, "{link}");
}

#[test]
fn a_cycle_delivers_each_message_exactly_once_and_says_so() {
    // A-B, B-C, C-A: a misconfigured cycle.
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    let c = Galed::start_linked("C", &[b.server()], &["--link", &a.server()]);
    wait_until("the cycle", || {
        a.links_up() == 2 && b.links_up() == 2 && c.links_up() == 2
    });
    let subs: Vec<Gsub> = [&a, &b, &c]
        .iter()
        .map(|g| Gsub::start(&g.server(), &["pub.loop@example.org"]))
        .collect();
    for (g, peers) in [(&a, ["B", "C"]), (&b, ["A", "C"]), (&c, ["A", "B"])] {
        for p in peers {
            wait_interest(g, p, 1);
        }
    }
    let n = 30;
    for i in 0..n {
        send_ok(
            &[&a, &b, &c][i % 3].server(),
            &["-m", &format!("m{i}"), "pub.loop@example.org"],
            "",
        );
    }
    send_ok(&a.server(), &["-m", "end", "pub.loop@example.org"], "");
    for s in &subs {
        let mut ids = HashSet::new();
        let mut bodies = HashSet::new();
        loop {
            let m = s.message();
            assert!(ids.insert(m["id"].to_string()), "duplicate id {m}");
            let body = m["body"].as_str().unwrap().trim_end().to_string();
            if body == "end" {
                break;
            }
            assert!(bodies.insert(body.clone()), "duplicate body {body}");
        }
        assert_eq!(bodies.len(), n, "every message once");
    }
    // Some server noticed a message coming round again and named the links.
    let total: u64 = [&a, &b, &c]
        .iter()
        .map(|g| g.status()["duplicates_dropped"].as_u64().unwrap())
        .sum();
    assert!(total > 0, "the cycle produced duplicates that were dropped");
    let warned = [&a, &b, &c]
        .iter()
        .any(|g| g.stderr.dump().contains("form a cycle"));
    assert!(warned, "a warning names the cycle");
}

#[test]
fn the_tree_heals_around_a_dead_server_with_alternates() {
    // A-B-C, and C lists A as B's alternate.
    let a = Galed::start_linked("A", &[], &[]);
    let mut b = Galed::start_linked("B", &[a.server()], &[]);
    let c = Galed::start_linked("C", &[format!("{},{}", b.server(), a.server())], &[]);
    let sub = Gsub::start(&c.server(), &["pub.heal@example.org"]);
    wait_interest(&a, "B", 1);
    send_ok(&a.server(), &["-m", "via B", "pub.heal@example.org"], "");
    assert_eq!(sub.body(), "via B");
    b.kill9();
    wait_interest(&a, "C", 1);
    send_ok(&a.server(), &["-m", "healed", "pub.heal@example.org"], "");
    assert_eq!(sub.body(), "healed");
}

#[test]
fn every_server_restarted_at_once_comes_back() {
    let mut a = Galed::start_linked("A", &[], &[]);
    let mut b = Galed::start_linked("B", &[a.server()], &[]);
    let sub_a = Gsub::start(&a.server(), &["pub.both@example.org"]);
    let sub_b = Gsub::start(&b.server(), &["pub.both@example.org"]);
    wait_interest(&a, "B", 1);
    wait_interest(&b, "A", 1);
    a.kill9();
    b.kill9();
    a.restart();
    b.restart();
    sub_a.stderr.wait_for("gsub: subscribed");
    sub_b.stderr.wait_for("gsub: subscribed");
    wait_interest(&a, "B", 1);
    wait_interest(&b, "A", 1);
    send_ok(
        &a.server(),
        &["-m", "after the storm", "pub.both@example.org"],
        "",
    );
    assert_eq!(sub_a.body(), "after the storm");
    assert_eq!(sub_b.body(), "after the storm");
}

#[test]
fn interest_is_withdrawn_on_unsubscribe_and_on_client_death() {
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    wait_until("the link", || a.links_up() == 1);
    let mut raw = RawClient::connect(b.addr);
    raw.subscribe("pub.w@example.org");
    wait_interest(&a, "B", 1);
    raw.unsubscribe("pub.w@example.org");
    wait_until("withdrawal after unsubscribe", || {
        a.link("B").is_some_and(|l| l["interest_received"] == 0)
    });
    // Without an inbox, which would keep its location as interest (tests/inbox.rs).
    let mut sub = Gsub::start(
        &b.server(),
        &["--no-inbox", "pub.x@example.org", "pub.y@example.org"],
    );
    wait_interest(&a, "B", 2);
    sub.kill9();
    wait_until("withdrawal after the client died", || {
        a.link("B").is_some_and(|l| l["interest_received"] == 0)
    });
}

#[test]
fn wills_cross_links_and_failover_keeps_receiving() {
    let mut a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    let watcher = Gsub::start(&a.server(), &["_gale.notice@example.org"]);
    wait_interest(&b, "A", 1);
    let mut mortal = Gsub::start(
        &b.server(),
        &[
            "-p",
            "in.present",
            "--id",
            "mortal@example.org",
            "x@example.org",
        ],
    );
    assert_eq!(
        watcher.message()["to"][0],
        "_gale.notice.mortal@example.org"
    );
    mortal.kill9();
    let will = watcher.message();
    let frags = will["fragments"].as_array().unwrap();
    assert!(
        frags.iter().any(|f| f["value"] == "out.disconnected"),
        "{will}"
    );

    // A client listing both servers moves to B when A dies, and keeps receiving.
    let mover = Gsub::start(
        &format!("{},{}", a.server(), b.server()),
        &["pub.move@example.org"],
    );
    a.kill9();
    mover
        .stderr
        .wait_for(&format!("subscribed to 1 location on {}", b.addr));
    send_ok(
        &b.server(),
        &["-m", "found you", "pub.move@example.org"],
        "",
    );
    assert_eq!(mover.body(), "found you");
}

#[test]
fn a_burst_crosses_two_and_three_servers_without_loss() {
    // A - B - C, publisher on A writing as fast as its socket takes it; readers
    // that keep up on B and C get everything: links hold the publisher back
    // (TCP backpressure) instead of dropping.
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    let c = Galed::start_linked("C", &[b.server()], &[]);
    let mut on_b = RawClient::connect(b.addr);
    on_b.subscribe("burst@example.org");
    let mut on_c = RawClient::connect(c.addr);
    on_c.subscribe("burst@example.org");
    wait_interest(&a, "B", 1);
    wait_interest(&b, "C", 1);
    let n = 100_000u64;
    let rb = std::thread::spawn(move || on_b.count(n));
    let rc = std::thread::spawn(move || on_c.count(n));
    let mut p = RawClient::connect(a.addr);
    p.publish_burst("burst@example.org", n, 128);
    assert_eq!(rb.join().unwrap(), (n, 0), "two servers: every message");
    assert_eq!(rc.join().unwrap(), (n, 0), "three servers: every message");
    for g in [&a, &b] {
        let st = g.status();
        for l in st["links"].as_array().unwrap() {
            assert_eq!(l["dropped"], 0, "{l}");
        }
    }
}

#[test]
fn a_stuck_link_reports_its_losses_to_the_clients_beyond_it() {
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    let mut jammed = RawClient::connect(b.addr);
    jammed.subscribe("jam@example.org");
    let mut bystander = RawClient::connect(b.addr);
    bystander.subscribe("other@example.org");
    wait_interest(&a, "B", 2);
    // B stops reading (as a hung server would): A's link queue and the sockets
    // fill, A holds its publisher for a second, then drops, and counts what it
    // dropped by location.
    b.signal(Signal::STOP);
    let n = 60_000u64;
    let mut p = RawClient::connect(a.addr);
    p.publish_burst("jam@example.org", n, 1000);
    let link = a.link("B").expect("link to B");
    let dropped = link["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{link}");
    a.stderr.wait_for("is stuck: dropped");
    b.signal(Signal::CONT);
    // B's client is told exactly what it lost, and the bystander nothing.
    let (got, lost) = jammed.count(n);
    assert_eq!((got + lost, lost), (n, dropped), "delivered {got}");
    wait_until("B to count the reported loss", || {
        b.link("A")
            .is_some_and(|l| l["lost_upstream"].as_u64() == Some(dropped))
    });
    p.publish_burst("other@example.org", 1, 10);
    assert_eq!(
        bystander.count(1),
        (1, 0),
        "no loss reported to the bystander"
    );
}

#[test]
fn a_link_with_more_than_4096_interest_entries_comes_up_and_routes() {
    // A has 5,000 distinct subscriptions: more than one INTEREST frame may carry.
    let a = Galed::start_linked("A", &[], &[]);
    let mut sub = RawClient::connect(a.addr);
    let locs: Vec<String> = (0..5000)
        .map(|i| format!("many{i}.feed@example.org"))
        .collect();
    sub.subscribe_many(&locs);
    let b = Galed::start_linked("B", &[a.server()], &[]);
    wait_interest(&b, "A", 5000);
    let mut p = RawClient::connect(b.addr);
    p.publish_burst("many4999.feed@example.org", 1, 10);
    assert_eq!(sub.count(1), (1, 0));
    assert_eq!(b.links_up(), 1);
}

#[test]
fn links_with_different_frame_limits_report_what_does_not_fit() {
    // B takes frames of at most 4,096 bytes; A the default 1 MiB. The link keeps
    // to the smaller: a 10 KB message is dropped by A for the link, counted, and
    // reported to B's subscriber as lost; the link stays up.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.toml");
    std::fs::write(&small, "max_frame = 4096\n").unwrap();
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &["--config", small.to_str().unwrap()]);
    let mut sub = RawClient::connect(b.addr);
    sub.subscribe("big@example.org");
    wait_interest(&a, "B", 1);
    let mut p = RawClient::connect(a.addr);
    p.publish_burst("big@example.org", 1, 10_000);
    p.publish_burst("big@example.org", 1, 100);
    assert_eq!(
        sub.count(2),
        (1, 1),
        "the small one delivered, the big one reported"
    );
    let link = a.link("B").expect("the link is still up");
    assert_eq!(link["dropped"], 1, "{link}");
    assert_eq!(b.link("A").unwrap()["lost_upstream"], 1);
}
