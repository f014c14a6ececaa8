//! Test harness: start real galed, gsub and gsend processes and watch what they say.
//!
//! Every process is started on a loopback address with a port chosen at run time
//! (galed listens on `127.0.0.1:0` and prints the address it got), and is killed
//! when its handle drops. Waits are on lines a process prints, each with a generous
//! deadline that only fires when something is broken.

#![forbid(unsafe_code)]

pub mod keys;

pub use keys::{domain, gdomain, introduce, key_query, Domain, Gdomain};
pub use rustix::process::Signal;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A Gale user for tests: an id and a key directory of their own (a temporary
/// `GALE_DIR`, removed when dropped). Every gsend, gsub and gkey the harness starts
/// runs as some user, so tests never read or write `~/.gale`.
pub struct User {
    pub id: String,
    pub dir: tempfile::TempDir,
}

impl User {
    pub fn new(id: &str) -> User {
        User {
            id: id.to_string(),
            dir: tempfile::Builder::new()
                .prefix("gale-test-")
                .tempdir()
                .expect("temporary GALE_DIR"),
        }
    }

    /// The user every plain harness call runs as (one per test process). Statics
    /// are never dropped, so its directory lives under `target/tmp`, not `/tmp`.
    pub fn default_user() -> &'static User {
        static USER: std::sync::OnceLock<User> = std::sync::OnceLock::new();
        USER.get_or_init(|| {
            let exe = std::env::current_exe().expect("current_exe");
            let base = exe
                .parent()
                .and_then(|d| d.parent())
                .expect("target dir")
                .join("tmp");
            std::fs::create_dir_all(&base).expect("target/tmp");
            let dir = tempfile::Builder::new()
                .prefix("gale-test-default-")
                .tempdir_in(&base)
                .expect("temporary GALE_DIR");
            User {
                id: "tester@example.org".to_string(),
                dir,
            }
        })
    }

    pub fn gale_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Sets this user's environment on `cmd`: GALE_DIR, GALE_ID, GALE_DOMAIN, and
    /// an empty system directory.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("GALE_DIR", self.dir.path())
            .env("GALE_SYS_DIR", self.dir.path().join("no-system-dir"))
            .env("GALE_ID", &self.id)
            .env("GALE_DOMAIN", "example.org")
            .env_remove("GALE_SUBSCRIBE")
            .env_remove("GALE_NAME")
    }

    /// Runs gkey with `args` and `stdin`; returns its output.
    pub fn gkey(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(bin("gkey"));
        let mut child = self
            .env(&mut cmd)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gkey");
        let mut input = child.stdin.take().expect("piped");
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("gkey output");
        writer.join().unwrap();
        out
    }

    /// Runs gkey and insists that it succeeded; returns its standard output.
    pub fn gkey_ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.gkey(args, stdin);
        assert!(
            out.status.success(),
            "gkey {args:?} as {} failed: {}\n{}",
            self.id,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs gsend as this user.
    pub fn gsend(&self, server: &str, args: &[&str], stdin: &str) -> Output {
        run_gsend(self.gsend_spawn(server, args), stdin.as_bytes())
    }

    /// Runs gsend as this user with any bytes, text or not, on standard input.
    pub fn gsend_bytes(&self, server: &str, args: &[&str], stdin: &[u8]) -> Output {
        run_gsend(self.gsend_spawn(server, args), stdin)
    }

    /// Runs gsend as this user and insists that it succeeded; returns its stderr.
    pub fn send_ok(&self, server: &str, args: &[&str], stdin: &str) -> String {
        let out = self.gsend(server, args, stdin);
        assert!(
            out.status.success(),
            "gsend {args:?} as {} failed: {}\n{}",
            self.id,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn gsend_spawn(&self, server: &str, args: &[&str]) -> Child {
        let mut cmd = Command::new(bin("gsend"));
        self.env(&mut cmd)
            .args(["-s", server])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gsend")
    }

    /// Starts `gsub --json` as this user and waits for its subscription.
    pub fn gsub(&self, server: &str, args: &[&str]) -> Gsub {
        let g = Gsub::spawn_as(self, server, &[&["--json"], args].concat(), true);
        g.stderr.wait_for("gsub: subscribed");
        g
    }
}

/// Path of one of the workspace's binaries. `cargo test` does not build other
/// packages' executables (and a test cannot run cargo: it holds the build lock),
/// so the test command is `cargo build --workspace && cargo test ...`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the programs first, as the README says: \
         `cargo build --workspace && cargo test --workspace --all-targets`",
        path.display()
    );
    path
}

/// Runs galed with `args` to completion (`--status`, `--check-config`, errors).
pub fn galed(args: &[&str]) -> Output {
    Command::new(bin("galed"))
        .args(args)
        .output()
        .expect("run galed")
}

/// A child's output as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines read from a child's stream, delivered over a channel, and kept in a log.
pub struct Lines {
    rx: Receiver<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn spawn(r: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx, log }
    }

    /// The next line, or None at end of stream; panics after `DEADLINE`.
    pub fn next(&self) -> Option<String> {
        self.next_within(DEADLINE)
            .unwrap_or_else(|| panic!("no line within {DEADLINE:?}"))
    }

    /// The next line within `d`: Some(Some(line)), Some(None) at end of stream,
    /// None if nothing came in time.
    pub fn next_within(&self, d: Duration) -> Option<Option<String>> {
        match self.rx.recv_timeout(d) {
            Ok(l) => Some(Some(l)),
            Err(RecvTimeoutError::Disconnected) => Some(None),
            Err(RecvTimeoutError::Timeout) => None,
        }
    }

    /// Reads lines until one contains `pat`; returns it. Panics at end of stream or
    /// after `DEADLINE`, showing everything seen.
    pub fn wait_for(&self, pat: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next_within(left) {
                Some(Some(l)) if l.contains(pat) => return l,
                Some(Some(_)) => {}
                Some(None) => panic!("stream ended waiting for {pat:?}; saw:\n{}", self.dump()),
                None => panic!(
                    "no line with {pat:?} within {DEADLINE:?}; saw:\n{}",
                    self.dump()
                ),
            }
        }
    }

    /// Lines read from any stream (a child's stderr, a socket).
    pub fn spawn_reader(r: impl std::io::Read + Send + 'static) -> Lines {
        Lines::spawn(r)
    }

    pub fn dump(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// A galed whose config file says `settings` (the file lives as long as the
/// returned directory).
pub fn galed_with(settings: &str) -> (Galed, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("config directory");
    let path = dir.path().join("galed.toml");
    std::fs::write(&path, settings).expect("write galed.toml");
    let g = Galed::start(&["--config", path.to_str().expect("UTF-8 path")]);
    (g, dir)
}

/// A user with a key of their own.
pub fn user_with_key(id: &str) -> User {
    let u = User::new(id);
    u.gkey_ok(&["gen", id], b"");
    u
}

/// A running galed, killed on drop.
pub struct Galed {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Lines,
    args: Vec<String>,
    /// The inbox store's directory, made for this galed unless the test gave
    /// `--data-dir`; kept across [`Galed::restart`].
    data: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl Galed {
    pub fn start(args: &[&str]) -> Galed {
        Self::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[&str]) -> Galed {
        Self::start_with(listen, args, |_| {})
    }

    /// Starts galed on `listen` with `args`, after `setup` has had its say on
    /// the command (limits for the process, say).
    pub fn start_with(listen: &str, args: &[&str], setup: impl FnOnce(&mut Command)) -> Galed {
        // Each galed its own store: galeds of tests running at once would
        // otherwise share the default data directory (and its lock).
        let own = !args
            .iter()
            .any(|a| *a == "--data-dir" || *a == "--no-inboxes");
        let data = own.then(|| std::sync::Arc::new(tempfile::tempdir().expect("data dir")));
        Self::start_in(listen, args, data, setup)
    }

    fn start_in(
        listen: &str,
        args: &[&str],
        data: Option<std::sync::Arc<tempfile::TempDir>>,
        setup: impl FnOnce(&mut Command),
    ) -> Galed {
        let mut cmd = Command::new(bin("galed"));
        cmd.args(["--listen", listen]).args(args);
        if let Some(d) = &data {
            cmd.arg("--data-dir").arg(d.path());
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("start galed");
        let stderr = Lines::spawn(child.stderr.take().expect("piped"));
        let line = stderr.wait_for("galed: listening on ");
        let addr = line.rsplit(' ').next().unwrap().parse().expect("address");
        Galed {
            child,
            addr,
            stderr,
            args: args.iter().map(|s| s.to_string()).collect(),
            data,
        }
    }

    /// The inbox store's directory.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data.as_ref().map(|d| d.path())
    }

    /// galed's resident memory (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        rss(self.child.id())
    }

    /// The server list to give clients.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: Signal) {
        signal_child(&self.child, sig);
    }

    /// A server that is down: a galed's address after it was killed (nothing
    /// else listens there until it is restarted with [`Galed::restart`]).
    pub fn down() -> Galed {
        let mut g = Galed::start(&[]);
        g.kill9();
        g
    }

    /// Starts a new galed on the same address and options.
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(|s| s.as_str()).collect();
        let addr = self.addr.to_string();
        let new = Galed::start_in(&addr, &args, self.data.clone(), |_| {});
        let old = std::mem::replace(self, new);
        drop(old);
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait galed")
    }
}

impl Drop for Galed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident memory (VmRSS) of process `pid`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a process's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/<pid>/status")
}

/// A running gsub, killed on drop.
pub struct Gsub {
    pub child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
    unread: Option<std::process::ChildStdout>,
}

impl Gsub {
    /// Starts `gsub --json` against `server`, and waits until its subscription is
    /// confirmed by the server.
    pub fn start(server: &str, args: &[&str]) -> Gsub {
        let g = Self::spawn(server, &[&["--json"], args].concat());
        g.stderr.wait_for("gsub: subscribed");
        g
    }

    /// Starts `gsub --json` whose standard output nobody reads until
    /// [`Gsub::resume`]: once the pipe fills, gsub blocks, as a stuck person's
    /// terminal or a stuck script would.
    pub fn start_stalled(server: &str, args: &[&str]) -> Gsub {
        let g = Self::spawn_inner(server, &[&["--json"], args].concat(), false);
        g.stderr.wait_for("gsub: subscribed");
        g
    }

    /// Starts reading a stalled gsub's output.
    pub fn resume(&mut self) {
        if let Some(out) = self.unread.take() {
            self.stdout = Lines::spawn(out);
        }
    }

    /// Starts gsub without waiting for anything.
    pub fn spawn(server: &str, args: &[&str]) -> Gsub {
        Self::spawn_inner(server, args, true)
    }

    fn spawn_inner(server: &str, args: &[&str], read: bool) -> Gsub {
        Self::spawn_as(User::default_user(), server, args, read)
    }

    /// Starts gsub as `user` without waiting for anything.
    pub fn spawn_as(user: &User, server: &str, args: &[&str], read: bool) -> Gsub {
        let mut cmd = Command::new(bin("gsub"));
        let mut child = user
            .env(&mut cmd)
            .args(["-s", server])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gsub");
        let out = child.stdout.take().expect("piped");
        let stderr = Lines::spawn(child.stderr.take().expect("piped"));
        let (stdout, unread) = if read {
            (Lines::spawn(out), None)
        } else {
            (Lines::spawn(std::io::empty()), Some(out))
        };
        Gsub {
            child,
            stdout,
            stderr,
            unread,
        }
    }

    /// The next message, as JSON. Lines that are not messages (they have a
    /// `type`, such as a reconnect's `gap`) are passed over.
    pub fn message(&self) -> serde_json::Value {
        loop {
            let line = self.stdout.next().unwrap_or_else(|| {
                panic!("gsub ended; stderr:\n{}", self.stderr.dump());
            });
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"));
            if v.get("type").is_none() {
                return v;
            }
        }
    }

    /// True if the JSON message `m` has a fragment `name` with the value `value`.
    pub fn has_fragment(m: &serde_json::Value, name: &str, value: &str) -> bool {
        m["fragments"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["name"] == name && f["value"] == value))
    }

    /// The next message's body, without the final newline gsend gives a body.
    pub fn body(&self) -> String {
        let m = self.message();
        m["body"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('\n')
            .to_string()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gsub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs gsend to completion with `stdin` as input.
pub fn gsend(server: &str, args: &[&str], stdin: &str) -> Output {
    run_gsend(gsend_spawn(server, args), stdin.as_bytes())
}

fn run_gsend(mut child: Child, stdin: &[u8]) -> Output {
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("gsend output");
    writer.join().unwrap();
    out
}

/// Starts gsend (as the default user) with piped stdin, stdout and stderr.
pub fn gsend_spawn(server: &str, args: &[&str]) -> Child {
    User::default_user().gsend_spawn(server, args)
}

/// Runs gsend and insists that it succeeded.
pub fn send_ok(server: &str, args: &[&str], stdin: &str) {
    let out = gsend(server, args, stdin);
    assert!(
        out.status.success(),
        "gsend {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// galed arguments for a named server with links and a short keepalive (so that
/// dead links and peers are noticed within seconds in tests).
fn linked_args(name: &str, links: &[String], extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--name", name, "--keepalive-ms", "1000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for l in links {
        args.push("--link".into());
        args.push(l.clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Sends `sig` to a child process (a gsend, say).
pub fn signal_child(child: &std::process::Child, sig: Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid");
    rustix::process::kill_process(pid, sig).expect("signal the child");
}

impl Galed {
    /// Starts a galed named `name` with links to `links` (each a `--link` value).
    pub fn start_linked(name: &str, links: &[String], extra: &[&str]) -> Galed {
        let args = linked_args(name, links, extra);
        Galed::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The server's status report (`galed --status`).
    pub fn status(&self) -> serde_json::Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("galed --status: {e}"))
    }

    /// The server's status report, or what `galed --status` said instead (when
    /// galed refused the connection, say).
    pub fn try_status(&self) -> Result<serde_json::Value, String> {
        let out = Command::new(bin("galed"))
            .args(["--status", &self.addr.to_string(), "--json"])
            .output()
            .expect("galed --status");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&out.stdout).expect("status JSON"))
    }

    /// The status entry of the link to `peer`, if that link is up.
    pub fn link(&self, peer: &str) -> Option<serde_json::Value> {
        let s = self.status();
        s["links"]
            .as_array()?
            .iter()
            .find(|l| l["peer"] == peer)
            .cloned()
    }

    /// Number of links up.
    pub fn links_up(&self) -> usize {
        self.status()["links"].as_array().map_or(0, |a| a.len())
    }
}

/// Waits until `cond` holds, checking every 20 ms, for at most `DEADLINE`.
/// For state that is only visible by asking (a server's status), not printed.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw protocol client (gale-net's), for what gsub cannot do on demand: the
/// calls a test needs, each panicking with the reason when it fails.
pub struct RawClient(gale_net::raw::blocking::RawClient);

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let mut c = gale_net::raw::blocking::RawClient::connect(addr, "test")
            .unwrap_or_else(|e| panic!("raw client to {addr}: {e}"));
        c.set_timeout(DEADLINE);
        RawClient(c)
    }

    pub fn send(&mut self, f: &gale_proto::Frame) {
        self.0.send(f).expect("send");
    }

    pub fn subscribe(&mut self, loc: &str) {
        let l = gale_proto::Location::parse(loc).unwrap();
        self.0
            .subscribe_entries(false, vec![gale_proto::SubEntry::include(l)])
            .expect("subscribe");
    }

    /// Adds `locs` to the subscription list, in as many SUBSCRIBE frames as the
    /// protocol's 4,096-entry limit needs.
    pub fn subscribe_many(&mut self, locs: &[String]) {
        for chunk in locs.chunks(gale_proto::limits::MAX_SUB_ENTRIES) {
            let entries = chunk
                .iter()
                .map(|l| gale_proto::SubEntry::include(gale_proto::Location::parse(l).unwrap()))
                .collect();
            self.0.subscribe_entries(false, entries).expect("subscribe");
        }
    }

    /// The next message delivered to this client, exactly as the server sent it.
    pub fn deliver(&mut self) -> gale_proto::Message {
        self.0.deliver().expect("a delivery")
    }

    /// Publishes `m` as it is (any id, locations and payload bytes) and waits
    /// until the server has taken it.
    pub fn publish(&mut self, m: gale_proto::Message) {
        self.0.publish(m).expect("publish");
    }

    pub fn unsubscribe(&mut self, loc: &str) {
        self.0.unsubscribe(&[loc]).expect("unsubscribe");
    }

    /// Publishes `n` messages of `size` payload bytes to `loc`, unpaced, then
    /// waits until the server has taken them all (see gale-net).
    pub fn publish_burst(&mut self, loc: &str, n: u64, size: usize) {
        self.0.publish_burst(loc, n, size).expect("burst");
    }

    /// Reads until `n` messages are accounted for, delivered or reported lost
    /// (LOSSAGE). Returns (delivered, lost); panics if nothing comes for
    /// `DEADLINE`.
    pub fn count(&mut self, n: u64) -> (u64, u64) {
        let c = self.0.count(n, DEADLINE).expect("count");
        assert!(
            c.delivered + c.lost >= n,
            "{} delivered and {} reported lost of {n}, then nothing for {DEADLINE:?}",
            c.delivered,
            c.lost
        );
        (c.delivered, c.lost)
    }
}
