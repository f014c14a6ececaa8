//! Clients that stop when asking again cannot help, keep trying when it can,
//! never wait on the network without a limit, and never hold more input than a
//! message can carry (issue 10, client side).
//!
//! The servers here are real galeds, or a fake server on 127.0.0.1:0 (a thread
//! with a std `TcpListener`) that answers the handshake the way a test needs:
//! with an ERROR, with WELCOME and then an ERROR, or never.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gale_proto::{ErrorCode, Frame, Welcome};
use gale_tests::*;

/// What the fake server does with each connection.
#[derive(Clone, Copy)]
enum Answer {
    /// Answers HELLO with this ERROR, then closes.
    Refuse(ErrorCode, &'static str),
    /// Answers HELLO with WELCOME, then the first SUBSCRIBE with this ERROR.
    RefuseSubscribe(ErrorCode, &'static str),
    /// Accepts the connection and never says anything.
    Silent,
}

/// A fake server: counts connections, answers each as told. Stopped on drop.
struct FakeServer {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    accepted: Receiver<()>,
    stop: Arc<AtomicBool>,
}

/// One frame: its type byte and body (the length field is not returned).
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame).ok()?;
    Some(frame)
}

/// Sends ERROR as the last frame, then waits for the client to hang up (so the
/// ERROR is never lost to a reset from unread bytes).
fn send_error(mut s: TcpStream, code: ErrorCode, text: &str) {
    let frame = Frame::Error {
        code,
        text: text.into(),
    };
    let _ = s.write_all(&frame.to_bytes());
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(DEADLINE));
    let _ = std::io::copy(&mut s, &mut std::io::sink());
}

fn serve(mut s: TcpStream, answer: Answer) {
    match answer {
        Answer::Silent => {
            // Read (and ignore) until the client gives up.
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
        Answer::Refuse(code, text) => {
            if read_frame(&mut s).is_some() {
                send_error(s, code, text);
            }
        }
        Answer::RefuseSubscribe(code, text) => {
            if read_frame(&mut s).is_none() {
                return;
            }
            let welcome = Frame::Welcome(Welcome {
                version: 1,
                max_frame: 1 << 20,
                keepalive_ms: 30_000,
                server: "fake".into(),
            });
            if s.write_all(&welcome.to_bytes()).is_err() {
                return;
            }
            while let Some(frame) = read_frame(&mut s) {
                if frame.first() == Some(&0x20) {
                    return send_error(s, code, text);
                }
            }
        }
    }
}

impl FakeServer {
    fn start(answer: Answer) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, accepted) = channel();
        std::thread::spawn({
            let (count, stop) = (count.clone(), stop.clone());
            move || {
                for s in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(());
                    std::thread::spawn(move || serve(s, answer));
                }
            }
        });
        FakeServer {
            addr,
            count,
            accepted,
            stop,
        }
    }

    fn server(&self) -> String {
        self.addr.to_string()
    }

    fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections have been accepted in all.
    fn wait_for_connections(&self, n: usize) {
        while self.connections() < n {
            self.accepted.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!(
                    "{} connections, not {n}, within {DEADLINE:?}",
                    self.connections()
                )
            });
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Waits for `child` to exit, within `DEADLINE` (killed and failed if not).
fn finish(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            panic!("{what} still running after {DEADLINE:?}");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// gsub as the default user, with no key lookups (so that its only connection
/// is its client's), to completion.
fn gsub_to_the_end(server: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("gsub"));
    let child = User::default_user()
        .env(&mut cmd)
        .args(["-s", server, "--key-timeout", "0", "-a"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gsub");
    finish(child, "gsub")
}

/// gsend, anonymous to a public location, not waiting for key lookups, to
/// completion.
fn gsend_to_the_end(server: &str, args: &[&str]) -> Output {
    let mut child = User::default_user().gsend_spawn(
        server,
        &[
            &["-a", "--key-timeout", "0", "-m", "hello"],
            args,
            &["pub.test@example.org"],
        ]
        .concat(),
    );
    drop(child.stdin.take());
    finish(child, "gsend")
}

#[test]
fn gsub_with_more_subscriptions_than_a_server_takes_is_refused_before_connecting() {
    let galed = Galed::start(&[]);
    let before = galed.status()["connections_total"].as_u64().unwrap();
    let locations: Vec<String> = (0..=65_536).map(|i| format!("l{i}")).collect();
    let args: Vec<&str> = locations.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = gsub_to_the_end(&galed.server(), &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("65537 subscriptions given; a server takes at most 65536"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "promptly");
    // One connection is the status request itself; gsub made none, and the
    // server never parsed its list.
    let after = galed.status()["connections_total"].as_u64().unwrap();
    assert!(after - before <= 1, "{} connections", after - before);
}

#[test]
fn a_refused_handshake_ends_gsend_and_gsub_with_the_servers_reason() {
    let fake = FakeServer::start(Answer::Refuse(
        ErrorCode::UnsupportedVersion,
        "this server speaks versions 7 to 9",
    ));
    let out = gsend_to_the_end(&fake.server(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} refused this gsend: this server speaks versions 7 to 9 (ERROR 1, \
             UnsupportedVersion)",
            fake.server()
        )),
        "{err}"
    );
    // Its client and its key lookup's (for pub.test), each once: not again.
    assert!(
        fake.connections() <= 2,
        "{} connections",
        fake.connections()
    );

    let before = fake.connections();
    let out = gsub_to_the_end(&fake.server(), &["pub.test"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{} refused this client: this server speaks versions 7 to 9",
            fake.server()
        )),
        "{err}"
    );
    assert_eq!(fake.connections() - before, 1, "gsub asked once");
}

#[test]
fn a_refused_subscription_list_ends_gsub_and_gdomain_instead_of_reconnecting() {
    // What galed does with a list over its limit: ERROR 6 after the handshake.
    let fake = FakeServer::start(Answer::RefuseSubscribe(
        ErrorCode::LimitExceeded,
        "subscription list too long: 70000 entries, the limit is 65536 per connection",
    ));
    let out = gsub_to_the_end(&fake.server(), &["pub.test"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("subscription list too long: 70000 entries") && err.contains("ERROR 6"),
        "{err}"
    );
    assert_eq!(fake.connections(), 1, "no reconnecting");

    // gdomain too: it would otherwise serve nobody, reconnecting forever.
    let d = domain();
    let mut cmd = Command::new(bin("gdomain"));
    let child = d
        .admin
        .env(&mut cmd)
        .args(["-s", &fake.server(), "example.org"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gdomain");
    let out = finish(child, "gdomain");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{} refused this gdomain", fake.server()))
            && err.contains("subscription list too long"),
        "{err}"
    );
    assert_eq!(fake.connections(), 2, "gdomain connected once");
}

#[test]
fn a_busy_server_is_retried() {
    let fake = FakeServer::start(Answer::Refuse(
        ErrorCode::Busy,
        "the server is at its limit of 10 connections; try again later",
    ));
    // gsend keeps trying until its --timeout, then exits 2: try again later.
    let out = gsend_to_the_end(&fake.server(), &["--timeout", "2"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("(ERROR 9, Busy)"), "{err}");
    assert!(fake.connections() > 1, "{} connections", fake.connections());

    // gsub keeps trying, with back-off, for as long as it runs.
    let before = fake.connections();
    let mut gsub = Gsub::spawn_as(
        User::default_user(),
        &fake.server(),
        &["--key-timeout", "0", "-a", "pub.test"],
        true,
    );
    gsub.stderr.wait_for("refused for now");
    fake.wait_for_connections(before + 3);
    assert!(gsub.child.try_wait().unwrap().is_none(), "gsub still runs");
    gsub.kill9();
}

#[test]
fn a_server_that_never_answers_the_handshake_is_given_up_on() {
    let fake = FakeServer::start(Answer::Silent);
    // Within --timeout, saying what the server did.
    let started = Instant::now();
    let out = gsend_to_the_end(&fake.server(), &["--timeout", "2"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("accepted the connection but has not answered the handshake"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    // Without --timeout, once the handshake has timed out (5 s).
    let started = Instant::now();
    let out = gsend_to_the_end(&fake.server(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot reach any server") && err.contains("handshake timed out"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{err}");
}

/// A pipe already full: a program whose standard error it is stops at its
/// first message, until the pipe is read. Returns (read end, write end).
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (r, mut w) = std::io::pipe().expect("pipe");
    // Exactly the pipe's capacity fits without blocking.
    let size = rustix::pipe::fcntl_getpipe_size(&w).expect("F_GETPIPE_SZ");
    w.write_all(&vec![b'-'; size]).expect("fill the pipe");
    (r, w)
}

/// Whether `pid`'s main thread waits to write to a pipe: its wait channel, or
/// where that is hidden, the system call it is in (write, on descriptor 2).
fn blocked_writing_stderr(pid: u32) -> bool {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    if wchan.contains("pipe_write") {
        return true;
    }
    let write = if cfg!(target_arch = "aarch64") { 64 } else { 1 };
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.starts_with(&format!("{write} 0x2 ")))
}

/// A process's peak resident memory so far (VmHWM), in KiB.
fn peak_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn gsend_reads_no_more_than_a_message_can_carry() {
    const INPUT: usize = 100_000_000;
    const LIMIT: u64 = 1 << 20;
    let galed = Galed::start(&[]);
    // gsend's standard error is a full pipe: its message (its last act) waits
    // there, which is when its peak memory is read. (Not wait4's rusage: that
    // counts the memory of the test process it was forked from.)
    let (mut err_r, err_w) = full_pipe();
    let mut cmd = Command::new(bin("gsend"));
    User::default_user()
        .env(&mut cmd)
        .args(["-s", &galed.server(), "-a", "-q", "pub.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(err_w);
    let mut child = cmd.spawn().expect("start gsend");
    drop(cmd); // its copy of the pipe's write end
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    // 100 MB of text, written until gsend stops reading.
    let writer = std::thread::spawn(move || {
        let line = [b"x".repeat(79), b"\n".to_vec()].concat();
        let chunk = line.repeat(65_536 / 80 + 1);
        let mut written = 0;
        while written < INPUT {
            match input.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        written
    });
    let started = Instant::now();
    wait_until("gsend to write its message", || blocked_writing_stderr(pid));
    let peak_kib = peak_memory_kib(pid);
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        err_r.read_to_end(&mut all).expect("read stderr");
        String::from_utf8_lossy(&all)
            .trim_start_matches('-')
            .to_string()
    });
    let status = finish(child, "gsend");
    let err = reading.join().unwrap();
    let written = writer.join().unwrap();
    eprintln!("gsend's peak memory: {peak_kib} KiB; {written} bytes written to it");
    // The body's limit three times over (the buffer, the text, the message),
    // plus 32 MiB for the program itself (a debug build, its threads' stacks).
    let tolerance = (3 * LIMIT + (32 << 20)) / 1024;
    assert!(
        peak_kib < tolerance,
        "gsend's peak memory was {peak_kib} KiB, over {tolerance} KiB"
    );
    assert!(written < INPUT, "gsend read all {written} bytes");
    assert_eq!(status.status.code(), Some(1), "{err}");
    // Its only message, so the memory was read at the end.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("gsend: standard input is longer than 1048576 bytes"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "quickly");
}
