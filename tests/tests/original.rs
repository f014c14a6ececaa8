//! Original-protocol clients on our galed, with raw clients written from the
//! `gale-orig` codec (the original programs themselves run in the system suite,
//! `tests/original/interop.sh`, inside a network namespace).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use gale_orig::fragment::{self, Fragment, Value};
use gale_orig::wire::{Decoder, OrigFrame, VERSION_WORD};
use gale_tests::*;

/// A raw client of the original protocol.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    dec: Decoder,
}

impl Raw {
    fn connect(g: &Galed) -> Raw {
        let mut s = TcpStream::connect(g.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.write_all(&VERSION_WORD).unwrap();
        let mut r = Raw {
            s,
            buf: BytesMut::new(),
            dec: Decoder::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.buf.len() < 4 {
            assert!(Instant::now() < deadline, "no version word from galed");
            r.fill();
        }
        assert_eq!(
            &r.buf.split_to(4)[..],
            &VERSION_WORD,
            "galed's version word"
        );
        r
    }

    fn fill(&mut self) -> bool {
        let mut b = [0u8; 4096];
        match self.s.read(&mut b) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
            Err(_) => true,
        }
    }

    fn send(&mut self, f: &OrigFrame) {
        self.s.write_all(&f.to_bytes()).unwrap();
    }

    /// The next frame within `d`, if any.
    fn next_within(&mut self, d: Duration) -> Option<OrigFrame> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).expect("a valid frame") {
                return Some(f);
            }
            if Instant::now() >= deadline || !self.fill() {
                return None;
            }
        }
    }
}

fn puff(routing: &str, content: Bytes) -> OrigFrame {
    OrigFrame::Puff {
        routing: routing.into(),
        content,
    }
}

fn body(text: &str) -> Bytes {
    fragment::encode(&[Fragment::text("message/body", text)])
}

/// A subscriber with `gimme` and a publisher, once a probe from the publisher
/// gets through (the original protocol has no acknowledgement).
fn subscribed(g: &Galed, gimme: &str, probe_to: &str) -> (Raw, Raw) {
    let mut sub = Raw::connect(g);
    let mut publisher = Raw::connect(g);
    sub.send(&OrigFrame::Gimme(gimme.into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "subscription never took effect");
        publisher.send(&puff(probe_to, body("probe")));
        if let Some(OrigFrame::Puff { content, .. }) = sub.next_within(Duration::from_millis(200)) {
            if content == body("probe") {
                // Drain the other probes.
                while sub.next_within(Duration::from_millis(300)).is_some() {}
                return (sub, publisher);
            }
        }
    }
}

#[test]
fn original_clients_exchange_puffs_byte_for_byte() {
    let g = Galed::start(&[]);
    let (mut sub, mut publisher) = subscribed(
        &g,
        "@example.org/user/pub/:-@example.org/user/pub/secret/",
        "@example.org/user/pub/probe/",
    );
    // An opaque signature blob: the server must not touch it.
    let content = fragment::encode(&[Fragment {
        name: "security/signature".into(),
        value: Value::Data(Bytes::from_static(
            b"\x00\x00\x00\x04\x68\x13\x01\x00\x00\x00\x00\x00rest",
        )),
    }]);
    // Unused and unknown opcodes are skipped, however many.
    for op in [4u32, 7, 11, 99, 4, 7] {
        publisher.send(&OrigFrame::Skipped {
            opcode: op,
            len: 24,
            oversize: false,
        });
    }
    publisher.send(&puff("@example.org/user/pub/secret/", body("vetoed")));
    publisher.send(&puff(
        "@example.org/user/pub/test/:@example.org/user/pub/secret/",
        body("vetoed too: the latest entry wins over all categories"),
    ));
    publisher.send(&puff("@example.org/user/pub/test/", content.clone()));
    match sub.next_within(Duration::from_secs(10)) {
        Some(OrigFrame::Puff {
            routing,
            content: c,
        }) => {
            assert_eq!(routing, "@example.org/user/pub/test/");
            assert_eq!(c, content, "the content crossed byte for byte");
        }
        other => panic!("expected the puff, got {other:?}"),
    }
    assert_eq!(sub.next_within(Duration::from_millis(500)), None);
}

#[test]
fn our_gsub_shows_an_original_signature_as_unverified() {
    let g = Galed::start(&[]);
    let sub = Gsub::start(&g.server(), &["pub.test@example.org"]);
    let mut publisher = Raw::connect(&g);
    // A signed puff as an original gsend makes it: the signer as a key stub.
    let inner = fragment::encode(&[
        Fragment::text("message/body", "signed in the old way\r\n"),
        Fragment::text("message/sender", "Alice"),
    ]);
    let mut head = BytesMut::new();
    head.put_slice(&[0x68, 0x13, 0x01, 0x00]);
    head.put_u32(2);
    head.put_slice(b"sg");
    head.put_slice(&[0x68, 0x13, 0x00, 0x02]);
    gale_orig::wire::put_ltext(&mut head, "alice@example.org");
    let mut sig = BytesMut::new();
    sig.put_u32(head.len() as u32);
    sig.put_slice(&head);
    sig.put_u32(0);
    sig.put_slice(&inner);
    publisher.send(&puff(
        "@example.org/user/pub/test/",
        fragment::encode(&[Fragment {
            name: "security/signature".into(),
            value: Value::Data(sig.freeze()),
        }]),
    ));
    let m = sub.message();
    assert_eq!(m["body"], "signed in the old way\n", "{m}");
    assert_eq!(m["verify"], "unverified", "{m}");
    assert_eq!(m["from"], "alice@example.org", "{m}");
}

#[test]
fn original_clients_get_our_public_messages_and_we_are_told_of_private_ones() {
    let g = Galed::start(&[]);
    let (mut sub, _publisher) = subscribed(
        &g,
        "@example.org/user/pub/test/:@example.org/user/tester/",
        "@example.org/user/pub/test/",
    );
    send_ok(&g.server(), &["pub.test@example.org"], "hello, old world\n");
    let Some(OrigFrame::Puff { routing, content }) = sub.next_within(Duration::from_secs(10))
    else {
        panic!("no puff")
    };
    assert_eq!(routing, "@example.org/user/pub/test/");
    let frags = fragment::decode(&content).unwrap();
    assert_eq!(
        fragment::find_text(&frags, "message/body"),
        Some("hello, old world\r\n")
    );
    let sender = fragment::find_text(&frags, "message/sender").unwrap();
    assert!(sender.contains("not verifiable here"), "{sender}");
    assert!(frags.iter().any(|f| f.name == "id/time"));

    // A private message (to the sender's own key) is not offered, and gsend says so.
    let out = User::default_user().gsend(&g.server(), &["tester@example.org"], "secret\n");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not offered to 1 original-Gale client"),
        "{err}"
    );
    assert_eq!(sub.next_within(Duration::from_millis(500)), None);
}

#[test]
fn an_original_clients_will_is_published_when_it_goes() {
    let g = Galed::start(&[]);
    let sub = Gsub::start(&g.server(), &["_gale.notice.old@example.org"]);
    let mut client = Raw::connect(&g);
    client.send(&OrigFrame::Will {
        routing: "@example.org/user/_gale/notice/old/".into(),
        content: fragment::encode(&[Fragment::text("notice/presence", "out.disconnected")]),
    });
    // Pending frames are processed before the end is.
    client.s.shutdown(std::net::Shutdown::Both).unwrap();
    let m = sub.message();
    assert!(
        Gsub::has_fragment(&m, "notice.presence", "out.disconnected"),
        "{m}"
    );
}
