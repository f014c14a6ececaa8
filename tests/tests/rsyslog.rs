//! System suite (.ci/system-tests runs it with --ignored): syslog into Gale the
//! way contrib/rsyslog/gale.conf does it. A real rsyslogd, started by this
//! test with its own configuration and socket, runs `gsend --lines` through
//! omprog as a dedicated identity; lines written with `logger -u SOCKET` all
//! reach a gsub, in order, also those written while galed restarts.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use gale_tests::*;

const LOCATION: &str = "log.syslog.test@example.org";
const IDENTITY: &str = "syslog.test@example.org";

/// rsyslogd, stopped on drop.
struct Rsyslogd(Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path, socket: &Path, gale_dir: &Path, server: &str) -> String {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    format!(
        r#"global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" RateLimit.Interval="0")
module(load="omprog")
template(name="GaleLine" type="string"
         string="%HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf%\n")
if $programname == "galetest" then {{
    action(type="omprog" name="gale"
        binary="/usr/bin/env GALE_DIR={gale_dir} GALE_SYS_DIR={gale_dir}/sys GALE_SERVER={server} {gsend} --lines --quiet --allow-clear --id {IDENTITY} {LOCATION}"
        template="GaleLine"
        output="{out}"
        queue.type="LinkedList" action.resumeRetryCount="-1")
}}
"#,
        work = work.display(),
        socket = socket.display(),
        gale_dir = gale_dir.display(),
        gsend = bin("gsend").display(),
        out = dir.join("gsend.log").display(),
    )
}

/// Logs `lines` through the socket, as a program tagged `galetest` would.
fn logger(socket: &Path, lines: std::ops::Range<u32>) {
    let mut child = Command::new("logger")
        .args([
            "-u",
            socket.to_str().unwrap(),
            "--socket-errors=on",
            "-t",
            "galetest",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("logger (Debian package bsdutils) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    for i in lines {
        writeln!(stdin, "line {i}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "logger failed");
}

fn expect_lines(sub: &Gsub, lines: std::ops::Range<u32>) {
    for i in lines {
        let body = sub.body();
        assert!(
            body.ends_with(&format!("galetest: line {i}")),
            "expected line {i}, got {body:?}"
        );
    }
}

/// The process omprog started (gsend: /usr/bin/env execs it).
fn child_of(parent: u32) -> u32 {
    let mut found = None;
    wait_until("rsyslogd to start gsend", || {
        found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent && comm.ends_with("(gsend")).then_some(pid)
        });
        found.is_some()
    });
    found.unwrap()
}

#[test]
#[ignore = "system suite: needs rsyslogd and logger (run by .ci/system-tests)"]
fn syslog_lines_reach_gsub_in_order_across_a_galed_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log.sock");
    let g = Galed::start(&[]);
    let addr = g.server();
    let sub = Gsub::start(&addr, &[LOCATION]);
    // The dedicated identity, made beforehand as contrib/rsyslog/gale.conf says.
    let syslog = User::new(IDENTITY);
    syslog.gkey_ok(&["gen", IDENTITY], b"");
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(&conf, config(dir.path(), &socket, syslog.gale_dir(), &addr)).unwrap();
    let check = Command::new("rsyslogd")
        .args(["-N1", "-f", conf.to_str().unwrap()])
        .output();
    let check = check.expect("rsyslogd (Debian package rsyslog) must be installed");
    assert!(
        check.status.success(),
        "rsyslogd rejects the config: {check:?}"
    );
    let rsyslogd = Rsyslogd(
        Command::new("rsyslogd")
            .args(["-n", "-f", conf.to_str().unwrap(), "-i"])
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start rsyslogd"),
    );
    wait_until("rsyslogd's socket", || socket.exists());

    logger(&socket, 0..50);
    expect_lines(&sub, 0..50);
    let gsend = child_of(rsyslogd.0.id());

    // galed restarts (as systemctl restart does: SIGTERM, then a new one).
    let mut g = g;
    g.signal(Signal::TERM);
    assert!(g.wait().success());
    drop(g);
    // Lines logged meanwhile wait in gsend. It is held stopped until gsub is
    // back, so that they are not published before anyone subscribes again.
    logger(&socket, 50..100);
    let pid = rustix::process::Pid::from_raw(gsend as i32).unwrap();
    rustix::process::kill_process(pid, Signal::STOP).unwrap();
    let _g = Galed::start_on(&addr, &[]);
    sub.stderr.wait_for("gsub: subscribed");
    rustix::process::kill_process(pid, Signal::CONT).unwrap();
    logger(&socket, 100..150);
    expect_lines(&sub, 50..150);
    assert_eq!(
        child_of(rsyslogd.0.id()),
        gsend,
        "the same gsend throughout"
    );
    let m = {
        logger(&socket, 150..151);
        sub.message()
    };
    assert_eq!(m["from"], IDENTITY, "signed by the dedicated identity: {m}");
}
