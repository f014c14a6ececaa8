//! End-to-end tests of issue 9, "private by default, keys you can trust over
//! time", with real galed, gsend, gsub and gkey processes: key changes, one
//! person on several machines, key mismatches, damaged key files, what reading a
//! private message tells the server, and signed presence. (The refusal to send in
//! clear by accident is in security.rs, where it replaced the old behaviour.)

use gale_proto::{Location, Message};
use gale_tests::*;
use serde_json::Value;

const FAST: &[&str] = &["--key-timeout", "1"];

/// A user with a key of their own (made with gkey, so no program needs to make
/// one on first use).
fn user_with_key(id: &str) -> User {
    let u = User::new(id);
    u.gkey_ok(&["gen", id], b"");
    u
}

fn send(u: &User, server: &str, text: &str, to: &str) -> String {
    u.send_ok(server, &[FAST, &["-m", text, to]].concat(), "")
}

fn assert_forged_claiming_alice(m: &Value) {
    assert_eq!(m["verify"], "forged", "{m}");
    assert_eq!(m["from"], Value::Null, "{m}");
    assert_eq!(m["claimed_from"], "alice@example.org", "{m}");
}

#[test]
fn a_key_change_is_reported_once_by_a_running_gsub_and_by_gsend() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = user_with_key("bob@example.org");
    d.trusted_by(&bob);
    let dave = user_with_key("dave@example.org");
    d.trusted_by(&dave);
    introduce(&alice, &dave);
    let alice_online = alice.gsub(&s, &["alice@example.org"]);
    let bob_sub = bob.gsub(&s, &["pub.news@example.org"]);

    send(&alice, &s, "old key", "pub.news@example.org");
    let m = bob_sub.message();
    assert_eq!(m["verify"], "verified", "{m}");
    assert!(m.get("key_changed").is_none(), "{m}");

    // alice makes a new key and has the domain sign it; her gsub answers with it.
    alice.gkey_ok(&["gen", "--force", "alice@example.org"], b"");
    d.sign(&alice);
    send(&alice, &s, "new key", "pub.news@example.org");
    let m = bob_sub.message();
    assert_eq!(m["body"], "new key\n");
    assert_eq!(m["verify"], "verified", "learned without a restart: {m}");
    assert_eq!(m["key_changed"], true, "{m}");
    assert_eq!(m["from"], "alice@example.org");
    bob_sub
        .stderr
        .wait_for("THE KEY FOR alice@example.org HAS CHANGED");
    send(&alice, &s, "again", "pub.news@example.org");
    let m = bob_sub.message();
    assert_eq!(m["verify"], "verified", "{m}");
    assert!(m.get("key_changed").is_none(), "reported once: {m}");

    // dave knew the old key; with it gone from his store, gsend finds the new
    // one and warns before encrypting to it.
    drop(alice_online);
    let alice_reads = alice.gsub(&s, &["alice@example.org"]);
    std::fs::remove_file(dave.gale_dir().join("auth/local/alice@example.org.gpub")).unwrap();
    let err = dave.send_ok(&s, &["-m", "to the new key", "alice@example.org"], "");
    assert!(
        err.contains("THE KEY FOR alice@example.org HAS CHANGED"),
        "{err}"
    );
    let m = alice_reads.message();
    assert_eq!(m["body"], "to the new key\n", "{m}");
    assert_eq!(m["encrypted"], true);
}

#[test]
fn a_second_machine_makes_no_second_key_for_a_name_that_answers() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let alice = d.member("alice@example.org");
    let _alice_online = alice.gsub(&s, &["alice@example.org"]);
    // alice on her laptop: another GALE_DIR, no key yet.
    let laptop = User::new("alice@example.org");
    let secret = laptop
        .gale_dir()
        .join("auth/private/alice@example.org.gpri");
    let sub = Gsub::spawn_as(&laptop, &s, &["--json", "pub.news@example.org"], true);
    let warning = sub.stderr.wait_for("already has a key over Gale");
    assert!(
        warning.contains("gkey export alice@example.org --secret --force"),
        "says how to copy it: {warning}"
    );
    sub.stderr.wait_for("gsub: subscribed");
    assert!(!secret.exists(), "no second key made");

    let out = laptop.gsend(&s, &["-m", "hi", "pub.news@example.org"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already has a key over Gale"), "{err}");
    assert!(!secret.exists(), "no second key made");
}

#[test]
fn discovery_prefers_a_verified_key_and_never_displaces_one() {
    let g1 = Galed::start(&[]);
    let g2 = Galed::start(&[]);
    let d = domain();
    let alice = d.member("alice@example.org");
    // A second, unsigned key for alice (her laptop, or an impostor).
    let laptop = user_with_key("alice@example.org");
    let bob = user_with_key("bob@example.org");
    d.trusted_by(&bob);

    // On g1, capture the answer each key's gsub gives to a query for alice.
    let mut spy = RawClient::connect(g1.addr);
    spy.subscribe("_gale.key.alice@example.org");
    let mut capture = |who: &User| {
        let sub = who.gsub(&g1.server(), &["alice@example.org"]);
        RawClient::connect(g1.addr).publish(key_query("alice@example.org"));
        let answer = spy.deliver();
        drop(sub);
        answer
    };
    let signed_answer = capture(&alice);
    let unsigned_answer = capture(&laptop);

    // On g2, bob's gsub asks for alice's key: the unsigned key answers first,
    // then the signed one.
    let bob_sub = bob.gsub(&g2.server(), &["pub.news@example.org"]);
    let mut answerer = RawClient::connect(g2.addr);
    answerer.subscribe("_gale.query.alice@example.org");
    send(&alice, &g2.server(), "which key?", "pub.news@example.org");
    let q = answerer.deliver();
    assert_eq!(q.to[0].as_str(), "_gale.query.alice@example.org");
    answerer.publish(unsigned_answer);
    answerer.publish(signed_answer);
    let m = bob_sub.message();
    assert_eq!(m["verify"], "verified", "the signed key wins: {m}");
    assert_eq!(m["from"], "alice@example.org");
    bob_sub
        .stderr
        .wait_for("also answered for alice@example.org");

    // The unsigned key now signs a message: bob holds alice's verified key, so
    // the message is a key mismatch, and the unsigned key, offered again, is
    // refused loudly and not stored.
    let _laptop_online = laptop.gsub(&g2.server(), &["alice@example.org"]);
    send(
        &laptop,
        &g2.server(),
        "from the laptop",
        "pub.news@example.org",
    );
    let m = bob_sub.message();
    assert_forged_claiming_alice(&m);
    let warning = bob_sub.stderr.wait_for("was offered");
    assert!(warning.contains("verified key is"), "{warning}");
    let out = bob.gkey(&["show", "alice@example.org"], b"");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "only the verified key: {shown}");
}

#[test]
fn a_message_claiming_a_known_person_but_signed_by_another_key_is_forged() {
    let g1 = Galed::start(&[]);
    let g2 = Galed::start(&[]);
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = user_with_key("bob@example.org");
    d.trusted_by(&bob);
    introduce(&alice, &bob);
    let bob_sub = bob.gsub(&g2.server(), &[FAST, &["pub.news@example.org"]].concat());

    // alice's signed message, captured on g1, with one byte of the signer's key
    // id flipped: the signature cannot be checked, and that must not pass as
    // "unverified alice".
    let mut tap = RawClient::connect(g1.addr);
    tap.subscribe("pub.news@example.org");
    send(
        &alice,
        &g1.server(),
        "pay 10 dollars",
        "pub.news@example.org",
    );
    let signed = tap.deliver();
    let mut p = signed.payload.to_vec();
    p[1 + 2 + "alice@example.org".len()] ^= 0x01;
    RawClient::connect(g2.addr).publish(Message {
        payload: p.into(),
        ..signed
    });
    assert_forged_claiming_alice(&bob_sub.message());

    // A key of one's own, named alice.
    let mallory = user_with_key("alice@example.org");
    send(
        &mallory,
        &g2.server(),
        "it is me, alice",
        "pub.news@example.org",
    );
    assert_forged_claiming_alice(&bob_sub.message());

    // alice herself still verifies.
    send(&alice, &g2.server(), "really me", "pub.news@example.org");
    let m = bob_sub.message();
    assert_eq!(m["verify"], "verified", "{m}");
}

#[test]
fn damaged_or_mismatched_key_files_stop_gsend_and_gsub() {
    let g = Galed::start(&[]);
    let s = g.server();
    let alice = user_with_key("alice@example.org");
    let bob = user_with_key("bob@example.org");
    introduce(&bob, &alice);

    // bob's key in alice's store, damaged: an error naming the file, and nothing
    // in clear (it used to say "no key for bob" and send in clear).
    let file = alice.gale_dir().join("auth/local/bob@example.org.gpub");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let out = alice.gsend(
        &s,
        &[FAST, &["-m", "for bob only", "bob@example.org"]].concat(),
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains("in clear"), "{err}");

    // alice's secret key file holding bob's key: never used, by gsend or gsub.
    let secret = alice.gale_dir().join("auth/private/alice@example.org.gpri");
    std::fs::copy(
        bob.gale_dir().join("auth/private/bob@example.org.gpri"),
        &secret,
    )
    .unwrap();
    let out = alice.gsend(&s, &["-m", "who am I?", "pub.news@example.org"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let wrong = "holds the key of bob@example.org, not of alice@example.org";
    assert!(err.contains(wrong), "{err}");
    assert!(err.contains(&secret.display().to_string()), "{err}");
    let mut sub = Gsub::spawn_as(&alice, &s, &["--json", "pub.news@example.org"], true);
    sub.stderr.wait_for(wrong);
    let status = sub.child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", sub.stderr.dump());
}

#[test]
fn reading_a_private_message_asks_nobody_for_the_senders_key() {
    let g = Galed::start(&[]);
    let s = g.server();
    let d = domain();
    let alice = d.member("alice@example.org");
    let bob = d.member("bob@example.org");
    d.trusted_by(&bob);
    // alice has bob's key; bob knows nothing of alice.
    introduce(&bob, &alice);
    // Anyone may listen to every key query of the domain, as the server sees them.
    let mut spy = RawClient::connect(g.addr);
    spy.subscribe("_gale.query@example.org");
    let bob_sub = bob.gsub(&s, &["bob@example.org"]);
    alice.send_ok(&s, &["-m", "just between us", "bob@example.org"], "");
    let m = bob_sub.message();
    assert_eq!(m["body"], "just between us\n");
    assert_eq!(m["encrypted"], true, "{m}");
    assert_eq!(m["verify"], "verified", "{m}");
    assert_eq!(m["from"], "alice@example.org");
    // A marker published now, after bob read the message: it is the first query
    // the spy sees, so nobody asked for alice's key (bob's gsub used to, right
    // after the delivery, telling the server who wrote to whom).
    RawClient::connect(g.addr).publish(key_query("marker@example.org"));
    let first = spy.deliver();
    let to: Vec<&str> = first.to.iter().map(Location::as_str).collect();
    assert_eq!(to, ["_gale.query.marker@example.org"]);
}

#[test]
fn presence_notices_and_wills_are_signed_even_after_a_reconnect() {
    let mut g = Galed::start(&["--keepalive-ms", "1000"]);
    let s = g.server();
    let watcher = user_with_key("watcher@example.org");
    let mortal = user_with_key("mortal@example.org");
    introduce(&mortal, &watcher);
    let notices = watcher.gsub(&s, &["_gale.notice@example.org"]);
    let mut present = mortal.gsub(&s, &["-p", "in.present", "pub.x@example.org"]);
    let hello = notices.message();
    assert_eq!(hello["to"][0], "_gale.notice.mortal@example.org");
    assert_eq!(hello["verify"], "unverified", "signed: {hello}");
    assert_eq!(hello["from"], "mortal@example.org");

    // galed restarts: mortal's gsub reconnects and sets its will again, which
    // needs a fresh id, so a fresh signature.
    g.kill9();
    g.restart();
    notices.stderr.wait_for("gsub: subscribed");
    present.stderr.wait_for("gsub: subscribed");
    present.kill9();
    // After the reconnect gsub announces its presence again (signed too): the
    // watcher may see that before the will.
    let will = loop {
        let m = notices.message();
        if !Gsub::has_fragment(&m, "notice.presence", "in.present") {
            break m;
        }
        assert_eq!(m["verify"], "unverified", "signed, and valid: {m}");
    };
    assert_eq!(will["to"][0], "_gale.notice.mortal@example.org");
    assert_eq!(will["verify"], "unverified", "signed, and valid: {will}");
    assert_eq!(will["from"], "mortal@example.org");
    assert!(
        Gsub::has_fragment(&will, "notice.presence", "out.disconnected"),
        "{will}"
    );
}

#[test]
fn a_key_made_here_while_asking_is_used_not_taken_for_another_machine() {
    // A new user starts gsub, then gsend at once (the README's quick start): gsub
    // makes the key while gsend is asking over Gale whether the name answers
    // elsewhere, and the answer gsend gets is that very key. Made deterministic
    // here: the answer is a captured one, sent once the key file is in place.
    let g = Galed::start(&[]);
    let s = g.server();
    let alice = User::new("alice@example.org");
    let secret = alice.gale_dir().join("auth/private/alice@example.org.gpri");
    let mut spy = RawClient::connect(g.addr);
    spy.subscribe("_gale.key.alice@example.org");
    let answer = {
        let sub = alice.gsub(
            &s,
            &FAST
                .iter()
                .chain(&["alice@example.org"])
                .copied()
                .collect::<Vec<_>>(),
        );
        RawClient::connect(g.addr).publish(key_query("alice@example.org"));
        let answer = spy.deliver();
        drop(sub);
        answer
    };
    // The key is not there when gsend starts...
    let aside = alice.gale_dir().join("made-by-gsub.gpri");
    std::fs::rename(&secret, &aside).unwrap();
    let mut answerer = RawClient::connect(g.addr);
    answerer.subscribe("_gale.query.alice@example.org");
    let mut cmd = std::process::Command::new(bin("gsend"));
    let gsend = alice
        .env(&mut cmd)
        .args(["-s", &s, "--key-timeout", "20", "-m", "first words"])
        .arg("pub.first@example.org")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // ... and is, by the time the answer comes.
    let q = answerer.deliver();
    assert_eq!(q.to[0].as_str(), "_gale.query.alice@example.org");
    std::fs::rename(&aside, &secret).unwrap();
    answerer.publish(answer);
    let out = gsend.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(!err.contains("already has a key over Gale"), "{err}");
}
