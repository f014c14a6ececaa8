//! Scripts that fail loudly: what gsend, gsub, gkey and gdomain do with empty
//! locations, a missing login environment, no server, bytes that are not text,
//! a missing hook program, a terminal, bad usage, and library warnings.

use std::process::{Command, Output, Stdio};

use gale_tests::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A program of the workspace run as the default user, to completion.
fn run(prog: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin(prog));
    User::default_user()
        .env(&mut cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"))
}

#[test]
fn an_empty_location_is_refused_not_taken_as_the_whole_domain() {
    let g = Galed::start(&[]);
    let s = g.server();
    let everyone = Gsub::start(&s, &["@example.org"]);

    // An unset shell variable: `gsend -m hi "$TO"`.
    let out = gsend(&s, &["-m", "to the whole domain?", ""], "");
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("empty location"), "{err}");
    assert!(
        err.contains("@example.org"),
        "says how to ask for it: {err}"
    );
    // A trailing dot is refused like a leading one.
    let out = gsend(&s, &["-m", "cut off?", "pub."], "");
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("empty segment"), "{}", stderr(&out));

    let mut sub = Gsub::spawn(&s, &["--json", ""]);
    sub.stderr.wait_for("empty location");
    assert!(!sub.child.wait().unwrap().success());

    // Nothing reached the whole domain before this.
    send_ok(&s, &["-m", "asked for", "pub.x@example.org"], "");
    assert_eq!(everyone.body(), "asked for");
}

#[test]
fn usage_errors_exit_64_everywhere_and_help_says_so() {
    for (prog, bad) in [
        ("gsend", &["--no-such-option", "x@example.org"][..]),
        ("gsub", &["--no-such-option", "x@example.org"][..]),
        ("gkey", &["--no-such-option"][..]),
        ("gkey", &["gen"][..]),
        ("gdomain", &["--no-such-option"][..]),
        // Values that do not parse are usage errors too.
        ("gsend", &["-m", "x", "a..b@example.org"][..]),
        (
            "gsend",
            &["-s", "host:port:what", "-m", "x", "a@example.org"][..],
        ),
        ("gsub", &["a..b@example.org"][..]),
        ("gkey", &["gen", "not a name"][..]),
        ("gdomain", &["not a domain!"][..]),
    ] {
        let out = run(prog, bad);
        assert_eq!(out.status.code(), Some(64), "{prog} {bad:?}: {out:?}");
    }
    for prog in ["gsend", "gsub", "gkey", "gdomain"] {
        let out = run(prog, &["--help"]);
        assert!(out.status.success(), "{prog}: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("64  usage error"), "{prog} --help:\n{help}");
    }
}

#[test]
fn library_warnings_reach_the_user() {
    let g = Galed::start(&[]);
    let s = g.server();
    let bob = User::new("bob@example.org");
    let _bob_sub = bob.gsub(&s, &["bob@example.org"]);
    // Alice's key cache cannot be written: a file stands where the directory goes.
    let alice = User::new("alice@example.org");
    std::fs::create_dir_all(alice.gale_dir().join("auth")).unwrap();
    std::fs::write(alice.gale_dir().join("auth/cache"), "not a directory").unwrap();
    let out = alice.gsend(
        &s,
        &["--key-timeout", "20", "-m", "hi bob", "bob@example.org"],
        "",
    );
    let err = stderr(&out);
    assert!(
        err.contains("gsend: warning: cannot cache the key of bob@example.org"),
        "{err}"
    );

    let alice_sub = Gsub::spawn_as(&alice, &s, &["--json", "pub.w@example.org"], true);
    alice_sub.stderr.wait_for("gsub: subscribed");
    bob.send_ok(&s, &["-m", "signed by bob", "pub.w@example.org"], "");
    alice_sub
        .stderr
        .wait_for("gsub: warning: cannot cache the key of bob@example.org");

    // RUST_LOG opens the rest, in gdomain too.
    let admin = User::new("admin@example.org");
    admin.gkey_ok(&["gen", "example.org"], b"");
    let mut cmd = Command::new(bin("gdomain"));
    let mut gdomain = admin
        .env(&mut cmd)
        .env("RUST_LOG", "gale_client=debug")
        .args(["-s", &s, "example.org"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::spawn_reader(gdomain.stderr.take().unwrap());
    err.wait_for("gdomain: debug: connected");
    let _ = gdomain.kill();
    let _ = gdomain.wait();
}

#[test]
fn without_user_or_logname_the_login_name_comes_from_the_password_database() {
    let login = Command::new("id").arg("-un").output().expect("id -un");
    let login = String::from_utf8(login.stdout).unwrap().trim().to_string();
    let me = format!("{login}@example.org");
    let g = Galed::start(&[]);
    let s = g.server();
    let user = User::new(&me);
    let sub = user.gsub(&s, &["pub.cron@example.org"]);
    // As cron, systemd or a container would start it: no USER, no LOGNAME, no GALE_ID.
    let mut cmd = Command::new(bin("gsend"));
    let out = user
        .env(&mut cmd)
        .env_remove("GALE_ID")
        .env_remove("USER")
        .env_remove("LOGNAME")
        .args(["-s", &s, "--key-timeout", "1", "-m", "from cron"])
        .arg("pub.cron@example.org")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = sub.message();
    assert_eq!(m["from"], me.as_str(), "{m}");
}

#[test]
fn a_key_lookup_that_reached_no_server_is_not_taken_for_no_key() {
    let mut g = Galed::down();
    let s = g.server();
    let alice = User::new("alice@example.org");
    let out = alice.gsend(
        &s,
        &[
            "--timeout",
            "1",
            "--key-timeout",
            "1",
            "-m",
            "x",
            "bob@example.org",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // The server returns, and bob's gsub answers for his key: the next message is
    // encrypted to him, not sent in clear on the strength of the silence above.
    g.restart();
    let bob = User::new("bob@example.org");
    let bob_sub = bob.gsub(&s, &["bob@example.org"]);
    let err = alice.send_ok(
        &s,
        &["--key-timeout", "20", "-m", "for bob", "bob@example.org"],
        "",
    );
    assert!(!err.contains("no key for"), "{err}");
    assert_eq!(bob_sub.message()["encrypted"], true);
}
