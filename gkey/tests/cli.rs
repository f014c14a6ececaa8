//! gkey end to end: the real binary against temporary key directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn gkey(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gkey"));
    cmd.args(args)
        .env("GALE_DIR", dir)
        .env("GALE_SYS_DIR", dir.join("no-system"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        // A gkey that fails before reading its input closes the pipe; its exit
        // status and message, checked by the caller, tell why.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn gen_sign_import_trust_show() {
    let t = tempfile::tempdir().unwrap();
    let (admin, user) = (t.path().join("admin"), t.path().join("user"));

    let out = gkey(&admin, &["gen", "ofb.net", "--owner", "OFB"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = gkey(
        &user,
        &["gen", "egnor@ofb.net", "--owner", "Dan Egnor"],
        None,
    );
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("gkey sign <"),
        "{}",
        text(&out.stderr)
    );
    let secret = user.join("auth/private/egnor@ofb.net.gpri");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Never overwritten without --force.
    let before = std::fs::read(&secret).unwrap();
    let out = gkey(&user, &["gen", "egnor@ofb.net"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&secret).unwrap(), before);

    // Unsigned: shown, but exit 3.
    assert_eq!(
        gkey(&user, &["show", "egnor@ofb.net"], None).status.code(),
        Some(3)
    );

    let public = gkey(&user, &["export", "egnor@ofb.net"], None).stdout;
    let out = gkey(&admin, &["sign", "--as", "other.net"], Some(&public));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("only its parent ofb.net"));
    let out = gkey(&admin, &["sign"], Some(&public));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let signed = user.join("signed.gpub");
    std::fs::write(&signed, &out.stdout).unwrap();
    let out = gkey(&user, &["import", signed.to_str().unwrap()], None);
    assert!(
        text(&out.stdout).contains("added 1 signature"),
        "{}",
        text(&out.stdout)
    );

    let domain = gkey(&admin, &["export", "ofb.net"], None).stdout;
    let out = gkey(&user, &["trust", "-"], Some(&domain));
    // `trust` takes a name or a file, not stdin.
    assert_eq!(out.status.code(), Some(1));
    let dfile = user.join("ofb.gpub");
    std::fs::write(&dfile, &domain).unwrap();
    let out = gkey(&user, &["trust", dfile.to_str().unwrap()], None);
    assert!(text(&out.stdout).contains("TRUSTED"));
    let out = gkey(&user, &["show", "egnor@ofb.net"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("verified (trust anchor ofb.net)"));
}

#[test]
fn secret_export_needs_force() {
    let t = tempfile::tempdir().unwrap();
    assert!(gkey(t.path(), &["gen", "a@x.org"], None).status.success());
    let out = gkey(t.path(), &["export", "a@x.org", "--secret"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--force"));
    let out = gkey(
        t.path(),
        &["export", "a@x.org", "--secret", "--force"],
        None,
    );
    assert!(out.stdout.starts_with(b"GALESEC\x01"));
}

#[test]
fn a_closed_standard_output_is_not_a_crash() {
    let t = tempfile::tempdir().unwrap();
    // `gkey gen a@x.org | true`: the reader is gone before gkey writes.
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_gkey"))
        .args(["gen", "a@x.org"])
        .env("GALE_DIR", t.path())
        .env("GALE_SYS_DIR", t.path().join("no-system"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert!(t.path().join("auth/private/a@x.org.gpri").exists());
}

#[test]
fn a_domain_key_is_not_sent_to_the_owner_of_its_tld() {
    let t = tempfile::tempdir().unwrap();
    let out = gkey(t.path(), &["gen", "example.org"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(!err.contains(" of org"), "{err}");
    assert!(err.contains("gkey trust example.org.gpub"), "{err}");
}

#[test]
fn after_import_the_hint_is_to_trust_the_domain() {
    let t = tempfile::tempdir().unwrap();
    let (admin, user) = (t.path().join("admin"), t.path().join("user"));
    assert!(gkey(&admin, &["gen", "ofb.net"], None).status.success());
    assert!(gkey(&user, &["gen", "egnor@ofb.net"], None)
        .status
        .success());
    let public = gkey(&user, &["export", "egnor@ofb.net"], None).stdout;
    let signed = gkey(&admin, &["sign"], Some(&public)).stdout;
    let out = gkey(&user, &["import", "-"], Some(&signed));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("gkey trust"), "as the README says: {said}");
}

#[test]
fn damaged_or_misnamed_key_files_and_unreadable_dirs_are_named() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("user");
    assert!(gkey(&dir, &["gen", "alice@x.org"], None).status.success());
    let secret = dir.join("auth/private/alice@x.org.gpri");
    let good = std::fs::read(&secret).unwrap();

    // A damaged own key: said so, with the file; not "make it with gkey gen".
    std::fs::write(&secret, &good[..good.len() / 2]).unwrap();
    let out = gkey(&dir, &["show", "alice@x.org"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&secret.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains("gkey gen"), "{err}");
    // gen agrees that the file is there, and that it cannot be used.
    let out = gkey(&dir, &["gen", "alice@x.org"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot be used"), "{err}");
    assert!(err.contains("--force"), "{err}");

    // alice's file holding bob's key.
    let other = t.path().join("other");
    assert!(gkey(&other, &["gen", "bob@x.org"], None).status.success());
    std::fs::copy(other.join("auth/private/bob@x.org.gpri"), &secret).unwrap();
    let out = gkey(&dir, &["show", "alice@x.org"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("holds the key of bob@x.org, not of alice@x.org"),
        "{err}"
    );

    // GALE_DIR that is not a directory.
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = gkey(&file, &["show", "alice@x.org"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot read"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(!err.contains("gkey gen"), "{err}");
}
