//! A link's interest kept within what the far server holds (issue 10): coarse
//! interest from a server that knows the limit, everything for one that ignores it.

use std::collections::HashSet;
use std::path::PathBuf;

use gale_proto::frame::{Frame, Hello};
use gale_proto::limits::{DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use gale_proto::{Location, Message, SubEntry};
use gale_tests::*;

/// A config file that limits link interest to `n`, removed on drop.
struct LimitFile(PathBuf);

impl LimitFile {
    fn new(tag: &str, n: usize) -> LimitFile {
        let p = std::env::temp_dir().join(format!(
            "galed-link-limits-{tag}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&p, format!("max_link_interest = {n}\n")).expect("write config");
        LimitFile(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for LimitFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn loc(s: &str) -> Location {
    Location::parse(s).unwrap()
}

#[test]
fn interest_over_the_limit_goes_coarse_and_loses_nothing() {
    // B holds at most 100 locations for a link; A's client subscribes to 300,
    // ten prefixes of 30 in one domain and a few in another.
    let limit = LimitFile::new("coarse", 100);
    let a = Galed::start_linked("A", &[], &[]);
    let b = Galed::start_linked("B", &[a.server()], &["--config", limit.path()]);
    let mut wanted: Vec<String> = (0..290)
        .map(|i| format!("t{}.s{i}@example.org", i % 10))
        .collect();
    wanted.extend((0..10).map(|i| format!("news.n{i}@other.org")));
    let mut sub = RawClient::connect(a.addr);
    sub.subscribe_many(&wanted);
    // A tells B the ten prefixes and one prefix of the other domain.
    wait_until("B to hold A's coarse interest", || {
        b.link("A")
            .is_some_and(|l| l["interest_received"].as_u64() == Some(11))
    });
    let on_a = a.link("B").expect("A's link to B");
    assert_eq!(on_a["interest_mode"], "depth 1", "{on_a}");
    assert_eq!(on_a["interest_limit"], 100, "{on_a}");
    let on_b = b.link("A").expect("B's link to A");
    assert_eq!(on_b["flooded"], false, "{on_b}");
    assert!(on_b["interest_received"].as_u64().unwrap() <= 100, "{on_b}");
    // Published on B: first what A's client does not want (B forwards some of
    // it, under the coarse prefixes; A filters it out), then all it wants.
    let mut publisher = RawClient::connect(b.addr);
    for unwanted in ["t0.other@example.org", "t3@example.org", "zzz@example.org"] {
        publisher.publish(Message::new(vec![loc(unwanted)], "no".into()));
    }
    for w in &wanted {
        publisher.publish(Message::new(vec![loc(w)], w.clone().into()));
    }
    let mut got = HashSet::new();
    for _ in 0..wanted.len() {
        let m = sub.deliver();
        assert_eq!(m.to.len(), 1);
        let to = m.to[0].to_string();
        assert_eq!(m.payload, to.as_bytes(), "only what was subscribed to");
        assert!(got.insert(to), "each message once");
    }
    assert_eq!(got.len(), wanted.len());
    // Nothing more is waiting: the next message is the sentinel.
    publisher.publish(Message::new(vec![loc(&wanted[0])], "sentinel".into()));
    assert_eq!(sub.deliver().payload, "sentinel".as_bytes());
    // B forwarded the two unwanted messages under A's coarse prefixes (not
    // `zzz`, which none covers) and the sentinel; A's client saw none of them.
    let from_b = a.link("B").unwrap()["messages_in"].as_u64().unwrap();
    assert_eq!(from_b, wanted.len() as u64 + 3);
}

/// A link from a server that announces no limits (an older galed, or a broken
/// one), played by a raw connection.
fn fake_link(g: &Galed) -> gale_net::raw::blocking::RawClient {
    let hello = Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        role: 1,
        agent: "old".into(),
    };
    let mut c = gale_net::raw::blocking::RawClient::connect_with(g.addr, hello).expect("link");
    c.set_timeout(DEADLINE);
    c
}

fn interest(reset: bool, locs: impl Iterator<Item = String>) -> Frame {
    Frame::Interest {
        reset,
        all: false,
        entries: locs.map(|l| SubEntry::include(loc(&l))).collect(),
    }
}

#[test]
fn a_peer_over_the_limit_is_sent_everything_and_holds_nothing() {
    let limit = LimitFile::new("flood", 100);
    let b = Galed::start(&["--name", "B", "--config", limit.path()]);
    let mut old = fake_link(&b);
    old.send(&interest(
        true,
        (0..150).map(|i| format!("x{i}@example.org")),
    ))
    .unwrap();
    let line = b.stderr.wait_for("wants 150 locations");
    assert!(line.contains("max_link_interest = 100"), "{line}");
    let link = b.link("old").expect("the link is up");
    assert_eq!(link["flooded"], true, "{link}");
    assert_eq!(link["interest_received"], 0, "{link}");
    // Every message goes to it, wanted or not: none is lost for its clients.
    let mut publisher = RawClient::connect(b.addr);
    publisher.publish(Message::new(vec![loc("y.z@elsewhere.org")], "any".into()));
    loop {
        match old.next_frame().expect("a frame from B") {
            Frame::Deliver(m) => {
                assert_eq!(m.to, [loc("y.z@elsewhere.org")]);
                break;
            }
            Frame::Ping(t) => old.send(&Frame::Pong(t)).unwrap(),
            _ => {}
        }
    }
    // A list within the limit ends it.
    old.send(&interest(true, (0..5).map(|i| format!("x{i}@example.org"))))
        .unwrap();
    wait_until("the link to hold 5 locations", || {
        b.link("old")
            .is_some_and(|l| l["interest_received"] == 5 && l["flooded"] == false)
    });
}
