//! End-to-end security with real galed, gsend, gsub and gkey processes: signing,
//! trust, encryption to people and groups, tampering, re-routing, what the server
//! sees, key discovery, the no-mixing rule and key files.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gale_proto::{Location, Message};
use gale_tests::*;
use serde_json::Value;

fn body(m: &Value) -> &str {
    m["body"].as_str().unwrap_or_default().trim_end()
}

fn flip_last_byte(m: &Message) -> Message {
    let mut p = m.payload.to_vec();
    let last = p.len() - 1;
    p[last] ^= 0x01;
    Message {
        payload: Bytes::from(p),
        ..m.clone()
    }
}

const FAST: &[&str] = &["--key-timeout", "1"];

#[test]
fn signed_messages_are_verified_unverified_or_anonymous() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = User::new("bob@example.org"); // trusts example.org
    d.trusted_by(&bob);
    let carol = User::new("carol@example.org"); // trusts nobody
                                                // Alice's gsub answers requests for her key; bob and carol find it that way.
    let _alice_online = alice.gsub(&s, &["alice.inbox@example.org"]);
    let bob_sub = bob.gsub(&s, &["pub.tv@example.org"]);
    let carol_sub = carol.gsub(&s, &["pub.tv@example.org"]);

    alice.send_ok(
        &s,
        &[FAST, &["-m", "signed hello", "pub.tv@example.org"]].concat(),
        "",
    );
    let m = bob_sub.message();
    assert_eq!(body(&m), "signed hello");
    assert_eq!(m["verify"], "verified", "{m}");
    assert_eq!(m["from"], "alice@example.org");
    assert_eq!(m["encrypted"], false);
    let m = carol_sub.message();
    assert_eq!(m["verify"], "unverified", "{m}");
    assert_eq!(m["from"], "alice@example.org");

    alice.send_ok(
        &s,
        &[FAST, &["-a", "-m", "guess who", "pub.tv@example.org"]].concat(),
        "",
    );
    for sub in [&bob_sub, &carol_sub] {
        let m = sub.message();
        assert_eq!(body(&m), "guess who");
        assert_eq!(m["verify"], "anonymous", "{m}");
        assert_eq!(m["from"], Value::Null);
    }
}

#[test]
fn encrypted_to_people_and_groups_only_recipients_read_it() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = d.member("bob@example.org");
    let carol = d.member("carol@example.org");
    let dave = d.member("dave@example.org");
    for u in [&alice, &bob, &carol, &dave] {
        d.trusted_by(u);
        for other in [&alice, &bob, &carol, &dave] {
            if u.id != other.id {
                introduce(other, u);
            }
        }
    }
    // A group key made and signed by the domain's owner.
    d.admin.gkey_ok(
        &[
            "gen",
            "team@example.org",
            "--member",
            "bob@example.org",
            "--member",
            "carol@example.org",
        ],
        b"",
    );
    let team = d.admin.gkey_ok(&["export", "team@example.org"], b"");
    alice.gkey_ok(&["import"], &team);

    let locs = ["bob@example.org", "carol@example.org", "team@example.org"];
    let bob_sub = bob.gsub(&s, &locs);
    let carol_sub = carol.gsub(&s, &locs);
    let dave_sub = dave.gsub(&s, &locs);

    let check = |sub: &Gsub, text: &str| {
        let m = sub.message();
        assert_eq!(body(&m), text, "{m}");
        assert_eq!(m["encrypted"], true, "{m}");
        assert_eq!(m["verify"], "verified", "{m}");
        assert_eq!(m["from"], "alice@example.org");
    };
    let not_for_dave = || {
        let m = dave_sub.message();
        assert_eq!(m["unreadable"], "not-for-you", "{m}");
        assert_eq!(m["encrypted"], true);
        assert_eq!(m["body"], Value::Null);
        assert_eq!(m["from"], Value::Null);
    };

    let err = alice.send_ok(&s, &["-m", "for bob", "bob@example.org"], "");
    assert!(!err.contains("in clear"), "{err}");
    check(&bob_sub, "for bob");
    let m = carol_sub.message();
    assert_eq!(m["unreadable"], "not-for-you", "{m}");
    not_for_dave();

    alice.send_ok(
        &s,
        &["-m", "for both", "bob@example.org", "carol@example.org"],
        "",
    );
    check(&bob_sub, "for both");
    check(&carol_sub, "for both");
    not_for_dave();

    alice.send_ok(&s, &["-m", "for the team", "team@example.org"], "");
    check(&bob_sub, "for the team");
    check(&carol_sub, "for the team");
    not_for_dave();
}

#[test]
fn the_server_sees_no_body_member_or_sender_of_a_group_message() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = d.member("bob@example.org");
    let carol = d.member("carol@example.org");
    introduce(&bob, &alice);
    introduce(&carol, &alice);
    d.admin.gkey_ok(
        &[
            "gen",
            "crew@example.org",
            "--member",
            "bob@example.org",
            "--member",
            "carol@example.org",
        ],
        b"",
    );
    alice.gkey_ok(
        &["import"],
        &d.admin.gkey_ok(&["export", "crew@example.org"], b""),
    );

    // A raw subscriber receives exactly the message galed was given.
    let mut spy = RawClient::connect(g.addr);
    spy.subscribe("crew@example.org");
    let bob_sub = bob.gsub(&s, &["crew@example.org"]);
    let secret = "the secret plans are in the shed";
    alice.send_ok(&s, &["-m", secret, "crew@example.org"], "");
    assert_eq!(body(&bob_sub.message()), secret);

    let m = spy.deliver();
    let mut wire = bytes::BytesMut::new();
    m.encode(&mut wire).unwrap();
    let wire = String::from_utf8_lossy(&wire).to_lowercase();
    assert_eq!(m.payload.first(), Some(&2), "an encrypted payload");
    for leak in ["shed", "secret", "bob", "carol", "alice", "gsend", "admin"] {
        assert!(
            !wire.contains(leak),
            "{leak:?} visible to the server: {wire:?}"
        );
    }
}

#[test]
fn altered_or_rerouted_messages_are_shown_as_forged() {
    // Messages are captured on one galed and replayed, altered, on another: a
    // galed drops an id it has already routed, as it should.
    let g1 = Galed::start(&[]);
    let g2 = Galed::start(&[]);
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = d.member("bob@example.org");
    d.trusted_by(&bob);
    introduce(&alice, &bob);
    introduce(&bob, &alice);

    let mut tap = RawClient::connect(g1.addr);
    tap.subscribe("pub.news@example.org");
    tap.subscribe("bob@example.org");
    alice.send_ok(
        &g1.server(),
        &[FAST, &["-m", "pay 10 dollars", "pub.news@example.org"]].concat(),
        "",
    );
    let signed = tap.deliver();
    alice.send_ok(&g1.server(), &["-m", "private note", "bob@example.org"], "");
    let sealed = tap.deliver();

    let bob_sub = bob.gsub(&g2.server(), &["pub.news@example.org", "bob@example.org"]);
    let mut mallory = RawClient::connect(g2.addr);

    // The signed message unchanged first: it verifies.
    mallory.publish(signed.clone());
    let m = bob_sub.message();
    assert_eq!(m["verify"], "verified", "{m}");

    // One payload byte flipped (and a new id, or galed would drop it as a repeat;
    // the id is covered by the signature too, so either change alone is caught).
    let mut altered = flip_last_byte(&signed);
    altered.id = gale_proto::MessageId::generate();
    mallory.publish(altered);
    let m = bob_sub.message();
    assert_eq!(m["verify"], "forged", "{m}");
    assert_eq!(m["from"], Value::Null);
    assert_eq!(m["claimed_from"], "alice@example.org");

    // The same id and payload bytes, sent to another location (on a third
    // server, to which this id is new).
    let g3 = Galed::start(&[]);
    let bob_elsewhere = bob.gsub(&g3.server(), &["pub.other@example.org"]);
    RawClient::connect(g3.addr).publish(Message {
        to: vec![Location::parse("pub.other@example.org").unwrap()],
        ..signed.clone()
    });
    let m = bob_elsewhere.message();
    assert_eq!(m["to"][0], "pub.other@example.org");
    assert_eq!(m["verify"], "forged", "{m}");
    assert_eq!(m["from"], Value::Null);
    assert_eq!(m["claimed_from"], "alice@example.org");

    // An encrypted message with one ciphertext byte flipped.
    mallory.publish(flip_last_byte(&sealed));
    let m = bob_sub.message();
    assert_eq!(m["unreadable"], "tampered", "{m}");
    assert_eq!(m["verify"], "forged", "{m}");
    assert_eq!(m["body"], Value::Null);
}

#[test]
fn forged_messages_are_loud_in_the_human_display() {
    let g1 = Galed::start(&[]);
    let g2 = Galed::start(&[]);
    let alice = User::new("alice@example.org");
    let bob = User::new("bob@example.org");
    alice.gkey_ok(&["gen", "alice@example.org"], b"");
    introduce(&alice, &bob);
    let mut tap = RawClient::connect(g1.addr);
    tap.subscribe("pub.news@example.org");
    alice.send_ok(
        &g1.server(),
        &[FAST, &["-m", "hello", "pub.news@example.org"]].concat(),
        "",
    );
    let mut altered = flip_last_byte(&tap.deliver());
    altered.id = gale_proto::MessageId::generate();

    let human = Gsub::spawn_as(&bob, &g2.server(), &["pub.news@example.org"], true);
    human.stderr.wait_for("gsub: subscribed");
    RawClient::connect(g2.addr).publish(altered);
    let banner = human.stdout.wait_for("FORGED");
    assert!(
        banner.contains("claiming to be from alice@example.org"),
        "{banner}"
    );
    let footer = human.stdout.wait_for("-- ");
    assert!(footer.contains("*forged*"), "{footer}");
    assert!(!footer.contains("alice"), "{footer}");
}

#[test]
fn keys_are_found_from_their_owners_gsub() {
    let g = Galed::start(&[]);
    let s = g.server();
    let alice = User::new("alice@example.org");
    let bob = User::new("bob@example.org");
    // Bob's gsub makes his key and answers requests for it.
    let bob_sub = bob.gsub(&s, &["bob@example.org"]);
    let start = Instant::now();
    let err = alice.send_ok(&s, &["-m", "found your key", "bob@example.org"], "");
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(
        err.contains("not verified"),
        "warns that bob's key is unsigned: {err}"
    );
    assert!(!err.contains("in clear"), "{err}");
    let m = bob_sub.message();
    assert_eq!(body(&m), "found your key");
    assert_eq!(m["encrypted"], true, "{m}");
    // The key was cached: no lookup and no warning about a missing key next time.
    assert!(alice
        .gale_dir()
        .join("auth/cache/bob@example.org.gpub")
        .exists());
}

#[test]
fn with_nobody_to_answer_gsend_refuses_to_send_in_clear_and_does_not_hang() {
    // Issue 9 item 1: a location with no key found is refused (exit 1, as gsend's
    // other refusals), never sent in clear by accident; it used to go out in clear
    // with a notice and exit 0.
    let g = Galed::start(&[]);
    let s = g.server();
    let alice = User::new("alice@example.org");
    let watcher = alice.gsub(&s, &["nobody@example.org", "pub.open@example.org"]);
    let start = Instant::now();
    let out = alice.gsend(
        &s,
        &[FAST, &["-m", "anyone?", "nobody@example.org"]].concat(),
        "",
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to send in clear to nobody@example.org"),
        "{err}"
    );
    for advice in ["gdomain", "gsub", "gkey import", "--allow-clear"] {
        assert!(err.contains(advice), "says what to do ({advice}): {err}");
    }
    // Under pub, no key means public: sent in clear, without a fuss.
    let err = alice.send_ok(
        &s,
        &[FAST, &["-m", "hello all", "pub.open@example.org"]].concat(),
        "",
    );
    assert!(!err.contains("no key"), "{err}");
    let m = watcher.message();
    assert_eq!(
        m["to"][0], "pub.open@example.org",
        "nothing went to nobody: {m}"
    );
    assert_eq!(m["encrypted"], false);
    assert_eq!(body(&m), "hello all");
    // --allow-clear sends it in clear, and says so.
    let err = alice.send_ok(
        &s,
        &[
            FAST,
            &["--allow-clear", "-m", "anyone?", "nobody@example.org"],
        ]
        .concat(),
        "",
    );
    assert!(
        err.contains("no key for nobody@example.org: sending in clear, signed"),
        "{err}"
    );
    let m = watcher.message();
    assert_eq!(m["encrypted"], false);
    assert_eq!(body(&m), "anyone?");

    let out = alice.gsend(
        &s,
        &[
            FAST,
            &["--require-private", "-m", "x", "nobody@example.org"],
        ]
        .concat(),
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--require-private"), "{err}");
}

#[test]
fn mixing_private_and_public_locations_is_refused() {
    let g = Galed::start(&[]);
    let s = g.server();
    let alice = User::new("alice@example.org");
    let bob = User::new("bob@example.org");
    bob.gkey_ok(&["gen", "bob@example.org"], b"");
    introduce(&bob, &alice);
    let out = alice.gsend(
        &s,
        &[
            FAST,
            &["-m", "oops", "bob@example.org", "pub.all@example.org"],
        ]
        .concat(),
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bob@example.org is private"), "{err}");
    assert!(err.contains("pub.all@example.org is public"), "{err}");
    assert!(err.contains("--allow-clear"), "says how to override: {err}");

    let watcher = bob.gsub(&s, &["bob@example.org"]);
    let err = alice.send_ok(
        &s,
        &[
            FAST,
            &[
                "--allow-clear",
                "-m",
                "on purpose",
                "bob@example.org",
                "pub.all@example.org",
            ],
        ]
        .concat(),
        "",
    );
    assert!(err.contains("IN CLEAR"), "{err}");
    let m = watcher.message();
    assert_eq!(m["encrypted"], false);
    assert_eq!(body(&m), "on purpose");
}

#[test]
fn the_first_gsend_makes_a_0600_key() {
    let g = Galed::start(&[]);
    let erin = User::new("erin@example.org");
    let err = erin.send_ok(
        &g.server(),
        &[FAST, &["-m", "hi", "pub.x@example.org"]].concat(),
        "",
    );
    assert!(
        err.contains("created a new key for erin@example.org"),
        "{err}"
    );
    assert!(
        err.contains("ask the owner of example.org to sign it"),
        "{err}"
    );
    let private = erin.gale_dir().join("auth/private");
    let file = private.join("erin@example.org.gpri");
    let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&private), 0o700);
    // The second run uses it and says nothing about keys.
    let err = erin.send_ok(&g.server(), &["-m", "again", "pub.x@example.org"], "");
    assert!(!err.contains("created"), "{err}");
}

#[test]
fn gdomain_answers_reach_a_sender_who_knows_no_keys() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let bob = d.member("bob@example.org");
    d.admin.gkey_ok(
        &["import"],
        &bob.gkey_ok(&["export", "bob@example.org"], b""),
    );
    let _responder = gdomain(&d.admin, &s);
    // Bob's gsub is stealthy: only gdomain answers for his key.
    let bob_sub = bob.gsub(&s, &["-a", "bob@example.org"]);

    // Alice holds no key but her own: the answer is signed by example.org, whose
    // key she fetches too before believing it.
    let alice = User::new("alice@example.org");
    let err = alice.send_ok(&s, &["-m", "via the domain", "bob@example.org"], "");
    assert!(!err.contains("in clear"), "{err}");
    assert!(err.contains("not verified"), "{err}");
    let m = bob_sub.message();
    assert_eq!(body(&m), "via the domain");
    assert_eq!(m["encrypted"], true, "{m}");
    let cache = alice.gale_dir().join("auth/cache");
    assert!(
        cache.join("example.org.gpub").exists(),
        "fetched the signer"
    );
    assert!(cache.join("bob@example.org.gpub").exists());

    // Someone who trusts example.org believes its signed "no such key" at once
    // (and, since item 1 of issue 9, refuses to send in clear rather than
    // sending with a notice).
    let carol = User::new("carol@example.org");
    d.trusted_by(&carol);
    carol.gkey_ok(&["gen", "carol@example.org"], b"");
    let start = Instant::now();
    let out = carol.gsend(
        &s,
        &["--key-timeout", "20", "-m", "hello?", "nobody@example.org"],
        "",
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to send in clear to nobody@example.org"),
        "{err}"
    );
}
