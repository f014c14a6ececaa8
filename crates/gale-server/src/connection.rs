//! One client connection.
//!
//! A connection is two tasks: the reader (this module's [`serve`]) parses frames and
//! acts on them in order, and the writer (`outbox::write_loop`) finishes writing the
//! connection's [`Outbox`] when its socket was full. Because the reader routes each
//! PUBLISH before it reads the next frame, the PONG it queues for a PING confirms
//! everything sent before that PING. After acting on each read, the reader writes
//! what it routed to the subscribers' sockets itself ([`Routing::flush`]); when a
//! subscriber's outbox is full it waits for room within that outbox's hold budget
//! ([`Routing::hold`]) before reading on.
//!
//! Any protocol error (malformed, oversized or unexpected frame) closes this
//! connection only: an ERROR frame is queued, the writer gets a moment to send it,
//! and the socket is closed. The connection's will is then published.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use gale_proto::frame::{self, ErrorCode, Frame, FrameType, Welcome};
use gale_proto::limits::FRAME_HEADER_LEN;
use gale_proto::{KnownLocations, MessageView};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::flow::Routing;
use crate::outbox::{write_loop, Kind, Outbox};
use crate::router::{ConnInfo, ConnSubs, Router};
use crate::session::{
    self, describe, finish_writer, protocol, read_frames, read_hello, refuse, End,
};

/// Reads the connection's first four bytes: true if they are the original
/// protocol's version word.
async fn sniff(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<bool, End> {
    while buf.len() < 4 {
        buf.reserve(1024);
        match tokio::io::AsyncReadExt::read_buf(stream, buf).await {
            Ok(0) => return Err(End::PeerClosed),
            Ok(_) => {}
            Err(e) => return Err(End::Io(e)),
        }
    }
    Ok(gale_orig::wire::is_version_word(
        buf[..4].try_into().expect("4 bytes"),
    ))
}

/// Serves one accepted connection to the end.
pub async fn serve(
    router: Arc<Router>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::new();
    let hello = match tokio::time::timeout(router.limits.handshake_timeout(), async {
        // The original protocol begins with a version word where ours begins
        // with HELLO's length (docs/protocol.md §17.1).
        if sniff(&mut stream, &mut buf).await? {
            return Ok(None);
        }
        read_hello(&mut stream, &mut buf, router.config.max_frame)
            .await
            .map(Some)
    })
    .await
    {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => {
            buf.advance(4);
            // Boxed, as links are: an idle client connection of ours should not
            // carry room for a gateway.
            return Box::pin(crate::orig::serve(router, stream, buf, peer, shutdown)).await;
        }
        Ok(Err(end)) => {
            tracing::info!(%peer, "handshake failed: {}", describe(&end));
            if let End::Protocol(code, text) = end {
                refuse(&mut stream, code, text).await;
            }
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no HELLO within {:?}; closing", router.limits.handshake_timeout());
            refuse(
                &mut stream,
                ErrorCode::Timeout,
                "no HELLO received in time".into(),
            )
            .await;
            return;
        }
    };
    let agreed = match session::accept(&hello, router.config.max_frame) {
        Ok(a) => a,
        Err((code, text)) => {
            tracing::info!(%peer, "{text}");
            refuse(&mut stream, code, text).await;
            return;
        }
    };
    if hello.role == 1 {
        // Boxed: a link's state is larger than a client's, and links are few; an
        // idle client connection should not carry room for one.
        let link = crate::link::serve_accepted(router, stream, buf, hello, agreed, peer, shutdown);
        return Box::pin(link).await;
    }
    if hello.role != 0 {
        let text = format!(
            "HELLO role {} is not served here: this server takes clients (role 0) and \
             server links (role 1)",
            hello.role
        );
        tracing::info!(%peer, "{text}");
        refuse(&mut stream, ErrorCode::UnexpectedFrame, text).await;
        return;
    }
    let max_frame = agreed.max_frame;

    let cfg = &router.config;
    let outbox = Arc::new(
        Outbox::new(
            Kind::Client,
            router.limits.client_queue_frames(),
            router.limits.client_queue_bytes(),
            max_frame,
            format!("{peer} ({})", hello.agent),
        )
        .with_budget(router.memory.clone()),
    );
    let info = ConnInfo {
        peer,
        agent: hello.agent.clone(),
        since: Instant::now(),
        outbox: outbox.clone(),
        subscriptions: Arc::new(AtomicUsize::new(0)),
        published: Arc::new(AtomicU64::new(0)),
    };
    if router.orig_gateways.lock().remove(&peer) {
        outbox.set_original();
    }
    let id = match router.register(info.clone()) {
        Ok(id) => id,
        Err(why) => {
            router
                .refusals
                .note(|n| tracing::warn!("refused {n} connections: {why}"));
            refuse(&mut stream, ErrorCode::Busy, why.to_string()).await;
            return;
        }
    };
    let welcome = Frame::Welcome(Welcome {
        version: agreed.version,
        max_frame,
        keepalive_ms: router.limits.keepalive_ms().min(u32::MAX as u64) as u32,
        server: cfg.name.clone(),
    });
    outbox.push_control(welcome.to_bytes());
    tracing::debug!(%peer, id, agent = %hello.agent, "client connected");

    let sock = Arc::new(stream);
    let writer = tokio::spawn(write_loop(outbox.clone(), sock.clone()));

    let mut conn = Conn {
        router: &router,
        inbox: None,
        id,
        outbox: &outbox,
        info: &info,
        subs: ConnSubs::default(),
        will: None,
        max_frame,
        known: KnownLocations::default(),
        resume: None,
    };
    let mut routing = Routing::new();
    let end = read_frames(
        &router,
        &sock,
        buf,
        &outbox,
        &shutdown,
        &mut routing,
        |b, r| conn.process(b, r),
    )
    .await;
    let will = conn.will.take();
    close_inbox(&router, conn.inbox.take(), id);
    let mut subs = std::mem::take(&mut conn.subs);
    router.unregister(id, &mut subs);

    let last_word = match &end {
        End::Protocol(code, text) => {
            router.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, id, "closing connection: {text}");
            Some((*code, text.clone()))
        }
        End::Shutdown => Some((
            ErrorCode::ShuttingDown,
            "server is shutting down".to_string(),
        )),
        other => {
            tracing::debug!(%peer, id, "connection closed: {}", describe(other));
            None
        }
    };
    finish_writer(&outbox, writer, last_word).await;

    // A will is the connection's last word, spoken when it dies for any reason but
    // the server's own shutdown (when nobody would be left to hear it).
    if let (Some(frame), false) = (will, matches!(end, End::Shutdown)) {
        if let Ok(view) = MessageView::parse(&frame[FRAME_HEADER_LEN..]) {
            router.stats.wills_published.fetch_add(1, Ordering::Relaxed);
            let mut r = Routing::without_holding();
            let n = router.route(&frame, &view, id, &mut r);
            r.flush();
            router.tally(&mut r);
            tracing::debug!(%peer, id, fanout = n, "published will");
        }
    }
}

/// A connection's inbox: the challenge it was given, the inbox it opened.
#[derive(Default)]
struct InboxConn {
    /// The challenge given for INBOX_OPEN (one use).
    challenge: Option<[u8; gale_proto::inbox::CHALLENGE_LEN]>,
    open: Option<OpenInbox>,
}

/// The inbox a connection opened.
struct OpenInbox {
    name: String,
    device: String,
    /// Stops the device's task when the connection ends.
    cancel: CancellationToken,
}

/// Stops the device task of the inbox a connection opened, if any.
fn close_inbox(router: &Router, inbox: Option<Box<InboxConn>>, id: u64) {
    if let Some(open) = inbox.and_then(|b| b.open) {
        open.cancel.cancel();
        router.inboxes.detach(&open.name, id);
    }
}

struct Conn<'a> {
    router: &'a Arc<Router>,
    /// Inbox state, boxed: most connections never open one.
    inbox: Option<Box<InboxConn>>,
    id: u64,
    outbox: &'a Arc<Outbox>,
    info: &'a ConnInfo,
    subs: ConnSubs,
    /// The will as a ready-to-send DELIVER frame.
    will: Option<Bytes>,
    max_frame: u32,
    /// The last location list this client published to, already checked.
    known: KnownLocations,
    /// A RESUME waiting for the SUBSCRIBE that it replays for.
    resume: Option<gale_proto::Resume>,
}

impl Conn<'_> {
    /// INBOX_OPEN: verify, answer, and start the device's task.
    fn open_inbox(&mut self, open: gale_proto::InboxOpen) {
        use gale_proto::inbox::{InboxState, InboxStatus};
        let ib = self.inbox.get_or_insert_with(Default::default);
        let challenge = ib.challenge.take();
        if let Some(o) = &ib.open {
            let state = InboxState {
                status: InboxStatus::Refused,
                held: 0,
                dropped: 0,
                oldest_ms: 0,
                text: format!(
                    "inbox {} is already open on this connection (one per connection)",
                    o.name
                ),
            };
            self.outbox
                .push_control(Frame::InboxState(state).to_bytes());
            return;
        }
        let (opened, gained, lost) = self.router.inboxes.open_inbox(&open, challenge);
        self.router.inbox_interest(&gained, &lost);
        match opened {
            crate::inbox::Opened::Refused(state) => {
                tracing::info!(peer = %self.info.peer, inbox = %open.name, device = %open.device,
                    status = ?state.status, "inbox refused: {}", state.text);
                self.outbox
                    .push_control(Frame::InboxState(state).to_bytes());
            }
            crate::inbox::Opened::Open(attach) => {
                tracing::debug!(peer = %self.info.peer, inbox = %attach.inbox(),
                    device = %attach.device(), "inbox opened");
                let cancel = CancellationToken::new();
                self.inbox.get_or_insert_with(Default::default).open = Some(OpenInbox {
                    name: attach.inbox().to_string(),
                    device: attach.device().to_string(),
                    cancel: cancel.clone(),
                });
                tokio::spawn(crate::inbox::run_device(
                    self.router.clone(),
                    attach,
                    self.id,
                    self.outbox.clone(),
                    self.router.config.client_queue_bytes,
                    self.max_frame,
                    cancel,
                ));
            }
        }
    }

    /// Acts on every whole frame in `buf`, or up to a message that must wait for
    /// full outboxes (returned).
    fn process(&mut self, buf: &mut BytesMut, routing: &mut Routing) -> Result<Option<Bytes>, End> {
        while let Some((ty, total)) = frame::peek(buf, self.max_frame).map_err(protocol)? {
            let mut raw = buf.split_to(total);
            match FrameType::from_u8(ty) {
                Some(FrameType::Publish) => {
                    // Turn the PUBLISH into the DELIVER in place: same bytes, new type.
                    raw[4] = FrameType::Deliver as u8;
                    let frame = raw.freeze();
                    let view =
                        MessageView::parse_known(&frame[FRAME_HEADER_LEN..], &mut self.known)
                            .map_err(protocol)?;
                    self.info.published.fetch_add(1, Ordering::Relaxed);
                    if self.router.first_sighting(&view, self.id) {
                        self.router.route(&frame, &view, self.id, routing);
                        if routing.private_refused > 0 {
                            let n = std::mem::take(&mut routing.private_refused);
                            self.outbox
                                .push_control(crate::orig::refusal_notice(&view, n));
                        }
                        if routing.is_blocked() {
                            return Ok(Some(frame));
                        }
                    }
                }
                Some(FrameType::Will) => {
                    if raw.len() == FRAME_HEADER_LEN {
                        self.will = None;
                    } else {
                        raw[4] = FrameType::Deliver as u8;
                        let frame = raw.freeze();
                        MessageView::parse(&frame[FRAME_HEADER_LEN..]).map_err(protocol)?;
                        self.will = Some(frame);
                    }
                }
                _ => {
                    let mut body = raw.freeze();
                    body.advance(FRAME_HEADER_LEN);
                    if let Some(f) = Frame::decode_body(ty, body).map_err(protocol)? {
                        self.control(f)?;
                    }
                }
            }
        }
        Ok(None)
    }

    fn control(&mut self, f: Frame) -> Result<(), End> {
        match f {
            Frame::Ping(token) => self.outbox.push_control(Frame::Pong(token).to_bytes()),
            Frame::Pong(_) => {}
            Frame::StatusRequest => {
                let report = crate::status::json(self.router, self.max_frame);
                self.outbox.push_control(Frame::Status(report).to_bytes());
            }
            Frame::Resume(r) => self.resume = Some(r),
            Frame::Subscribe { replace, entries } => {
                let resume = self.resume.take();
                let resumed = self
                    .router
                    .subscribe(
                        self.id,
                        self.outbox,
                        &mut self.subs,
                        replace,
                        &entries,
                        resume.as_ref(),
                    )
                    .map_err(|e| {
                        if e.code() == ErrorCode::Busy {
                            self.router
                                .sub_refusals
                                .note(|n| tracing::warn!("refused {n} subscriptions: {e}"));
                        }
                        End::Protocol(e.code(), e.to_string())
                    })?;
                if let Some(r) = resumed {
                    tracing::debug!(peer = %self.info.peer, id = self.id, outcome = ?r.outcome,
                        replayed = r.replayed, lost = ?r.lost, "client resumed");
                }
                self.info
                    .subscriptions
                    .store(self.subs.len(), Ordering::Relaxed);
            }
            Frame::Unsubscribe { entries } => {
                self.router.unsubscribe(self.id, &mut self.subs, &entries);
                self.info
                    .subscriptions
                    .store(self.subs.len(), Ordering::Relaxed);
            }
            Frame::Error { code, text } => {
                tracing::info!(peer = %self.info.peer, ?code, "client reported an error: {text}");
            }
            Frame::InboxHello => {
                let mut c = [0u8; gale_proto::inbox::CHALLENGE_LEN];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut c);
                self.inbox.get_or_insert_with(Default::default).challenge = Some(c);
                self.outbox
                    .push_control(Frame::InboxChallenge(c).to_bytes());
            }
            Frame::InboxOpen(open) => self.open_inbox(open),
            Frame::InboxAck(seq) => match self.inbox.as_ref().and_then(|i| i.open.as_ref()) {
                Some(o) => self.router.inboxes.ack(&o.name, &o.device, seq),
                None => {
                    tracing::debug!(peer = %self.info.peer, "INBOX_ACK with no inbox open; ignored")
                }
            },
            other => {
                return Err(End::Protocol(
                    ErrorCode::UnexpectedFrame,
                    format!("a client may not send {:?} frames", other.frame_type()),
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod size_guard {
    /// Idle connections cost what their tasks' futures hold (the writer's slice
    /// array lives in a plain function's stack frame, not in a future): these
    /// bounds catch a large buffer slipping into a future again.
    #[tokio::test]
    async fn connection_futures_stay_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let s = tokio::net::TcpStream::connect(a).await.unwrap();
        let router = std::sync::Arc::new(crate::Router::new(crate::Config::default()));
        let f = super::serve(router, s, a, tokio_util::sync::CancellationToken::new());
        // 1,544 bytes before inboxes; their (boxed) state and the reader's wait
        // for the store added 120.
        assert!(
            std::mem::size_of_val(&f) <= 1700,
            "serve: {} bytes",
            std::mem::size_of_val(&f)
        );
        let w = std::sync::Arc::new(tokio::net::TcpStream::connect(a).await.unwrap());
        let ob = std::sync::Arc::new(crate::outbox::Outbox::new(
            crate::outbox::Kind::Client,
            1,
            1,
            4096,
            "t".into(),
        ));
        let wf = super::write_loop(ob, w);
        assert!(
            std::mem::size_of_val(&wf) <= 512,
            "write_loop: {} bytes",
            std::mem::size_of_val(&wf)
        );
    }
}
