//! End-to-end tests of issue 12, people: presence that changes live, gwho,
//! receipts, pings, away replies, forged presence and stealth, with real galed,
//! gsub, gsend and gwho processes.

use std::process::{Command, Output, Stdio};

use gale_tests::*;
use serde_json::Value;

/// Runs one of the programs as `u` against `server`, to completion.
fn run(u: &User, program: &str, server: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin(program));
    u.env(&mut cmd)
        .args(["-s", server])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `gsub --set-presence STATE` as `u` (no server: it talks to the running
/// gsubs through their sockets).
fn set_presence(u: &User, state: &str, device: Option<&str>) -> Output {
    let mut cmd = Command::new(bin("gsub"));
    u.env(&mut cmd).args(["--set-presence", state]);
    if let Some(d) = device {
        cmd.args(["--device", d]);
    }
    cmd.stdin(Stdio::null()).output().expect("run gsub")
}

/// The next line of a gsub --json that is of `kind`, passing over others.
fn next_of(g: &Gsub, kind: &str) -> Value {
    loop {
        let m = g.message();
        if m["kind"] == kind {
            return m;
        }
    }
}

/// gwho's --json lines.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

/// A domain, and its members, each trusting it.
fn people(ids: &[&str]) -> (Domain, Vec<User>) {
    let d = domain();
    let users = ids
        .iter()
        .map(|id| {
            let u = d.member(id);
            d.trusted_by(&u);
            u
        })
        .collect();
    (d, users)
}

/// `text` holds `what`; if not, the test fails showing all of it.
fn says(text: &str, what: &str) {
    assert!(text.contains(what), "{what:?} not in:\n{text}");
}

#[test]
fn presence_changes_live_and_a_watcher_sees_it_without_a_restart() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    let watcher = alice.gsub(&s, &["_gale.notice@example.org"]);
    let bob_sub = bob.gsub(
        &s,
        &["-p", "in.present", "--device", "laptop", "bob@example.org"],
    );
    let pid = bob_sub.child.id();
    let m = next_of(&watcher, "presence");
    assert_eq!(m["presence"], "in.present", "{m}");
    assert_eq!(m["device"], "laptop", "{m}");
    assert_eq!(m["about"], "bob@example.org", "{m}");
    assert_eq!(m["verify"], "verified", "{m}");

    let out = set_presence(bob, "out.to.lunch", None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "laptop: out.to.lunch\n");
    let m = next_of(&watcher, "presence");
    assert_eq!(m["presence"], "out.to.lunch", "{m}");
    assert_eq!(m["device"], "laptop", "{m}");
    assert_eq!(m["verify"], "verified", "{m}");
    assert_eq!(bob_sub.child.id(), pid);

    // A bad state is refused before anything is sent; another device is skipped.
    let out = set_presence(bob, "out to lunch", None);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = set_presence(bob, "in.present", Some("desktop"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // Without any running gsub, a clear error.
    drop(bob_sub);
    let out = set_presence(bob, "in.present", None);
    assert_eq!(out.status.code(), Some(1));
    says(&text(&out.stderr), "no gsub of yours is running");
}

#[test]
fn gwho_finds_two_devices_of_one_person_and_says_no_answer_for_another() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org", "carol@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    let _laptop = bob.gsub(&s, &["--device", "laptop", "bob@example.org"]);
    let _desktop = bob.gsub(&s, &["--device", "desktop", "bob@example.org"]);
    set_presence(bob, "out.to.lunch", Some("desktop"));

    let out = run(alice, "gwho", &s, &["--json", "bob", "carol@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let mut bobs: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "presence")
        .map(|l| {
            assert_eq!(l["who"], "bob@example.org", "{l}");
            assert_eq!(l["verify"], "verified", "{l}");
            (
                l["device"].as_str().unwrap().to_string(),
                l["presence"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    bobs.sort();
    assert_eq!(
        bobs,
        [
            ("desktop".to_string(), "out.to.lunch".to_string()),
            ("laptop".to_string(), "in.present".to_string())
        ]
    );
    let absent: Vec<&Value> = lines.iter().filter(|l| l["type"] == "no_answer").collect();
    assert_eq!(absent.len(), 1, "{lines:?}");
    assert_eq!(absent[0]["who"], "carol@example.org");

    // A whole domain, in the person's format.
    let out = run(alice, "gwho", &s, &["@example.org"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    says(&shown, "in.present bob@example.org (laptop)");
    says(&shown, "out.to.lunch bob@example.org (desktop)");

    // Nobody there: exit 1, and a line saying so.
    let out = run(alice, "gwho", &s, &["--timeout", "1", "carol"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "carol@example.org no answer\n");
}

#[test]
fn gwho_watch_prints_presence_changes() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    let _bob_sub = bob.gsub(
        &s,
        &["-p", "in.present", "--device", "laptop", "bob@example.org"],
    );
    let mut cmd = Command::new(bin("gwho"));
    let mut child = KillOnDrop(
        alice
            .env(&mut cmd)
            .args(["-s", &s, "--watch", "--json", "bob"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = Lines::spawn_reader(child.0.stdout.take().unwrap());
    let first: Value = serde_json::from_str(&out.next().unwrap()).unwrap();
    assert_eq!(first["presence"], "in.present", "{first}");
    let set = set_presence(bob, "out.to.lunch", None);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let change: Value = serde_json::from_str(&out.wait_for("out.to.lunch")).unwrap();
    assert_eq!(change["change"], true, "{change}");
    assert_eq!(change["device"], "laptop", "{change}");
    drop(child);
}

/// A child process killed when the test ends, whether it passes or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn receipts_come_from_each_recipient_and_private_ones_are_encrypted() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org", "carol@example.org"]);
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let alice_sub = alice.gsub(&s, &["alice@example.org"]);
    let bob_sub = bob.gsub(
        &s,
        &[
            "--device",
            "laptop",
            "pub.talk@example.org",
            "bob@example.org",
        ],
    );
    let _carol_sub = carol.gsub(&s, &["--device", "phone", "pub.talk@example.org"]);

    let out = run(
        alice,
        "gsend",
        &s,
        &[
            "-r",
            "--receipt-timeout",
            "2",
            "-m",
            "lunch?",
            "pub.talk@example.org",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    says(&shown, "received: in.present bob@example.org (laptop)");
    says(&shown, "received: in.present carol@example.org (phone)");
    assert_eq!(shown.lines().count(), 2, "{shown}");
    // alice's own gsub shows them too, one line each, as Gale did.
    for _ in 0..2 {
        let r = next_of(&alice_sub, "receipt");
        assert_eq!(r["verify"], "verified", "{r}");
    }

    // A private message: bob's receipt is encrypted to alice.
    let out = run(
        alice,
        "gsend",
        &s,
        &["--require-receipt", "-m", "psst", "bob@example.org"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    says(
        &text(&out.stdout),
        "received: in.present bob@example.org (laptop)",
    );
    assert_eq!(next_of(&bob_sub, "message")["body"], "lunch?\n");
    let m = next_of(&bob_sub, "message");
    assert_eq!(m["body"], "psst\n");
    let r = next_of(&alice_sub, "receipt");
    assert_eq!(r["encrypted"], true, "{r}");
    assert_eq!(r["about"], "bob@example.org", "{r}");

    // Nobody reads there: --require-receipt says so with exit 4.
    let out = run(
        alice,
        "gsend",
        &s,
        &[
            "--require-receipt",
            "--receipt-timeout",
            "1",
            "-m",
            "hello?",
            "pub.empty@example.org",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    says(&text(&out.stderr), "no receipt");
}

#[test]
fn a_ping_is_answered_by_each_gsub_with_its_presence() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org", "carol@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    let bob_sub = bob.gsub(
        &s,
        &[
            "-p",
            "out.to.lunch",
            "--device",
            "laptop",
            "bob@example.org",
        ],
    );
    let out = run(alice, "gsend", &s, &["--ping", "bob"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "received: out.to.lunch bob@example.org (laptop)\n"
    );
    let p = next_of(&bob_sub, "ping");
    assert_eq!(p["about"], "alice@example.org", "{p}");
    assert_eq!(p["verify"], "verified", "{p}");
    // Nobody answers for carol.
    let out = run(
        alice,
        "gsend",
        &s,
        &["--ping", "--receipt-timeout", "1", "carol"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
fn an_away_reply_goes_once_per_period_and_never_answers_another() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    // Both are away: an away reply must not answer the other's away reply.
    let alice_sub = alice.gsub(&s, &["--away", "alice is out", "alice@example.org"]);
    let bob_sub = bob.gsub(&s, &["--away", "gone fishing", "bob@example.org"]);
    for text in ["one", "two"] {
        let out = run(alice, "gsend", &s, &["-m", text, "bob@example.org"]);
        assert!(out.status.success());
        assert_eq!(next_of(&bob_sub, "message")["body"], format!("{text}\n"));
    }
    let away = alice_sub.message();
    assert_eq!(away["kind"], "away", "{away}");
    assert_eq!(away["body"], "gone fishing", "{away}");
    assert_eq!(away["encrypted"], true, "{away}");
    assert_eq!(away["verify"], "verified", "{away}");
    assert!(Gsub::has_fragment(&away, "message.auto", "away"), "{away}");
    // A ping from alice is answered after anything bob's gsub sent for the
    // second message: the next thing alice sees is its answer, not a second
    // away reply.
    run(alice, "gsend", &s, &["--ping", "bob"]);
    let next = alice_sub.message();
    assert_eq!(
        next["kind"], "receipt",
        "only one away reply per period: {next}"
    );
    // bob saw alice's... nothing: alice's gsub did not answer bob's away reply.
    run(bob, "gsend", &s, &["--ping", "alice"]);
    let next = loop {
        let m = bob_sub.message();
        if m["kind"] != "ping" {
            break m;
        }
    };
    assert_eq!(
        next["kind"], "receipt",
        "an away reply is never answered: {next}"
    );
}

#[test]
fn a_forged_presence_notice_is_shown_as_forged() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    introduce(bob, alice);
    let watcher = alice.gsub(&s, &["--key-timeout", "1", "_gale.notice@example.org"]);
    // Mallory makes a key of her own named bob@example.org and announces "bob".
    let mallory = User::new("bob@example.org");
    mallory.gkey_ok(&["gen", "bob@example.org"], b"");
    let _fake = mallory.gsub(
        &s,
        &["-p", "in.present", "--device", "evil", "pub.x@example.org"],
    );
    let m = next_of(&watcher, "presence");
    assert_eq!(m["verify"], "forged", "{m}");
    assert_eq!(m["from"], Value::Null, "{m}");
    assert_eq!(m["claimed_from"], "bob@example.org", "{m}");

    // In the person's display too.
    let human = Gsub::spawn_as(
        alice,
        &s,
        &["--key-timeout", "1", "_gale.notice@example.org"],
        true,
    );
    human.stderr.wait_for("gsub: subscribed");
    set_presence(&mallory, "out.gone", None);
    let line = human.stdout.wait_for("out.gone");
    says(&line, "bob@example.org (evil)");
    says(&line, "FORGED");
    // And gwho does not count a forged answer.
    let out = run(alice, "gwho", &s, &["--timeout", "1", "bob"]);
    let shown = text(&out.stdout);
    says(&shown, "FORGED");
    says(&shown, "bob@example.org no answer");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stealth_answers_nothing() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    introduce(bob, alice);
    let alice_sub = alice.gsub(&s, &["alice@example.org"]);
    let notices = alice.gsub(&s, &["--no-inbox", "_gale.notice@example.org"]);
    let bob_sub = bob.gsub(
        &s,
        &[
            "-a",
            "-p",
            "in.present",
            "--away",
            "gone",
            "bob@example.org",
            "pub.talk@example.org",
        ],
    );
    let out = run(
        alice,
        "gsend",
        &s,
        &["--ping", "--receipt-timeout", "1", "bob"],
    );
    assert_eq!(out.status.code(), Some(4), "no ping answer");
    let out = run(
        alice,
        "gsend",
        &s,
        &[
            "--require-receipt",
            "--receipt-timeout",
            "1",
            "-m",
            "hi",
            "bob@example.org",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "no receipt: {}",
        text(&out.stderr)
    );
    assert_eq!(
        next_of(&bob_sub, "message")["body"],
        "hi\n",
        "but it was shown"
    );
    let out = run(alice, "gwho", &s, &["--timeout", "1", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    // Nothing reached alice (no away reply, no receipt) and no notice went out:
    // a marker sent now is the next thing each sees.
    alice.send_ok(&s, &["-m", "marker", "alice@example.org"], "");
    assert_eq!(alice_sub.message()["body"], "marker\n");
    alice.send_ok(
        &s,
        &[
            "-m",
            "marker",
            "--allow-clear",
            "_gale.notice.zz@example.org",
        ],
        "",
    );
    let n = notices.message();
    assert_eq!(n["to"][0], "_gale.notice.zz@example.org", "{n}");
}

#[test]
fn presence_to_verified_answers_only_verified_askers() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    let stranger = User::new("eve@example.org");
    stranger.gkey_ok(&["gen", "eve@example.org"], b"");
    let _bob_sub = bob.gsub(
        &s,
        &[
            "--presence-to",
            "verified",
            "--device",
            "laptop",
            "bob@example.org",
        ],
    );
    let out = run(alice, "gsend", &s, &["--ping", "bob"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &stranger,
        "gsend",
        &s,
        &["--ping", "--receipt-timeout", "1", "bob"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "eve's key does not verify for bob"
    );
}

#[test]
fn the_hook_gets_gale_kind_and_presence_survives_a_server_restart() {
    let mut g = Galed::start(&[]);
    let s = g.server();
    let (_d, u) = people(&["alice@example.org", "bob@example.org"]);
    let (alice, bob) = (&u[0], &u[1]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$GALE_KIND $GALE_ABOUT $GALE_TEXT_NOTICE_PRESENCE\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook = Gsub::spawn_as(
        alice,
        &s,
        &["-f", script.to_str().unwrap(), "_gale.notice@example.org"],
        true,
    );
    hook.stderr.wait_for("gsub: subscribed");
    let bob_sub = bob.gsub(
        &s,
        &["-p", "in.present", "--device", "laptop", "bob@example.org"],
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the hook ran", || {
        read().contains("presence bob@example.org in.present")
    });
    set_presence(bob, "out.to.lunch", None);
    wait_until("the hook saw the change", || {
        read().contains("presence bob@example.org out.to.lunch")
    });

    // The server restarts: bob's gsub reconnects with the presence it had.
    g.kill9();
    g.restart();
    bob_sub.stderr.wait_for("gsub: subscribed");
    let out = run(alice, "gwho", &s, &["bob"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out.to.lunch bob@example.org (laptop)\n");
}
