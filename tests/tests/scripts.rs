//! Scripts that fail loudly: what gsend, gsub, gkey and gdomain do with empty
//! locations, a missing login environment, no server, bytes that are not text,
//! a missing hook program, a terminal, bad usage, and library warnings.

use std::process::Output;

use gale_tests::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
