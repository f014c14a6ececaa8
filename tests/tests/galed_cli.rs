//! galed's command line: exit codes as documented, errors said once, links that
//! cannot be dialled reported as warnings.

use gale_tests::*;

#[test]
fn a_usage_error_exits_64_and_help_exits_0() {
    let out = galed(&["--bogus"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(text(&out.stderr).contains("Usage"), "{out:?}");
    let help = galed(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    assert!(help.contains("64 usage error"), "{help}");
    assert!(help.contains("127.0.0.1:11512 and [::1]:11512"), "{help}");
}

#[test]
fn a_bad_config_file_exits_1_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "lisen = 1\n").unwrap();
    let out = galed(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.matches("unknown field").count(), 1, "{err}");
    assert!(err.contains("bad.toml"), "names the file: {err}");
}

#[test]
fn an_address_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = galed(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on {addr}")),
        "{out:?}"
    );
}

#[test]
fn status_of_a_galed_that_is_down_exits_3() {
    let down = Galed::down();
    let out = galed(&["--status", &down.server()]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains(&down.server()), "{out:?}");
}

#[test]
fn a_link_that_cannot_be_dialled_is_a_warning() {
    let g = Galed::start(&["--link", "nosuchhost.invalid:1"]);
    let line = g.stderr.wait_for("nosuchhost.invalid");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("cannot link"), "{line}");
}

#[test]
fn status_of_something_that_never_answers_gives_up_and_exits_3() {
    // A port that accepts connections and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = mute.local_addr().unwrap().to_string();
    let out = galed(&["--status", &addr]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains("no status"), "{out:?}");
    drop(mute);
}
