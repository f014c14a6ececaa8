//! The routing core over real loopback sockets, driven by a raw-frame client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gale_net::raw::{RawClient, RawError};
use gale_proto::frame::{ErrorCode, Frame, Hello};
use gale_proto::limits::DEFAULT_MAX_FRAME;
use gale_proto::{Location, Message, SubEntry};
use gale_server::{Config, Router};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    router: Arc<Router>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server(config: Config) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let router = Arc::new(Router::new(config));
    let stop = CancellationToken::new();
    tokio::spawn(gale_server::serve(vec![l], router.clone(), stop.clone()));
    Server { addr, router, stop }
}

/// gale-net's raw client, panicking with the reason when a call fails.
struct Raw(RawClient);

impl Raw {
    async fn connect(addr: std::net::SocketAddr) -> Raw {
        let mut c = RawClient::connect(addr, "test").await.unwrap();
        c.set_timeout(WAIT);
        Raw(c)
    }

    async fn send(&mut self, f: Frame) {
        self.0.send(&f).await.unwrap();
    }

    /// The next frame, or None when the server closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        match self.0.next_frame().await {
            Ok(f) => Some(f),
            Err(RawError::Closed) => None,
            Err(e) => panic!("waiting for a frame: {e}"),
        }
    }

    /// Round trip: once the PONG arrives the server has acted on everything before.
    async fn sync(&mut self) -> Vec<Frame> {
        self.0.sync().await.expect("connection closed before PONG")
    }

    async fn sub(&mut self, entries: &[(bool, &str)]) {
        let entries = entries
            .iter()
            .map(|(p, l)| SubEntry {
                positive: *p,
                location: Location::parse(l).unwrap(),
            })
            .collect();
        self.0.subscribe_entries(true, entries).await.unwrap();
    }

    async fn publish(&mut self, to: &[&str], body: &'static [u8]) -> Message {
        let m = msg(to, body);
        self.send(Frame::Publish(m.clone())).await;
        m
    }
}

fn msg(to: &[&str], body: &'static [u8]) -> Message {
    Message::new(
        to.iter().map(|l| Location::parse(l).unwrap()).collect(),
        Bytes::from_static(body),
    )
}

fn delivered(frames: &[Frame]) -> Vec<Bytes> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Deliver(m) => Some(m.payload.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn routes_by_prefix_and_exclusion() {
    let srv = server(Config::default()).await;
    let mut a = Raw::connect(srv.addr).await;
    let mut b = Raw::connect(srv.addr).await;
    let mut publ = Raw::connect(srv.addr).await;
    a.sub(&[(true, "pub@x.org"), (false, "pub.spam@x.org")])
        .await;
    b.sub(&[(true, "pub.tv@x.org")]).await;
    publ.publish(&["pub.tv.buffy@x.org"], b"\0tv").await;
    publ.publish(&["pub.spam.eggs@x.org"], b"\0spam").await;
    publ.publish(&["pub.tvguide@x.org"], b"\0guide").await;
    publ.publish(&["other@x.org", "pub.tv@x.org"], b"\0two")
        .await;
    publ.sync().await;
    assert_eq!(delivered(&a.sync().await), ["\0tv", "\0guide", "\0two"]);
    assert_eq!(delivered(&b.sync().await), ["\0tv", "\0two"]);
    // The publisher is not sent its own messages, even when subscribed.
    publ.sub(&[(true, "@x.org")]).await;
    publ.publish(&["pub@x.org"], b"\0own").await;
    assert!(delivered(&publ.sync().await).is_empty());
    assert_eq!(delivered(&a.sync().await), ["\0own"]);
    // Unsubscribing stops delivery.
    a.send(Frame::Unsubscribe {
        entries: vec![SubEntry::include(Location::parse("pub@x.org").unwrap())],
    })
    .await;
    a.sync().await;
    publ.publish(&["pub.x@x.org"], b"\0gone").await;
    publ.sync().await;
    assert!(delivered(&a.sync().await).is_empty());
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let srv = server(Config::default()).await;
    let mut good = Raw::connect(srv.addr).await;
    good.sub(&[(true, "a@x.org")]).await;
    let mut publ = Raw::connect(srv.addr).await;

    // Garbage before the handshake.
    let mut g = TcpStream::connect(srv.addr).await.unwrap();
    g.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, g.read_to_end(&mut out))
        .await
        .unwrap();
    let mut ob = BytesMut::from(&out[..]);
    assert!(matches!(
        Frame::decode(&mut ob, DEFAULT_MAX_FRAME).unwrap(),
        Some(Frame::Error {
            code: ErrorCode::TooLarge,
            ..
        })
    ));

    // Oversized frame after the handshake.
    let mut big = Raw::connect(srv.addr).await;
    big.0
        .send_raw(&(DEFAULT_MAX_FRAME + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(matches!(
        big.next().await,
        Some(Frame::Error {
            code: ErrorCode::TooLarge,
            ..
        })
    ));
    assert!(big.next().await.is_none(), "closed after the error");

    // A malformed frame: unknown mandatory type.
    let mut bad = Raw::connect(srv.addr).await;
    bad.0.send_raw(&[0, 0, 0, 1, 0x55]).await.unwrap();
    assert!(matches!(
        bad.next().await,
        Some(Frame::Error {
            code: ErrorCode::Malformed,
            ..
        })
    ));

    // A bad location in a PUBLISH.
    let mut badloc = Raw::connect(srv.addr).await;
    let mut f = Frame::Publish(msg(&["a@x.org"], b"\0")).to_bytes().to_vec();
    f[5 + 19 + 3] = b'A'; // "a@x.org" -> "a@A.org": not canonical
    f[5 + 19 + 4] = b'A';
    badloc.0.send_raw(&f).await.unwrap();
    assert!(matches!(
        badloc.next().await,
        Some(Frame::Error {
            code: ErrorCode::BadLocation,
            ..
        })
    ));

    // Half a frame, then the client vanishes.
    let mut half = Raw::connect(srv.addr).await;
    let f = Frame::Publish(msg(&["a@x.org"], b"\0half")).to_bytes();
    half.0.send_raw(&f[..f.len() / 2]).await.unwrap();
    drop(half);

    publ.publish(&["a@x.org"], b"\0still").await;
    publ.sync().await;
    assert_eq!(delivered(&good.sync().await), ["\0still"]);
}

#[tokio::test]
async fn slow_subscriber_loses_and_is_told() {
    let cfg = Config {
        client_queue_bytes: 256 * 1024,
        ..Config::default()
    };
    let srv = server(cfg).await;
    let mut slow = Raw::connect(srv.addr).await;
    slow.sub(&[(true, "flood@x.org")]).await;
    let mut fast = Raw::connect(srv.addr).await;
    fast.sub(&[(true, "flood@x.org")]).await;
    let mut publ = Raw::connect(srv.addr).await;
    let n = 5_000u64;
    // 4 KB messages: 20 MB in all, far beyond what socket buffers absorb.
    static BIG: [u8; 4096] = [0; 4096];
    // The live reader drains as messages arrive; the stalled one reads nothing.
    let live = tokio::spawn(async move {
        let (mut got, mut lost) = (0u64, 0u64);
        while got + lost < n {
            match fast.next().await.unwrap() {
                Frame::Deliver(_) => got += 1,
                Frame::Lossage(k) => lost += k,
                f => panic!("unexpected {f:?}"),
            }
        }
        (got, lost)
    });
    for _ in 0..n {
        publ.publish(&["flood@x.org"], &BIG).await;
    }
    publ.sync().await;
    let (got_live, lost_live) = live.await.unwrap();
    assert_eq!(got_live + lost_live, n);
    let (mut got, mut lost) = (0u64, 0u64);
    for f in slow.sync().await {
        match f {
            Frame::Deliver(_) => got += 1,
            Frame::Lossage(k) => lost += k,
            f => panic!("unexpected {f:?}"),
        }
    }
    assert!(lost > 0, "the stalled reader must be told of its loss");
    assert_eq!(
        got + lost,
        n,
        "every message either delivered or counted as lost"
    );
    assert!(got_live > got, "the live reader got more ({got_live}, lost {lost_live}) than the stalled one ({got}, lost {lost})");
}

#[tokio::test]
async fn will_is_published_when_a_connection_dies() {
    let srv = server(Config::default()).await;
    let mut watcher = Raw::connect(srv.addr).await;
    watcher.sub(&[(true, "_gale.notice@x.org")]).await;
    let mut dying = Raw::connect(srv.addr).await;
    dying
        .send(Frame::Will(Some(msg(
            &["_gale.notice.bob@x.org"],
            b"\0gone",
        ))))
        .await;
    dying.sync().await;
    drop(dying);
    assert!(matches!(watcher.next().await, Some(Frame::Deliver(m)) if &m.payload[..] == b"\0gone"));
    // A cleared will is not published.
    let mut polite = Raw::connect(srv.addr).await;
    polite
        .send(Frame::Will(Some(msg(&["_gale.notice.al@x.org"], b"\0w"))))
        .await;
    polite.send(Frame::Will(None)).await;
    polite.sync().await;
    drop(polite);
    let mut publ = Raw::connect(srv.addr).await;
    publ.publish(&["_gale.notice.z@x.org"], b"\0after").await;
    assert!(
        matches!(watcher.next().await, Some(Frame::Deliver(m)) if &m.payload[..] == b"\0after")
    );
}

#[tokio::test(start_paused = true)]
async fn dead_peer_is_detected_and_pinged() {
    // Time is paused: the keepalive periods pass as soon as everything waits.
    let cfg = Config {
        keepalive_ms: 200,
        ..Config::default()
    };
    let srv = server(cfg).await;
    let mut quiet = Raw::connect(srv.addr).await;
    // The server pings an idle connection, then closes it when nothing comes back.
    assert!(matches!(quiet.next().await, Some(Frame::Ping(_))));
    assert!(quiet.next().await.is_none());
    assert_eq!(srv.router.connections().len(), 0);
}

#[tokio::test]
async fn version_mismatch_is_refused_with_reason() {
    let srv = server(Config::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let hello = Frame::Hello(Hello {
        min_version: 9,
        max_version: 9,
        max_frame: 4096,
        role: 0,
        agent: "x".into(),
    });
    s.write_all(&hello.to_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap();
    let mut b = BytesMut::from(&out[..]);
    match Frame::decode(&mut b, DEFAULT_MAX_FRAME).unwrap() {
        Some(Frame::Error {
            code: ErrorCode::UnsupportedVersion,
            text,
        }) => {
            assert!(text.contains("versions 1 to 3"), "{text}")
        }
        f => panic!("{f:?}"),
    }
}

/// A message numbered `n` in its payload, to s@x.org.
fn numbered(n: u64) -> Message {
    Message {
        id: gale_proto::MessageId::generate(),
        hops: 0,
        to: vec![Location::parse("s@x.org").unwrap()],
        payload: Bytes::copy_from_slice(&n.to_be_bytes()),
    }
}

fn number(m: &Message) -> u64 {
    u64::from_be_bytes(m.payload[..8].try_into().unwrap())
}

/// Sends RESUME and SUBSCRIBE s@x.org; returns the messages' numbers up to
/// RESUMED, and RESUMED.
async fn resume(c: &mut Raw, r: gale_proto::Resume) -> (Vec<(u64, Message)>, gale_proto::Resumed) {
    c.send(Frame::Resume(r)).await;
    c.send(Frame::Subscribe {
        replace: true,
        entries: vec![SubEntry::include(Location::parse("s@x.org").unwrap())],
    })
    .await;
    let mut replayed = Vec::new();
    loop {
        match c.next().await {
            Some(Frame::Deliver(m)) => replayed.push((number(&m), m)),
            Some(Frame::Resumed(r)) => return (replayed, r),
            f => panic!("{f:?}"),
        }
    }
}

/// A subscriber that leaves and resumes while a publisher never stops gets every
/// message once (dropping duplicate ids, as clients do) and in order: the replay,
/// RESUMED, then live messages, with nothing lost between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_during_a_stream_loses_nothing_and_keeps_order() {
    let srv = server(Config::default()).await;
    let addr = srv.addr;
    let stop = CancellationToken::new();
    let done = stop.clone();
    // How many messages the server has confirmed routing.
    let routed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = routed.clone();
    let publisher = tokio::spawn(async move {
        let mut p = Raw::connect(addr).await;
        let mut n = 0u64;
        while !done.is_cancelled() {
            n += 1;
            p.send(Frame::Publish(numbered(n))).await;
            if n.is_multiple_of(32) {
                p.sync().await;
                count.store(n, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let mut c = Raw::connect(addr).await;
    let (replayed, first) = resume(&mut c, gale_proto::Resume::default()).await;
    assert!(replayed.is_empty());
    assert_eq!(first.outcome, gale_proto::Outcome::Fresh);
    let mut seen = 0u64;
    let mut last = None;
    for _ in 0..3 {
        let mut got = 0;
        // Live for a while, then the connection breaks.
        while got < 200 {
            if let Some(Frame::Deliver(m)) = c.next().await {
                let n = number(&m);
                if n <= seen {
                    continue; // a duplicate id, dropped by a client
                }
                assert!(seen == 0 || n == seen + 1, "{n} after {seen}");
                (seen, last, got) = (n, Some(m.id), got + 1);
            }
        }
        drop(c);
        // Away while the publisher goes on.
        while routed.load(std::sync::atomic::Ordering::SeqCst) < seen + 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        c = Raw::connect(addr).await;
        let (replayed, r) = resume(
            &mut c,
            gale_proto::Resume {
                epoch: first.epoch,
                position: first.position,
                last_id: last,
            },
        )
        .await;
        assert_eq!(r.outcome, gale_proto::Outcome::Complete, "{r:?}");
        assert_eq!(r.replayed as usize, replayed.len());
        assert!(!replayed.is_empty(), "the publisher went on meanwhile");
        for (n, m) in replayed {
            assert_eq!(n, seen + 1, "replay in order, from where it stopped");
            (seen, last) = (n, Some(m.id));
        }
        // Live from here: a message routed during the replay may come again.
        let mut live = 0;
        while live < 200 {
            if let Some(Frame::Deliver(m)) = c.next().await {
                let n = number(&m);
                if n <= seen {
                    continue; // a duplicate id, dropped by a client
                }
                assert_eq!(n, seen + 1, "nothing lost between replay and live");
                (seen, last, live) = (n, Some(m.id), live + 1);
            }
        }
    }
    stop.cancel();
    publisher.await.unwrap();
    let _ = last;
}
