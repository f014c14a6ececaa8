//! Scripts that fail loudly: what gsend, gsub, gkey and gdomain do with empty
//! locations, a missing login environment, no server, bytes that are not text,
//! a missing hook program, a terminal, bad usage, and library warnings.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// A pseudo-terminal: the master side (kept open while the test runs) and the
/// terminal a program reads as its standard input.
fn terminal() -> (OwnedFd, File) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("a path"))
        .expect("open the terminal");
    (master, tty)
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
fn gsend_says_at_once_when_no_server_answers() {
    let (a, b) = (Galed::down().server(), Galed::down().server());
    let start = Instant::now();
    let out = gsend(&format!("{a},{b}"), &["-m", "anyone?", "x@example.org"], "");
    // A generous bound: the point is not waiting the whole --timeout (30 s).
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(&a) && last.contains(&b), "names each: {err}");
    assert!(last.contains("connection refused"), "says why: {err}");
    assert!(!err.contains("no key for"), "no lookup happened: {err}");
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

#[test]
fn bytes_that_are_not_text_are_refused_or_counted() {
    let g = Galed::start(&[]);
    let s = g.server();
    let user = User::new("bytes@example.org");
    let sub = user.gsub(&s, &["pub.bin@example.org"]);

    let out = user.gsend_bytes(&s, &["pub.bin@example.org"], b"ok\n\xffno\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("not UTF-8") && err.contains("byte 3"), "{err}");

    let out = user.gsend_bytes(
        &s,
        &["--lines", "pub.bin@example.org"],
        b"good\nbad \xff\xfe\nfine\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("replaced bytes that are not UTF-8 in 1 line"),
        "{}",
        stderr(&out)
    );
    // The refused one-shot sent nothing; the lines all went, the bad one mended.
    assert_eq!(sub.body(), "good");
    assert_eq!(sub.body(), "bad \u{fffd}\u{fffd}");
    assert_eq!(sub.body(), "fine");
}

#[test]
fn gsend_quiet_prints_no_notes_but_still_its_errors() {
    let g = Galed::start(&[]);
    let s = g.server();
    // A new user: a new key and a location without one would both be noted.
    let user = User::new("quiet@example.org");
    let out = user.gsend(
        &s,
        &[
            "-q",
            "--key-timeout",
            "1",
            "-m",
            "hush",
            "pub.q@example.org",
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stderr(&out), "");
    let out = user.gsend(&s, &["-q", "-m", "hush", ""], "");
    assert!(stderr(&out).contains("empty location"), "{out:?}");
}

#[test]
fn interactive_gsend_prompts_before_looking_up_keys() {
    let g = Galed::start(&[]);
    let s = g.server();
    let (_master, tty) = terminal();
    let user = User::new("typist@example.org");
    let mut cmd = Command::new(bin("gsend"));
    // Nobody answers for nobody@example.org: the lookup takes all of --key-timeout.
    let mut child = user
        .env(&mut cmd)
        .args(["-s", &s, "--key-timeout", "600", "nobody@example.org"])
        .stdin(Stdio::from(tty))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = Lines::spawn_reader(child.stderr.take().unwrap());
    err.wait_for("To: nobody@example.org");
    err.wait_for("End your message");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn gsub_checks_its_program_before_it_starts() {
    let g = Galed::start(&[]);
    let s = g.server();
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("hook.sh");
    std::fs::write(&not_executable, "#!/bin/sh\ncat\n").unwrap();
    let missing = dir.path().join("missing");
    for program in [&missing, &not_executable] {
        let program = program.to_str().unwrap();
        let mut sub = Gsub::spawn(&s, &["-f", program, "x@example.org"]);
        let line = sub.stderr.wait_for(program);
        assert!(line.contains("cannot run"), "{line}");
        assert_eq!(sub.child.wait().unwrap().code(), Some(1), "{line}");
    }
    let mut sub = Gsub::spawn(&s, &["-f", "no-such-program-anywhere", "x@example.org"]);
    sub.stderr.wait_for("not found on PATH");
    assert_eq!(sub.child.wait().unwrap().code(), Some(1));
}
