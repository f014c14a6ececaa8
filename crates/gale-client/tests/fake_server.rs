//! The client task against a tiny fake server on 127.0.0.1:0 that speaks frames
//! with gale_proto. Every wait is on an event or a frame; timeouts are only a
//! safety net.

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gale_client::{Client, ClientConfig, Compose, Event, Events, ServerAddr, Will};
use gale_proto::codec::FrameCodec;
use gale_proto::{ErrorCode, Frame, Location, Message, SubscriptionList, Welcome};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const LIMIT: Duration = Duration::from_secs(10);

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

struct FakeConn(Framed<TcpStream, FrameCodec>);

impl FakeConn {
    /// Accepts a client and completes the handshake.
    async fn accept(listener: &TcpListener) -> FakeConn {
        let (sock, _) = within(listener.accept()).await.unwrap();
        let mut c = FakeConn(Framed::new(sock, FrameCodec::default()));
        assert!(matches!(c.recv().await, Frame::Hello(h) if h.role == 0 && h.max_version >= 1));
        c.send(Frame::Welcome(Welcome {
            version: 1,
            max_frame: 1 << 20,
            keepalive_ms: 30_000,
            server: "fake".into(),
        }))
        .await;
        c
    }

    async fn recv(&mut self) -> Frame {
        within(self.0.next())
            .await
            .expect("client hung up")
            .unwrap()
    }

    async fn send(&mut self, f: Frame) {
        self.0.send(f).await.unwrap();
    }
}

async fn setup(subs: &[&str]) -> (TcpListener, Client, Events) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = ClientConfig::new(
        vec![ServerAddr {
            host: "127.0.0.1".into(),
            port,
        }],
        "test",
    );
    cfg.subscriptions = SubscriptionList::from_args(subs, "x.org").unwrap();
    let (client, events) = Client::start(cfg);
    (listener, client, events)
}

async fn next_matching(events: &mut Events, want: impl Fn(&Event) -> bool) -> Event {
    loop {
        let ev = within(events.next()).await.expect("events ended");
        if want(&ev) {
            return ev;
        }
    }
}

fn message(body: &str) -> Message {
    Compose {
        body: Some(body.into()),
        ..Compose::default()
    }
    .message(vec![Location::parse("a@x.org").unwrap()])
    .unwrap()
}

#[tokio::test]
async fn connects_subscribes_and_receives_once() {
    let (listener, _client, mut events) = setup(&["a", "-", "a.b"]).await;
    let mut server = FakeConn::accept(&listener).await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    assert!(matches!(ev, Event::Connected { name, .. } if name == "fake"));
    match server.recv().await {
        Frame::Subscribe { replace, entries } => {
            assert!(replace);
            let shown: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
            assert_eq!(shown, ["a@x.org", "-a.b@x.org"]);
        }
        f => panic!("expected SUBSCRIBE, got {f:?}"),
    }
    // The subscription is confirmed by the PONG to the PING that follows it.
    let Frame::Ping(t) = server.recv().await else {
        panic!("expected the PING that confirms the subscription")
    };
    server.send(Frame::Pong(t)).await;
    next_matching(&mut events, |e| matches!(e, Event::Subscribed { .. })).await;
    // The same message twice, then another: the duplicate is dropped.
    let m1 = message("one");
    let m2 = message("two");
    for m in [&m1, &m1, &m2] {
        server.send(Frame::Deliver(m.clone())).await;
    }
    server.send(Frame::Lossage(3)).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        match within(events.next()).await.unwrap() {
            Event::Message(d) => got.push(Some(d.message.id)),
            Event::Lossage(n) => {
                assert_eq!(n, 3);
                got.push(None);
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(got, [Some(m1.id), Some(m2.id), None]);
    // The client answers the server's pings.
    server.send(Frame::Ping(77)).await;
    assert_eq!(server.recv().await, Frame::Pong(77));
}

#[tokio::test]
async fn publish_and_flush_confirmed_by_pong() {
    let (listener, client, mut events) = setup(&["a"]).await;
    let mut server = FakeConn::accept(&listener).await;
    next_matching(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    assert!(matches!(server.recv().await, Frame::Subscribe { .. }));
    assert!(
        matches!(server.recv().await, Frame::Ping(_)),
        "subscription ping"
    );
    let m = message("hello");
    client.publish(m.clone()).unwrap();
    assert_eq!(client.held(), 1);
    let flush = tokio::spawn({
        let c = client.clone();
        async move { c.flush().await }
    });
    assert_eq!(server.recv().await, Frame::Publish(m));
    let Frame::Ping(token) = server.recv().await else {
        panic!("expected a PING after the publish")
    };
    assert!(!flush.is_finished());
    server.send(Frame::Pong(token)).await;
    within(flush).await.unwrap().unwrap();
    assert_eq!(client.held(), 0);
    // Nothing outstanding: flush resolves at once.
    within(client.flush()).await.unwrap();
}

#[tokio::test]
async fn reconnect_resends_subscription_and_unconfirmed_publishes() {
    let (listener, client, mut events) = setup(&["a"]).await;
    let mut first = FakeConn::accept(&listener).await;
    assert!(matches!(first.recv().await, Frame::Subscribe { .. }));
    assert!(
        matches!(first.recv().await, Frame::Ping(_)),
        "subscription ping"
    );
    let m = message("keep me");
    client.publish(m.clone()).unwrap();
    assert_eq!(first.recv().await, Frame::Publish(m.clone()));
    assert!(matches!(first.recv().await, Frame::Ping(_)));
    drop(first); // no PONG: the publish is unconfirmed

    let flush = tokio::spawn({
        let c = client.clone();
        async move { c.flush().await }
    });
    let mut second = FakeConn::accept(&listener).await;
    match second.recv().await {
        Frame::Subscribe { replace, entries } => {
            assert!(replace);
            assert_eq!(entries[0].location.as_str(), "a@x.org");
        }
        f => panic!("expected SUBSCRIBE, got {f:?}"),
    }
    assert!(
        matches!(second.recv().await, Frame::Ping(_)),
        "subscription ping"
    );
    assert_eq!(second.recv().await, Frame::Publish(m));
    let Frame::Ping(token) = second.recv().await else {
        panic!("expected PING")
    };
    second.send(Frame::Pong(token)).await;
    within(flush).await.unwrap().unwrap();
    next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    next_matching(&mut events, |e| matches!(e, Event::Connected { .. })).await;
}

#[tokio::test]
async fn publishes_queue_while_offline_and_queue_is_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = ClientConfig::new(
        vec![ServerAddr {
            host: "127.0.0.1".into(),
            port,
        }],
        "test",
    );
    cfg.queue_limit = 2;
    let (client, _events) = Client::start(cfg);
    client.publish(message("1")).unwrap();
    client.publish(message("2")).unwrap();
    assert_eq!(
        client.publish(message("3")),
        Err(gale_client::ClientError::QueueFull { limit: 2 })
    );
    // Once connected both go out, and confirming them frees the queue.
    let mut server = FakeConn::accept(&listener).await;
    assert!(matches!(server.recv().await, Frame::Publish(_)));
    assert!(matches!(server.recv().await, Frame::Publish(_)));
    let Frame::Ping(token) = server.recv().await else {
        panic!("expected PING")
    };
    server.send(Frame::Pong(token)).await;
    within(client.flush()).await.unwrap();
    client.publish(message("3")).unwrap();
}

#[tokio::test]
async fn the_will_is_made_afresh_for_every_connection_before_subscribing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = ServerAddr {
        host: "127.0.0.1".into(),
        port,
    };
    let mut cfg = ClientConfig::new(vec![server], "test");
    cfg.subscriptions = SubscriptionList::from_args(&["a"], "x.org").unwrap();
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = made.clone();
    cfg.will = Some(Will::new(move || {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        message("gone")
    }));
    let (_client, _events) = Client::start(cfg);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut server = FakeConn::accept(&listener).await;
        // The will comes first: confirming the subscription confirms it too.
        match server.recv().await {
            Frame::Will(Some(m)) => ids.push(m.id),
            f => panic!("expected WILL, got {f:?}"),
        }
        assert!(matches!(server.recv().await, Frame::Subscribe { .. }));
    }
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_ne!(ids[0], ids[1], "a fresh will (and id) per connection");
}

#[tokio::test]
async fn close_clears_the_will_and_waits_for_the_server() {
    let (listener, client, _events) = setup(&[]).await;
    client
        .set_will(Some(Will::with_fresh_ids(message("gone"))))
        .await
        .unwrap();
    let mut server = FakeConn::accept(&listener).await;
    assert!(matches!(server.recv().await, Frame::Will(Some(_))));
    let close = tokio::spawn({
        let c = client.clone();
        async move { c.close(true).await }
    });
    assert_eq!(server.recv().await, Frame::Will(None));
    let Frame::Ping(token) = server.recv().await else {
        panic!("expected PING")
    };
    server.send(Frame::Pong(token)).await;
    within(close).await.unwrap();
    assert!(within(server.0.next()).await.is_none(), "client closed");
    assert_eq!(
        client.publish(message("late")),
        Err(gale_client::ClientError::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn silent_server_is_declared_dead_and_next_server_is_tried() {
    // A port with nobody listening (bound for the test's lifetime, never
    // listening: connections are refused and nobody else can take it), then a
    // server that never answers PINGs. Time is paused: the keepalive periods pass
    // as soon as everything waits.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_port = reserved.local_addr().unwrap().port();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let addr = |port| ServerAddr {
        host: "127.0.0.1".into(),
        port,
    };
    let mut cfg = ClientConfig::new(vec![addr(dead_port), addr(port)], "test");
    cfg.keepalive = Duration::from_millis(100);
    let (_client, mut events) = Client::start(cfg);
    let ev = next_matching(&mut events, |e| matches!(e, Event::ConnectFailed { .. })).await;
    assert!(
        matches!(&ev, Event::ConnectFailed { server, error } if server.port == dead_port && error == "connection refused"),
        "{ev:?}"
    );
    let mut server = FakeConn::accept(&listener).await;
    next_matching(
        &mut events,
        |e| matches!(e, Event::Connected { server, .. } if server.port == port),
    )
    .await;
    assert!(
        matches!(server.recv().await, Frame::Ping(_)),
        "keepalive ping"
    );
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(
        matches!(&ev, Event::Disconnected { reason, .. } if reason.starts_with("no answer from the server")),
        "{ev:?}"
    );
}

/// Accepts a connection and answers its HELLO with ERROR `code`, then closes.
async fn refuse_handshake(listener: &TcpListener, code: ErrorCode, text: &str) {
    let (sock, _) = within(listener.accept()).await.unwrap();
    let mut c = FakeConn(Framed::new(sock, FrameCodec::default()));
    assert!(matches!(c.recv().await, Frame::Hello(_)));
    c.send(Frame::Error {
        code,
        text: text.into(),
    })
    .await;
}

/// After a permanent refusal the events end and every command says the client
/// is closed.
async fn assert_stopped(client: &Client, events: &mut Events) {
    assert_eq!(within(events.next()).await, None, "the events end");
    assert_eq!(
        within(client.flush()).await,
        Err(gale_client::ClientError::Closed)
    );
    assert_eq!(
        client.publish(message("late")),
        Err(gale_client::ClientError::Closed)
    );
}

#[tokio::test]
async fn a_permanent_refusal_of_the_handshake_stops_the_client() {
    let (listener, client, mut events) = setup(&["a"]).await;
    refuse_handshake(&listener, ErrorCode::UnsupportedVersion, "speaks 7 to 9").await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::Refused { .. })).await;
    assert!(
        matches!(&ev, Event::Refused { code: ErrorCode::UnsupportedVersion, text, .. } if text == "speaks 7 to 9"),
        "{ev:?}"
    );
    assert_stopped(&client, &mut events).await;
}

#[tokio::test]
async fn a_permanent_error_on_a_connection_stops_the_client() {
    // The server takes the handshake, then refuses the subscription list.
    let (listener, client, mut events) = setup(&["a"]).await;
    let mut server = FakeConn::accept(&listener).await;
    assert!(matches!(server.recv().await, Frame::Subscribe { .. }));
    server
        .send(Frame::Error {
            code: ErrorCode::LimitExceeded,
            text: "subscription list too long".into(),
        })
        .await;
    drop(server);
    let ev = next_matching(&mut events, |e| {
        matches!(e, Event::Refused { .. } | Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(&ev, Event::Refused { code: ErrorCode::LimitExceeded, text, .. } if text == "subscription list too long"),
        "{ev:?}"
    );
    assert_stopped(&client, &mut events).await;
}

#[tokio::test]
async fn busy_and_shutting_down_are_retried() {
    let (listener, client, mut events) = setup(&["a"]).await;
    for _ in 0..3 {
        refuse_handshake(&listener, ErrorCode::Busy, "at its connection limit").await;
        let ev = next_matching(&mut events, |e| matches!(e, Event::ConnectFailed { .. })).await;
        assert!(
            matches!(&ev, Event::ConnectFailed { error, .. }
                if error.contains("at its connection limit (ERROR 9, Busy)")),
            "{ev:?}"
        );
        next_matching(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
    }
    // Taken at last, then told the server is going away: the client comes back.
    let mut server = FakeConn::accept(&listener).await;
    next_matching(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    server
        .send(Frame::Error {
            code: ErrorCode::ShuttingDown,
            text: "the server is shutting down".into(),
        })
        .await;
    drop(server);
    let ev = next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(
        matches!(&ev, Event::Disconnected { reason, .. } if reason.contains("shutting down (ERROR 8, ShuttingDown)")),
        "{ev:?}"
    );
    let _server = FakeConn::accept(&listener).await;
    next_matching(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    client.publish(message("still here")).unwrap();
}

#[tokio::test]
async fn a_server_that_refuses_for_good_is_skipped_while_others_serve() {
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = |l: &TcpListener| ServerAddr {
        host: "127.0.0.1".into(),
        port: l.local_addr().unwrap().port(),
    };
    let cfg = ClientConfig::new(vec![addr(&first), addr(&second)], "test");
    let (_client, mut events) = Client::start(cfg);
    refuse_handshake(&first, ErrorCode::UnsupportedVersion, "too new").await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::ConnectFailed { .. })).await;
    assert!(
        matches!(&ev, Event::ConnectFailed { error, .. } if error.contains("not trying this server again")),
        "{ev:?}"
    );
    // Connection lost: the next attempt goes to the second server again (the
    // client tries the next server first, and the first is out of the list).
    for _ in 0..2 {
        let server = FakeConn::accept(&second).await;
        next_matching(&mut events, |e| matches!(e, Event::Connected { .. })).await;
        drop(server);
        next_matching(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    }
    // And when the second refuses for good too, the client stops.
    refuse_handshake(&second, ErrorCode::UnsupportedVersion, "too new as well").await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::Refused { .. })).await;
    assert!(
        matches!(&ev, Event::Refused { text, server, .. } if text == "too new as well" && *server == addr(&second)),
        "{ev:?}"
    );
    assert_eq!(within(events.next()).await, None);
}

#[tokio::test]
async fn a_server_that_never_answers_the_handshake_is_given_up_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = ClientConfig::new(
        vec![ServerAddr {
            host: "127.0.0.1".into(),
            port,
        }],
        "test",
    );
    cfg.connect_timeout = Duration::from_millis(300);
    let (_client, mut events) = Client::start(cfg);
    // Accepted, and never answered.
    let (_silent, _) = within(listener.accept()).await.unwrap();
    next_matching(&mut events, |e| matches!(e, Event::Handshaking { .. })).await;
    let ev = next_matching(&mut events, |e| matches!(e, Event::ConnectFailed { .. })).await;
    assert!(
        matches!(&ev, Event::ConnectFailed { error, .. } if error.starts_with("handshake timed out")),
        "{ev:?}"
    );
    // And tried again.
    next_matching(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
    let (_again, _) = within(listener.accept()).await.unwrap();
}
