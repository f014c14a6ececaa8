//! Resume (protocol version 2): a gsub that reconnects gets what was sent while it
//! was away, or is told what it missed. Real galed, gsub and gsend processes.
//!
//! To break a gsub's connection without stopping its server, it talks to galed
//! through [`Proxy`], which the test cuts (and holds new connections) and then
//! lets through again.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use gale_tests::*;

const LOC: &str = "pub.resume@example.org";

/// A TCP proxy in front of a galed.
struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// New connections wait here instead of going through.
    hold: bool,
    held: Vec<TcpStream>,
    /// Both ends of every connection passed through, to cut them.
    live: Vec<TcpStream>,
}

impl ProxyState {
    fn pass(&mut self, client: TcpStream) {
        let Ok(server) = TcpStream::connect(self.upstream) else {
            return;
        };
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (mut r, mut w) = (from.try_clone().unwrap(), to.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(Shutdown::Both);
                let _ = r.shutdown(Shutdown::Both);
            });
        }
        self.live.push(client);
        self.live.push(server);
    }
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            upstream,
            hold: false,
            held: Vec::new(),
            live: Vec::new(),
        }));
        let st = state.clone();
        // Lives as long as the test process; the held sockets are closed with it.
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(c) = c else { return };
                let mut s = st.lock().unwrap();
                if s.hold {
                    s.held.push(c);
                } else {
                    s.pass(c);
                }
            }
        });
        Proxy { addr, state }
    }

    fn server(&self) -> String {
        self.addr.to_string()
    }

    /// Breaks every connection through the proxy, and holds new ones.
    fn cut_and_hold(&self) {
        let mut s = self.state.lock().unwrap();
        s.hold = true;
        for c in s.live.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Lets held and new connections through.
    fn release(&self) {
        let mut s = self.state.lock().unwrap();
        s.hold = false;
        for c in std::mem::take(&mut s.held) {
            s.pass(c);
        }
    }
}

/// The next line of gsub's JSON output.
fn next_json(sub: &Gsub) -> serde_json::Value {
    let line = sub
        .stdout
        .next()
        .unwrap_or_else(|| panic!("gsub ended; stderr:\n{}", sub.stderr.dump()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

fn body(m: &serde_json::Value) -> &str {
    m["body"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('\n')
}

/// A gsub through `proxy` receives "one"; its connection is cut and held
/// while "two", a message it does not want, and "three" are sent; then it is
/// let through again.
fn away_for_two(g: &Galed, proxy: &Proxy) -> Gsub {
    let sub = Gsub::start(&proxy.server(), &[LOC]);
    send_ok(&g.server(), &[LOC], "one\n");
    assert_eq!(body(&next_json(&sub)), "one");
    proxy.cut_and_hold();
    sub.stderr.wait_for("gsub: connection to");
    send_ok(&g.server(), &[LOC], "two\n");
    send_ok(&g.server(), &["pub.other@example.org"], "not wanted\n");
    send_ok(&g.server(), &[LOC], "three\n");
    proxy.release();
    sub
}

#[test]
fn messages_sent_during_a_reconnect_are_replayed_once_in_order() {
    let g = Galed::start(&[]);
    let proxy = Proxy::start(g.addr);
    let sub = away_for_two(&g, &proxy);
    let note = sub.stderr.wait_for("gsub: resumed on");
    assert!(note.contains("2 messages"), "{note}");
    send_ok(&g.server(), &[LOC], "four\n");

    // Exactly once and in order: a duplicate or a reordering would show here.
    let got: Vec<String> = (0..3).map(|_| body(&next_json(&sub)).to_string()).collect();
    assert_eq!(got, ["two", "three", "four"]);
    assert!(
        !sub.stderr.dump().contains("missed messages"),
        "{}",
        sub.stderr.dump()
    );
    let w = &g.status()["resume_window"];
    assert!(w["entries"].as_u64() >= Some(5), "{w}");
    assert_eq!(w["gaps"].as_u64(), Some(0), "{w}");
}

#[test]
fn a_restarted_galed_is_a_gap_on_stderr_and_in_json() {
    let mut g = Galed::start(&[]);
    let sub = Gsub::start(&g.server(), &[LOC]);
    send_ok(&g.server(), &[LOC], "one\n");
    assert_eq!(body(&next_json(&sub)), "one");

    g.kill9();
    sub.stderr.wait_for("gsub: connection to");
    g.restart();
    let line = sub.stderr.wait_for("gsub: missed messages");
    assert!(
        line.contains("count unknown") && line.contains("restarted"),
        "{line}"
    );
    let gap = next_json(&sub);
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["server"], g.server());
    assert_eq!(gap["count"], serde_json::Value::Null);
    assert!(gap["why"].as_str().unwrap().contains("restarted"), "{gap}");
    assert!(
        gap["from"].as_str().unwrap() <= gap["to"].as_str().unwrap(),
        "{gap}"
    );

    // And it is live again.
    sub.stderr.wait_for("gsub: subscribed");
    send_ok(&g.server(), &[LOC], "two\n");
    assert_eq!(body(&next_json(&sub)), "two");
}

#[test]
fn failing_over_to_another_server_is_a_gap() {
    let mut a = Galed::start(&["--name", "server-a"]);
    let b = Galed::start(&["--name", "server-b"]);
    let sub = Gsub::start(&format!("{},{}", a.server(), b.server()), &[LOC]);
    send_ok(&a.server(), &[LOC], "one\n");
    assert_eq!(body(&next_json(&sub)), "one");

    a.kill9();
    let line = sub.stderr.wait_for("gsub: missed messages");
    assert!(
        line.contains("failed over from server-a to server-b"),
        "{line}"
    );
    let gap = next_json(&sub);
    assert_eq!(
        (&gap["type"], &gap["server"]),
        (&"gap".into(), &b.server().into())
    );
    sub.stderr.wait_for("gsub: subscribed");
    send_ok(&b.server(), &[LOC], "two\n");
    assert_eq!(body(&next_json(&sub)), "two");
}

#[test]
fn a_passed_window_is_a_gap_with_its_count() {
    // A window that keeps no message whole: each is remembered only by id, time
    // and locations, so the gap can be counted.
    let (g, _dir) = galed_with("resume_window_bytes = 0\n");
    let proxy = Proxy::start(g.addr);
    let sub = away_for_two(&g, &proxy);
    let line = sub.stderr.wait_for("gsub: missed messages");
    assert!(
        line.contains("(2 messages)") && line.contains("resume window"),
        "{line}"
    );
    let gap = next_json(&sub);
    assert_eq!(
        (&gap["type"], &gap["count"]),
        (&"gap".into(), &2.into()),
        "{gap}"
    );
    send_ok(&g.server(), &[LOC], "four\n");
    assert_eq!(body(&next_json(&sub)), "four");
    let w = &g.status()["resume_window"];
    assert_eq!(w["entries"].as_u64(), Some(0), "{w}");
    assert!(w["tombstones"].as_u64() >= Some(5), "{w}");
}
