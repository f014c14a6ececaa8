//! The example `gsub -f` hooks in contrib/hooks, run by a real gsub for real
//! messages, with a fake notify-send and a fake sendmail first on PATH that
//! record what they were given.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gale_tests::*;

/// A directory holding fake `notify-send` and `sendmail` that append their
/// arguments (one per line, then `--`) and standard input to `NAME.log`.
fn fakes() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["notify-send", "sendmail"] {
        let log = dir.path().join(format!("{name}.log"));
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{log}'\n\
             echo -- >> '{log}'\ncat >> '{log}'\necho '<end>' >> '{log}'\n",
            log = log.display()
        );
        let path = dir.path().join(name);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn hook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("contrib/hooks")
        .join(name)
}

/// A gsub, killed on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gsub running `hook` with `fakes` first on PATH and `env` set.
fn gsub_with_hook(
    g: &Galed,
    hook: &Path,
    fakes: &Path,
    env: &[(&str, &str)],
    loc: &str,
) -> Running {
    let path = format!(
        "{}:{}",
        fakes.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(bin("gsub"));
    User::default_user()
        .env(&mut cmd)
        .env("PATH", path)
        .envs(env.iter().copied())
        .args(["-s", &g.server(), "-f", hook.to_str().unwrap(), loc])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start gsub");
    let stderr = Lines::spawn_reader(child.stderr.take().unwrap());
    stderr.wait_for("gsub: subscribed");
    Running(child)
}

fn wait_for_log(path: &Path, ends: usize) -> String {
    let mut text = String::new();
    wait_until(&format!("{ends} runs logged in {}", path.display()), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.matches("<end>").count() >= ends
    });
    text
}

#[test]
fn the_notify_send_hook_raises_one_notification_per_message() {
    let g = Galed::start(&[]);
    let fakes = fakes();
    let _sub = gsub_with_hook(
        &g,
        &hook("gale-notify-send"),
        fakes.path(),
        &[],
        "pub.hooks@example.org",
    );
    send_ok(
        &g.server(),
        &["pub.hooks@example.org"],
        "lunch <now> & later",
    );
    send_ok(
        &g.server(),
        &["pub.hooks@example.org", "/urgent"],
        "the build is on fire",
    );
    let log = wait_for_log(&fakes.path().join("notify-send.log"), 2);
    let runs: Vec<&str> = log.split("<end>\n").collect();
    let first = runs[0];
    assert!(first.contains("--urgency=normal"), "{first}");
    assert!(first.contains("--app-name=Gale"), "{first}");
    let me = &User::default_user().id;
    assert!(
        first.contains(&format!("{me} (unverified) to pub.hooks@example.org")),
        "{first}"
    );
    // Markup is shown as written, not interpreted.
    assert!(first.contains("lunch &lt;now&gt; &amp; later"), "{first}");
    assert!(runs[1].contains("--urgency=critical"), "{}", runs[1]);
    assert!(runs[1].contains("the build is on fire"), "{}", runs[1]);
}

#[test]
fn the_mail_hook_mails_each_message_with_safe_headers() {
    let g = Galed::start(&[]);
    let fakes = fakes();
    let _sub = gsub_with_hook(
        &g,
        &hook("gale-mail"),
        fakes.path(),
        &[("GALE_MAIL_TO", "away@example.org")],
        "pub.hooks@example.org",
    );
    send_ok(
        &g.server(),
        &["-t", "message.subject=two\nlines", "pub.hooks@example.org"],
        "body line 1\nbody line 2\n",
    );
    let log = wait_for_log(&fakes.path().join("sendmail.log"), 1);
    let (args, mail) = log.split_once("--\n").unwrap();
    assert_eq!(args, "-t\n-i\n", "{log}");
    let (head, body) = mail.split_once("\n\n").unwrap_or_else(|| panic!("{mail}"));
    assert!(head.starts_with("To: away@example.org\n"), "{head}");
    // A newline in a fragment cannot start a header of its own.
    assert!(
        head.contains("Subject: [gale pub.hooks@example.org] two lines\n"),
        "{head}"
    );
    assert!(!head.lines().any(|l| l == "lines"), "{head}");
    assert!(head.contains("X-Gale-Verify: unverified"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; charset=utf-8"),
        "{head}"
    );
    assert_eq!(body, "body line 1\nbody line 2\n<end>\n");
}
